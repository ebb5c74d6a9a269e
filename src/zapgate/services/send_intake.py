"""Accepting texts to send: validated, counted against the session's rate, stored `pending` in group commits.

Many concurrent sends of one client are stored in one transaction (GroupCommit), which is what lets one API
process accept thousands a second; the hosting worker, woken by NOTIFY (or, in a long-running API, by the
Coalescer after commit), sends them. The rules a send must pass are `domain/sends.py`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from zapgate import metrics
from zapgate.batching import GroupCommit
from zapgate.db import conversation, notify, outbound
from zapgate.db.conversation import Target
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.domain.contacts import is_contact_id
from zapgate.domain.content import (
    Content,
    Edit,
    GroupInvite,
    Media,
    MediaSource,
    MessageKey,
    Outgoing,
    Reaction,
    Revoke,
    Text,
    kind_of,
    summary,
    text_body,
    to_payload,
)
from zapgate.domain.ids import client_id as valid_client_id
from zapgate.domain.ids import new_message_id
from zapgate.domain.ids import session_id as valid_session_id
from zapgate.domain.phones import Recipient, parse_recipient
from zapgate.domain.sends import checked_idempotency_key, message_text, over_grant, request_fingerprint
from zapgate.domain.sessions import CAN_QUEUE_SENDS
from zapgate.errors import (
    DatabaseError,
    InvalidRequest,
    MessageNotEditable,
    MessageNotFound,
    RateLimited,
    SessionNotConnected,
    SessionNotFound,
)
from zapgate.services.contacts import recipient_for
from zapgate.services.conversation import ACTING, edited_content

ACCEPT_BATCH = 256  # concurrent sends of a client stored in one transaction, at most
# a client's transactions storing sends under way at once in one API process (GroupCommit's concurrency): with one,
# a busy client's sends waited for its transaction's round trips and commit while the cores had time to spare; the
# second starts once ACCEPT_MORE_AT sends wait (issue 13, README "Performance"). Only sends made at the same time
# can be stored in either order
ACCEPT_RUNS = 2
ACCEPT_MORE_AT = 8
_CAN_QUEUE = frozenset(status.value for status in CAN_QUEUE_SENDS)


@dataclass(frozen=True, slots=True)
class SendAccepted:
    """What accepting a text answers: the message id and its status then (a replay answers the first result)."""

    message_id: str
    session_id: str
    status: str
    timestamp: datetime
    replayed: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "messageId": self.message_id,
            "sessionId": self.session_id,
            "status": self.status,
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),  # as the API's other times
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, replayed: bool) -> SendAccepted:
        return cls(
            message_id=str(data["messageId"]),
            session_id=str(data["sessionId"]),
            status=str(data["status"]),
            timestamp=datetime.fromisoformat(str(data["timestamp"])),
            replayed=replayed,
        )


EDIT_WINDOW = timedelta(minutes=15)  # WhatsApp lets the author edit a message this long after sending it
REVOKE_WINDOW = timedelta(hours=60)  # ... and delete it for everyone this long (about two and a half days)

_Outcomes = list[SendAccepted | Exception]  # per request, in order
_MaybeOutcomes = list[SendAccepted | Exception | None]


@dataclass(frozen=True, slots=True)
class _SendRequest:
    """A message to accept, valid so far: its message id and time are chosen when the request arrives.

    `text` is a text's body, or the summary of another kind, whose public shape is `payload`. `named` are our
    ids of the messages it replies to or acts on: each must be a message of the session (and `same_chat`
    ones of the recipient's chat) before it is queued.
    """

    session_id: str
    recipient: Recipient
    text: str
    message_id: str
    timestamp: datetime
    kind: str = "text"
    payload: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    mentions: tuple[str, ...] = ()
    named: tuple[tuple[str, str, bool], ...] = ()  # (our id, the field that named it, same chat required)
    source: MediaSource | None = None  # where the file of a media message came from (its id is made anew)

    def fingerprint(self) -> str:
        """What identifies the request for its Idempotency-Key: what was asked, not what it was made into."""
        if self.payload is None and self.context is None and not self.mentions:
            return request_fingerprint(self.session_id, self.recipient.key, self.text)
        payload = self.payload
        if payload is not None and payload.get("type") == "group_invite":  # the code and expiry are WhatsApp's
            asked_invite = {k: v for k, v in payload["group_invite"].items() if k in {"group_id", "caption"}}
            payload = {"type": "group_invite", "group_invite": asked_invite}
        if self.source is not None and payload is not None:
            kind = str(payload["type"])
            asked = {k: v for k, v in payload[kind].items() if k in {"caption", "filename", "voice", "view_once"}}
            payload = {"type": kind, kind: asked, "source": [self.source.media_id, self.source.link]}
        shape = json.dumps([payload, self.context, list(self.mentions)], sort_keys=True)
        return request_fingerprint(self.session_id, self.recipient.key, shape)


class SendIntake:
    """Accept the texts of every client for sending (the SessionService's `send_text`)."""

    def __init__(
        self,
        manager: ConnectionManager,
        *,
        send_rate: float = 0.0,
        send_burst: int = 1,
        coalesce_wakeups: bool = False,
    ) -> None:
        self._manager = manager
        # a long-running API process wakes workers after commit, many sends per NOTIFY (see Coalescer)
        self._waker = notify.Coalescer(manager.notify, notify.OUTBOUND) if coalesce_wakeups else None
        self._send_rate = send_rate  # sends per second per session; 0: no limit
        self._send_burst = send_burst
        self._accepting = GroupCommit(
            self._accept_together, limit=ACCEPT_BATCH, name="accept", concurrency=ACCEPT_RUNS, more_at=ACCEPT_MORE_AT
        )
        self._last_timestamp = datetime.now(UTC)

    async def submit(
        self, client: str, session: str, to: str, text: str, *, idempotency_key: str | None = None
    ) -> SendAccepted:
        """Accept a text for sending: stored `pending` before this returns; the hosting worker sends it.

        Concurrent sends of a client are stored together, in one transaction (see GroupCommit). With
        `idempotency_key`, a request made again with the same key (within a day) answers the first result
        and queues nothing; the same key with another request is refused. Over the session's send rate,
        RateLimited says when to retry.
        """
        cid, sid = valid_client_id(client), valid_session_id(session)
        recipient = await self._recipient(cid, to)
        request = _SendRequest(sid, recipient, message_text(text), new_message_id(), self._timestamp())
        if idempotency_key is None:
            accepted = await self._accepting.submit(cid, request)
        else:
            accepted = await self._send_idempotent(cid, request, checked_idempotency_key(idempotency_key))
        if not accepted.replayed:
            metrics.MESSAGES.labels("outbound", "accepted").inc()
            if self._waker is not None:
                self._waker.wake(f"{cid}/{sid}")
        return accepted

    async def _recipient(self, cid: str, to: str) -> Recipient:
        """The recipient `to` names; a contact id costs a read (only then: a number or a JID is parsed here)."""
        if is_contact_id(to.strip()):
            return await recipient_for(self._manager, cid, to)
        return parse_recipient(to, field="to")

    def _timestamp(self) -> datetime:
        """Now, later than every time given before: the worker sends a session's texts in this order."""
        now = datetime.now(UTC)
        if now <= self._last_timestamp:
            now = self._last_timestamp + timedelta(microseconds=1)
        self._last_timestamp = now
        return now

    async def _send_idempotent(self, cid: str, request: _SendRequest, key: str) -> SendAccepted:
        fingerprint = request.fingerprint()

        async def work(tx: Transaction) -> SendAccepted:
            stored = await outbound.recall_idempotent(tx.connection, key, fingerprint)
            if stored is not None:
                return SendAccepted.from_json(stored, replayed=True)
            [outcome] = await self._accept(tx, cid, [request])
            if isinstance(outcome, Exception):
                raise outcome  # nothing stays: the key works once the request can succeed
            await outbound.remember_idempotent(tx.connection, key, fingerprint, outcome.as_json())
            return outcome

        return await self._manager.execute_transaction(cid, work)

    async def _accept_together(self, cid: str, requests: Sequence[_SendRequest]) -> _Outcomes:
        return await self._manager.execute_transaction(cid, lambda tx: self._accept(tx, cid, requests))

    async def _accept(self, tx: Transaction, cid: str, requests: Sequence[_SendRequest]) -> _Outcomes:
        """Queue the texts the sessions can take now; answer, per request, what was accepted or why not."""
        outcomes: _MaybeOutcomes = [None] * len(requests)
        found = await outbound.sessions_for_send(tx.connection, {r.session_id for r in requests})
        rows: dict[int, str] = {}  # index -> the session's row id, for the requests that may be queued
        for index, request in enumerate(requests):
            sid = request.session_id
            if sid not in found:
                outcomes[index] = SessionNotFound(f"session {sid!r} not found", session_id=sid)
            elif found[sid][1] not in _CAN_QUEUE:
                status = found[sid][1]
                outcomes[index] = SessionNotConnected(
                    f"session {sid!r} is {status}: restart it (or pair it again) before sending", status=status
                )
            else:
                rows[index] = found[sid][0]
        for index, unknown in (await _unknown_targets(tx, requests, rows)).items():
            outcomes[index] = unknown
            del rows[index]
        for index, refusal in (await self._over_rate(tx, requests, list(rows))).items():
            outcomes[index] = refusal
            del rows[index]
        texts = {index: _queued(requests[index], row) for index, row in rows.items()}
        queued = await outbound.enqueue_texts(tx.connection, list(texts.values()))
        missing = [t for t in texts.values() if t.message_id not in queued]
        if missing:  # a concurrent send was adding the same new contact: it exists now
            queued |= await outbound.enqueue_texts(tx.connection, missing)
        for index in rows:
            request = requests[index]
            if request.message_id in queued:
                outcomes[index] = SendAccepted(request.message_id, request.session_id, "pending", request.timestamp)
            else:
                outcomes[index] = DatabaseError("the text could not be queued: send it again")
        if self._waker is None and queued:
            woken = {f"{cid}/{requests[index].session_id}" for index in rows}
            await notify.notify_many(tx.connection, notify.OUTBOUND, woken)
        return [outcome if outcome is not None else DatabaseError("unanswered") for outcome in outcomes]

    async def _over_rate(
        self, tx: Transaction, requests: Sequence[_SendRequest], indexes: Sequence[int]
    ) -> dict[int, RateLimited]:
        """Count the sends against their sessions' rate limits; return the refused ones (the last of each session)."""
        if self._send_rate <= 0 or not indexes:
            return {}
        sessions = [requests[index].session_id for index in indexes]
        slots = await outbound.take_send_slots(
            tx.connection, dict(Counter(sessions)), rate=self._send_rate, burst=self._send_burst
        )
        refused = {}
        for position in over_grant(sessions, {sid: slot.granted for sid, slot in slots.items()}):
            sid, wait = sessions[position], slots[sessions[position]].retry_after
            refused[indexes[position]] = RateLimited(
                f"session {sid!r} sends at most {self._send_rate:g} messages a second "
                f"(bursts of {self._send_burst}): retry in {wait:.2f} s",
                retry_after=wait,
                session_id=sid,
            )
        return refused

    async def submit_message(
        self,
        client: str,
        session: str,
        to: str,
        outgoing: Outgoing,
        *,
        idempotency_key: str | None = None,
        source: MediaSource | None = None,
    ) -> SendAccepted:
        """Accept a message of any kind (`POST /whatsapp/messages`) as `submit` accepts a text.

        The messages it replies to or acts on (a reaction's) must be messages of the session; a reaction's
        must be in the chat it is sent to.
        """
        cid, sid = valid_client_id(client), valid_session_id(session)
        recipient = await self._recipient(cid, to)
        request = replace(self._request(sid, recipient, outgoing), source=source)
        return await self._queue_one(cid, sid, request, idempotency_key)

    async def recall_message(
        self, client: str, session: str, to: str, outgoing: Outgoing, idempotency_key: str
    ) -> SendAccepted | None:
        """The first answer to the same request made with `idempotency_key`, if it was accepted; else None.

        For a request whose content is completed by asking WhatsApp first (an invite message's code): a replay
        answers what was accepted even when WhatsApp cannot be asked now (the session is disconnected).
        """
        cid, sid = valid_client_id(client), valid_session_id(session)
        key = checked_idempotency_key(idempotency_key)
        content = outgoing.content
        if isinstance(content, GroupInvite) and not content.code:
            outgoing = replace(outgoing, content=replace(content, code="-"))  # not part of the fingerprint
        fingerprint = self._request(sid, await self._recipient(cid, to), outgoing).fingerprint()

        async def work(tx: Transaction) -> SendAccepted | None:
            stored = await outbound.recall_idempotent(tx.connection, key, fingerprint)
            return None if stored is None else SendAccepted.from_json(stored, replayed=True)

        return await self._manager.execute_transaction(cid, work)

    async def submit_change(
        self, client: str, session: str, message_id: str, *, text: str | None = None
    ) -> SendAccepted:
        """Accept an edit (`text`) or, without text, a delete for everyone of a message the session sent.

        WhatsApp lets the author edit a text or a caption for EDIT_WINDOW and delete a message for everyone
        for REVOKE_WINDOW after sending it; past that, or for a message not sent (yet), MessageNotEditable.
        """
        cid, sid = valid_client_id(client), valid_session_id(session)
        target = await self._manager.execute_transaction(cid, lambda tx: _change_target(tx, sid, message_id))
        change: Content
        if text is None:
            change = Revoke(key=MessageKey(id=target.message_id, from_me=True))
        else:
            change = Edit(key=MessageKey(id=target.message_id, from_me=True), text=text_body(text, "text"))
        check_change(target, change, datetime.now(UTC))
        recipient = parse_recipient(target.recipient, field="to")
        request = self._request(sid, recipient, Outgoing(content=change))
        return await self._queue_one(cid, sid, request, None)

    def _request(self, sid: str, recipient: Recipient, outgoing: Outgoing) -> _SendRequest:
        content = outgoing.content
        if isinstance(content, Media) and content.media_id is None:
            raise InvalidRequest(f"{content.kind.value}: the file must be stored before it is sent")
        if isinstance(content, GroupInvite):
            if not content.code:
                raise InvalidRequest("group_invite: the group's code must be asked of WhatsApp before it is sent")
            if recipient.is_group:
                raise InvalidRequest("to: an invite message goes to a person, not a group", field="to")
        named: list[tuple[str, str, bool]] = []
        context = None
        if outgoing.reply_to is not None:
            context = {"message_id": outgoing.reply_to}
            named.append((outgoing.reply_to, "context.message_id", False))
        if isinstance(content, ACTING):
            field_name = f"{kind_of(content).value}.message_id"
            named.append((content.key.id, field_name, isinstance(content, Reaction)))
        payload = None if isinstance(content, Text) and not content.preview_url else to_payload(content)
        return _SendRequest(
            sid,
            recipient,
            summary(content),
            new_message_id(),
            self._timestamp(),
            kind=kind_of(content).value,
            payload=payload,
            context=context,
            mentions=outgoing.mentions,
            named=tuple(named),
        )

    async def _queue_one(self, cid: str, sid: str, request: _SendRequest, idempotency_key: str | None) -> SendAccepted:
        if idempotency_key is None:
            [outcome] = await self._manager.execute_transaction(cid, lambda tx: self._accept(tx, cid, [request]))
            if isinstance(outcome, Exception):
                raise outcome
            accepted = outcome
        else:
            accepted = await self._send_idempotent(cid, request, checked_idempotency_key(idempotency_key))
        if not accepted.replayed:
            metrics.MESSAGES.labels("outbound", "accepted").inc()
            if self._waker is not None:
                self._waker.wake(f"{cid}/{sid}")
        return accepted

    async def close(self) -> None:
        """Finish the sends being stored; send the wake-ups still waiting."""
        await self._accepting.close()
        if self._waker is not None:
            await self._waker.close()


def _queued(request: _SendRequest, row: str) -> outbound.QueuedText:
    return outbound.QueuedText(
        row,
        request.recipient.key,
        request.recipient.is_group,
        request.text,
        request.message_id,
        request.timestamp,
        kind=request.kind,
        payload=request.payload,
        context=request.context,
        mentions=request.mentions,
    )


async def _unknown_targets(
    tx: Transaction, requests: Sequence[_SendRequest], rows: dict[int, str]
) -> dict[int, InvalidRequest]:
    """The requests naming a message that is not the session's (or not in the chat a reaction goes to)."""
    refused: dict[int, InvalidRequest] = {}
    for index, row in rows.items():
        request = requests[index]
        if not request.named:
            continue
        ids = {name for name, _, _ in request.named}
        found = {t.message_id: t for t in await conversation.targets(tx.connection, row, message_ids=ids)}
        for name, field_name, same_chat in request.named:
            target = found.get(name)
            if target is None:
                refused[index] = InvalidRequest(f"{field_name}: no message {name!r} in session {request.session_id!r}")
            elif target.deleted_at is not None:
                refused[index] = InvalidRequest(f"{field_name}: message {name!r} was deleted for everyone")
            elif same_chat and target.recipient != request.recipient.key:
                refused[index] = InvalidRequest(
                    f"{field_name}: message {name!r} is in another chat (send to {target.recipient!r})"
                )
    return refused


async def _change_target(tx: Transaction, sid: str, message_id: str) -> Target:
    found = await outbound.sessions_for_send(tx.connection, {sid})
    if sid not in found:
        raise SessionNotFound(f"session {sid!r} not found", session_id=sid)
    targets = await conversation.targets(tx.connection, found[sid][0], message_ids=[message_id])
    if not targets:
        raise MessageNotFound(f"message {message_id!r} not found in session {sid!r}")
    return targets[0]


def check_change(target: Target, change: Content, now: datetime) -> None:
    """Refuse an edit or delete WhatsApp would not take: not ours, not sent, deleted, past its window."""
    action = "edited" if isinstance(change, Edit) else "deleted for everyone"
    if target.direction != "outbound":
        raise MessageNotEditable(f"message {target.message_id!r} was not sent by this session: it cannot be {action}")
    if target.deleted_at is not None:
        raise MessageNotEditable(f"message {target.message_id!r} was deleted for everyone already")
    if target.wa_message_id is None or target.status in {"pending", "failed"}:
        raise MessageNotEditable(
            f"message {target.message_id!r} is {target.status}: only a sent message can be {action}"
        )
    if target.type in NOT_CHANGEABLE:
        raise MessageNotEditable(f"a {target.type} message cannot be {action}")
    sent_at = target.sent_at or target.timestamp
    window = EDIT_WINDOW if isinstance(change, Edit) else REVOKE_WINDOW
    if now - sent_at > window:
        minutes = int(window.total_seconds() // 60)
        raise MessageNotEditable(
            f"message {target.message_id!r} is older than WhatsApp's {minutes} minutes to be {action}"
        )
    if isinstance(change, Edit) and edited_content(target, change.text) is None:
        raise MessageNotEditable(f"a {target.type} message has no text to edit")


NOT_CHANGEABLE = frozenset({"reaction", "edit", "revoke", "poll_vote"})
