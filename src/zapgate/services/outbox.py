"""The outbox: each hosted session's pending messages, resolved, paced, sent in order and recorded.

For each connected session, batches of pending messages are claimed in a short transaction (FOR UPDATE
SKIP LOCKED), sent with no transaction open (a send waits on the network; an engine may need the
database itself), then recorded in one transaction with their events. A crash in between leaves them
pending: they are sent again (on whatsmeow under a new WhatsApp id: see the README's delivery notes).

Before the first send to a number the session asks WhatsApp for its account (the answer is cached per
session with a TTL): a number that is not on WhatsApp fails that message for good; Brazil's ninth digit
is whatever WhatsApp answers. A failure that cannot get better (not on WhatsApp, no LID, restricted) is
final for that message; one that may pass is tried again later, up to an attempt cap, and holds back
only the later messages to the same chat. Paced engines show "typing…" and pause between sends, one
message at a time, and write to at most so many new numbers a day (the rest wait for room).

A look at a session's queue is a transaction, so the outbox looks only where there may be work
(`domain/polling.py`): at the session a NOTIFY names, at a session that (re)connected, at every session
after the listener reconnected (notifications may have been lost then); an idle session's queue is
looked at again after a back-off that doubles up to `idle_poll_max`, and a queue holding messages that are
not due yet when the first of them is. 100 idle sessions cost a few transactions a second, not 100.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from zapgate import metrics
from zapgate.background import Deadline, TaskGroup, wait_set
from zapgate.batching import GroupCommit
from zapgate.db import contacts, outbound
from zapgate.db.conversation import Target
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.db.outbound import PendingMessage, Recipient, SendOutcome
from zapgate.domain.contacts import ContactIds, ContactUpdate
from zapgate.domain.content import Content, Media, MessageKey, Quote, Text, from_payload
from zapgate.domain.events import EventType
from zapgate.domain.phones import GROUP_SERVER, LID_SERVER, USER_SERVER, jid_user, phone_jid
from zapgate.domain.polling import IdleBackoff
from zapgate.domain.receipts import further, furthest
from zapgate.domain.records import MessageStatus
from zapgate.domain.sessions import SessionStatus
from zapgate.domain.storable import storable
from zapgate.engines.base import (
    EngineError,
    NotConnected,
    NotOnWhatsApp,
    Presence,
    Receipt,
    Restricted,
    SendRejected,
    SendResult,
    SessionRef,
    UnknownSession,
)
from zapgate.errors import MediaNotFound, MediaStoreError
from zapgate.log import get_logger
from zapgate.services.contact_events import contact_entries
from zapgate.services.conversation import ACTING, Actor, apply
from zapgate.services.hosted import Hosted, HostedSessions, named_session
from zapgate.services.media import MediaFiles
from zapgate.services.patience import while_away
from zapgate.services.receipts import EventEntry, acks_of, send_entry, split_receipts, status_entry
from zapgate.services.recorder import Recorder

log = get_logger(__name__)


SEND_BATCH = 200  # pending messages claimed at once per session (1 when its sends are paced)
# claims (records) of a client's sessions run together in one transaction at most: a backlog's burst makes it
# up to SESSIONS_TOGETHER * SEND_BATCH messages (and three events each) under the client's event lock
SESSIONS_TOGETHER = 20
RETRY_BASE = 2.0  # seconds before the second attempt; doubled for each further one
RETRY_MAX = 300.0  # seconds: the longest wait between two attempts


@dataclass(frozen=True, slots=True)
class OutboxPolicy:
    """How the outbox treats sends: caches, attempts, timeouts."""

    recipient_ttl: float = 86_400.0  # seconds WhatsApp's answer about a number is trusted
    max_attempts: int = 5  # attempts of a message that fails retryably before it fails for good
    call_timeout: float = 90.0  # seconds a send, lookup or presence call may take before it counts as failed
    idle_poll_max: float = 30.0  # seconds: the longest an idle session's queue goes unseen (a lost NOTIFY's delay)


@dataclass
class _Round:
    """What one batch's sends learned, to be recorded with them."""

    outcomes: list[SendOutcome] = field(default_factory=list)
    learned: list[Recipient] = field(default_factory=list)
    first_contacts: set[str] = field(default_factory=set)
    notices: list[EventEntry] = field(default_factory=list)
    held_chats: set[str] = field(default_factory=set)  # chats whose next message waits: later ones stay pending
    interrupted: bool = False  # the session could not send any more (disconnected)
    acting: dict[str, Content] = field(default_factory=dict)  # by our id: sent reactions, edits, ... to apply
    calls: Deadline | None = None  # bounds each engine call of the batch (`Outbox._bounded`)


