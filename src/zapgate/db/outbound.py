"""The outbound queue and message statuses in a client's schema: claim, record, advance, enqueue.

Statements for the transaction of a `ConnectionManager` (its search_path names the client's schema).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db import conversation
from zapgate.db.conversation import Target
from zapgate.db.driver import driver
from zapgate.db.tables import messages
from zapgate.domain import receipts
from zapgate.domain.contacts import ContactIds
from zapgate.domain.ids import new_id
from zapgate.domain.records import MessageStatus
from zapgate.errors import IdempotencyKeyReused

STATUS_ORDER = [status.value for status in receipts.STATUS_ORDER]
RANK = receipts.RANK


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A message waiting to be sent: its id, its text and where it goes.

    `to` is the recipient as the caller gave it (digits, a JID or a group JID); `recipient` is WhatsApp's
    answer about that number when one is cached and fresh.
    """

    message_id: str
    content: str
    to: str
    accepted_at: datetime | None = None
    attempts: int = 0
    recipient: Recipient | None = None
    is_group: bool = False
    kind: str = "text"
    payload: dict[str, Any] | None = None  # the content's public shape (None: a text, in `content`)
    context: dict[str, Any] | None = None  # the message it replies to (our id)
    mentions: tuple[str, ...] = ()
    targets: dict[str, Target] = field(default_factory=dict)  # by our id: what it replies to or acts on
    contact: ContactIds | None = None  # its contact, as its events name it


@dataclass(frozen=True, slots=True)
class Recipient:
    """WhatsApp's answer about a number for one session: on it or not, under which JIDs."""

    phone_number: str
    on_whatsapp: bool
    jid: str | None
    lid: str | None


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What happened when a worker tried to send one message.

    `status` is sent or failed (or further, when receipts overtook the send), or pending for a message
    to try again at `retry_at`.
    """

    message_id: str  # our id, the public one
    assigned_id: str | None  # the id WhatsApp knows it by (None unless WhatsApp took it)
    status: MessageStatus
    chat_jid: str | None
    sent_at: datetime | None
    error: str | None
    error_code: str | None = None
    retry_at: datetime | None = None  # pending: not claimed again before then
    attempts: int = 0  # failed attempts so far, this one included


@dataclass(frozen=True, slots=True)
class Advanced:
    """A message whose status moved forward, and where from."""

    session_row: str
    message_id: str  # ours
    wa_message_id: str  # WhatsApp's, which the receipt named
    old_status: MessageStatus
    contact: ContactIds | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """A session's claimed messages, and in how many seconds its first message held back falls due (None: none)."""

    messages: list[PendingMessage]
    held_for: float | None


async def claim_pending(conn: AsyncConnection, session_row: str, limit: int) -> Claim:
    """Lock and return the session's oldest pending messages that are due (skipping any another holds), and in
    how many seconds the first pending message that is not due yet falls due.

    A message waiting for its next attempt holds back the later messages to the same chat (their order
    is kept), not the messages to others. Such a message waits for its next attempt or for room under the
    first-contact cap (`next_attempt_at`). One statement, one round trip, for both answers.
    """
    return (await claim_pending_many(conn, [(session_row, limit)]))[0]


async def claim_pending_many(conn: AsyncConnection, asks: Sequence[tuple[str, int]]) -> list[Claim]:
    """`claim_pending` of several sessions, given as (session row, limit), in one statement; a Claim for each."""
    if not asks:
        return []
    rows = await driver(conn).fetch(  # the hot path (db/driver.py)
        _CLAIM, [row for row, _ in asks], [limit for _, limit in asks]
    )
    by_ask: list[list[Any]] = [[] for _ in asks]
    for row in rows:  # one row at least per session (its held_for), with the message's columns NULL when none
        by_ask[row["n"] - 1].append(row)
    claims = []
    for (session_row, _), found_rows in zip(asks, by_ask, strict=True):
        seconds = found_rows[0]["held_for"] if found_rows else None
        claimed = [row for row in found_rows if row["message_id"] is not None]
        claims.append(
            Claim(await _pending(conn, session_row, claimed), None if seconds is None else max(0.0, float(seconds)))
        )
    return claims


