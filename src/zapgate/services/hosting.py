"""The worker: hosts sessions on engines, holds their leases, sends what is pending, stores what arrives.

    placements ──claim──► Worker ──start/stop/logout──► Engine ──events──► Worker ──► client schema
       (registry)           │  ▲                                             (status, QR, messages,
                            │  └── renew leases, read desired state            receipts, event log)
                            └── pending messages (FOR UPDATE SKIP LOCKED) ──send──► Engine

A session is hosted by the worker holding its lease; a worker that dies stops renewing, and another
claims the session once the lease has expired and restores it from its keys. Everything an engine
reports is stored in one transaction, event row included, before anything else happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from zapgate import metrics
from zapgate.background import TaskGroup
from zapgate.db import notify, outbound, placements
from zapgate.db.keystore import forget_device, provision_keystore
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.db.notify import Listener
from zapgate.db.outbound import PendingMessage, SendOutcome
from zapgate.db.placements import Placement
from zapgate.domain.events import EventType
from zapgate.domain.phones import GROUP_SERVER, jid_user, phone_jid
from zapgate.domain.records import MessageStatus
from zapgate.domain.sessions import SessionStatus, can_transition
from zapgate.engines.base import (
    Engine,
    EngineError,
    EngineEvent,
    EngineFailure,
    InboundMessage,
    NotConnected,
    PairingCode,
    QrCode,
    Receipt,
    SendRejected,
    SessionRef,
    StartMode,
    StartRequest,
    StatusChanged,
    UnknownSession,
)
from zapgate.engines.sandbox import SandboxEngine
from zapgate.errors import SessionNotFound
from zapgate.log import get_logger
from zapgate.services.qr import qr_data_url
from zapgate.services.sandbox import PostgresSandboxNetwork

log = get_logger(__name__)

LEASE_TTL = 10.0  # seconds a lease lives without renewal
EVENT_BATCH = 500  # engine events stored per round (runs of receipts share a transaction)
SEND_BATCH = 200  # pending messages claimed at once per session

_STATUS_RANK = outbound.RANK  # a status only ever moves forward (a late "sent" never undoes "read")
# statuses after which a session rests until someone starts it again
_RESTING = {
    SessionStatus.STOPPED: "stopped",
    SessionStatus.FAILED: "stopped",
    SessionStatus.QR_TIMEOUT: "stopped",
    SessionStatus.LOGGED_OUT: "logged_out",
}

EventEntry = tuple[str, str | None, dict[str, Any]]  # (type, session id, payload) for append_many


@dataclass
class _Hosted:
    placement: Placement
    session_row_id: str
    started_generation: int
    status: SessionStatus = SessionStatus.CREATED
    last_active: float = field(default_factory=time.monotonic)
    sending: bool = False
    in_flight: set[str] = field(default_factory=set)  # message ids sent but not yet recorded as sent
    deferred: list[Receipt] = field(default_factory=list)  # receipts that overtook their send


def available_engines() -> tuple[str, ...]:
    """Return the engines this installation can run (whatsmeow needs neonize and its Go library)."""
    try:
        import zapgate.engines.whatsmeow  # noqa: F401
    except ImportError as exc:
        log.warning("worker.whatsmeow_unavailable", error=str(exc))
        return ("sandbox",)
    return ("sandbox", "whatsmeow")


class Worker:
    """Host up to `capacity` sessions of the given engines."""

    def __init__(
        self,
        manager: ConnectionManager,
        database_url: str,
        engines: Sequence[str] = ("sandbox",),
        *,
        capacity: int = 10,
        lease_ttl: float = LEASE_TTL,
        qr_timeout: float = 60.0,
        max_qr_codes: int = 5,
        session_timeout: float = 300.0,
        poll_interval: float = 1.0,
        worker_id: str | None = None,
    ) -> None:
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._manager = manager
        self._capacity = capacity
        self._lease_ttl = lease_ttl
        self._qr_timeout = qr_timeout
        self._max_qr_codes = max_qr_codes
        self._session_timeout = session_timeout
        self._poll = poll_interval
        self._events: asyncio.Queue[EngineEvent] = asyncio.Queue()
        self._listener = Listener(database_url)
        self._database_url = database_url
        self._keystore_dsns: dict[str, str] = {}
        self._engines: dict[str, Engine] = {name: self._make_engine(name) for name in engines}
        self._hosted: dict[SessionRef, _Hosted] = {}
        self._tasks = TaskGroup("worker")
        self._wake_outbound = asyncio.Event()

    def _make_engine(self, name: str) -> Engine:
        if name == "sandbox":
            network = PostgresSandboxNetwork(self._manager, self._listener.event(notify.SANDBOX))
            return SandboxEngine(self._events.put_nowait, network)
        if name == "whatsmeow":
            from zapgate.engines.whatsmeow import WhatsmeowEngine

            return WhatsmeowEngine(self._events.put_nowait, self._keystore_dsns.__getitem__)
        raise ValueError(f"unknown engine {name!r}")

    async def _provision_keystore(self, client: str) -> None:
        """Make sure whatsmeow has this client's key store (a role and schema of its own) and its DSN."""
        if client in self._keystore_dsns:
            return
        async with self._manager.registry_transaction() as conn:
            self._keystore_dsns[client] = await provision_keystore(conn, client, self._database_url)

    @property
    def hosted(self) -> dict[SessionRef, SessionStatus]:
        """The sessions this worker hosts, with their statuses."""
        return {ref: hosted.status for ref, hosted in self._hosted.items()}

    def engine(self, name: str) -> Engine:
        """Return the engine called `name`."""
        return self._engines[name]

    async def start(self) -> None:
        """Announce the worker and start its loops."""
        await self._listener.start()
        async with self._manager.registry_transaction() as conn:
            await placements.heartbeat(conn, self.worker_id, socket.gethostname(), os.getpid(), self._capacity)
        self._tasks.spawn(self._consume_events(), name="events")
        self._tasks.spawn(self._lease_loop(), name="leases")
        self._tasks.spawn(self._placement_loop(), name="placements")
        self._tasks.spawn(self._outbound_loop(), name="outbound")
        log.info("worker.started", worker_id=self.worker_id, capacity=self._capacity, engines=list(self._engines))

    async def close(self) -> None:
        """Stop every hosted session (keys kept), free the leases at once and stop the loops.

        The sessions keep wanting to run: another worker claims them at once and restores them.
        """
        for ref, hosted in list(self._hosted.items()):
            if hosted.status in {
                SessionStatus.CONNECTED,
                SessionStatus.CONNECTING,
                SessionStatus.QR,
                SessionStatus.PAIRING,
            }:
                reason = "its worker stopped; another worker takes it over"
                self._events.put_nowait(StatusChanged(ref=ref, status=SessionStatus.DISCONNECTED, reason=reason))
        for name, engine in self._engines.items():
            with contextlib.suppress(Exception):
                await engine.close()
            log.debug("worker.engine_closed", engine=name)
        await asyncio.sleep(0)
        await self._drain_events()
        await self._tasks.close()
        with contextlib.suppress(Exception):
            async with self._manager.registry_transaction() as conn:
                await placements.forget_worker(conn, self.worker_id)
        await self._listener.close()
        log.info("worker.stopped", worker_id=self.worker_id)

    # -- placement: claim, renew, reconcile -------------------------------------------------------------

    async def _placement_loop(self) -> None:
        wake = self._listener.event(notify.PLACEMENTS)
        while True:
            wake.clear()
            try:
                await self._claim()
            except Exception as exc:
                log.warning("worker.claim_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self._poll)
            await self._reconcile_now()

    async def _claim(self) -> None:
        room = self._capacity - len(self._hosted)
        async with self._manager.registry_transaction() as conn:
            claimed = await placements.claim(conn, self.worker_id, list(self._engines), room, self._lease_ttl)
            waiting = []
            if not claimed and room <= 0 and await placements.free_capacity(conn, self._lease_ttl) <= 0:
                # no live worker has room: say so, rather than let the sessions wait in silence
                waiting = await placements.unplaced(conn, list(self._engines))
        for placement in claimed:
            await self._host(placement)
        for placement in waiting:
            await self._mark_unplaced(placement)

    async def _measure(self) -> None:
        """Update the gauges published with the heartbeat: sessions hosted, outbound queue depth."""
        metrics.HOSTED_SESSIONS.set(len(self._hosted))
        rows: dict[str, list[str]] = {}
        for ref, hosted in self._hosted.items():
            if hosted.session_row_id:
                rows.setdefault(ref.client_id, []).append(hosted.session_row_id)
        depth = 0
        for client, session_rows in rows.items():

            async def count(tx: Transaction, session_rows: list[str] = session_rows) -> int:
                return await outbound.pending_count(tx.connection, session_rows)

            try:
                depth += await self._manager.execute_transaction(client, count)
            except Exception as exc:  # a client deleted meanwhile, the database away: next round
                log.debug("worker.measure_failed", client=client, error=repr(exc))
        metrics.OUTBOUND_QUEUE.set(depth)

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ttl / 3)
            try:
                await self._reconcile_now()
                self._close_idle_sessions()
            except Exception as exc:
                log.warning("worker.renew_failed", error=repr(exc))

    async def _reconcile_now(self) -> None:
        await self._measure()
        async with self._manager.registry_transaction() as conn:
            await placements.heartbeat(
                conn, self.worker_id, socket.gethostname(), os.getpid(), self._capacity, metrics.process_text()
            )
            current = {
                SessionRef(p.client_id, p.session_id): p
                for p in await placements.renew(conn, self.worker_id, self._lease_ttl)
            }
        for ref, hosted in list(self._hosted.items()):
            placement = current.get(ref)
            if placement is None:  # deleted, or our lease was taken over after we stalled
                await self._unhost(ref, stop=True)
            elif placement.desired == "stopped":
                await self._unhost(ref, stop=True, reason="stopped on request")
            elif placement.desired == "logged_out":
                await self._logout(ref)
            elif placement.generation != hosted.started_generation:
                hosted.placement = placement
                await self._start_engine(ref, hosted)

    async def _host(self, placement: Placement) -> None:
        ref = SessionRef(placement.client_id, placement.session_id)
        try:
            db = await self._manager.get_connection(placement.client_id)
            session = await db.session.find_unique(placement.session_id)
        except Exception as exc:
            log.warning("worker.host_failed", session=str(ref), error=repr(exc))
            await self._release(ref)
            return
        if session is None:
            await self._release(ref)
            return
        # whatever the row says, nothing is connected here until the engine reports it
        hosted = self._hosted[ref] = _Hosted(placement, session.id, placement.generation, SessionStatus.CREATED)
        await self._start_engine(ref, hosted, jid=session.jid)

    async def _start_engine(self, ref: SessionRef, hosted: _Hosted, jid: str | None = None) -> None:
        placement = hosted.placement
        engine = self._engines[placement.engine]
        if engine.hosts(ref):
            await engine.stop(ref)
        if jid is None:
            db = await self._manager.get_connection(ref.client_id)
            session = await db.session.find_unique(ref.session_id)
            jid = session.jid if session else None
        mode = StartMode(placement.mode)
        if mode is StartMode.RESTORE and not jid:
            mode = StartMode.QR
        if mode is not StartMode.RESTORE and jid and placement.mode != "pairing_code":
            mode = StartMode.RESTORE  # a linked session is restored, never paired again behind its back
        hosted.started_generation = placement.generation
        hosted.last_active = time.monotonic()
        request = StartRequest(
            ref=ref,
            mode=mode,
            phone_number=placement.pairing_phone,
            jid=jid,
            qr_timeout=self._qr_timeout,
            max_qr_codes=self._max_qr_codes,
        )
        log.info("worker.session_starting", session=str(ref), engine=placement.engine, mode=mode.value)
        try:
            if placement.engine == "whatsmeow":
                await self._provision_keystore(ref.client_id)
            await engine.start(request)
        except EngineError as exc:
            self._events.put_nowait(EngineFailure(ref=ref, code=exc.code, message=exc.message))
            self._events.put_nowait(StatusChanged(ref=ref, status=SessionStatus.FAILED, reason=exc.message))
        except Exception as exc:
            self._events.put_nowait(EngineFailure(ref=ref, code="start_failed", message=str(exc)))
            self._events.put_nowait(StatusChanged(ref=ref, status=SessionStatus.FAILED, reason=str(exc)))

    async def _unhost(self, ref: SessionRef, *, stop: bool, reason: str | None = None) -> None:
        """Stop hosting `ref`; with a `reason`, record it as stopped (it rests until restarted)."""
        hosted = self._hosted.pop(ref, None)
        if hosted is None:
            return
        log.info("worker.session_released", session=str(ref), reason=reason or "no longer ours")
        if stop:
            with contextlib.suppress(Exception):
                await self._engines[hosted.placement.engine].stop(ref)
        if reason is not None:
            self._events.put_nowait(StatusChanged(ref=ref, status=SessionStatus.STOPPED, reason=reason))
        else:
            await self._release(ref)

    async def _logout(self, ref: SessionRef) -> None:
        hosted = self._hosted.get(ref)
        if hosted is None:
            return
        engine = self._engines[hosted.placement.engine]
        try:
            await engine.logout(ref)
        except EngineError as exc:
            # WhatsApp cannot be told (offline): end the session and delete its keys ourselves
            with contextlib.suppress(Exception):
                await engine.stop(ref)
            if hosted.placement.engine == "whatsmeow":
                await self._forget_device(ref)
            self._events.put_nowait(EngineFailure(ref=ref, code=exc.code, message=exc.message))
            self._events.put_nowait(StatusChanged(ref=ref, status=SessionStatus.LOGGED_OUT, reason="logged out"))

    async def _forget_device(self, ref: SessionRef) -> None:
        try:
            db = await self._manager.get_connection(ref.client_id)
            session = await db.session.find_unique(ref.session_id)
            if session is not None and session.jid:
                async with self._manager.registry_transaction() as conn:
                    await forget_device(conn, ref.client_id, session.jid)
        except Exception as exc:
            log.error("worker.keys_not_deleted", session=str(ref), error=repr(exc))

    async def _release(self, ref: SessionRef) -> None:
        with contextlib.suppress(Exception):
            async with self._manager.registry_transaction() as conn:
                await placements.release(conn, self.worker_id, ref.client_id, ref.session_id)

    async def _mark_unplaced(self, placement: Placement) -> None:
        ref = SessionRef(placement.client_id, placement.session_id)
        reason = f"no worker has room for it (WHATSAPP_MAX_SESSIONS={self._capacity} each); it starts when one has"

        async def work(tx: Transaction) -> None:
            session = await tx.session.find_unique(ref.session_id)
            if session is None or session.status == SessionStatus.UNPLACED:
                return
            if not can_transition(SessionStatus(session.status), SessionStatus.UNPLACED):
                return
            await tx.session.update(ref.session_id, status=SessionStatus.UNPLACED.value, last_error=reason)
            await _append(
                tx,
                ref,
                EventType.STATUS_CHANGE,
                {"status": "unplaced", "previousStatus": session.status, "reason": reason},
            )
            await _append(tx, ref, EventType.ERROR, {"code": "no_capacity", "message": reason})

        with contextlib.suppress(Exception):
            await self._manager.execute_transaction(ref.client_id, work)

    def _close_idle_sessions(self) -> None:
        now = time.monotonic()
        for ref, hosted in list(self._hosted.items()):
            if now - hosted.last_active > self._session_timeout:
                reason = f"inactive for {self._session_timeout:g} s (WHATSAPP_SESSION_TIMEOUT)"
                if hosted.status in {SessionStatus.QR, SessionStatus.PAIRING, SessionStatus.CONNECTING}:
                    reason = f"not paired within {self._session_timeout:g} s (WHATSAPP_SESSION_TIMEOUT)"
                log.info("worker.session_timeout", session=str(ref), reason=reason)
                hosted.last_active = now
                self._tasks.spawn(self._time_out(ref, reason), name="timeout")

    async def _time_out(self, ref: SessionRef, reason: str) -> None:
        await self._unhost(ref, stop=True, reason=reason)

    # -- events: everything an engine reports is stored first -------------------------------------------

    async def _consume_events(self) -> None:
        while True:
            batch = [await self._events.get()]
            while len(batch) < EVENT_BATCH and not self._events.empty():
                batch.append(self._events.get_nowait())
            await self._store_batch(batch)

    async def _drain_events(self) -> None:
        batch = []
        while not self._events.empty():
            batch.append(self._events.get_nowait())
        await self._store_batch(batch)

    async def _store_batch(self, batch: list[EngineEvent]) -> None:
        """Store events in their order; a run of receipts of one client goes in one transaction."""
        start = 0
        while start < len(batch):
            event = batch[start]
            end = start + 1
            if isinstance(event, Receipt):
                while (
                    end < len(batch)
                    and isinstance(batch[end], Receipt)
                    and batch[end].ref.client_id == event.ref.client_id
                ):
                    end += 1
                receipts = [item for item in batch[start:end] if isinstance(item, Receipt)]
                await self._with_retries(partial(self._store_receipts, receipts), event)
            else:
                await self._with_retries(partial(self._store, event), event)
            start = end

    async def _with_retries(self, store: Callable[[], Awaitable[list[Ack]]], event: EngineEvent) -> None:
        """Store, retrying while the database is away; then acknowledge what was stored."""
        for attempt in range(5):
            try:
                acks = await store()
            except SessionNotFound:
                acks = _acks(event)  # deleted meanwhile: nothing to keep
            except Exception as exc:
                log.warning("worker.store_failed", kind=type(event).__name__, attempt=attempt, error=repr(exc))
                await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
                continue
            for ack in acks:
                ack()
            return
        # not acknowledged: an engine that can (the sandbox; whatsmeow up to its wait) hands it over again
        log.error("worker.event_not_stored", kind=type(event).__name__, session=str(event.ref))

    async def _store(self, event: EngineEvent) -> list[Ack]:
        hosted = self._hosted.get(event.ref)
        if hosted is not None:
            hosted.last_active = time.monotonic()
        if isinstance(event, Receipt):
            return await self._store_receipts([event])
        if isinstance(event, StatusChanged):
            await self._store_status(event)
        elif isinstance(event, QrCode):
            await self._store_qr(event)
        elif isinstance(event, PairingCode):
            await self._store_pairing_code(event)
        elif isinstance(event, InboundMessage):
            await self._store_inbound(event)
        elif isinstance(event, EngineFailure):
            await self._store_failure(event)
        return _acks(event)

    async def _store_status(self, event: StatusChanged) -> None:
        ref = event.ref
        hosted = self._hosted.get(ref)

        async def work(tx: Transaction) -> str:
            session = await tx.session.find_unique(ref.session_id)
            if session is None:
                raise SessionNotFound(f"session {ref} not found")
            previous = SessionStatus(session.status)
            if not can_transition(previous, event.status):
                log.warning("session.odd_transition", session=str(ref), previous=previous.value, new=event.status.value)
            changes = _status_changes(event)
            await tx.session.update(ref.session_id, **changes)
            if previous != event.status:
                payload = {
                    "status": event.status.value,
                    "previousStatus": previous.value,
                    "reason": event.reason,
                    "engine": session.engine,
                    "phoneNumber": changes.get("phone_number", session.phone_number),
                }
                await _append(tx, ref, EventType.STATUS_CHANGE, payload)
            resting = _RESTING.get(event.status)
            if resting is not None:
                await placements.settle(tx.connection, ref.client_id, ref.session_id, resting)
            if event.status is SessionStatus.CONNECTED:
                await notify.notify(tx.connection, notify.OUTBOUND, f"{ref.client_id}/{ref.session_id}")
            return previous.value

        await self._manager.execute_transaction(ref.client_id, work)
        if hosted is not None:
            hosted.status = event.status
            if event.status in _RESTING:
                self._hosted.pop(ref, None)
            elif event.status is SessionStatus.CONNECTED:
                self._wake_outbound.set()

    async def _store_qr(self, event: QrCode) -> None:
        ref = event.ref

        async def work(tx: Transaction) -> None:
            session = await tx.session.update(ref.session_id, qr_code=event.code, qr_expires_at=event.expires_at)
            await _append(
                tx,
                ref,
                EventType.QR_CODE,
                {
                    "qr": event.code,
                    "qrDataUrl": qr_data_url(event.code),
                    "expiresAt": event.expires_at.isoformat(),
                    "sequence": event.sequence,
                    "engine": session.engine,
                },
            )

        await self._manager.execute_transaction(ref.client_id, work)

    async def _store_pairing_code(self, event: PairingCode) -> None:
        ref = event.ref

        async def work(tx: Transaction) -> None:
            session = await tx.session.update(ref.session_id, pairing_code=event.code)
            payload = {"code": event.code, "phoneNumber": event.phone_number, "engine": session.engine}
            await _append(tx, ref, EventType.PAIRING_CODE, payload)

        await self._manager.execute_transaction(ref.client_id, work)

    async def _store_inbound(self, event: InboundMessage) -> None:
        ref = event.ref

        async def work(tx: Transaction) -> None:
            session = await tx.session.find_unique(ref.session_id)
            if session is None:
                raise SessionNotFound(f"session {ref} not found")
            is_group = event.is_group or event.chat_jid.endswith("@" + GROUP_SERVER)
            key = (
                event.chat_jid
                if is_group or not event.chat_jid.endswith("@s.whatsapp.net")
                else jid_user(event.chat_jid)
            )
            contact = await tx.contact.upsert(
                session_id=session.id,
                phone_number=key,
                name=None if event.from_me else event.push_name,
                is_group=is_group,
            )
            inserted = await tx.message.insert_if_new(
                session_id=session.id,
                contact_id=contact.id,
                message_id=event.message_id,
                content=event.text,
                type=event.type,
                direction="outbound" if event.from_me else "inbound",
                status=MessageStatus.SENT.value if event.from_me else MessageStatus.DELIVERED.value,
                timestamp=event.timestamp,
                chat_jid=event.chat_jid,
            )
            if not inserted:
                return  # seen before (WhatsApp redelivers): stored once, announced once
            metrics.MESSAGES.labels("outbound" if event.from_me else "inbound", "received").inc()
            await _append(
                tx,
                ref,
                EventType.MESSAGE_RECEIVED,
                {
                    "messageId": event.message_id,
                    "from": key,
                    "chatJid": event.chat_jid,
                    "chatLid": event.chat_lid,
                    "senderJid": event.sender_jid,
                    "pushName": event.push_name,
                    "type": event.type,
                    "text": event.text,
                    "isGroup": is_group,
                    "fromMe": event.from_me,
                    "timestamp": event.timestamp.isoformat(),
                    "engine": session.engine,
                },
            )

        await self._manager.execute_transaction(ref.client_id, work)

    async def _store_receipts(self, receipts: list[Receipt]) -> list[Ack]:
        """Move messages forward by receipts (never backwards), with one message-status event per step.

        Returns the acknowledgements of the receipts stored (deferred ones are acknowledged later).
        """
        client = receipts[0].ref.client_id
        receipts = self._not_overtaking(receipts)
        if not receipts:
            return []

        async def work(tx: Transaction) -> None:
            await tx.event.append_many(await self._advance_by_receipts(tx, client, receipts))

        await self._manager.execute_transaction(client, work)
        return [ack for receipt in receipts for ack in _acks(receipt)]

    async def _advance_by_receipts(self, tx: Transaction, client: str, receipts: list[Receipt]) -> list[EventEntry]:
        """Move messages forward by `receipts` (of `client`); return the message-status events of the steps."""
        rows = await self._session_rows(tx, client, {r.ref.session_id for r in receipts})
        reported: dict[tuple[str, str], list[Receipt]] = {}
        best: dict[tuple[str, str], MessageStatus] = {}
        for receipt in receipts:
            row = rows.get(receipt.ref.session_id)
            if row is None:
                continue
            for message_id in receipt.message_ids:
                key = (row, message_id)
                reported.setdefault(key, []).append(receipt)
                if key not in best or _STATUS_RANK[receipt.status] > _STATUS_RANK[best[key]]:
                    best[key] = receipt.status
        if not best:
            return []
        keys = list(best)
        changed_rows = await outbound.advance(tx.connection, [(row, mid, best[(row, mid)]) for row, mid in keys])
        entries: list[EventEntry] = []
        for changed in changed_rows:
            key = (changed.session_row, changed.message_id)
            reached = _STATUS_RANK[changed.old_status]
            if changed.old_status is MessageStatus.PENDING:
                # its receipt came before its send was recorded (a worker died in between): it was sent
                first = reported[key][0]
                payload = {"sessionId": first.ref.session_id, "messageId": changed.message_id, "status": "sent"}
                entries.append((EventType.MESSAGE_STATUS.value, first.ref.session_id, payload))
                reached = _STATUS_RANK[MessageStatus.SENT]
            for receipt in reported[key]:
                if _STATUS_RANK[receipt.status] > reached:
                    reached = _STATUS_RANK[receipt.status]
                    entries.append(_receipt_entry(receipt, changed.message_id))
        return entries

    def _not_overtaking(self, receipts: list[Receipt]) -> list[Receipt]:
        """Return the receipts that may be stored now; defer those whose message is still being sent."""
        ready = []
        for receipt in receipts:
            hosted = self._hosted.get(receipt.ref)
            if hosted is None:
                ready.append(receipt)
                continue
            hosted.last_active = time.monotonic()
            if hosted.in_flight.intersection(receipt.message_ids):
                hosted.deferred.append(receipt)  # stored once its send is recorded: sent, then delivered
            else:
                ready.append(receipt)
        return ready

    async def _session_rows(self, tx: Transaction, client: str, session_ids: set[str]) -> dict[str, str]:
        """Return the row ids of `client`'s named sessions (known ones from memory)."""
        found = {}
        for session_id in session_ids:
            hosted = self._hosted.get(SessionRef(client, session_id))
            if hosted is not None:
                found[session_id] = hosted.session_row_id
        missing = session_ids - set(found)
        for session_id in missing:
            session = await tx.session.find_unique(session_id)
            if session is not None:
                found[session_id] = session.id
        return found

    async def _store_failure(self, event: EngineFailure) -> None:
        ref = event.ref

        async def work(tx: Transaction) -> None:
            await tx.session.update(ref.session_id, last_error=event.message)
            payload = {"code": event.code, "message": event.message, "retryable": event.retryable}
            await _append(tx, ref, EventType.ERROR, payload)

        await self._manager.execute_transaction(ref.client_id, work)

    # -- outbound: pending rows, in order, each sent under its own WhatsApp id ---------------------------

    async def _outbound_loop(self) -> None:
        wake = self._listener.event(notify.OUTBOUND)
        while True:
            wake.clear()
            self._wake_outbound.clear()
            for ref, hosted in list(self._hosted.items()):
                if hosted.status is SessionStatus.CONNECTED and not hosted.sending:
                    hosted.sending = True
                    self._tasks.spawn(self._send_pending(ref, hosted), name="send")
            waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(self._wake_outbound.wait())]
            await asyncio.wait(waits, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()

    async def _send_pending(self, ref: SessionRef, hosted: _Hosted) -> None:
        """Send the session's pending messages, oldest first, in batches.

        Each batch is claimed in a short transaction (FOR UPDATE SKIP LOCKED), sent with no transaction
        open (a send may wait on the network; an engine may need the database itself), then recorded.
        A crash in between leaves the rows pending: they are sent again under the same message ids.
        """
        try:
            while hosted.status is SessionStatus.CONNECTED and self._hosted.get(ref) is hosted:
                batch = await self._manager.execute_transaction(ref.client_id, partial(self._claim_batch, hosted))
                if not batch:
                    return
                hosted.in_flight = {pending.message_id for pending in batch}
                stored: list[Receipt] = []
                try:
                    outcomes = await self._send_rows(ref, hosted, batch)
                    stored = await self._manager.execute_transaction(
                        ref.client_id, partial(self._record_sends, ref=ref, hosted=hosted, outcomes=outcomes)
                    )
                finally:
                    hosted.in_flight = set()
                    # receipts that arrived before their message was recorded as sent, and missed the
                    # transaction that recorded it, are stored after it
                    taken = {id(receipt) for receipt in stored}
                    for receipt in hosted.deferred:
                        if id(receipt) not in taken:
                            self._events.put_nowait(receipt)
                    hosted.deferred = []
                for receipt in stored:
                    for ack in _acks(receipt):
                        ack()
                if len(outcomes) < len(batch) or len(batch) < SEND_BATCH:
                    return
        except Exception as exc:
            log.warning("worker.send_failed", session=str(ref), error=repr(exc))
        finally:
            hosted.sending = False

    async def _claim_batch(self, hosted: _Hosted, tx: Transaction) -> list[PendingMessage]:
        """Lock and return the session's oldest pending messages."""
        return await outbound.claim_pending(tx.connection, hosted.session_row_id, SEND_BATCH)

    async def _send_rows(self, ref: SessionRef, hosted: _Hosted, batch: list[PendingMessage]) -> list[SendOutcome]:
        """Send in order until the session cannot send any more; return what happened to each."""
        engine = self._engines[hosted.placement.engine]
        outcomes: list[SendOutcome] = []
        for pending in batch:
            message_id, content = pending.message_id, pending.content
            to = pending.to if "@" in pending.to else phone_jid(pending.to)
            try:
                result = await engine.send_text(ref, to, content, message_id)
            except (NotConnected, UnknownSession):
                break  # stays pending: it goes out after the (re)connection
            except EngineError as exc:
                if exc.retryable and not isinstance(exc, SendRejected):
                    log.warning("worker.send_retry_later", session=str(ref), error=exc.message)
                    break
                outcomes.append(SendOutcome(message_id, message_id, MessageStatus.FAILED, to, None, exc.message))
            else:
                outcomes.append(
                    SendOutcome(message_id, result.message_id, MessageStatus.SENT, to, result.timestamp, None)
                )
                if pending.accepted_at is not None:
                    metrics.SEND_LATENCY.observe(max(0.0, (datetime.now(UTC) - pending.accepted_at).total_seconds()))
            hosted.last_active = time.monotonic()
        return outcomes

    async def _record_sends(
        self, tx: Transaction, *, ref: SessionRef, hosted: _Hosted, outcomes: list[SendOutcome]
    ) -> list[Receipt]:
        """Record what happened to each send, then the receipts that overtook them; return those receipts.

        Receipts often come back while the sends are being recorded (the sandbox's at once). They are
        stored here, after their sends: a message sent and already read is written once, as read, with
        its sent, delivered and read events in that order.
        """
        overtaking = list(hosted.deferred)  # a copy: a retried transaction starts from the same receipts
        sent = {o.message_id for o in outcomes if o.status is MessageStatus.SENT and o.assigned_id == o.message_id}
        ahead, others = _split_receipts(overtaking, sent)

        def furthest(outcome: SendOutcome) -> SendOutcome:
            status = max(
                (r.status for r in ahead.get(outcome.message_id, ())), key=_STATUS_RANK.__getitem__, default=None
            )
            if status is None or _STATUS_RANK[status] <= _STATUS_RANK[outcome.status]:
                return outcome
            return replace(outcome, status=status)

        recorded = await outbound.record_sends(tx.connection, hosted.session_row_id, [furthest(o) for o in outcomes])
        entries: list[EventEntry] = []
        for outcome in outcomes:
            if outcome.message_id not in recorded:
                # a receipt stored earlier overtook the send: it already moved on
                receipts = ahead.pop(outcome.message_id, [])
                others.extend(replace(r, message_ids=(outcome.message_id,)) for r in receipts)
                continue
            entries.append(_send_entry(ref, outcome))
            reached = _STATUS_RANK[outcome.status]
            for receipt in ahead.get(outcome.message_id, ()):
                if _STATUS_RANK[receipt.status] > reached:
                    reached = _STATUS_RANK[receipt.status]
                    entries.append(_receipt_entry(receipt, outcome.message_id))
        if others:
            entries.extend(await self._advance_by_receipts(tx, ref.client_id, others))
        await tx.event.append_many(entries)
        return overtaking


Ack = Callable[[], None]


def _acks(event: EngineEvent) -> list[Ack]:
    """Return the acknowledgement an event carries, if any."""
    ack = event.ack if isinstance(event, InboundMessage | Receipt) else None
    return [ack] if ack is not None else []


def _split_receipts(receipts: list[Receipt], ids: set[str]) -> tuple[dict[str, list[Receipt]], list[Receipt]]:
    """Split receipts into those about messages `ids` (per message id, in order) and the rest."""
    about: dict[str, list[Receipt]] = {}
    rest: list[Receipt] = []  # receipts, or the part of one, about other messages
    for receipt in receipts:
        for message_id in receipt.message_ids:
            if message_id in ids:
                about.setdefault(message_id, []).append(receipt)
        others = tuple(message_id for message_id in receipt.message_ids if message_id not in ids)
        if others:
            rest.append(receipt if len(others) == len(receipt.message_ids) else replace(receipt, message_ids=others))
    return about, rest


def _send_entry(ref: SessionRef, outcome: SendOutcome) -> EventEntry:
    """The message-status event of a send recorded as sent or failed (counted in the metrics)."""
    metrics.MESSAGES.labels("outbound", outcome.status.value).inc()
    payload: dict[str, Any] = {
        "sessionId": ref.session_id,
        "messageId": outcome.assigned_id,
        "status": outcome.status.value,
    }
    if outcome.assigned_id != outcome.message_id:
        # the engine could not send under our id (neonize 0.5): receipts will name WhatsApp's
        payload["requestedMessageId"] = outcome.message_id
    if outcome.error:
        payload["error"] = outcome.error
    if outcome.sent_at:
        payload["timestamp"] = outcome.sent_at.isoformat()
    return (EventType.MESSAGE_STATUS.value, ref.session_id, payload)


def _receipt_entry(receipt: Receipt, message_id: str) -> EventEntry:
    """The message-status event of a message reaching the status of `receipt` (counted in the metrics)."""
    metrics.MESSAGES.labels("outbound", receipt.status.value).inc()
    payload = {
        "sessionId": receipt.ref.session_id,
        "messageId": message_id,
        "status": receipt.status.value,
        "timestamp": receipt.timestamp.isoformat(),
    }
    return (EventType.MESSAGE_STATUS.value, receipt.ref.session_id, payload)


def _status_changes(event: StatusChanged) -> dict[str, Any]:
    """Return what a status change changes on the session row."""
    changes: dict[str, Any] = {"status": event.status.value}
    if event.status is not SessionStatus.QR:
        changes.update(qr_code=None, qr_expires_at=None)
    if event.status is SessionStatus.CONNECTED:
        changes.update(pairing_code=None, last_error=None)
        if event.jid:
            changes.update(jid=event.jid, phone_number=event.phone_number or jid_user(event.jid))
    elif event.status in {SessionStatus.FAILED, SessionStatus.DISCONNECTED, SessionStatus.QR_TIMEOUT}:
        changes.update(last_error=event.reason)
    elif event.status is SessionStatus.LOGGED_OUT:
        changes.update(jid=None, pairing_code=None)
    return changes


async def _append(tx: Transaction, ref: SessionRef, kind: EventType, payload: dict[str, Any]) -> None:
    await tx.event.append(type=kind.value, session_id=ref.session_id, payload={"sessionId": ref.session_id, **payload})