class Outbox:
    """Send the pending messages of a worker's connected sessions."""

    def __init__(
        self,
        manager: ConnectionManager,
        hosted: HostedSessions,
        recorder: Recorder,
        tasks: TaskGroup,
        policy: OutboxPolicy,
        *,
        poll_interval: float = 1.0,
        sleep: Callable[[float], Any] = asyncio.sleep,
        media: MediaFiles | None = None,
    ) -> None:
        self._media = media
        self._manager = manager
        self._hosted = hosted
        self._recorder = recorder
        self._tasks = tasks
        self._policy = policy
        self._backoff = IdleBackoff(first=poll_interval, cap=max(poll_interval, policy.idle_poll_max))
        self._sleep = sleep
        self._wake = asyncio.Event()  # a session's schedule changed: the loop looks again
        # the claims, and the records, that a client's sessions ask for at the same time run in one transaction
        # (group commit): under load that is one BEGIN, search_path, COMMIT and WAL flush for many sessions
        self._claims: GroupCommit[str, tuple[Hosted, int], Any] = GroupCommit(
            partial(self._together, run=_claimed, generic_plans=True), limit=SESSIONS_TOGETHER, name="outbox.claim"
        )
        self._records: GroupCommit[str, Callable[[], _Recording], Any] = GroupCommit(
            partial(self._together, run=_recorded), limit=SESSIONS_TOGETHER, name="outbox.record"
        )

    async def close(self) -> None:
        """Wait for the claims and records already running (their senders may be gone: cancelled)."""
        await self._claims.close()
        await self._records.close()

    def wake(self, ref: SessionRef | None = None) -> None:
        """Look for the pending messages of `ref` now (of every hosted session without one)."""
        for hosted in self._hosted.values() if ref is None else filter(None, [self._hosted.get(ref)]):
            hosted.queue.wake()
        self._wake.set()

    def notified(self, payload: str | None) -> None:
        """Act on a notification of the outbound channel (`payload` None: notifications may have been lost).

        Its payload names the session with new messages ("client/session"): that session is woken if it is
        hosted here. Anything else (no payload, one cut short, one from an older version) wakes every session.
        """
        ref = named_session(payload)
        if ref is None:
            self.wake()
        elif ref in self._hosted:
            self.wake(ref)

    async def run(self) -> None:
        """Start a sender for each connected session whose queue is due for a look, as each falls due."""
        while True:
            self._wake.clear()
            now = time.monotonic()
            next_look = now + self._backoff.cap
            for ref, hosted in list(self._hosted.items()):
                if hosted.status is not SessionStatus.CONNECTED or hosted.sending:
                    continue  # a connection wakes it; a sender that ends schedules its next look
                if hosted.queue.due(now):
                    hosted.sending = True
                    self._tasks.spawn(self._send_pending(ref, hosted), name="send")
                else:
                    next_look = min(next_look, hosted.queue.due_at)
            await wait_set(self._wake, max(0.0, next_look - time.monotonic()))

    async def _send_pending(self, ref: SessionRef, hosted: Hosted) -> None:
        """Send the session's due pending messages, oldest first, in batches, each recorded with its events.

        Then schedule the next look at its queue: soon when messages were found, later and later while none
        are, and no later than the first message held back (by its next attempt or the first-contact cap).
        """
        found = False
        held_until: float | None = None  # monotonic seconds when the first held message falls due
        try:
            while hosted.status is SessionStatus.CONNECTED and self._hosted.get(ref) is hosted:
                limit = 1 if hosted.pacing.paced else SEND_BATCH
                hosted.queue.looking()
                metrics.OUTBOX_CLAIMS.inc()
                batch, held = await self._claims.submit(ref.client_id, (hosted, limit))
                held_until = _earliest(held_until, held)
                if not batch:
                    return
                found = True
                hosted.in_flight = True
                stored: list[Receipt] = []
                try:
                    sent = await self._send_rows(ref, hosted, batch)
                    # sent is sent: its record waits for a database that is away (failing here would send the
                    # batch again, and drop the receipts that came back meanwhile)
                    stored = await while_away(
                        partial(
                            self._records.submit,
                            ref.client_id,
                            partial(self._recording, ref=ref, hosted=hosted, sent=sent),
                        ),
                        event="worker.record_waiting",
                        other_attempts=1,  # any other failure: as a crash, the batch stays pending
                        session=str(ref),
                    )
                    held_until = _earliest(held_until, _counted(sent.outcomes))
                finally:
                    hosted.in_flight = False
                    # receipts held while the batch was in flight, and not taken by its record, go to the recorder
                    taken = {id(receipt) for receipt in stored}
                    for receipt in hosted.deferred:
                        if id(receipt) not in taken:
                            self._recorder.put(receipt)
                    hosted.deferred = []
                for receipt in stored:
                    for ack in acks_of(receipt):
                        ack()
                if sent.interrupted or len(batch) < limit:
                    return
        except Exception as exc:
            log.warning("worker.send_failed", session=str(ref), error=repr(exc))
        finally:
            hosted.queue.looked(
                time.monotonic(), self._backoff, found=found, held_until=held_until, spread=random.uniform(0.75, 1.0)
            )
            hosted.sending = False
            self._wake.set()

    async def _together(
        self, client: str, steps: list[Any], *, run: Together, generic_plans: bool = False
    ) -> list[Any]:
        """Run the steps of several of `client`'s sessions in one transaction (`run(tx, steps)`); answer each
        one's result.

        When that transaction fails, each step runs again in a transaction of its own, so that one session's
        failure (a value the database refuses, say) is its own alone and the others' work is kept. A step may
        run again: each is written to be (as for a deadlock's rerun).
        """
        execute = partial(self._manager.execute_transaction, generic_plans=generic_plans)
        try:
            return await execute(client, lambda tx: run(tx, steps))
        except Exception as exc:
            if len(steps) == 1:
                return [exc]
        results: list[Any] = []
        for step in steps:
            try:
                results.extend(await execute(client, partial(_alone, run, step)))
            except Exception as exc:
                results.append(exc)
        return results

    # -- sending ----------------------------------------------------------------------------------------

    async def _send_rows(self, ref: SessionRef, hosted: Hosted, batch: list[PendingMessage]) -> _Round:
        """Send in order until the session cannot send any more; return what happened to each."""
        sent = _Round(calls=Deadline(self._policy.call_timeout))
        try:
            await self._send_each(ref, hosted, batch, sent)
        finally:
            assert sent.calls is not None
            sent.calls.close()
        return sent

    async def _send_each(self, ref: SessionRef, hosted: Hosted, batch: list[PendingMessage], sent: _Round) -> None:
        for pending in batch:
            if pending.to in sent.held_chats:
                continue  # an earlier message to this chat waits for its next attempt: keep the order
            try:
                to = await self._target(ref, hosted, pending, sent)
                until = await self._first_contact_wait(hosted, to, sent)
                if until is not None:
                    sent.held_chats.add(pending.to)
                    sent.outcomes.append(_held(pending, until))
                    sent.notices.append(_held_entry(ref, pending, until))
                    continue
                outcome = await self._send_one(ref, hosted, pending, to, sent)
            except (NotConnected, UnknownSession):
                sent.interrupted = True
                break  # stays pending: it goes out after the (re)connection
            except EngineError as exc:
                outcome = self._failure(pending, exc)
            if outcome.status is MessageStatus.PENDING:
                sent.held_chats.add(pending.to)
            sent.outcomes.append(outcome)
            if outcome.status is MessageStatus.SENT and pending.accepted_at is not None:
                metrics.SEND_LATENCY.observe(max(0.0, (datetime.now(UTC) - pending.accepted_at).total_seconds()))
            if outcome.error_code == Restricted.code:
                sent.notices.append(_restricted_entry(ref, outcome))
            hosted.last_active = time.monotonic()
            if hosted.pacing.paced and outcome.status is MessageStatus.SENT:
                await self._sleep(hosted.pacing.pause_seconds())

    async def _send_one(
        self, ref: SessionRef, hosted: Hosted, pending: PendingMessage, to: str, sent: _Round
    ) -> SendOutcome:
        engine = hosted.engine
        content, quote = composed(pending)
        typing = hosted.pacing.typing_seconds(pending.content)
        if typing > 0 and not isinstance(content, ACTING):
            shown = Presence.RECORDING if isinstance(content, Media) and content.voice else Presence.COMPOSING
            await self._bounded("presence", engine.send_presence(ref, to, shown), sent)
            await self._sleep(typing)
        if isinstance(content, Text) and quote is None and not pending.mentions:
            result = await self._bounded("send", engine.send_text(ref, to, content.body, pending.message_id), sent)
        else:
            if isinstance(content, Media):
                result = await self._send_file(ref, hosted, content, quote, pending, to, sent)
            else:
                call = engine.send(ref, to, content, pending.message_id, quote=quote, mentions=pending.mentions)
                result = await self._bounded("send", call, sent)
        if isinstance(content, ACTING):
            sent.acting[pending.message_id] = content
        return SendOutcome(  # what the engine answered is from outside: made storable (it is recorded as it is)
            pending.message_id,
            storable(result.message_id),
            MessageStatus.SENT,
            storable(result.to or to),
            result.timestamp,
            None,
            attempts=pending.attempts,
        )

    async def _send_file(
        self,
        ref: SessionRef,
        hosted: Hosted,
        media: Media,
        quote: Quote | None,
        pending: PendingMessage,
        to: str,
        sent: _Round,
    ) -> SendResult:
        """Send a media message: its stored file copied to a temporary one for the engine, removed afterwards."""
        if self._media is None:
            raise SendRejected("this worker has no media store: files cannot be sent")
        try:
            async with self._media.materialized(ref.client_id, media) as ready:
                call = hosted.engine.send(ref, to, ready, pending.message_id, quote=quote, mentions=pending.mentions)
                result: SendResult = await self._bounded("send", call, sent)
                return result
        except MediaNotFound as exc:
            raise SendRejected(f"the message's file is gone: {exc.message}") from exc
        except MediaStoreError as exc:
            raise EngineError(f"the message's file could not be read: {exc.message}") from exc

    async def _bounded(self, call: str, awaitable: Any, sent: _Round) -> Any:
        """Await an engine call for at most the policy's timeout (a timeout is an error that may pass)."""
        assert sent.calls is not None
        try:
            return await sent.calls.bound(awaitable)  # no task of its own (as wait_for makes), one timer a batch
        except TimeoutError as exc:
            metrics.ENGINE_CALL_TIMEOUTS.labels(call).inc()
            raise EngineError(f"the engine did not answer the {call} call in {self._policy.call_timeout:g} s") from exc

    async def _target(self, ref: SessionRef, hosted: Hosted, pending: PendingMessage, sent: _Round) -> str:
        """Return the JID to send to: WhatsApp's account for a number (asked once, cached), a group or LID as is.

        Raises NotOnWhatsApp for a number WhatsApp does not know: its message fails for good.
        """
        to = pending.to
        if to.endswith("@" + GROUP_SERVER) or to.endswith("@" + LID_SERVER):
            return to
        number = jid_user(to) if to.endswith("@" + USER_SERVER) else to
        answer = hosted.recipients.get(number, time.monotonic())
        if answer is None:
            answer = pending.recipient  # from the database (another worker or an earlier run asked)
            if answer is None:
                lookup = await self._bounded("resolve", hosted.engine.resolve(ref, number), sent)
                answer = Recipient(number, lookup.on_whatsapp, lookup.jid, lookup.lid)
                sent.learned.append(answer)
            hosted.recipients.put(number, answer, time.monotonic() + self._policy.recipient_ttl)
        if not answer.on_whatsapp:
            raise NotOnWhatsApp("the number is not on WhatsApp (WhatsApp's own lookup said so)")
        return answer.jid or answer.lid or phone_jid(number)

    async def _first_contact_wait(self, hosted: Hosted, to: str, sent: _Round) -> datetime | None:
        """Return until when a message to `to` waits: a first contact past the session's daily cap; else None."""
        cap = hosted.pacing.first_contacts_per_day
        if not cap or to.endswith("@" + GROUP_SERVER) or to in sent.first_contacts:
            return None

        async def room(tx: Transaction) -> tuple[set[str], datetime | None]:
            return await outbound.first_contact_room(tx.connection, hosted.session_row_id, [to], cap)

        first, next_allowed = await self._manager.execute_transaction(hosted.placement.client_id, room)
        if to not in first:
            return None
        if next_allowed is None:
            sent.first_contacts.add(to)  # counted against the cap once it is sent
        return next_allowed

    def _failure(self, pending: PendingMessage, exc: EngineError) -> SendOutcome:
        """The outcome of a send that failed: for good, or to try again later (up to the attempt cap)."""
        attempts = pending.attempts + 1
        permanent = isinstance(exc, SendRejected) or not exc.retryable
        message = storable(exc.message)  # an engine's words (whatsmeow's errors): recorded with the message
        if not permanent and attempts < self._policy.max_attempts:
            delay = min(RETRY_MAX, RETRY_BASE * 2 ** (attempts - 1))
            log.warning("worker.send_retry_later", message_id=pending.message_id, attempts=attempts, error=message)
            retry_at = datetime.now(UTC) + timedelta(seconds=delay)
            return SendOutcome(
                pending.message_id, None, MessageStatus.PENDING, None, None, message, exc.code, retry_at, attempts
            )
        code = exc.code if permanent else "too_many_attempts"
        return SendOutcome(pending.message_id, None, MessageStatus.FAILED, None, None, message, code, None, attempts)

    # -- recording ----------------------------------------------------------------------------------------

    def _recording(self, *, ref: SessionRef, hosted: Hosted, sent: _Round) -> _Recording:
        """What one session's batch records: made again for each run of its transaction (a rerun starts from the
        same receipts)."""
        return _Recording(self, ref, hosted, sent)