async def _pending(conn: AsyncConnection, session_row: str, rows: Sequence[Any]) -> list[PendingMessage]:
    """The claimed rows of a session as PendingMessages, with the messages they name (replies, reactions)."""
    named = {name for row in rows for name in _named(row["payload"], row["context"])}
    found = {t.message_id: t for t in await conversation.targets(conn, session_row, message_ids=named)}
    return [
        PendingMessage(
            row["message_id"],
            row["content"],
            row["phone_number"],  # the recipient as given (digits or a JID): resolved again if the cache expired
            row["timestamp"],
            row["attempts"],
            (
                Recipient(row["phone_number"], row["on_whatsapp"], row["jid"], row["lid"])
                if row["on_whatsapp"] is not None
                else None
            ),
            bool(row["is_group"]),
            row["type"],
            row["payload"],
            row["context"],
            tuple(row["mentions"] or ()),
            {name: found[name] for name in _named(row["payload"], row["context"]) if name in found},
            ContactIds(row["contact_id"], row["contact_jid"], row["contact_lid"]),
        )
        for row in rows
    ]


def _named(payload: dict[str, Any] | None, context: dict[str, Any] | None) -> list[str]:
    """Our ids of the messages a queued message replies to or acts on (a reaction's, an edit's target)."""
    names = []
    if context and isinstance(context.get("message_id"), str):
        names.append(context["message_id"])
    if payload:
        body = payload.get(str(payload.get("type")))
        if isinstance(body, dict) and isinstance(body.get("message_id"), str):
            names.append(body["message_id"])
    return names


_CLAIM = """
    -- each session asked for (in the order asked: n), the statement of one session, run for it
    SELECT s.n, x.*
    FROM unnest(CAST($1 AS text[]), CAST($2 AS integer[])) WITH ORDINALITY AS s(session_row, lim, n)
    CROSS JOIN LATERAL (
        WITH due AS (
            SELECT m.message_id, m.content, m.contact_id, m.timestamp, m.attempts, m.type, m.payload, m.context,
                   m.mentions
            FROM messages m
            WHERE m.session_id = s.session_row AND m.status = 'pending' AND m.direction = 'outbound'
              AND (m.next_attempt_at IS NULL OR m.next_attempt_at <= now())
              AND NOT EXISTS (
                  SELECT 1 FROM messages h
                  WHERE h.session_id = m.session_id AND h.contact_id = m.contact_id
                    AND h.status = 'pending' AND h.direction = 'outbound' AND h.next_attempt_at > now()
                    AND (h.timestamp, h.id) < (m.timestamp, m.id)
              )
            ORDER BY m.timestamp, m.id
            LIMIT s.lim
            FOR UPDATE OF m SKIP LOCKED
        ), held AS (
            -- the first held message (the condition of ix_messages_held, so that the index answers it)
            SELECT EXTRACT(EPOCH FROM min(next_attempt_at) - now()) AS held_for
            FROM messages
            WHERE session_id = s.session_row AND status = 'pending' AND next_attempt_at IS NOT NULL
              AND direction = 'outbound' AND next_attempt_at > now()
        ), claimed AS (
            SELECT d.message_id, d.content, d.timestamp, d.attempts, d.type, d.payload, d.context, d.mentions,
                   c.phone_number, c.is_group, r.on_whatsapp, r.jid, r.lid,
                   c.id AS contact_id, c.jid AS contact_jid, c.lid AS contact_lid
            FROM due d
            JOIN contacts c ON c.id = d.contact_id
            LEFT JOIN recipients r
                ON r.session_id = s.session_row AND r.phone_number = c.phone_number AND r.expires_at > now()
        )
        -- one row at least (held's), with the claimed messages' columns NULL when there are none
        SELECT h.held_for, m.*
        FROM held h LEFT JOIN claimed m ON true
    ) x
    ORDER BY s.n, x.timestamp, x.message_id
    """


