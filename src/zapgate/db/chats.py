"""Chats in a client's schema: each session's conversations, newest activity first, and their state.

Statements for the transaction of a `ConnectionManager` (its search_path names the client's schema). A chat is
a contact of the session (a number, a LID or a group) with messages; its state (archived, pinned, muted) is a
row of `chats` once set. Its last message and unread count are computed when listed, from indexes of
`messages` (ix_messages_session_id_timestamp, ix_messages_contact_id_timestamp, ix_messages_unread), so
neither a send nor an arrival writes a chat row: the send path is unchanged. Measured on 10,000 chats and
100,000 messages in one session (`benchmarks/chats_list.py`): a page of 50 in 5-15 ms of execution.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, false, func, literal, select, text, true, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db.repositories import contact_from_row
from zapgate.db.tables import UNREAD, chats, contacts, messages, sessions
from zapgate.domain.records import Contact

STORIES = "status@broadcast"  # the contact that holds stories (ZAPGATE_KEEP_STORIES) is no chat


@dataclass(frozen=True, slots=True)
class LastMessage:
    """A chat's newest message, as the list shows it."""

    message_id: str  # ours (the public id)
    wa_message_id: str | None
    direction: str
    type: str
    text: str  # its text, or a summary of what it holds
    timestamp: datetime
    status: str


@dataclass(frozen=True, slots=True)
class ChatRow:
    """A chat of a session: its contact, its state and (listed) its last message and unread count."""

    contact: Contact
    session_id: str  # the public id of its session
    archived: bool
    pinned_at: datetime | None
    muted_until: datetime | None  # year 9999: for ever (PostgreSQL's infinity)
    marked_unread: bool
    activity: datetime | None  # its last message's time (else when its state last changed)
    last: LastMessage | None = None
    unread: int = 0


def _last() -> Any:
    return (
        select(messages.c.id.label("row"), messages.c.timestamp.label("at"))
        .where(messages.c.contact_id == contacts.c.id)
        .order_by(messages.c.timestamp.desc(), messages.c.id.desc())
        .limit(1)
        .lateral("last")
    )


async def list_chats(
    conn: AsyncConnection,
    session_row: str,
    *,
    archived: bool | None = None,
    before: tuple[datetime, str] | None = None,
    limit: int,
) -> list[ChatRow]:
    """The session's chats, newest activity first; `before` is the (activity, chat id) of the previous page's last.

    A chat is a contact with messages, its activity its last message's time. The page is found among the
    session's newest messages first (WINDOW_PER_CHAT per chat asked for, ix_messages_session_id_timestamp): a chat that
    wrote or was written to in them is newer than every chat that was not. Only when they hold too few chats
    (a few very busy chats; archived chats only) is every chat's last message looked up. Only the page's chats
    get their last message and unread count read.
    """
    ids = None if archived else await _window_page(conn, session_row, archived, before, limit)
    if ids is None:
        ids = await _full_page(conn, session_row, archived, before, limit)
    last = _last()
    page = (
        select(contacts.c.id, last.c.row.label("last_row"), last.c.at.label("activity"))
        .select_from(contacts.join(last, true()))
        .where(contacts.c.id.in_(ids))
        .cte("page")
    )
    return await _chats(conn, page) if ids else []


WINDOW_PER_CHAT = 20  # the session's newest messages a page of chats is looked for in first, per chat of the page
MIN_WINDOW = 200