class _Recording:
    """One session's batch to record: what happened to each send, then the receipts that overtook them.

    Receipts often come back while the sends are being recorded (the sandbox's at once). They are stored
    here, after their sends: a message sent and already read is written once, as read, with its sent,
    delivered and read events in that order. The sends of the sessions recorded together are written by one
    statement (`_recorded`): `before` runs first, then that statement, then `after`.
    """

    def __init__(self, outbox: Outbox, ref: SessionRef, hosted: Hosted, sent: _Round) -> None:
        self._outbox = outbox
        self.ref = ref
        self.row = hosted.session_row_id
        self.sent = sent
        self.overtaking = list(hosted.deferred)  # a copy: a retried transaction starts from the same receipts
        wa_ids = {o.assigned_id for o in sent.outcomes if o.status is MessageStatus.SENT and o.assigned_id}
        self._ahead, self._others = split_receipts(self.overtaking, wa_ids)
        self._merges: list[ContactUpdate] = []  # a number sent to under another spelling folds into its account's
        self.outcomes = [self._with_receipts(o) for o in sent.outcomes]

    def _with_receipts(self, outcome: SendOutcome) -> SendOutcome:
        receipts = None if outcome.status is not MessageStatus.SENT else self._ahead.get(outcome.assigned_id or "")
        if not receipts:
            return outcome
        status = furthest(outcome.status, (r.status for r in receipts))
        if status is outcome.status:
            return outcome
        o = outcome  # as `replace(outcome, status=status)`, at a fifth of its cost (once per message sent)
        return SendOutcome(
            o.message_id, o.assigned_id, status, o.chat_jid, o.sent_at, o.error, o.error_code, o.retry_at, o.attempts
        )

    async def before(self, tx: Transaction) -> None:
        """Store what WhatsApp answered about the batch's numbers."""
        learned = self.sent.learned
        if learned:
            await outbound.remember_recipients(tx.connection, self.row, learned, self._outbox._policy.recipient_ttl)
            await contacts.learn_answers(tx.connection, self.row, learned, self._merges)  # WhatsApp named their ids

    async def after(self, tx: Transaction, recorded: dict[str, ContactIds]) -> list[EventEntry]:
        """Once the sends are written (`recorded`: those still pending until then), return the events to append
        (`_recorded` appends those of the sessions recorded together in one statement)."""
        ref, row, sent = self.ref, self.row, self.sent
        outcomes = sent.outcomes  # as sent: their events go sent (or failed) first, then the receipts' statuses
        if sent.first_contacts:
            taken = {o.chat_jid for o in outcomes if o.status is MessageStatus.SENT and o.message_id in recorded}
            await outbound.note_first_contacts(tx.connection, row, sent.first_contacts & taken)
        entries: list[EventEntry] = [*sent.notices, *contact_entries(ref.session_id, self._merges)]
        ahead = self._ahead
        for outcome in outcomes:
            if outcome.message_id not in recorded or outcome.status is MessageStatus.PENDING:
                continue  # no longer pending (deleted, or recorded by another run), or waiting for its next attempt
            contact = recorded[outcome.message_id]
            entries.append(send_entry(ref, outcome, contact))
            acting = sent.acting.get(outcome.message_id)
            if acting is not None and outcome.status is not MessageStatus.FAILED:
                _, applied = await apply(
                    tx,
                    session_id=ref.session_id,
                    session_row=row,
                    content=acting,
                    actor=Actor(from_me=True, jid=None),
                    at=outcome.sent_at or datetime.now(UTC),
                    erase_deleted=self._outbox._recorder.erase_deleted,
                )
                fields = contact.fields()
                entries.extend((kind, sid, {**payload, **fields}) for kind, sid, payload in applied)
            if ahead:
                reached: MessageStatus = outcome.status
                for receipt in ahead.pop(outcome.assigned_id or "", ()):
                    if further(receipt.status, reached):
                        reached = receipt.status
                        entries.append(
                            status_entry(
                                ref.session_id,
                                outcome.message_id,
                                outcome.assigned_id,
                                receipt.status,
                                _iso(receipt),
                                contact,
                            )
                        )
        others = self._others
        for wa_id, receipts in ahead.items():  # their message was not recorded here: the usual way
            others.extend(replace(r, message_ids=(wa_id,)) for r in receipts)
        if others:
            entries.extend(await self._outbox._recorder.receipts.advance(tx, ref.client_id, others))
        return entries