async def record_sends_many(
    conn: AsyncConnection, sends: Sequence[tuple[str, Sequence[SendOutcome]]]
) -> list[dict[str, ContactIds]]:
    """Record the outcome of sends still pending, for each (session row, outcomes), in one statement; answer, per
    session, the ids (ours) recorded, with their contacts.

    An outcome's status is sent or failed, or further along when the message's receipts came first, or
    pending with the time of its next attempt. A message no longer pending was overtaken by its own
    receipt and is left as it is.
    """
    answers: list[dict[str, ContactIds]] = [{} for _ in sends]
    outcomes = [(n, o) for n, (_, session_outcomes) in enumerate(sends) for o in session_outcomes]
    if not outcomes:
        return answers
    rows = await driver(conn).fetch(  # the hot path (db/driver.py)
        _RECORD_SENDS,
        [n for n, _ in outcomes],
        [sends[n][0] for n, _ in outcomes],
        [o.message_id for _, o in outcomes],
        [o.assigned_id for _, o in outcomes],
        [o.status.value for _, o in outcomes],
        [o.chat_jid for _, o in outcomes],
        [o.sent_at for _, o in outcomes],
        [o.error for _, o in outcomes],
        [o.error_code for _, o in outcomes],
        [o.retry_at for _, o in outcomes],
        [o.attempts for _, o in outcomes],
    )
    for row in rows:
        answers[row["n"]][row["requested"]] = ContactIds(row["contact_id"], row["contact_jid"], row["contact_lid"])
    return answers


async def advance(conn: AsyncConnection, targets: Sequence[tuple[str, str, MessageStatus]]) -> list[Advanced]:
    """Move each (session row, WhatsApp message id) of an outbound message to its status if further along."""
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
    return [
        Advanced(
            row.session_id,
            row.message_id,
            row.wa_message_id,
            MessageStatus(row.old_status),
            ContactIds(row.contact_id, row.contact_jid, row.contact_lid),
        )
        for row in result
    ]


async def remember_recipients(
    conn: AsyncConnection, session_row: str, answers: Sequence[Recipient], ttl: float
) -> None:
    """Cache WhatsApp's answers about numbers for the session, for `ttl` seconds."""
    if not answers:
        return
    await conn.execute(
        _REMEMBER_RECIPIENTS,
        {
            "row": session_row,
            "numbers": [a.phone_number for a in answers],
            "on": [a.on_whatsapp for a in answers],
            "jids": [a.jid for a in answers],
            "lids": [a.lid for a in answers],
            "ttl": ttl,
        },
    )


_REMEMBER_RECIPIENTS = text(
    """
    INSERT INTO recipients AS r (session_id, phone_number, on_whatsapp, jid, lid, checked_at, expires_at)
    SELECT :row, n, o, j, l, now(), now() + make_interval(secs => :ttl)
    FROM unnest(CAST(:numbers AS text[]), CAST(:on AS boolean[]), CAST(:jids AS text[]), CAST(:lids AS text[]))
        AS i(n, o, j, l)
    ON CONFLICT (session_id, phone_number) DO UPDATE
    SET on_whatsapp = excluded.on_whatsapp, jid = excluded.jid, lid = COALESCE(excluded.lid, r.lid),
        checked_at = excluded.checked_at, expires_at = excluded.expires_at
    """
)


async def first_contact_room(
    conn: AsyncConnection, session_row: str, jids: Collection[str], cap: int
) -> tuple[set[str], datetime | None]:
    """Return which of `jids` are first contacts of the session (they never wrote to it, it never wrote to
    them first), and when the next first contact is allowed if the cap of the last 24 hours is reached."""
    rows = (await conn.execute(_FIRST_CONTACTS, {"row": session_row, "jids": sorted(jids)})).all()
    first = {row.jid for row in rows if row.first}
    count, oldest = (await conn.execute(_FIRST_CONTACTS_TODAY, {"row": session_row})).one()
    if count < cap:
        return first, None
    return first, oldest + timedelta(days=1)


_FIRST_CONTACTS = text(
    """
    SELECT j AS jid, NOT (
        EXISTS (SELECT 1 FROM first_contacts f WHERE f.session_id = :row AND f.jid = j)
        OR EXISTS (
            SELECT 1 FROM messages m
            WHERE m.session_id = :row AND m.direction = 'inbound' AND m.chat_jid = j
        )
    ) AS first
    FROM unnest(CAST(:jids AS text[])) AS j
    """
)

