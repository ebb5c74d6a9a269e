"""Recording what engines report: every event is stored, with its event-log row, before anyone hears of it.

Engine events arrive on one queue per worker, in order for each session (a session's status or QR code goes
ahead of other sessions' backlog). Each is stored in a transaction of its client's schema: a client's arrived
messages and receipts of a batch share one. An engine that can hold an event until it is stored (the
sandbox's mailbox, whatsmeow's event thread) is told with the event's `ack` once it is.

What WhatsApp sends is made storable first (a NUL byte or a lone surrogate in a text or a name would fail
the transaction, and with it every event behind it). A database that is away is waited for, however long
it takes: nothing an engine reported is dropped for it. An event the database still refuses is a data
error: it is never retried; what can be kept is stored, with an `error` event saying what was lost.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, ClassVar

from zapgate import metrics
from zapgate.background import TaskGroup
from zapgate.db import chats as chat_rows
from zapgate.db import contacts, notify, placements
from zapgate.db import groups as group_records
from zapgate.db import media as media_records
from zapgate.db.conversation import Target
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.domain.chats import state_columns
from zapgate.domain.contacts import ContactIds, ContactUpdate, Sighting, picture_change, sighting
from zapgate.domain.content import Edit, Media, MessageKey, Quote, Revoke, Text, kind_of, summary, to_payload
from zapgate.domain.events import EventType, status_change_payload
from zapgate.domain.groups import PARTICIPANT_ACTIONS, GroupAction, group_event, storable_info
from zapgate.domain.ids import new_id
from zapgate.domain.phones import GROUP_SERVER, USER_SERVER, jid_user
from zapgate.domain.records import Contact, MessageStatus, Session
from zapgate.domain.sessions import SessionStatus, can_transition
from zapgate.domain.storable import storable, storable_json, storable_or_none
from zapgate.engines.base import (
    BlocklistChanged,
    ChatChanged,
    ContactPictureChanged,
    EngineEvent,
    EngineFailure,
    GroupChanged,
    InboundMessage,
    MediaReuploaded,
    Notice,
    NoticeKind,
    PairingCode,
    PresenceSeen,
    QrCode,
    Receipt,
    SessionRef,
    StatusChanged,
)
from zapgate.errors import InvalidRequest, SessionNotFound
from zapgate.log import get_logger
from zapgate.services.contact_events import announce, contact_entries
from zapgate.services.conversation import ACTING, Actor, apply, target_of
from zapgate.services.downloads import Downloads, file_kind
from zapgate.services.hosted import HostedSessions
from zapgate.services.media import MediaFiles
from zapgate.services.patience import database_away
from zapgate.services.qr import qr_data_url
from zapgate.services.receipts import Ack, EventEntry, ReceiptBook, acks_of

log = get_logger(__name__)

# events a client's batch stores in one transaction, in their order
TOGETHER = (Receipt, InboundMessage)
# a session's lifecycle, stored before other sessions' backlog when nothing of its own session waits
URGENT = (StatusChanged, QrCode, PairingCode, EngineFailure)
EVENT_BATCH = 500  # engine events stored per round (a client's messages and receipts share a transaction)
STORE_ATTEMPTS = 5  # tries for an event the database fails for another reason than being away
STATUS_BROADCAST = "status@broadcast"  # the chat of contacts' stories
PRESENCE_REPEAT_WINDOW = 10.0  # seconds within which the same presence of a contact in a chat is told once
PRESENCE_MEMORY = 100_000  # (session, contact, chat) presences remembered for that, at most

# statuses after which a session rests until someone starts it again
RESTING = {
    SessionStatus.STOPPED: "stopped",
    SessionStatus.FAILED: "stopped",
    SessionStatus.QR_TIMEOUT: "stopped",
    SessionStatus.LOGGED_OUT: "logged_out",
}


class Recorder:
    """Store what the engines of one worker report, in order."""

    def __init__(
        self,
        manager: ConnectionManager,
        hosted: HostedSessions,
        *,
        keep_stories: bool = False,
        erase_deleted: bool = False,
        on_connected: Callable[[SessionRef], None] = lambda ref: None,
        media: MediaFiles | None = None,
        tasks: TaskGroup | None = None,
    ) -> None:
        self._manager = manager
        self._hosted = hosted
        self._keep_stories = keep_stories
        self.erase_deleted = erase_deleted
        self._on_connected = on_connected
        self._media = media
        self.downloads = None if media is None or tasks is None else Downloads(manager, hosted, media, tasks)
        self.receipts = ReceiptBook(hosted)
        self._queue: deque[EngineEvent] = deque()
        # a session's lifecycle (a status, a QR code) when nothing of it waits: stored ahead of other sessions'
        # backlog (a QR code expires, and a session that moved is not connected until its status is stored)
        self._urgent: deque[EngineEvent] = deque()
        self._behind: Counter[SessionRef] = Counter()  # events of each session waiting in `_queue`
        self._in_batch: set[SessionRef] = set()  # sessions with events in the batch being stored
        self._urgent_next: deque[EngineEvent] = deque()  # urgent, of a session in that batch: first of the next
        self._ready = asyncio.Event()
        # (session, whose, chat) → ((presence, last seen) last told, monotonic time it was told)
        self._presences: dict[tuple[SessionRef, str, str | None], tuple[tuple[Any, Any], float]] = {}

    def put(self, event: EngineEvent) -> None:
        """Queue an event to be stored (the engines' sink)."""
        if (
            isinstance(event, Receipt)
            and not self._behind[event.ref]
            and event.ref not in self._in_batch
            and self.receipts.held(event)
        ):
            return  # nothing of its session waits or is being stored: held now, as storing it would hold it
        if isinstance(event, URGENT) and not self._behind[event.ref]:
            # after the session's other urgent ones, if any: in order. Stored between the runs of the batch being
            # stored, unless the session has events in it: then first in the next batch
            (self._urgent_next if event.ref in self._in_batch else self._urgent).append(event)
        else:
            self._queue.append(event)
            self._behind[event.ref] += 1
        self._ready.set()

    @property
    def waiting(self) -> int:
        """Events put and not taken to be stored yet."""
        return len(self._urgent) + len(self._urgent_next) + len(self._queue)

    def _take(self) -> list[EngineEvent]:
        """Up to EVENT_BATCH events, urgent ones first (each session's events stay in their order)."""
        batch: list[EngineEvent] = []
        while self._urgent and len(batch) < EVENT_BATCH:
            batch.append(self._urgent.popleft())
        while self._queue and len(batch) < EVENT_BATCH:
            event = self._queue.popleft()
            batch.append(event)
            self._behind[event.ref] -= 1
            if not self._behind[event.ref]:
                del self._behind[event.ref]
        self._in_batch = {event.ref for event in batch}
        if self._urgent:  # more urgent events wait than a batch holds: those of a session in it come after it
            left: deque[EngineEvent] = deque()
            for event in self._urgent:
                (self._urgent_next if event.ref in self._in_batch else left).append(event)
            self._urgent = left
        return batch

    async def consume(self) -> None:
        """Store queued events for ever, in batches."""
        while True:
            while not self.waiting:
                self._ready.clear()
                await self._ready.wait()
            await self._store_taken()

    async def drain(self) -> None:
        """Store whatever is queued now."""
        while self.waiting:
            await self._store_taken()

    async def _store_taken(self) -> None:
        try:
            await self.store_batch(self._take())
        finally:
            self._in_batch = set()
            self._urgent.extendleft(reversed(self._urgent_next))
            self._urgent_next.clear()

    async def _store_urgent(self) -> None:
        """Store the lifecycle events that came while a batch is being stored, between two of its runs.

        A batch of a busy worker is many transactions; a status that came meanwhile waited for all of them: the
        sessions a worker took over from a dead one were started within 9 s of their claims, and their
        `connecting` was stored 10 s after that (issue 16). An urgent event's session has nothing in the batch
        (`put`, and `_take` for those left over from a full batch), so storing it now keeps each session's events
        in order.
        """
        while self._urgent:
            event = self._urgent.popleft()
            await self._with_retries(partial(self._store, event), [event])

    async def store_batch(self, batch: list[EngineEvent]) -> None:
        """Store events in their order for each session. A client's receipts and arrived messages in the batch
        go in one transaction, stored before the next other event of any of their sessions (or at the batch's
        end): at 1,000 sessions over 100 clients a worker's queue interleaves clients, and a transaction per
        message was what held a busy worker behind."""
        waiting: dict[str, list[EngineEvent]] = {}  # client → its receipts and messages not stored yet, in order
        sessions: dict[str, set[SessionRef]] = {}  # client → the sessions those are of
        for event in batch:
            client = event.ref.client_id
            if isinstance(event, TOGETHER):
                waiting.setdefault(client, []).append(event)
                sessions.setdefault(client, set()).add(event.ref)
                continue
            if event.ref in sessions.get(client, ()):
                del sessions[client]
                await self._store_run(waiting.pop(client))
            await self._with_retries(partial(self._store, event), [event])
            await self._store_urgent()
        for run in waiting.values():
            await self._store_run(run)
            await self._store_urgent()

    async def _store_run(self, run: list[EngineEvent]) -> None:
        ready = [
            each
            for event in run
            for each in (self.receipts.not_overtaking([event]) if isinstance(event, Receipt) else [event])
        ]
        if ready:
            await self._with_retries(partial(self._store_together, ready), ready)

    async def _with_retries(self, store: Callable[[], Awaitable[list[Ack]]], events: list[EngineEvent]) -> None:
        """Store, waiting for a database that is away; then acknowledge what was stored.

        A run the database refuses (or keeps failing) is stored again one event at a time: one bad message
        costs only itself.
        """
        event = events[0]
        attempt = 0
        while True:
            try:
                acks = await store()
            except SessionNotFound:
                acks = [ack for each in events for ack in acks_of(each)]  # deleted meanwhile: nothing to keep
            except InvalidRequest as exc:  # the database refuses the data itself: retrying cannot help
                if len(events) > 1:
                    await self._one_by_one(events)
                    return
                acks = await self._store_what_can_be_kept(event, exc)
            except Exception as exc:
                attempt += 1
                away = database_away(exc)
                log.warning("worker.store_failed", kind=type(event).__name__, attempt=attempt, error=repr(exc))
                if away or attempt < STORE_ATTEMPTS:
                    await asyncio.sleep(min(0.2 * 2 ** min(attempt, 8), 5.0))
                    continue
                if len(events) > 1:
                    await self._one_by_one(events)
                    return
                # not acknowledged: an engine that can (the sandbox; whatsmeow up to its wait) hands it over again
                log.error("worker.event_not_stored", kind=type(event).__name__, session=str(event.ref))
                return
            for ack in acks:
                ack()
            return

    async def _one_by_one(self, events: list[EngineEvent]) -> None:
        log.warning("worker.run_split", client=events[0].ref.client_id, events=len(events))
        for each in events:
            await self._with_retries(partial(self._store_together, [each]), [each])

    async def _store_what_can_be_kept(self, event: EngineEvent, exc: InvalidRequest) -> list[Ack]:
        """Store an `error` event in place of an event the database refused (and, for a message, its id)."""
        log.error("worker.event_unstorable", kind=type(event).__name__, session=str(event.ref), error=exc.message)
        details: dict[str, Any] = {"kind": type(event).__name__}
        if isinstance(event, InboundMessage):
            details.update(messageId=storable(event.message_id), chatJid=storable(event.chat_jid))
        payload = {
            "code": "event_not_storable",
            "message": "WhatsApp reported something the database could not store; its content was lost",
            "retryable": False,
            "details": details,
        }

        async def work(tx: Transaction) -> None:
            await append(tx, event.ref, EventType.ERROR, payload)

        try:
            await self._manager.execute_transaction(event.ref.client_id, work)
        except Exception as again:
            log.error("worker.error_event_not_stored", session=str(event.ref), error=repr(again))
        return acks_of(event)

    async def _store(self, event: EngineEvent) -> list[Ack]:
        hosted = self._hosted.get(event.ref)
        if hosted is not None:
            hosted.last_active = time.monotonic()
        if isinstance(event, Receipt):
            return await self._store_receipts([event])
        if isinstance(event, InboundMessage):
            return await self._store_together([event])
        store = self._stores.get(type(event))
        if store is not None:
            await store(self, event)
        return acks_of(event)

    # how each kind of event but receipts (stored in runs) is stored: filled in below the class
    _stores: ClassVar[dict[type, Callable[[Recorder, Any], Awaitable[None]]]] = {}

    # -- sessions -------------------------------------------------------------------------------------

    async def _store_status(self, event: StatusChanged) -> None:
        ref = event.ref
        hosted = self._hosted.get(ref)

        async def work(tx: Transaction) -> None:
            session = await tx.session.find_unique(ref.session_id)
            if session is None:
                raise SessionNotFound(f"session {ref} not found")
            previous = SessionStatus(session.status)
            if not can_transition(previous, event.status):
                log.warning("session.odd_transition", session=str(ref), previous=previous.value, new=event.status.value)
            changes = status_changes(event)
            await tx.session.update(ref.session_id, **changes)
            if previous != event.status:
                payload = status_change_payload(
                    event.status.value,
                    previous.value,
                    storable_or_none(event.reason),
                    code=event.code,
                    details=storable_json(dict(event.details)) if event.details else None,
                    engine=session.engine,
                    phone_number=changes.get("phone_number", session.phone_number),
                )
                await append(tx, ref, EventType.STATUS_CHANGE, payload)
            resting = RESTING.get(event.status)
            if resting is not None:
                await placements.settle(tx.connection, ref.client_id, ref.session_id, resting)
            if event.status is SessionStatus.CONNECTED:
                await notify.notify(tx.connection, notify.OUTBOUND, f"{ref.client_id}/{ref.session_id}")

        await self._manager.execute_transaction(ref.client_id, work)
        if hosted is not None and self._hosted.get(ref) is hosted:
            hosted.enter(event.status)
            if event.status in RESTING:
                self._hosted.pop(ref, None)
            elif event.status is SessionStatus.CONNECTED:
                self._on_connected(ref)
                if self.downloads is not None:
                    self.downloads.wake(ref)  # files that arrived before a crash or a move are due

    async def record_unplaced(self, ref: SessionRef, reason: str) -> None:
        """Record that no worker has room for the session (an `unplaced` status and an `error` event)."""

        async def work(tx: Transaction) -> None:
            session = await tx.session.find_unique(ref.session_id)
            if session is None or session.status == SessionStatus.UNPLACED:
                return
            if not can_transition(SessionStatus(session.status), SessionStatus.UNPLACED):
                return
            await tx.session.update(ref.session_id, status=SessionStatus.UNPLACED.value, last_error=reason)
            payload = status_change_payload("unplaced", session.status, reason, code="no_capacity")
            await append(tx, ref, EventType.STATUS_CHANGE, payload)
            await append(tx, ref, EventType.ERROR, {"code": "no_capacity", "message": reason})

        await self._manager.execute_transaction(ref.client_id, work)

    async def _store_qr(self, event: QrCode) -> None:
        ref = event.ref

        async def work(tx: Transaction) -> None:
            session = await tx.session.update(ref.session_id, qr_code=event.code, qr_expires_at=event.expires_at)
            await append(
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
            await append(tx, ref, EventType.PAIRING_CODE, payload)

        await self._manager.execute_transaction(ref.client_id, work)

    async def _store_failure(self, event: EngineFailure) -> None:
        ref = event.ref
        payload: dict[str, Any] = {
            "code": event.code,
            "message": storable(event.message),
            "retryable": event.retryable,
        }
        if event.details:
            payload["details"] = storable_json(dict(event.details))

        async def work(tx: Transaction) -> None:
            await tx.session.update(ref.session_id, last_error=payload["message"])
            await append(tx, ref, EventType.ERROR, payload)

        await self._manager.execute_transaction(ref.client_id, work)

    async def _store_notice(self, event: Notice) -> None:
        ref = event.ref
        kind = {
            NoticeKind.UNDECRYPTABLE: EventType.MESSAGE_UNDECRYPTABLE,
            NoticeKind.HISTORY_SYNC: EventType.HISTORY_SYNC,
            NoticeKind.KEEPALIVE_TIMEOUT: EventType.CONNECTION_HEALTH,
            NoticeKind.KEEPALIVE_RESTORED: EventType.CONNECTION_HEALTH,
        }[event.kind]
        if event.kind is NoticeKind.KEEPALIVE_TIMEOUT:
            metrics.KEEPALIVE.labels("timeout").inc()
        elif event.kind is NoticeKind.KEEPALIVE_RESTORED:
            metrics.KEEPALIVE.labels("restored").inc()
        payload: dict[str, Any] = {"notice": event.kind.value, **storable_json(dict(event.details))}
        if event.timestamp is not None:
            payload["timestamp"] = event.timestamp.isoformat()

        async def work(tx: Transaction) -> None:
            await append(tx, ref, kind, payload)

        await self._manager.execute_transaction(ref.client_id, work)

    # -- messages that arrive ---------------------------------------------------------------------------

    def _prepare(self, event: InboundMessage) -> _Arriving | None:
        """An arrived message made ready to store (None: a contact's story, not kept)."""
        if event.chat_jid == STATUS_BROADCAST and not self._keep_stories:
            return None  # contacts' stories are not messages (ZAPGATE_KEEP_STORIES keeps them, as kind "story")
        file = None
        if isinstance(event.content, Media) and event.content.handle is not None and self.downloads is not None:
            file = replace(event.content, media_id=new_id())  # stored once downloaded (services/downloads.py)
            event = replace(event, content=file)
        return _Arriving(event, _Arrival.of(event), file)

    async def _arrive(
        self, tx: Transaction, arriving: _Arriving, sessions: dict[str, Session | None]
    ) -> list[EventEntry] | None:
        """Store an arrived message; return its events to append (None: its session is gone, or it was seen
        before)."""
        event, arrival, file = arriving.event, arriving.arrival, arriving.file
        ref = event.ref
        if ref.session_id not in sessions:
            sessions[ref.session_id] = await tx.session.find_unique(ref.session_id)
        session = sessions[ref.session_id]
        if session is None:
            return None  # deleted meanwhile: nothing to keep
        updates: list[ContactUpdate] = []
        contact = await _contact_of(tx, session.id, arrival, event, updates)
        entries = contact_entries(ref.session_id, updates)  # a new push name, ids merged: before the message
        context = None if arrival.context is None else dict(arrival.context)
        if context is not None and event.quote is not None:
            quoted = await target_of(tx, session.id, event.quote.key)
            if quoted is not None:
                context["message_id"] = quoted.message_id  # ours, the public id, when we have it
        in_group = arrival.is_group or arrival.story
        inserted = await tx.message.insert_if_new(
            session_id=session.id,
            contact_id=contact.id,
            message_id=arrival.message_id,
            wa_message_id=arrival.message_id,
            content=arrival.text,
            type=arrival.kind,
            direction="outbound" if event.from_me else "inbound",
            status=MessageStatus.SENT.value if event.from_me else MessageStatus.DELIVERED.value,
            timestamp=event.timestamp,
            chat_jid=arrival.chat,
            sender_jid=arrival.sender if in_group else None,
            sender_lid=arrival.sender_lid if in_group else None,
            source="phone" if event.from_me else None,
            payload=arrival.payload,
            context=context,
            mentions=arrival.mentions,
        )
        if not inserted:
            return None  # seen before (WhatsApp redelivers, or our own send echoed): stored once, announced once
        target, acted = await apply(
            tx,
            session_id=ref.session_id,
            session_row=session.id,
            content=event.content,
            actor=Actor(from_me=event.from_me, jid=None if event.from_me else arrival.sender),
            at=event.timestamp,
            erase_deleted=self.erase_deleted,
        )
        body = {"sessionId": ref.session_id, **arrival.body(event, session.engine, context, target)}
        body.update(contact_fields(contact))
        if file is not None:
            await self._await_file(tx, session.id, inserted, file, body)  # announced once it is downloaded
        elif not isinstance(event.content, Edit | Revoke):  # those are announced as such, not as messages
            entries.append((EventType.MESSAGE_RECEIVED.value, ref.session_id, body))
        entries.extend((kind, sid, {**payload, **contact_fields(contact)}) for kind, sid, payload in acted)
        return entries

    async def _store_together(self, events: list[EngineEvent]) -> list[Ack]:
        """Store receipts and arrived messages of one client in one transaction, in their order, with their
        events appended in one statement at its end (so the client's event lock is held only for that).

        Returns the acknowledgements of the events (receipts deferred by `not_overtaking` are not among them).
        """
        client = events[0].ref.client_id
        now = time.monotonic()
        for event in events:
            if (hosted := self._hosted.get(event.ref)) is not None:
                hosted.last_active = now
        items = [self._prepare(event) if isinstance(event, InboundMessage) else event for event in events]
        stored: list[_Arriving] = []
        counted: list[MessageStatus] = []

        async def work(tx: Transaction) -> None:
            stored.clear()  # a retried transaction starts again
            counted.clear()
            sessions: dict[str, Session | None] = {}
            entries: list[EventEntry] = []
            receipts: list[Receipt] = []
            for item in [*items, None]:
                if isinstance(item, Receipt):
                    receipts.append(item)
                    continue
                if receipts:  # a run of receipts, before what follows it
                    steps = await self.receipts.advance(tx, client, receipts)
                    counted.extend(MessageStatus(payload["status"]) for _, _, payload in steps)
                    entries.extend(steps)
                    receipts = []
                if isinstance(item, _Arriving) and (told := await self._arrive(tx, item, sessions)) is not None:
                    entries.extend(told)
                    stored.append(item)
            await tx.event.append_many(entries)

        await self._manager.execute_transaction(client, work)
        self._stored(counted, stored, skipped=items.count(None))
        return [ack for event in events for ack in acks_of(event)]

    def _stored(self, steps: list[MessageStatus], arrived: list[_Arriving], *, skipped: int) -> None:
        """Count what a transaction stored; files that arrived are due for download."""
        for status in steps:
            metrics.MESSAGES.labels("outbound", status.value).inc()
        if skipped:
            metrics.MESSAGES.labels("inbound", "story_skipped").inc(skipped)
        for arriving in arrived:
            metrics.MESSAGES.labels("outbound" if arriving.event.from_me else "inbound", "received").inc()
            if arriving.file is not None and self.downloads is not None:
                self.downloads.wake(arriving.event.ref)

    async def _await_file(
        self, tx: Transaction, session_row: str, message_row: str, file: Media, body: dict[str, Any]
    ) -> None:
        """Keep an arrived file's record pending, with its handle and the event to announce once it is settled."""
        assert self._media is not None and file.media_id is not None and file.handle is not None
        await media_records.insert_pending(
            tx.connection,
            session_row_id=session_row,
            kind=file_kind(file),
            mime_type=storable(file.mime_type or "application/octet-stream"),
            store=self._media.store.name,
            message_row_id=message_row,
            filename=storable_or_none(file.filename),
            media_id=file.media_id,
        )
        await media_records.await_download(tx.connection, file.media_id, handle=file.handle, announce=body)

    async def _store_reupload(self, event: MediaReuploaded) -> None:
        """The phone uploaded a file again (or could not): download it anew, or let it fail."""
        ref = event.ref

        async def work(tx: Transaction) -> list[str]:
            session = await tx.session.find_unique(ref.session_id)
            if session is None:
                return []
            found = await target_of(tx, session.id, MessageKey(id=event.message_id))
            if found is None:
                return []
            if event.handle is None:
                return [r.id for r in await media_records.list_for_message(tx.connection, found.row_id)]
            return await media_records.new_handle(tx.connection, session.id, found.row_id, event.handle)

        ids = await self._manager.execute_transaction(ref.client_id, work)
        if self.downloads is None or not ids:
            return
        if event.handle is None:
            error = f"the phone no longer has the file ({event.error or 'it could not upload it again'})"
            await self.downloads.gone(ref, ids, error)
        else:
            self.downloads.wake(ref)

    # -- groups ---------------------------------------------------------------------------------------

    async def _store_group_change(self, event: GroupChanged) -> None:
        """Refresh the stored group by a change, with its event (group-update, -participants, -join, -leave)."""
        event = _storable_group_change(event)
        ref = event.ref
        setting = _GROUP_SETTINGS.get(event.action)
        told = _EVENT_VALUES.get(event.action)
        value = None if told is None else getattr(event, told)
        kind, payload = group_event(
            event.action,
            event.group_jid,
            actor=event.actor_jid,
            timestamp=event.timestamp,
            participants=event.participants,
            value=value,
            reason=event.reason,
            info=event.info,
        )

        async def work(tx: Transaction) -> None:
            session = await tx.session.find_unique(ref.session_id)
            if session is None:
                raise SessionNotFound(f"session {ref} not found")
            conn = tx.connection
            if event.info is not None:
                await group_records.save_info(conn, session.id, event.info)
            if event.action is GroupAction.LEFT:
                await group_records.mark_left(conn, session.id, event.group_jid, event.timestamp)
            elif event.action in PARTICIPANT_ACTIONS:
                await group_records.change_participants(
                    conn, session.id, event.group_jid, event.action.value, event.participants
                )
            elif setting is not None and (value is not None or event.reason == "removed"):
                await group_records.update_settings(conn, session.id, event.group_jid, {setting: value})
            await append(tx, ref, kind, payload)

        await self._manager.execute_transaction(ref.client_id, work)

    # -- chats and presence (issue 14) -----------------------------------------------------------------

    async def _store_chat_change(self, event: ChatChanged) -> None:
        """The phone changed a chat's state (archived, pinned, muted, read): record it, with a chat-update event."""
        ref = event.ref
        chat = storable(event.chat_jid)
        is_group = chat.endswith("@" + GROUP_SERVER)

        async def work(tx: Transaction) -> None:
            session = await tx.session.find_unique(ref.session_id)
            if session is None:
                raise SessionNotFound(f"session {ref} not found")
            updates: list[ContactUpdate] = []
            seen = sighting(chat, is_group=is_group)
            contact = await contacts.identify(tx.connection, session.id, seen, updates=updates)
            assert contact is not None  # a chat always names someone: made if new
            await announce(tx, ref.session_id, updates)
            columns = state_columns(event.state, at=event.timestamp)
            if columns:
                await chat_rows.set_state(tx.connection, session.id, contact.id, columns)
            if event.state.read:
                await chat_rows.read_all(tx.connection, contact.id, up_to=event.timestamp)
            payload = {
                "chatId": contact.id,
                "chat": contact.phone_number,
                "chatJid": chat,
                "isGroup": is_group,
                "changes": event.state.changes(),
                "source": "phone",
                "timestamp": event.timestamp.isoformat(),
                **contact_fields(contact),
            }
            await append(tx, ref, EventType.CHAT_UPDATE, payload)

        await self._manager.execute_transaction(ref.client_id, work)

    def _repeated(self, event: PresenceSeen) -> bool:
        """Whether `event` only repeats the presence last told of that contact in that chat, moments ago.

        A phone says "typing" again every few seconds while its user types, and a busy group's members do so
        all day: each repeat would be an event row and a webhook delivery that tell nothing new.
        """
        now = time.monotonic()
        key = (event.ref, event.jid, event.chat_jid)
        shown = (event.presence, event.last_seen)
        told = self._presences.get(key)
        if told is not None and told[0] == shown and now - told[1] < PRESENCE_REPEAT_WINDOW:
            return True
        if len(self._presences) >= PRESENCE_MEMORY:
            self._presences.clear()  # forgetting only lets a repeat through
        self._presences[key] = (shown, now)
        return False

    async def _store_presence(self, event: PresenceSeen) -> None:
        """A contact's presence: a `presence` event (nothing else is kept); a repeat within seconds is dropped."""
        if self._repeated(event):
            metrics.PRESENCE_REPEATS.inc()
            return
        payload: dict[str, Any] = {
            "jid": storable(event.jid),
            "lid": storable_or_none(event.lid),
            "presence": event.presence.value,
            "chatJid": storable_or_none(event.chat_jid),
            "lastSeen": event.last_seen.isoformat() if event.last_seen is not None else None,
        }

        async def work(tx: Transaction) -> None:
            session = await tx.session.find_unique(event.ref.session_id)
            if session is None:
                raise SessionNotFound(f"session {event.ref} not found")
            # the contact, if the session has one for them (presence makes none)
            seen = sighting(payload["jid"], payload["lid"])
            updates: list[ContactUpdate] = []
            contact = await contacts.identify(tx.connection, session.id, seen, create=False, updates=updates)
            await announce(tx, event.ref.session_id, updates)
            known = contact_fields(contact) or {"contactId": None, "contactJid": None, "contactLid": None}
            await append(tx, event.ref, EventType.PRESENCE, {**payload, **known})

        await self._manager.execute_transaction(event.ref.client_id, work)

    # -- contacts: the phone's blocklist, pictures (issue 14) ---------------------------------------------

    async def _store_blocklist(self, event: BlocklistChanged) -> None:
        """The account's blocklist changed on the phone: record it on the contacts, a contact-update for each
        contact whose state changed (a person blocked is made a contact if new: the API shows them blocked)."""
        ref = event.ref
        blocked = [storable(jid) for jid in event.blocked]
        unblocked = [storable(jid) for jid in event.unblocked]

        async def work(tx: Transaction) -> None:
            session = await tx.session.find_unique(ref.session_id)
            if session is None:
                raise SessionNotFound(f"session {ref} not found")
            conn = tx.connection
            updates: list[ContactUpdate] = []
            listed: set[str] = set()
            for jid, state in [*((jid, True) for jid in blocked), *((jid, False) for jid in unblocked)]:
                contact = await contacts.identify(conn, session.id, sighting(jid), create=state, updates=updates)
                if contact is None or contact.is_group:
                    continue
                listed.add(contact.id)
                changed = await contacts.set_blocked(conn, contact.id, state, source="phone")
                if changed is not None and changed[1] is not None:
                    updates.append(changed[1])
            if event.complete:  # the whole blocklist: whoever is not on it is unblocked
                for contact in await contacts.blocked_of(conn, session.id):
                    if contact.id not in listed:
                        changed = await contacts.set_blocked(conn, contact.id, False, source="phone")
                        if changed is not None and changed[1] is not None:
                            updates.append(changed[1])
            await announce(tx, ref.session_id, updates)

        await self._manager.execute_transaction(ref.client_id, work)

    async def _store_contact_picture(self, event: ContactPictureChanged) -> None:
        """A contact changed or removed its profile picture: the cached one is dropped, with a contact-update
        (someone who is no contact of the session is not made one)."""
        ref = event.ref

        async def work(tx: Transaction) -> None:
            session = await tx.session.find_unique(ref.session_id)
            if session is None:
                raise SessionNotFound(f"session {ref} not found")
            updates: list[ContactUpdate] = []
            seen = sighting(storable(event.jid), storable_or_none(event.lid))
            contact = await contacts.identify(tx.connection, session.id, seen, create=False, updates=updates)
            if contact is not None and not contact.is_group:
                picture_id = storable_or_none(event.picture_id)
                changed = await contacts.picture_changed(
                    tx.connection, contact.id, removed=event.removed, picture_id=picture_id, at=event.timestamp
                )
                if changed is not None:
                    changes = picture_change(removed=event.removed, picture_id=picture_id)
                    previous = {"pictureId": contact.picture_id}
                    updates.append(ContactUpdate(changed, changes, previous, "phone"))
            await announce(tx, ref.session_id, updates)

        await self._manager.execute_transaction(ref.client_id, work)

    # -- receipts -------------------------------------------------------------------------------------

    async def _store_receipts(self, receipts: list[Receipt]) -> list[Ack]:
        """Move messages forward by receipts (never backwards), with one message-status event per step.

        Returns the acknowledgements of the receipts stored (deferred ones are acknowledged later).
        """
        receipts = self.receipts.not_overtaking(receipts)
        return await self._store_together(list(receipts)) if receipts else []


# a group setting's action -> its field on GroupChanged and its column in `groups`
Recorder._stores.update(
    {
        StatusChanged: Recorder._store_status,
        QrCode: Recorder._store_qr,
        PairingCode: Recorder._store_pairing_code,
        EngineFailure: Recorder._store_failure,
        Notice: Recorder._store_notice,
        MediaReuploaded: Recorder._store_reupload,
        GroupChanged: Recorder._store_group_change,
        ChatChanged: Recorder._store_chat_change,
        PresenceSeen: Recorder._store_presence,
        BlocklistChanged: Recorder._store_blocklist,
        ContactPictureChanged: Recorder._store_contact_picture,
    }
)


def _storable_group_change(event: GroupChanged) -> GroupChanged:
    """`event` with every text WhatsApp sent made storable: a NUL in a subject must not lose the change."""
    return replace(
        event,
        group_jid=storable(event.group_jid),
        actor_jid=storable_or_none(event.actor_jid),
        participants=tuple(storable(p) for p in event.participants),
        subject=storable_or_none(event.subject),
        description=storable_or_none(event.description),
        picture_id=storable_or_none(event.picture_id),
        reason=storable_or_none(event.reason),
        info=None if event.info is None else storable_info(event.info),
    )


_GROUP_SETTINGS = {
    GroupAction.SUBJECT: "subject",
    GroupAction.DESCRIPTION: "description",
    GroupAction.PICTURE: "picture_id",
    GroupAction.ANNOUNCE: "announce",
    GroupAction.LOCKED: "locked",
}
# ... and the settings an event tells that the stored copy does not keep
_EVENT_VALUES = {**_GROUP_SETTINGS, GroupAction.JOIN_APPROVAL: "join_approval"}


def status_changes(event: StatusChanged) -> dict[str, Any]:
    """Return what a status change changes on the session row."""
    changes: dict[str, Any] = {
        "status": event.status.value,
        "status_code": event.code,
        "status_details": storable_json(dict(event.details)) if event.details else None,
    }
    if event.status is not SessionStatus.QR:
        changes.update(qr_code=None, qr_expires_at=None)
    if event.status is SessionStatus.CONNECTED:
        changes.update(pairing_code=None, last_error=None)
        if event.jid:
            changes.update(jid=event.jid, phone_number=event.phone_number or jid_user(event.jid))
    elif event.status in {
        SessionStatus.FAILED,
        SessionStatus.DISCONNECTED,
        SessionStatus.RECONNECTING,
        SessionStatus.QR_TIMEOUT,
    }:
        changes.update(last_error=storable_or_none(event.reason))
    elif event.status is SessionStatus.LOGGED_OUT:
        changes.update(jid=None, pairing_code=None)
    return changes


@dataclass(frozen=True, slots=True)
class _Arriving:
    """An arrived message to store: the event (a file given its media id), its fields made storable."""

    event: InboundMessage
    arrival: _Arrival
    file: Media | None


@dataclass(frozen=True, slots=True)
class _Arrival:
    """An arrived message's fields, made storable (WhatsApp's text may hold what PostgreSQL refuses)."""

    story: bool
    chat: str
    is_group: bool
    key: str  # the contact: a number's digits, or a group's (or other) JID
    message_id: str
    push_name: str | None
    business_name: str | None
    sender: str
    sender_lid: str | None
    payload: dict[str, Any] | None  # the content's public shape (None for a text: `text` holds it)
    text: str
    kind: str
    context: dict[str, Any] | None
    mentions: list[str]

    @classmethod
    def of(cls, event: InboundMessage) -> _Arrival:
        story = event.chat_jid == STATUS_BROADCAST
        chat = storable(event.chat_jid)
        is_group = event.is_group or chat.endswith("@" + GROUP_SERVER)
        content = event.content
        return cls(
            story=story,
            chat=chat,
            is_group=is_group,
            key=chat if is_group or story or not chat.endswith("@" + USER_SERVER) else jid_user(chat),
            message_id=storable(event.message_id),
            push_name=storable_or_none(event.push_name),
            business_name=storable_or_none(event.verified_name),
            sender=storable(event.sender_jid),
            sender_lid=storable_or_none(event.sender_lid),
            payload=None if content is None or isinstance(content, Text) else storable_json(to_payload(content)),
            text=storable(summary(content) if content is not None else event.text),
            kind="story" if story else storable(kind_of(content).value if content is not None else event.type),
            context=None if event.quote is None else storable_json(_context(event.quote)),
            mentions=[storable(jid) for jid in event.mentions],
        )

    def party(self, event: InboundMessage) -> Sighting:
        """Who the chat is with: the person (by both ids when known, with the names they show) or the group."""
        if self.is_group or self.story:
            return sighting(self.chat, is_group=True)
        theirs = not event.from_me  # the linked phone's own messages show the session's name, not theirs
        return sighting(
            self.chat,
            storable_or_none(event.chat_lid),
            push_name=self.push_name if theirs else None,
            business_name=self.business_name if theirs else None,
            on_whatsapp=True,
        )

    def writer(self) -> Sighting:
        """Who wrote a group message, by both ids."""
        return sighting(self.sender, self.sender_lid, push_name=self.push_name, business_name=self.business_name)

    def body(
        self, event: InboundMessage, engine: str, context: dict[str, Any] | None, target: Target | None
    ) -> dict[str, Any]:
        """The message-received event's payload."""
        body: dict[str, Any] = {
            "messageId": self.message_id,
            "whatsappMessageId": self.message_id,
            "from": self.key,
            "chatJid": self.chat,
            "chatLid": storable_or_none(event.chat_lid),
            "senderJid": self.sender,
            "senderLid": self.sender_lid,
            "pushName": self.push_name,
            "type": self.kind,
            "text": self.text,
            "isGroup": self.is_group,
            "fromMe": event.from_me,
            "source": "phone" if event.from_me else None,
            "timestamp": event.timestamp.isoformat(),
            "engine": engine,
        }
        if self.business_name is not None:
            body["businessName"] = self.business_name
        content = event.content
        if content is not None:
            body["message"] = storable_json(to_payload(content))
            if isinstance(content, ACTING):
                body["target"] = _target_out(target, content.key.id)
        if context is not None:
            body["context"] = context
        if self.mentions:
            body["mentions"] = self.mentions
        return body


async def _contact_of(
    tx: Transaction, session_row: str, arrival: _Arrival, event: InboundMessage, updates: list[ContactUpdate]
) -> Contact:
    """The contact of an arrived message's chat, made if new, merged when the message names both of its ids."""
    contact = await contacts.identify(tx.connection, session_row, arrival.party(event), updates=updates)
    assert contact is not None  # a chat always names someone: made if new
    if arrival.is_group and arrival.sender_lid and not event.from_me:
        # a group names its writer by both ids: a person known apart by each is one (never made here)
        await contacts.identify(tx.connection, session_row, arrival.writer(), create=False, updates=updates)
    return contact


def contact_fields(contact: Contact | None) -> dict[str, Any]:
    """What every message event says of its contact: its id, and both of its ids on WhatsApp where known."""
    if contact is None:
        return {}
    return ContactIds(contact.id, contact.jid, contact.lid).fields()


def _context(quote: Quote) -> dict[str, Any]:
    """The stored and announced `context` of a reply: the quoted message's ids and author."""
    context: dict[str, Any] = {
        "message_id": quote.key.id,
        "whatsapp_message_id": quote.key.id,
        "from_me": quote.key.from_me,
    }
    if quote.key.sender_jid:
        context["from"] = quote.key.sender_jid
    if quote.content is not None:
        context["quoted"] = to_payload(quote.content)
    return context


def _target_out(target: Target | None, wa_id: str) -> dict[str, Any]:
    """The message an acting message acts on, as its events name it."""
    if target is None:
        return {"whatsappMessageId": wa_id, "known": False}
    return {"messageId": target.message_id, "whatsappMessageId": wa_id, "known": True}


async def append(tx: Transaction, ref: SessionRef, kind: EventType, payload: dict[str, Any]) -> None:
    """Append an event of the session to its client's log."""
    await tx.event.append(type=kind.value, session_id=ref.session_id, payload={"sessionId": ref.session_id, **payload})