FIRST_CONTACT_CAP = "first_contact_cap"
Together = Callable[[Transaction, list[Any]], Awaitable[list[Any]]]


async def _alone(run: Together, step: Any, tx: Transaction) -> list[Any]:
    return await run(tx, [step])


async def _claimed(tx: Transaction, asks: list[tuple[Hosted, int]]) -> list[tuple[list[PendingMessage], float | None]]:
    """Lock and return each session's oldest due pending messages (up to its limit), in one statement; with them,
    when its first message held back falls due (monotonic seconds, None: none is held, or the limit was reached
    and the next claim asks again)."""
    claims = await outbound.claim_pending_many(
        tx.connection, [(hosted.session_row_id, limit) for hosted, limit in asks]
    )
    now = time.monotonic()
    return [
        (claim.messages, None if len(claim.messages) == limit or claim.held_for is None else now + claim.held_for)
        for (_, limit), claim in zip(asks, claims, strict=True)
    ]


async def _recorded(tx: Transaction, steps: list[Callable[[], _Recording]]) -> list[list[Receipt]]:
    """Record the batches of several sessions in `tx`: their sends in one statement, then all their events at
    once, each session's in its order; answer each batch's receipts stored with it."""
    recordings = [step() for step in steps]
    for recording in recordings:
        await recording.before(tx)
    recorded = await outbound.record_sends_many(tx.connection, [(r.row, r.outcomes) for r in recordings])
    entries: list[EventEntry] = []
    for recording, ids in zip(recordings, recorded, strict=True):
        entries.extend(await recording.after(tx, ids))
    await tx.event.append_many(entries)
    return [recording.overtaking for recording in recordings]