_FIRST_CONTACTS_TODAY = text(
    """
    SELECT count(*), min(at) FROM first_contacts WHERE session_id = :row AND at > now() - interval '1 day'
    """
)


async def note_first_contacts(conn: AsyncConnection, session_row: str, jids: Collection[str]) -> None:
    """Record that the session wrote first to `jids` now (they count against its daily cap)."""
    if jids:
        await conn.execute(
            text(
                "INSERT INTO first_contacts (session_id, jid) SELECT :row, j FROM unnest(CAST(:jids AS text[])) AS j"
                " ON CONFLICT DO NOTHING"
            ),
            {"row": session_row, "jids": sorted(jids)},
        )


@dataclass(frozen=True, slots=True)
class QueuedText:
    """A text to queue as a pending outbound message of the session with row id `session_row`."""

    session_row: str
    recipient: str  # a phone number or a group JID
    is_group: bool
    content: str
    message_id: str
    timestamp: datetime
    kind: str = "text"
    payload: dict[str, Any] | None = None  # the content's public shape (None for a text)
    context: dict[str, Any] | None = None  # the message it replies to: {"message_id": ours}
    mentions: tuple[str, ...] = ()


async def sessions_for_send(conn: AsyncConnection, session_ids: Collection[str]) -> dict[str, tuple[str, str]]:
    """Return {session id: (row id, status)} of the sessions that exist, locked against deletion to commit."""
    rows = await driver(conn).fetch(_SESSIONS_FOR_SEND, sorted(session_ids))  # every send: the hot path (db/driver.py)
    return {row["session_id"]: (row["id"], row["status"]) for row in rows}


_SESSIONS_FOR_SEND = """
    SELECT session_id, id, status FROM sessions WHERE session_id = ANY(CAST($1 AS text[]))
    ORDER BY session_id
    FOR KEY SHARE
    """


async def enqueue_texts(conn: AsyncConnection, texts: Sequence[QueuedText]) -> set[str]:
    """Queue texts as pending messages (adding the contacts new to their sessions); return the ids queued.

    One statement for all. A text is left out only when a concurrent transaction was adding the same
    new contact: it exists once that one commits, so queue the text again.
    """
    if not texts:
        return set()
    rows = await driver(conn).fetch(  # every send: the hot path (db/driver.py)
        _ENQUEUE,
        [t.session_row for t in texts],
        [t.recipient for t in texts],
        [t.is_group for t in texts],
        [t.content for t in texts],
        [t.message_id for t in texts],
        [new_id() for _ in texts],
        [new_id() for _ in texts],
        [t.timestamp for t in texts],
        [t.kind for t in texts],
        [None if t.payload is None else json.dumps(t.payload) for t in texts],
        [None if t.context is None else json.dumps(t.context) for t in texts],
        [json.dumps(list(t.mentions)) if t.mentions else None for t in texts],
    )
    return {row["message_id"] for row in rows}