async def _window_page(
    conn: AsyncConnection, session_row: str, archived: bool | None, before: tuple[datetime, str] | None, limit: int
) -> list[str] | None:
    """The ids of the page's chats found among the session's newest messages (older than `before`), or None when
    those do not settle the page."""
    window = max(MIN_WINDOW, WINDOW_PER_CHAT * limit)
    recent_where = [messages.c.session_id == session_row]
    if before is not None:
        recent_where.append(messages.c.timestamp <= before[0])
    recent = (
        select(messages.c.contact_id, messages.c.timestamp)
        .where(*recent_where)
        .order_by(messages.c.timestamp.desc(), messages.c.id.desc())
        .limit(window)
        .cte("recent")
    )
    grouped = (
        select(recent.c.contact_id, func.max(recent.c.timestamp).label("at"))
        .group_by(recent.c.contact_id)
        .cte("grouped")
    )
    conditions = [contacts.c.phone_number != STORIES]
    if before is not None:
        newer = messages.alias("newer")
        # a chat with a message after the window's newest of it was listed on an earlier page (the first page's
        # window holds each of its chats' newest message)
        conditions.append(
            ~select(newer.c.id)
            .where(newer.c.contact_id == grouped.c.contact_id, newer.c.timestamp > grouped.c.at)
            .exists()
        )
        conditions.append(tuple_(grouped.c.at, grouped.c.contact_id) < tuple_(literal(before[0]), literal(before[1])))
    if archived is not None:
        conditions.append(func.coalesce(chats.c.archived, false()) == archived)
    stmt = (
        select(grouped.c.contact_id, select(func.count()).select_from(recent).scalar_subquery().label("scanned"))
        .select_from(
            grouped.join(contacts, contacts.c.id == grouped.c.contact_id).outerjoin(
                chats, chats.c.contact_id == grouped.c.contact_id
            )
        )
        .where(*conditions)
        .order_by(grouped.c.at.desc(), grouped.c.contact_id.desc())
        .limit(limit)
    )
    rows = (await conn.execute(stmt)).all()
    if len(rows) == limit or (rows and rows[0].scanned < window):
        return [row.contact_id for row in rows]
    if not rows:
        scanned = (await conn.execute(select(func.count()).select_from(recent))).scalar_one()
        return [] if scanned < window else None
    return None  # the window ran out before the page was full


async def _full_page(
    conn: AsyncConnection, session_row: str, archived: bool | None, before: tuple[datetime, str] | None, limit: int
) -> list[str]:
    """The ids of the page's chats, every chat's last message looked up (ix_messages_contact_id_timestamp)."""
    last = _last()
    conditions = [
        contacts.c.session_id == session_row,
        contacts.c.phone_number != STORIES,
        last.c.row.is_not(None),
    ]
    if archived is not None:
        conditions.append(func.coalesce(chats.c.archived, false()) == archived)
    if before is not None:
        conditions.append(tuple_(last.c.at, contacts.c.id) < tuple_(literal(before[0]), literal(before[1])))
    stmt = (
        select(contacts.c.id)
        .select_from(contacts.outerjoin(chats, chats.c.contact_id == contacts.c.id).join(last, true()))
        .where(and_(*conditions))
        .order_by(last.c.at.desc(), contacts.c.id.desc())
        .limit(limit)
    )
    return [row.id for row in await conn.execute(stmt)]


async def chat(conn: AsyncConnection, contact_id: str) -> ChatRow | None:
    """The chat with the contact `contact_id` (any contact of the client's sessions), with its last message."""
    last = _last()
    page = (
        select(
            contacts.c.id, last.c.row.label("last_row"), func.coalesce(last.c.at, chats.c.updated_at).label("activity")
        )
        .select_from(contacts.outerjoin(chats, chats.c.contact_id == contacts.c.id).outerjoin(last, true()))
        .where(contacts.c.id == contact_id)
        .cte("page")
    )
    found = await _chats(conn, page)
    return found[0] if found else None


async def _chats(conn: AsyncConnection, page: Any) -> list[ChatRow]:
    """The chats of `page` (contact id, last message row, activity) with what the list shows of each."""
    unread = select(func.count()).where(messages.c.contact_id == page.c.id, text(UNREAD)).scalar_subquery()
    last = messages.alias("m")
    stmt = (
        select(
            page.c.activity,
            contacts,
            sessions.c.session_id.label("public_session"),
            chats.c.archived,
            chats.c.pinned_at,
            chats.c.muted_until,
            chats.c.marked_unread,
            last.c.message_id.label("last_message_id"),
            last.c.wa_message_id.label("last_wa_id"),
            last.c.direction.label("last_direction"),
            last.c.type.label("last_type"),
            last.c.content.label("last_text"),
            last.c.timestamp.label("last_at"),
            last.c.status.label("last_status"),
            unread.label("unread"),
        )
        .select_from(
            page.join(contacts, contacts.c.id == page.c.id)
            .join(sessions, sessions.c.id == contacts.c.session_id)
            .outerjoin(chats, chats.c.contact_id == page.c.id)
            .outerjoin(last, last.c.id == page.c.last_row)
        )
        .order_by(page.c.activity.desc().nulls_last(), page.c.id.desc())
    )
    return [_row(row) for row in (await conn.execute(stmt)).mappings()]