def composed(pending: PendingMessage) -> tuple[Content, Quote | None]:
    """What a queued message sends: its content, with the messages it names as WhatsApp knows them.

    A reply's quote and the target of a reaction, edit or delete are stored by our id; WhatsApp needs its
    own id and the author. A target not sent yet makes this message wait (it was queued after it, to the same
    chat, so it goes after it); a target that failed or is gone fails it.
    """
    if pending.payload is None:
        content: Content = Text(body=pending.content)
    else:
        try:
            content = from_payload(pending.payload)
        except ValueError as exc:
            raise SendRejected(f"the stored message cannot be read: {exc}") from exc
    if isinstance(content, ACTING):
        content = replace(content, key=_key(pending, content.key.id))
    quote = None
    if pending.context and isinstance(pending.context.get("message_id"), str):
        quoted = pending.targets.get(pending.context["message_id"])
        if quoted is not None and quoted.wa_message_id is not None:
            shown = None if quoted.payload is None else _readable(quoted.payload)
            quote = Quote(key=_message_key(quoted), content=shown or Text(body=quoted.content))
    return content, quote


def _key(pending: PendingMessage, message_id: str) -> MessageKey:
    target = pending.targets.get(message_id)
    if target is None:
        raise SendRejected(f"message {message_id!r} is gone: there is nothing to act on")
    if target.wa_message_id is None:
        if target.status == MessageStatus.FAILED.value:
            raise SendRejected(f"message {message_id!r} was never sent: there is nothing to act on")
        raise EngineError(f"message {message_id!r} is not sent yet")  # retryable: it goes after it
    return _message_key(target)


