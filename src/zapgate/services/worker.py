"""The worker: hosts sessions on engines, holds their leases, and keeps every engine call bounded.

    placements ──claim──► Worker ──start/stop/logout──► Engine ──events──► Recorder ──► client schema
       (registry)           │  ▲                                             (status, QR, messages,
                            │  └── renew leases, read desired state            receipts, event log)
                            └── Outbox: pending messages (FOR UPDATE SKIP LOCKED) ──send──► Engine

A session is hosted by the worker holding its lease; a worker that dies stops renewing, and another
claims the session once the lease has expired and restores it from its keys.

No engine call may hang the worker: starts, stops and logouts are bounded. A session whose stop does
not return in time (neonize's QR loop and an unpaired client's FetchMe can spin for ever) is abandoned:
it is no longer hosted, its lease is released, and it is counted. Past `max_abandoned` such clients the
worker drains (stops claiming, releases every lease) and asks to exit, so that its supervisor starts a
fresh process; what an abandoned Go client still holds dies with the old one.

A connected session is never closed for being quiet (it would miss inbound messages):
WHATSAPP_SESSION_TIMEOUT bounds the pairing phase only. A session whose connection dropped shows
`reconnecting` while its engine dials again; past the reconnect window the watchdog fails it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from zapgate import metrics
from zapgate.background import TaskGroup, wait_set
from zapgate.db import notify, placements
from zapgate.db.keystore import forget_device, provision_keystore
from zapgate.db.manager import ConnectionManager
from zapgate.db.notify import Listener
from zapgate.db.placements import Placement
from zapgate.domain.sessions import SessionStatus
from zapgate.engines import registry
from zapgate.engines.base import (
    Engine,
    EngineError,
    EngineFailure,
    SessionRef,
    StartMode,
    StartRequest,
    StatusChanged,
    StopTimedOut,
)
from zapgate.engines.registry import EngineContext, EngineSpec
from zapgate.log import get_logger
from zapgate.media.postgres import PostgresMediaStore
from zapgate.services.engine_calls import CallRunner
from zapgate.services.hosted import Hosted, HostedSessions, named_session, queue_depth
from zapgate.services.media import MediaFiles
from zapgate.services.outbox import Outbox
from zapgate.services.recorder import Recorder
from zapgate.services.sandbox import PostgresSandboxNetwork
from zapgate.services.worker_options import WorkerOptions, worker_options

__all__ = ["EXIT_TO_BE_REPLACED", "Worker", "WorkerOptions", "worker_options"]

log = get_logger(__name__)

LEASE_TTL = 10.0  # seconds a lease lives without renewal
MEASURE_EVERY = 15.0  # seconds between two counts of the outbound queue (zapgate_outbound_queue_depth)
# seconds sandbox mail may wait in a mailbox of a session leased here, handed out to no one, before it is reported
# (its pump collects every second, and takes mail back 10 s after a host died: this is far past either)
STUCK_MAIL_AFTER = 60.0
# sessions a worker starts at once of those it claimed together: a worker taking over 44 sessions of a dead one
# started them one after the other, and the last was connected minutes after its claim on a busy machine
HOST_AT_ONCE = 8
DRAIN_TIMEOUT = 10.0  # seconds a stopping worker waits to store what its engines reported last
EXIT_TO_BE_REPLACED = 75  # exit code of a worker that drained itself to be replaced (EX_TEMPFAIL; supervisor.py)
T = TypeVar("T")

# the statuses in which a session is still pairing (bounded by WHATSAPP_SESSION_TIMEOUT)
_PAIRING = frozenset({SessionStatus.CONNECTING, SessionStatus.QR, SessionStatus.PAIRING})
# the statuses in which a once-connected session is trying to get its connection back
_RECONNECTING = frozenset({SessionStatus.RECONNECTING, SessionStatus.DISCONNECTED})


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
        options: WorkerOptions | None = None,
        media: MediaFiles | None = None,
        stuck_mail_after: float = STUCK_MAIL_AFTER,
    ) -> None:
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.options = options or WorkerOptions()
        self._manager = manager
        self._capacity = capacity
        self._lease_ttl = lease_ttl
        self._qr_timeout = qr_timeout
        self._max_qr_codes = max_qr_codes
        self._session_timeout = session_timeout
        self._poll = poll_interval
        self._stuck_mail_after = stuck_mail_after
        self._listener = Listener(database_url, on_notify=self._notified)
        self._database_url = database_url
        self._keystore_dsns: dict[str, str] = {}
        self._provisioning = asyncio.Lock()
        self._hosted: HostedSessions = {}
        self._claiming: set[SessionRef] = set()  # claimed, not hosted yet (their leases are ours meanwhile)
        self._hosting = asyncio.Semaphore(HOST_AT_ONCE)  # sessions claimed that start at once
        self._settling: set[SessionRef] = set()  # let go of, their rest (stopped, failed) not recorded yet
        self._orphans: dict[SessionRef, float] = {}  # leased to us, hosted by nothing here: since when (monotonic)
        self._reconciled_at = 0.0  # monotonic seconds of the last renewal and reconciliation
        self._reconcile_wanted = False  # a notification named a session hosted here (or may have been lost)
        self._tasks = TaskGroup("worker")
        self._sandbox_networks: list[PostgresSandboxNetwork] = []  # each wakes for mail to its own addresses
        self.media = self._media = media or MediaFiles(manager, PostgresMediaStore(manager))
        self._recorder = Recorder(
            manager,
            self._hosted,
            keep_stories=self.options.keep_stories,
            erase_deleted=self.options.erase_deleted,
            on_connected=self._wake_outbox,
            media=self._media,
            tasks=self._tasks,
        )
        self._outbox = Outbox(
            manager,
            self._hosted,
            self._recorder,
            self._tasks,
            self.options.outbox,
            poll_interval=poll_interval,
            media=self._media,
        )
        self._calls = CallRunner(manager, self._hosted, self._tasks, call_timeout=self.options.outbox.call_timeout)
        context = EngineContext(
            on_event=self._recorder.put,
            sandbox_network=self._sandbox_network,
            keystore_dsn=self._keystore_dsns.__getitem__,
            device_name=self.options.device_name,
        )
        self._specs: dict[str, EngineSpec] = {name: registry.spec(name) for name in engines}
        self._engines: dict[str, Engine] = {name: spec.build(context) for name, spec in self._specs.items()}
        self.abandoned = 0  # engine clients given up on (their stop did not return)
        self.exhausted = asyncio.Event()  # set when the worker drained itself and wants to be replaced

    @property
    def hosted(self) -> dict[SessionRef, SessionStatus]:
        """The sessions this worker hosts, with their statuses."""
        return {ref: hosted.status for ref, hosted in self._hosted.items()}

    def engine(self, name: str) -> Engine:
        """Return the engine called `name`."""
        return self._engines[name]

    def _wake_outbox(self, ref: SessionRef) -> None:
        self._outbox.wake(ref)

    def _sandbox_network(self) -> PostgresSandboxNetwork:
        network = PostgresSandboxNetwork(self._manager, directory_news=self._listener.event(notify.SANDBOX_DIRECTORY))
        self._sandbox_networks.append(network)
        return network

    def _notified(self, channel: str, payload: str | None) -> None:
        if channel == notify.SANDBOX:  # mail for an address: the network that collects it looks
            for network in self._sandbox_networks:
                network.mail_posted(payload)
        elif channel == notify.OUTBOUND:  # the outbox looks at the session named (at every one, without a name)
            self._outbox.notified(payload)
        elif channel == notify.CALLS:  # an engine call for a session named (None: look for missed ones)
            self._calls.notified(payload)
        elif channel == notify.PLACEMENTS:
            ref = named_session(payload)
            if ref is None or ref in self._hosted:  # what its owner wants of it changed: act at once
                self._reconcile_wanted = True

    async def start(self) -> None:
        """Announce the worker and start its loops."""
        await self._listener.start()
        async with self._manager.registry_transaction() as conn:
            await placements.heartbeat(conn, self.worker_id, socket.gethostname(), os.getpid(), self._capacity)
        self._tasks.spawn(self._recorder.consume(), name="events")
        self._tasks.spawn(self._lease_loop(), name="leases")
        self._tasks.spawn(self._placement_loop(), name="placements")
        self._tasks.spawn(self._measure_loop(), name="measure")
        self._tasks.spawn(self._outbox.run(), name="outbound")
        if "sandbox" in self._engines:
            self._tasks.spawn(self._mail_watch_loop(), name="mail_watch")
        log.info("worker.started", worker_id=self.worker_id, capacity=self._capacity, engines=list(self._engines))
        with contextlib.suppress(Exception):  # advice only: a server that does not answer is reported elsewhere
            if not await self._manager.autovacuum_on():
                # the outbox's claims walk the pending index's dead entries, which only VACUUM removes: each claim
                # costs more as messages are sent (README, Performance); planner statistics go stale too
                log.warning(
                    "worker.autovacuum_off",
                    advice="turn autovacuum on, or VACUUM ANALYZE the client schemas' messages tables regularly",
                )

    async def close(self) -> None:
        """Stop every hosted session (keys kept), free the leases at once and stop the loops.

        The sessions keep wanting to run: another worker claims them at once and restores them.
        """
        for ref, hosted in list(self._hosted.items()):
            if hosted.status in _PAIRING | _RECONNECTING | {SessionStatus.CONNECTED}:
                reason = "its worker stopped; another worker takes it over"
                self._recorder.put(StatusChanged(ref=ref, status=SessionStatus.DISCONNECTED, reason=reason))
        for name, engine in self._engines.items():
            try:
                await asyncio.wait_for(engine.close(), self.options.engine_timeout * 2)
            except Exception as exc:  # a hung engine must not keep the worker from exiting
                log.error("worker.engine_close_failed", engine=name, error=repr(exc))
        await asyncio.sleep(0)
        try:  # the recorder waits for a database that is away; a stop waits for it only so long
            await asyncio.wait_for(self._recorder.drain(), DRAIN_TIMEOUT)
        except TimeoutError:
            log.error("worker.events_not_drained", waiting=self._recorder.waiting)
        await self._tasks.close()
        try:  # a record of sends already taken into a transaction is finished, not dropped
            await asyncio.wait_for(self._outbox.close(), DRAIN_TIMEOUT)
        except TimeoutError:
            log.error("worker.records_not_finished")
        with contextlib.suppress(Exception):
            async with self._manager.registry_transaction() as conn:
                await placements.forget_worker(conn, self.worker_id)
        await self._listener.close()
        await self._media.close()
        log.info("worker.stopped", worker_id=self.worker_id)

    # -- placement: claim, renew, reconcile -------------------------------------------------------------

    async def _placement_loop(self) -> None:
        wake = self._listener.event(notify.PLACEMENTS)
        while not self.exhausted.is_set():
            wake.clear()
            try:
                if await self._claim():
                    self._reconcile_wanted = True  # announce the sessions taken (the heartbeat carries the count)
            except Exception as exc:
                log.warning("worker.claim_failed", error=repr(exc))
            await wait_set(wake, self._poll)
            # a storm of notifications for sessions placed elsewhere (a thousand created at once) makes this loop
            # claim on each, not renew every lease on each: that waits for the poll
            if not self._reconcile_wanted and time.monotonic() - self._reconciled_at < self._poll:
                continue
            self._reconcile_wanted = False
            try:
                await self._reconcile_now()
            except Exception as exc:  # the database away: this loop must outlive it (the lease loop tries too)
                log.warning("worker.renew_failed", error=repr(exc))

    async def _claim(self) -> int:
        """Take free sessions while there is room, up to this worker's share, and host them in the background;
        return how many were taken.

        Up to its share of the sessions that want to run (`placements.fair_share`) a worker claims at once; past
        it, only sessions that waited longer than half a lease for the others (full, stalled, dying) to take them.
        The hosting goes on in the background, so that the next round claims at once (issue 16).
        """
        room = self._capacity - len(self._hosted.keys() | self._claiming)
        refs: set[SessionRef] = set()
        committed = False
        try:
            async with self._manager.registry_transaction() as conn:
                engines = list(self._engines)
                claimed: list[Placement] = []
                if room > 0:
                    share = await placements.fair_share(conn, self.worker_id, engines, self._lease_ttl)
                    claimed = await placements.claim(conn, self.worker_id, engines, min(room, share), self._lease_ttl)
                    if len(claimed) == share < room:  # more may wait: those the others left for too long
                        claimed += await placements.claim(
                            conn, self.worker_id, engines, room - share, self._lease_ttl, waited=self._lease_ttl / 2
                        )
                # before the commit: a renewal that sees these leases as ours must not take them for orphans
                refs = {SessionRef(p.client_id, p.session_id) for p in claimed}
                self._claiming |= refs
                waiting = []
                if not claimed and room <= 0 and await placements.free_capacity(conn, self._lease_ttl) <= 0:
                    # no live worker has room: say so, rather than let the sessions wait in silence
                    waiting = await placements.unplaced(conn, engines)
            committed = True
        finally:
            if not committed:  # a commit that failed: whatever it claimed is an orphan now, released by renewals
                self._claiming -= refs
        claimed_at = time.monotonic()
        for placement in claimed:
            self._tasks.spawn(self._host_claimed(placement, claimed_at), name="host")
        for placement in waiting:
            reason = f"no worker has room for it (WHATSAPP_MAX_SESSIONS={self._capacity} each); it starts when one has"
            with contextlib.suppress(Exception):
                await self._recorder.record_unplaced(SessionRef(placement.client_id, placement.session_id), reason)
        return len(claimed)

    async def _host_claimed(self, placement: Placement, claimed_at: float) -> None:
        """Host a session claimed, HOST_AT_ONCE at a time; one that fails is left claimed and unhosted: an orphan,
        released by the renewals."""
        ref = SessionRef(placement.client_id, placement.session_id)
        try:
            async with self._hosting:
                await self._host(placement, claimed_at)
        except Exception as exc:
            log.warning("worker.host_failed", session=str(ref), error=repr(exc))
        finally:
            self._claiming.discard(ref)

    async def _measure_loop(self) -> None:
        """Count the outbound queue for the heartbeat's metrics now and then (a transaction per client hosted)."""
        while True:
            try:
                metrics.OUTBOUND_QUEUE.set(await queue_depth(self._manager, self._hosted))
            except Exception as exc:
                log.warning("worker.measure_failed", error=repr(exc))
            await asyncio.sleep(MEASURE_EVERY)

    async def _mail_watch_loop(self) -> None:
        """Look now and then for sandbox mail that nobody collects in the mailboxes of the sessions leased here.

        A session hosted here has its mail collected within a second; mail that waits, handed out to no one,
        far longer says that its session runs nowhere (the engine lost it: it is started again) or that the
        engine cannot keep up. Either way it is reported (`worker.mail_stuck`, `zapgate_sandbox_stuck_mail`),
        never left to wait unnoticed (issue 16).
        """
        network = PostgresSandboxNetwork(self._manager)
        while True:
            await asyncio.sleep(min(MEASURE_EVERY, self._stuck_mail_after / 2))
            try:
                stuck = await network.uncollected(self.worker_id, self._stuck_mail_after)
            except Exception as exc:  # the database away: next round
                log.warning("worker.mail_watch_failed", error=repr(exc))
                continue
            for ref, waiting, oldest in stuck:
                await self._mail_stuck(ref, waiting, oldest)

    async def _mail_stuck(self, ref: SessionRef, waiting: int, oldest: float) -> None:
        hosted = self._hosted.get(ref)
        if hosted is None:
            hosting = "none"  # leased here, hosted by nothing: the renewals release it (_release_orphans)
        elif ref in self._claiming or hosted.engine.hosts(ref):
            hosting = "engine"  # its engine has it: behind, or not collecting it for a reason unknown
        else:
            hosting = "lost"  # the worker hosts it, its engine does not: nothing collects its mail
        metrics.STUCK_MAIL.inc()
        log.error("worker.mail_stuck", session=str(ref), waiting=waiting, oldest_seconds=round(oldest), hosting=hosting)
        if hosted is not None and hosting == "lost" and self._hosted.get(ref) is hosted:
            await self._start_engine(ref, hosted)

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ttl / 3)
            try:
                await self._reconcile_now()
                self._watch_sessions()
            except Exception as exc:
                log.warning("worker.renew_failed", error=repr(exc))

    async def _reconcile_now(self) -> None:
        # before the renewal: a claim that commits while it runs may be missing from its answer
        renewing_since = self._reconciled_at = time.monotonic()
        # on a connection of its own: a renewal never waits behind the outbox's and recorder's transactions
        async with self._manager.lease_transaction() as conn:
            # set with no await before the heartbeat takes them: another worker in the process (tests) sets them too
            metrics.HOSTED_SESSIONS.set(len(self._hosted))
            metrics.ABANDONED_CLIENTS.set(self.abandoned)
            await placements.heartbeat(
                conn, self.worker_id, socket.gethostname(), os.getpid(), self._capacity, metrics.process_text()
            )
            current = {
                SessionRef(p.client_id, p.session_id): p
                for p in await placements.renew(conn, self.worker_id, self._lease_ttl)
            }
        await self._release_orphans(current)
        for ref, hosted in list(self._hosted.items()):
            placement = current.get(ref)
            if placement is None and hosted.claimed_at >= renewing_since:
                # claimed while this renewal ran (on its own connection): its answer predates the claim. Taken for
                # gone, the session was stopped and let go of while its start went on, then claimed by another
                # worker: two workers hosted it, and one's stale QR timeout ended the other's sending (issue 16)
                continue
            if placement is None:  # deleted, or our lease was taken over after we stalled
                await self._unhost(ref, stop=True)
            elif placement.desired == "stopped":
                await self._unhost(ref, stop=True, reason="stopped on request")
            elif placement.desired == "logged_out":
                await self._logout(ref)
            elif placement.generation != hosted.started_generation:
                hosted.placement = placement
                await self._start_engine(ref, hosted)

    async def _release_orphans(self, current: dict[SessionRef, Placement]) -> None:
        """Release the leases we hold on sessions nothing here hosts, once they stayed so for a renewal period.

        A renewal extends every lease of this worker, hosted or not: a session claimed whose start failed, and
        whose release failed too (the pool exhausted on a busy machine), or a claim whose commit we never saw,
        would be leased for ever and run nowhere, its status still the one its last host recorded ("connected")
        and its sandbox mailbox never collected (issue 16). Released, it is claimed and started again.
        """
        self._settling &= current.keys()
        now = time.monotonic()
        unhosted = {
            ref
            for ref in current
            if ref not in self._hosted and ref not in self._claiming and ref not in self._settling
        }
        self._orphans = {ref: self._orphans.get(ref, now) for ref in unhosted}
        for ref, since in list(self._orphans.items()):
            if now - since >= self._lease_ttl / 3:
                log.warning("worker.orphan_released", session=str(ref), reason="leased here but hosted by nothing")
                metrics.ORPHANED_LEASES.inc()
                await self._release(ref)

    async def _host(self, placement: Placement, claimed_at: float) -> None:
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
        spec = self._specs[placement.engine]
        pacing = self.options.pacing.get(placement.engine, spec.pacing)
        engine = self._engines[placement.engine]
        # whatever the row says, nothing is connected here until the engine reports it
        hosted = self._hosted[ref] = Hosted(placement, session.id, placement.generation, engine, pacing)
        hosted.claimed_at = claimed_at
        await self._start_engine(ref, hosted, jid=session.jid)

    async def _start_engine(self, ref: SessionRef, hosted: Hosted, jid: str | None = None) -> None:
        placement = hosted.placement
        engine = hosted.engine
        if engine.hosts(ref) and not await self._stop_engine(ref, hosted):
            await self._release(ref)  # abandoned: no longer hosted here; another start may fare better
            return
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
        hosted.last_active = hosted.started_at = time.monotonic()
        hosted.ever_connected = False
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
            if self._specs[placement.engine].uses_keystore:
                await self._provision_keystore(ref.client_id)
            if self._hosted.get(ref) is not hosted:  # let go of meanwhile: never start what is no longer ours
                return
            await self._bounded(engine.start(request), "start")
        except EngineError as exc:
            self._fail(ref, exc.code, exc.message)
            await self._clear_failed_start(ref, hosted)
        except Exception as exc:
            self._fail(ref, "start_failed", str(exc))
            await self._clear_failed_start(ref, hosted)

    async def _clear_failed_start(self, ref: SessionRef, hosted: Hosted) -> None:
        """Stop what a failed start left in the engine: a start cut off by the bound may have left the session
        half made there, hosted but never connected, its mail never collected (issue 16)."""
        if hosted.engine.hosts(ref):
            await self._stop_engine(ref, hosted)

    def _fail(self, ref: SessionRef, code: str, message: str) -> None:
        self._recorder.put(EngineFailure(ref=ref, code=code, message=message))
        self._recorder.put(StatusChanged(ref=ref, status=SessionStatus.FAILED, reason=message, code=code))

    async def _bounded(self, call: Awaitable[T], name: str) -> T:
        """Await an engine call for at most `engine_timeout` seconds (EngineError when it takes longer)."""
        try:
            return await asyncio.wait_for(call, self.options.engine_timeout)
        except TimeoutError as exc:
            metrics.ENGINE_CALL_TIMEOUTS.labels(name).inc()
            raise EngineError(f"the engine did not finish the {name} in {self.options.engine_timeout:g} s") from exc

    async def _stop_engine(self, ref: SessionRef, hosted: Hosted) -> bool:
        """Stop the session's engine client within the bound; abandon it if it will not. Return whether it stopped."""
        try:
            await asyncio.wait_for(hosted.engine.stop(ref), self.options.engine_timeout)
            return True
        except (TimeoutError, StopTimedOut) as exc:
            self._abandon(ref, hosted, repr(exc))
        except Exception as exc:  # the engine failed to stop cleanly; it no longer runs the session either way
            log.warning("worker.stop_failed", session=str(ref), error=repr(exc))
            return True
        return False

    def _abandon(self, ref: SessionRef, hosted: Hosted, why: str) -> None:
        """Give up on a client whose stop does not return: unhost the session, release it, count it."""
        hosted.engine.abandon(ref)
        self.abandoned += 1
        metrics.ABANDONED_CLIENTS.set(self.abandoned)
        log.error(
            "worker.client_abandoned",
            session=str(ref),
            abandoned=self.abandoned,
            bound=self.options.max_abandoned,
            error=why,
        )
        if self._hosted.get(ref) is hosted:
            self._hosted.pop(ref, None)
        if self.abandoned > self.options.max_abandoned and not self.exhausted.is_set():
            log.error("worker.draining", reason="too many abandoned engine clients", abandoned=self.abandoned)
            self.exhausted.set()  # the process exits and its supervisor starts a fresh one

    async def _unhost(self, ref: SessionRef, *, stop: bool, reason: str | None = None) -> None:
        """Stop hosting `ref`; with a `reason`, record it as stopped (it rests until restarted)."""
        hosted = self._hosted.pop(ref, None)
        if hosted is None:
            return
        log.info("worker.session_released", session=str(ref), reason=reason or "no longer ours")
        if reason is not None:
            self._settling.add(ref)  # its lease goes with the rest recorded (placements.settle)
        if stop:
            await self._stop_engine(ref, hosted)  # abandoned or not, the session is no longer hosted here
        if reason is not None:
            self._recorder.put(StatusChanged(ref=ref, status=SessionStatus.STOPPED, reason=reason))
        else:
            await self._release(ref)

    async def _logout(self, ref: SessionRef) -> None:
        hosted = self._hosted.get(ref)
        if hosted is None:
            return
        try:
            await self._bounded(hosted.engine.logout(ref), "logout")
        except EngineError as exc:
            # WhatsApp cannot be told (offline): end the session and delete its keys ourselves
            if hosted.engine.hosts(ref):
                await self._stop_engine(ref, hosted)
            if self._specs[hosted.placement.engine].uses_keystore:
                await self._forget_device(ref)
            self._recorder.put(EngineFailure(ref=ref, code=exc.code, message=exc.message))
            self._recorder.put(StatusChanged(ref=ref, status=SessionStatus.LOGGED_OUT, reason="logged out"))

    async def _provision_keystore(self, client: str) -> None:
        """Make sure the engine has this client's key store (a role and schema of its own) and its DSN."""
        if client in self._keystore_dsns:
            return
        async with self._provisioning:  # sessions start several at once: one provisioning (one password) each
            if client in self._keystore_dsns:
                return
            async with self._manager.registry_transaction() as conn:
                self._keystore_dsns[client] = await provision_keystore(conn, client, self._database_url)

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

    # -- watchdogs: pairing that takes too long, reconnections that do not come back -----------------

    def _watch_sessions(self) -> None:
        now = time.monotonic()
        for ref, hosted in list(self._hosted.items()):
            if hosted.status is SessionStatus.CONNECTED:
                hosted.ever_connected = True
                continue
            if hosted.status in _PAIRING and not hosted.ever_connected:
                if now - hosted.started_at > self._session_timeout:
                    reason = f"not paired within {self._session_timeout:g} s (WHATSAPP_SESSION_TIMEOUT)"
                    log.info("worker.session_timeout", session=str(ref), reason=reason)
                    hosted.started_at = now  # once
                    self._tasks.spawn(self._unhost(ref, stop=True, reason=reason), name="timeout")
            elif hosted.status in _RECONNECTING and now - hosted.status_since > self.options.reconnect_window:
                window = self.options.reconnect_window
                hosted.status_since = now  # once
                self._tasks.spawn(self._give_up_reconnecting(ref, hosted, window), name="watchdog")

    async def _give_up_reconnecting(self, ref: SessionRef, hosted: Hosted, window: float) -> None:
        reason = f"the connection did not come back within {window:g} s (ZAPGATE_RECONNECT_WINDOW)"
        log.warning("worker.reconnect_timeout", session=str(ref), window=window)
        if self._hosted.get(ref) is not hosted:
            return
        self._hosted.pop(ref, None)
        self._settling.add(ref)  # its lease goes with the failure recorded (placements.settle)
        await self._stop_engine(ref, hosted)
        self._recorder.put(StatusChanged(ref, SessionStatus.FAILED, reason=reason, code="reconnect_timeout"))