_ENQUEUE = """
    WITH input AS (
        SELECT * FROM unnest(
            CAST($1 AS text[]), CAST($2 AS text[]), CAST($3 AS boolean[]), CAST($4 AS text[]), CAST($5 AS text[]),
            CAST($6 AS text[]), CAST($7 AS text[]), CAST($8 AS timestamptz[]), CAST($9 AS text[]),
            CAST($10 AS jsonb[]), CAST($11 AS jsonb[]), CAST($12 AS jsonb[])
        ) WITH ORDINALITY AS i(session_row, recipient, is_group, content, message_id, message_row, contact_row, ts,
                               kind, payload, context, mentions, n)
    ), wanted AS (
        SELECT DISTINCT ON (session_row, recipient) session_row, recipient, is_group, contact_row
        FROM input ORDER BY session_row, recipient, n
    ), by_key AS (
        -- the lock the messages' foreign key takes anyway, taken first: a merge of these contacts (db/contacts.py)
        -- waits for this send (and moves its message), or this send waits for it and finds the contact it kept
        SELECT c.id, c.session_id, w.recipient
        FROM contacts c JOIN wanted w ON c.session_id = w.session_row AND c.phone_number = w.recipient
        FOR KEY SHARE OF c
    ), by_lid AS (  -- a LID of a person known by number (its key is the number's digits then)
        SELECT c.id, c.session_id, w.recipient
        FROM contacts c JOIN wanted w ON c.session_id = w.session_row AND c.lid = w.recipient
        WHERE c.phone_number <> w.recipient
        FOR KEY SHARE OF c
    ), by_alias AS (
        -- digits WhatsApp answered for with another account's JID (the other spelling of Brazil's ninth digit):
        -- that account's contact, not a second one for the same person
        SELECT c.id, c.session_id, w.recipient
        FROM wanted w
        JOIN recipients r ON r.session_id = w.session_row AND r.phone_number = w.recipient AND r.on_whatsapp
        -- by its JID (whatsmeow may answer a LID as the JID): one row at most, by the unique indexes
        JOIN contacts c ON c.session_id = w.session_row
            AND ((r.jid NOT LIKE '%@lid' AND c.jid = r.jid) OR (r.jid LIKE '%@lid' AND c.lid = r.jid))
        WHERE c.phone_number <> w.recipient AND NOT EXISTS (
            SELECT 1 FROM contacts k WHERE k.session_id = w.session_row AND k.phone_number = w.recipient
        )
        FOR KEY SHARE OF c
    ), known AS (
        SELECT * FROM by_key UNION ALL SELECT * FROM by_lid UNION ALL SELECT * FROM by_alias
    ), added AS (
        -- new contacts; known ones are only read, never written (no row lock shared by every send to them).
        -- A LID or a group's JID names the contact's id on WhatsApp; a number's JID is WhatsApp's to tell
        INSERT INTO contacts (id, session_id, phone_number, is_group, lid, jid)
        SELECT w.contact_row, w.session_row, w.recipient, w.is_group,
               CASE WHEN w.recipient LIKE '%@lid' THEN w.recipient END,
               CASE WHEN w.recipient LIKE '%@%' AND w.recipient NOT LIKE '%@lid' THEN w.recipient END
        FROM wanted w
        WHERE NOT EXISTS (SELECT 1 FROM known k WHERE k.session_id = w.session_row AND k.recipient = w.recipient)
        ORDER BY w.session_row, w.recipient
        ON CONFLICT DO NOTHING
        RETURNING id, session_id, phone_number AS recipient
    ), c AS (
        SELECT id, session_id, recipient FROM known UNION ALL SELECT id, session_id, recipient FROM added
    )
    INSERT INTO messages (id, session_id, contact_id, message_id, content, type, direction, status, timestamp, source,
                          payload, context, mentions)
    SELECT i.message_row, i.session_row, c.id, i.message_id, i.content, i.kind, 'outbound', 'pending', i.ts, 'api',
           i.payload, i.context,
           CASE WHEN i.mentions IS NULL THEN NULL
                ELSE ARRAY(SELECT jsonb_array_elements_text(i.mentions)) END
    FROM input i JOIN c ON c.session_id = i.session_row AND c.recipient = i.recipient
    ORDER BY i.n
    RETURNING message_id
    """

_ADVANCE = text(
    """
    WITH input AS (
        SELECT * FROM unnest(CAST(:rows AS text[]), CAST(:ids AS text[]), CAST(:statuses AS text[]))
            AS i(session_row, wa_message_id, status)
    ), target AS (
        SELECT m.id, m.status AS old_status, i.status AS new_status
        FROM messages m JOIN input i ON m.session_id = i.session_row AND m.wa_message_id = i.wa_message_id
        WHERE m.direction = 'outbound'
          AND array_position(CAST(:order AS text[]), m.status) < array_position(CAST(:order AS text[]), i.status)
        FOR UPDATE OF m
    )
    UPDATE messages m SET status = t.new_status, sent_at = COALESCE(m.sent_at, now()), updated_at = now()
    FROM target t, contacts c WHERE m.id = t.id AND c.id = m.contact_id
    RETURNING m.session_id, m.message_id, m.wa_message_id, t.old_status,
              m.contact_id, c.jid AS contact_jid, c.lid AS contact_lid
    """
)