def _row(row: Any) -> ChatRow:
    contact = contact_from_row(row)
    last = None
    if row["last_message_id"] is not None:
        last = LastMessage(
            message_id=row["last_message_id"],
            wa_message_id=row["last_wa_id"],
            direction=row["last_direction"],
            type=row["last_type"],
            text=row["last_text"],
            timestamp=row["last_at"],
            status=row["last_status"],
        )
    return ChatRow(
        contact=contact,
        session_id=row["public_session"],
        archived=bool(row["archived"]),
        pinned_at=row["pinned_at"],
        muted_until=row["muted_until"],
        marked_unread=bool(row["marked_unread"]),
        activity=row["activity"],
        last=last,
        unread=int(row["unread"] or 0),
    )


async def set_state(conn: AsyncConnection, session_row: str, contact_id: str, values: dict[str, Any]) -> None:
    """Set columns of the chat's state (`archived`, `pinned_at`, `muted_until`, `marked_unread`)."""
    stmt = pg_insert(chats).values(contact_id=contact_id, session_id=session_row, **values)
    stmt = stmt.on_conflict_do_update(index_elements=[chats.c.contact_id], set_={**values, "updated_at": func.now()})
    await conn.execute(stmt)


async def read_all(conn: AsyncConnection, contact_id: str, *, up_to: datetime | None = None) -> int:
    """Mark the chat's received messages read (those up to `up_to`, if given); return how many."""
    conditions = [messages.c.contact_id == contact_id, messages.c.direction == "inbound", messages.c.status != "read"]
    if up_to is not None:
        conditions.append(messages.c.timestamp <= up_to)
    result = await conn.execute(update(messages).where(*conditions).values(status="read", updated_at=func.now()))
    return int(result.rowcount or 0)


@dataclass(frozen=True, slots=True)
class UnreadKey:
    """A received message not read yet: what a read receipt names."""

    row_id: str
    wa_message_id: str
    sender_jid: str | None
    chat_jid: str | None


async def newest_unread(conn: AsyncConnection, contact_id: str, *, limit: int) -> list[UnreadKey]:
    """The chat's newest received messages not read yet, at most `limit`."""
    stmt = (
        select(
            messages.c.id, messages.c.message_id, messages.c.wa_message_id, messages.c.sender_jid, messages.c.chat_jid
        )
        .where(messages.c.contact_id == contact_id, messages.c.direction == "inbound", messages.c.status != "read")
        .order_by(messages.c.timestamp.desc(), messages.c.id.desc())
        .limit(limit)
    )
    return [
        UnreadKey(row.id, row.wa_message_id or row.message_id, row.sender_jid, row.chat_jid)
        for row in await conn.execute(stmt)
    ]


# For the merge of contacts (db/contacts.py on main: `Reference("chats", merge=chats.MERGE)`): the state of the
# chats of `:others` folds into `:kept`'s, the most recently changed one winning, and none is left behind.
MERGE = """
WITH folded AS (
    DELETE FROM chats WHERE contact_id = ANY(CAST(:others AS text[])) RETURNING *
), newest AS (
    SELECT * FROM folded ORDER BY updated_at DESC LIMIT 1
)
INSERT INTO chats (contact_id, session_id, archived, pinned_at, muted_until, marked_unread, updated_at)
SELECT :kept, session_id, archived, pinned_at, muted_until, marked_unread, updated_at FROM newest
ON CONFLICT (contact_id) DO UPDATE SET
    archived = excluded.archived,
    pinned_at = excluded.pinned_at,
    muted_until = excluded.muted_until,
    marked_unread = excluded.marked_unread,
    updated_at = excluded.updated_at
WHERE chats.updated_at < excluded.updated_at
"""
