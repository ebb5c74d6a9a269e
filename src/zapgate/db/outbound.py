"""The outbound queue and message statuses in a client's schema: claim, record, advance, enqueue.

Statements for the transaction of a `ConnectionManager` (its search_path names the client's schema).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db.notify import OUTBOUND
from zapgate.db.repositories import message_record
from zapgate.db.tables import contacts, messages
from zapgate.domain.ids import new_id
from zapgate.domain.records import Message, MessageStatus
from zapgate.errors import IdempotencyKeyReused

# the order a message's status only ever moves along (a late "sent" never undoes "read")
STATUS_ORDER = ["pending", "failed", "sent", "delivered", "read", "played"]
RANK = {MessageStatus(status): rank for rank, status in enumerate(STATUS_ORDER)}


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A message waiting to be sent: its id, its text and where it goes (a JID, or a contact's number)."""

    message_id: str
    content: str
    to: str
    accepted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What happened when a worker tried to send one message."""

    message_id: str  # the id it was queued under
    assigned_id: str  # the id WhatsApp knows it by (the same, unless the engine could not keep ours)
    status: MessageStatus  # sent or failed
    chat_jid: str
    sent_at: datetime | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Advanced:
    """A message whose status moved forward, and where from."""

    session_row: str
    message_id: str
    old_status: MessageStatus


async def claim_pending(conn: AsyncConnection, session_row: str, limit: int) -> list[PendingMessage]:
    """Lock and return the session's oldest pending messages (skipping any another transaction holds)."""
    stmt = (
        select(
            messages.c.message_id, messages.c.content, messages.c.contact_id, messages.c.chat_jid, messages.c.timestamp
        )
        .where(
            messages.c.session_id == session_row,
            messages.c.status == MessageStatus.PENDING.value,
            messages.c.direction == "outbound",
        )
        .order_by(messages.c.timestamp, messages.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = (await conn.execute(stmt)).all()
    wanted = list({row.contact_id for row in rows if not row.chat_jid})
    numbers: dict[str, str] = {}
    if wanted:
        found = await conn.execute(select(contacts.c.id, contacts.c.phone_number).where(contacts.c.id.in_(wanted)))
        numbers = {row.id: row.phone_number for row in found}
    return [
        PendingMessage(row.message_id, row.content, row.chat_jid or numbers.get(row.contact_id, ""), row.timestamp)
        for row in rows
    ]


async def record_sends(conn: AsyncConnection, session_row: str, outcomes: Sequence[SendOutcome]) -> set[str]:
    """Record the outcome of sends still pending; return the (queued) ids recorded.

    An outcome's status is sent or failed, or further along when the message's receipts came first.
    A message no longer pending was overtaken by its own receipt and is left as it is.
    """
    if not outcomes:
        return set()
    result = await conn.execute(
        _RECORD_SENDS,
        {
            "row": session_row,
            "ids": [o.message_id for o in outcomes],
            "new_ids": [o.assigned_id for o in outcomes],
            "statuses": [o.status.value for o in outcomes],
            "chats": [o.chat_jid for o in outcomes],
            "sent_at": [o.sent_at for o in outcomes],
            "errors": [o.error for o in outcomes],
        },
    )
    return {row.requested for row in result}


async def advance(conn: AsyncConnection, targets: Sequence[tuple[str, str, MessageStatus]]) -> list[Advanced]:
    """Move each (session row, message id) of an outbound message to its status if that is further along."""
    if not targets:
        return []
    result = await conn.execute(
        _ADVANCE,
        {
            "rows": [row for row, _, _ in targets],
            "ids": [message_id for _, message_id, _ in targets],
            "statuses": [status.value for _, _, status in targets],
            "order": STATUS_ORDER,
        },
    )
    return [Advanced(row.session_id, row.message_id, MessageStatus(row.old_status)) for row in result]


async def enqueue_text(
    conn: AsyncConnection,
    *,
    session_id: str,
    allowed_statuses: Sequence[str],
    recipient: str,
    is_group: bool,
    content: str,
    message_id: str,
    timestamp: datetime,
    wake: str,
    notify: bool = True,
) -> Message | None:
    """Queue a text as a pending message of session `session_id` (upserting its contact) and wake the workers.

    One statement: returns the new message's row, or None when the session does not exist, is in no
    status of `allowed_statuses` (the caller then finds out which), or a concurrent transaction was adding
    the same new contact (it exists now: call again). With `notify=False` the caller wakes the workers
    itself, after the commit (`wake` is then only passed through).
    """
    row = (
        (
            await conn.execute(
                _ENQUEUE if notify else _ENQUEUE_QUIET,
                {
                    "session_id": session_id,
                    "allowed": list(allowed_statuses),
                    "contact_row": new_id(),
                    "recipient": recipient,
                    "is_group": is_group,
                    "message_row": new_id(),
                    "message_id": message_id,
                    "content": content,
                    "timestamp": timestamp,
                    "channel": OUTBOUND,
                    "wake": wake,
                },
            )
        )
        .mappings()
        .one_or_none()
    )
    return None if row is None else message_record(row)


_ENQUEUE_SQL = """
    WITH s AS (
        SELECT id FROM sessions WHERE session_id = :session_id AND status = ANY(CAST(:allowed AS text[]))
    ), known AS (
        SELECT contacts.id, contacts.session_id FROM contacts JOIN s ON contacts.session_id = s.id
        WHERE contacts.phone_number = :recipient
    ), added AS (
        -- a new contact; a known one is only read, never written (no row lock shared by every send to it)
        INSERT INTO contacts (id, session_id, phone_number, is_group)
        SELECT :contact_row, s.id, :recipient, :is_group FROM s WHERE NOT EXISTS (SELECT 1 FROM known)
        ON CONFLICT (session_id, phone_number) DO NOTHING
        RETURNING id, session_id
    ), c AS (
        SELECT id, session_id FROM known UNION ALL SELECT id, session_id FROM added
    ), woken AS (
        SELECT pg_notify(:channel, :wake) FROM c
    )
    INSERT INTO messages (id, session_id, contact_id, message_id, content, type, direction, status, timestamp)
    SELECT :message_row, c.session_id, c.id, :message_id, :content, 'text', 'outbound', 'pending', :timestamp
    FROM c, woken
    RETURNING *
"""
_ENQUEUE = text(_ENQUEUE_SQL)
# the same without the NOTIFY: for callers that wake the workers after commit, many sends at a time
_ENQUEUE_QUIET = text(
    _ENQUEUE_SQL.replace(
        "SELECT pg_notify(:channel, :wake) FROM c", "SELECT CAST(:channel AS text), CAST(:wake AS text)"
    )
)

_ADVANCE = text(
    """
    WITH input AS (
        SELECT * FROM unnest(CAST(:rows AS text[]), CAST(:ids AS text[]), CAST(:statuses AS text[]))
            AS i(session_row, message_id, status)
    ), target AS (
        SELECT m.id, m.status AS old_status, i.status AS new_status
        FROM messages m JOIN input i ON m.session_id = i.session_row AND m.message_id = i.message_id
        WHERE m.direction = 'outbound'
          AND array_position(CAST(:order AS text[]), m.status) < array_position(CAST(:order AS text[]), i.status)
        FOR UPDATE OF m
    )
    UPDATE messages m SET status = t.new_status, sent_at = COALESCE(m.sent_at, now()), updated_at = now()
    FROM target t WHERE m.id = t.id
    RETURNING m.session_id, m.message_id, t.old_status
    """
)

_RECORD_SENDS = text(
    """
    WITH input AS (
        SELECT * FROM unnest(
            CAST(:ids AS text[]), CAST(:new_ids AS text[]), CAST(:statuses AS text[]), CAST(:chats AS text[]),
            CAST(:sent_at AS timestamptz[]), CAST(:errors AS text[])
        ) AS i(message_id, new_message_id, status, chat_jid, sent_at, error)
    )
    UPDATE messages m
    SET status = i.status, message_id = i.new_message_id, chat_jid = i.chat_jid, sent_at = i.sent_at,
        error = i.error, updated_at = now()
    FROM input i
    WHERE m.session_id = :row AND m.message_id = i.message_id AND m.status = 'pending'
    RETURNING i.message_id AS requested
    """
)


async def take_send_slot(conn: AsyncConnection, session_id: str, *, rate: float, burst: int) -> float:
    """Count one send of session `session_id` against its rate limit (GCRA, shared by every API process).

    Returns 0 when the send may go (or the session does not exist: the caller finds out), else the seconds
    to wait before it may (nothing is counted then).
    The row lock is held to the end of the caller's transaction, so concurrent sends queue up for it.
    """
    interval = 1.0 / rate
    row = (
        await conn.execute(
            _TAKE_SLOT, {"session_id": session_id, "interval": interval, "tolerance": interval * (burst - 1)}
        )
    ).one()
    return 0.0 if row.allowed else max(float(row.wait), 0.001)


_TAKE_SLOT = text(
    """
    WITH current AS (
        SELECT greatest(coalesce((SELECT tat FROM send_limits WHERE session_id = :session_id), now()), now()) AS tat
    ), taken AS (
        INSERT INTO send_limits AS l (session_id, tat)
        SELECT :session_id, current.tat + make_interval(secs => :interval) FROM current
        WHERE current.tat - now() <= make_interval(secs => :tolerance)
          AND EXISTS (SELECT 1 FROM sessions WHERE session_id = :session_id)
        ON CONFLICT (session_id) DO UPDATE
            SET tat = greatest(l.tat, now()) + make_interval(secs => :interval)
            WHERE greatest(l.tat, now()) - now() <= make_interval(secs => :tolerance)
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM taken) OR NOT EXISTS (SELECT 1 FROM sessions WHERE session_id = :session_id)
               AS allowed,
           extract(epoch FROM (SELECT tat FROM current) - now() - make_interval(secs => :tolerance)) AS wait
    """
)


async def recall_idempotent(conn: AsyncConnection, key: str, fingerprint: str) -> dict[str, Any] | None:
    """Return the stored response of a request made with `key` (and the same fingerprint) in the last day.

    Raises IdempotencyKeyReused when `key` was used for a different request. Waits for a request with the
    same key that is still in flight (its row is locked until it commits).
    """
    await conn.execute(_LOCK_KEY, {"key": key})  # a concurrent request with this key commits first
    row = (await conn.execute(_RECALL, {"key": key})).one_or_none()
    if row is None:
        return None
    if row.fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request: use a new key for a new request", key=key
        )
    return dict(row.response)


async def remember_idempotent(conn: AsyncConnection, key: str, fingerprint: str, response: dict[str, Any]) -> bool:
    """Store the response of the request made with `key` (after `recall_idempotent` in the same transaction)."""
    params = {"key": key, "fingerprint": fingerprint, "response": json.dumps(response)}
    return (await conn.execute(_REMEMBER, params)).one_or_none() is not None


IDEMPOTENCY_TTL_HOURS = 24

_LOCK_KEY = text("SELECT pg_advisory_xact_lock(31337, hashtext(:key))")

_RECALL = text(
    f"""
    SELECT fingerprint, response FROM idempotency_keys
    WHERE key = :key AND created_at > now() - interval '{IDEMPOTENCY_TTL_HOURS} hours'
    """
)

_REMEMBER = text(
    f"""
    INSERT INTO idempotency_keys AS k (key, fingerprint, response) VALUES (:key, :fingerprint, CAST(:response AS jsonb))
    ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint, response = excluded.response,
        created_at = now()
    WHERE k.created_at <= now() - interval '{IDEMPOTENCY_TTL_HOURS} hours'
    RETURNING 1
    """
)


async def pending_count(conn: AsyncConnection, session_rows: Sequence[str]) -> int:
    """How many outbound messages of the given sessions (row ids) wait to be sent."""
    stmt = select(func.count()).where(
        messages.c.session_id.in_(list(session_rows)),
        messages.c.status == MessageStatus.PENDING.value,
        messages.c.direction == "outbound",
    )
    return int((await conn.execute(stmt)).scalar_one())