_RECORD_SENDS = """
    WITH input AS (
        SELECT * FROM unnest(
            CAST($1 AS integer[]), CAST($2 AS text[]), CAST($3 AS text[]), CAST($4 AS text[]), CAST($5 AS text[]),
            CAST($6 AS text[]), CAST($7 AS timestamptz[]), CAST($8 AS text[]), CAST($9 AS text[]),
            CAST($10 AS timestamptz[]), CAST($11 AS integer[])
        ) AS i(n, session_row, message_id, wa_message_id, status, chat_jid, sent_at, error, error_code, retry_at,
               attempts)
    )
    UPDATE messages m
    SET status = i.status, wa_message_id = COALESCE(i.wa_message_id, m.wa_message_id),
        chat_jid = COALESCE(i.chat_jid, m.chat_jid), sent_at = i.sent_at, error = i.error,
        error_code = i.error_code, next_attempt_at = i.retry_at, attempts = i.attempts, updated_at = now()
    FROM input i, contacts c
    -- index lookups by our ids (ix_messages_message_id), not a join scan, nor the whole of each session's rows
    WHERE m.message_id = ANY(CAST($3 AS text[])) AND m.message_id = i.message_id AND m.session_id = i.session_row
      AND m.status = 'pending' AND c.id = m.contact_id
    RETURNING i.n, i.message_id AS requested, m.contact_id, c.jid AS contact_jid, c.lid AS contact_lid
    """


@dataclass(frozen=True, slots=True)
class SendSlots:
    """How many of the sends asked for a session may go now; when the next one may, if not all."""

    granted: int
    retry_after: float  # seconds (0 when every send asked for was granted)


async def take_send_slots(
    conn: AsyncConnection, wanted: dict[str, int], *, rate: float, burst: int
) -> dict[str, SendSlots]:
    """Count sends against each session's rate limit (GCRA, shared by every API process).

    `wanted` maps a session id to how many sends it asks for; each gets as many as its budget allows.
    The rows stay locked to the end of the caller's transaction, so concurrent sends queue up for them.
    """
    if not wanted:
        return {}
    interval = 1.0 / rate
    ids = sorted(wanted)
    result = await conn.execute(
        _TAKE_SLOTS,
        {"ids": ids, "counts": [wanted[i] for i in ids], "interval": interval, "tolerance": interval * (burst - 1)},
    )
    slots = {}
    for row in result:
        short = row.granted < wanted[row.session_id]
        slots[row.session_id] = SendSlots(row.granted, max(float(row.wait), 0.001) if short else 0.0)
    return slots


# tat: the theoretical arrival time of the next send; a send may go while tat - now <= tolerance
_TAKE_SLOTS = text(
    """
    WITH asked AS (
        SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:counts AS int[])) AS a(session_id, k)
    ), current AS (
        SELECT l.session_id, greatest(l.tat, now()) AS tat
        FROM send_limits l JOIN asked a ON l.session_id = a.session_id
        ORDER BY l.session_id
        FOR UPDATE OF l
    ), granted AS (
        SELECT a.session_id, g.tat, least(a.k, greatest(0, floor(
            (:tolerance - extract(epoch FROM g.tat - now())) / :interval
        )::int + 1)) AS n
        FROM asked a CROSS JOIN LATERAL (
            SELECT coalesce((SELECT tat FROM current c WHERE c.session_id = a.session_id), now()) AS tat
        ) g
    ), taken AS (
        INSERT INTO send_limits AS l (session_id, tat)
        SELECT session_id, tat + make_interval(secs => n * :interval) FROM granted WHERE n > 0
        ON CONFLICT (session_id) DO UPDATE SET tat = greatest(l.tat, excluded.tat)  -- never backwards
    )
    SELECT session_id, n AS granted,
           extract(epoch FROM tat + make_interval(secs => n * :interval) - now()) - :tolerance AS wait
    FROM granted
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

# keyed by the client's schema and the key: advisory locks are database-wide, and one client's key must not
# make another client's request with the same key wait (current_schema() is the transaction's client schema)
_LOCK_KEY = text("SELECT pg_advisory_xact_lock(31337, hashtext(current_schema() || ':' || :key))")

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