def _message_key(target: Target) -> MessageKey:
    return MessageKey(
        id=target.wa_message_id or target.message_id,
        from_me=target.direction == "outbound",
        sender_jid=target.sender_jid,
    )


def _readable(payload: dict[str, Any]) -> Content | None:
    try:
        return from_payload(payload)
    except ValueError:
        return None


def _held(pending: PendingMessage, until: datetime) -> SendOutcome:
    """The outcome of a message to a new number past the daily first-contact cap: it waits until `until`."""
    message = "the session's daily cap of first contacts is reached: it goes out when there is room"
    return SendOutcome(
        pending.message_id, None, MessageStatus.PENDING, None, None, message, FIRST_CONTACT_CAP, until, pending.attempts
    )


def _held_entry(ref: SessionRef, pending: PendingMessage, until: datetime) -> EventEntry:
    """The message-status event of a message held by the first-contact cap (it stays pending)."""
    payload = {
        "sessionId": ref.session_id,
        "messageId": pending.message_id,
        "status": MessageStatus.PENDING.value,
        "reason": FIRST_CONTACT_CAP,
        "retryAt": until.isoformat(),
        **(pending.contact.fields() if pending.contact is not None else {}),
    }
    return (EventType.MESSAGE_STATUS.value, ref.session_id, payload)


def _counted(outcomes: list[SendOutcome]) -> float | None:
    """Count the messages whose sends ended (sent, failed) by status; return when the first of those to be tried
    again falls due (monotonic seconds), if any."""
    ended: Counter[MessageStatus] = Counter()
    retry: float | None = None
    for outcome in outcomes:
        if outcome.status is not MessageStatus.PENDING:
            ended[outcome.status] += 1
        elif outcome.retry_at is not None:
            retry = _earliest(retry, _monotonic_at(outcome.retry_at))
    for status, count in ended.items():
        metrics.MESSAGES.labels("outbound", status.value).inc(count)
    return retry


def _earliest(first: float | None, second: float | None) -> float | None:
    return second if first is None else first if second is None else min(first, second)


def _monotonic_at(when: datetime) -> float:
    """Return the monotonic time of the wall-clock time `when`."""
    return time.monotonic() + (when - datetime.now(UTC)).total_seconds()


def _iso(receipt: Receipt) -> str:
    return receipt.timestamp.isoformat()


def _restricted_entry(ref: SessionRef, outcome: SendOutcome) -> EventEntry:
    """The `error` event of a send WhatsApp refused because the account is restricted."""
    payload = {
        "sessionId": ref.session_id,
        "code": Restricted.code,
        "message": outcome.error or "WhatsApp restricted this account's sending",
        "retryable": False,
        "details": {"messageId": outcome.message_id},
    }
    return (EventType.ERROR.value, ref.session_id, payload)
