"""What messages do to other messages, in a client's schema: replies' targets, edits, deletes, reactions, votes.

Statements for the transaction of a `ConnectionManager` (its search_path names the client's schema). A
message that acts on another (an edit, a reaction, ...) is itself a row of `messages`, inserted once by
WhatsApp's id; applying it to its target happens in the same transaction, so it happens once.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db.tables import contacts, message_edits, messages, poll_votes, reactions


@dataclass(frozen=True, slots=True)
class Target:
    """A message another one acts on or replies to, as stored."""

    row_id: str
    message_id: str  # ours (the public id)
    wa_message_id: str | None  # WhatsApp's (None: not sent yet)
    direction: str
    type: str
    status: str
    content: str
    payload: dict[str, Any] | None
    chat_jid: str | None
    sender_jid: str | None  # the author in a group
    recipient: str  # the contact's key: digits of a number, or a group's JID
    timestamp: datetime
    sent_at: datetime | None
    deleted_at: datetime | None


_TARGET_COLUMNS = (
    messages.c.id,
    messages.c.message_id,
    messages.c.wa_message_id,
    messages.c.direction,
    messages.c.type,
    messages.c.status,
    messages.c.content,
    messages.c.payload,
    messages.c.chat_jid,
    messages.c.sender_jid,
    contacts.c.phone_number,
    messages.c.timestamp,
    messages.c.sent_at,
    messages.c.deleted_at,
)


def _target(row: Any) -> Target:
    return Target(
        row_id=row.id,
        message_id=row.message_id,
        wa_message_id=row.wa_message_id,
        direction=row.direction,
        type=row.type,
        status=row.status,
        content=row.content,
        payload=row.payload,
        chat_jid=row.chat_jid,
        sender_jid=row.sender_jid,
        recipient=row.phone_number,
        timestamp=row.timestamp,
        sent_at=row.sent_at,
        deleted_at=row.deleted_at,
    )


async def targets(
    conn: AsyncConnection,
    session_row: str,
    *,
    message_ids: Collection[str] = (),
    wa_ids: Collection[str] = (),
) -> list[Target]:
    """The session's messages named by our ids or by WhatsApp's."""
    if not message_ids and not wa_ids:
        return []
    stmt = (
        select(*_TARGET_COLUMNS)
        .join(contacts, contacts.c.id == messages.c.contact_id)
        .where(
            messages.c.session_id == session_row,
            or_(messages.c.message_id.in_(sorted(message_ids)), messages.c.wa_message_id.in_(sorted(wa_ids))),
        )
    )
    return [_target(row) for row in await conn.execute(stmt)]


async def react(conn: AsyncConnection, target_row: str, reactor: str, emoji: str, at: datetime) -> bool:
    """Set (or with "" remove) `reactor`'s reaction on a message, unless a later one is stored; return if changed."""
    if not emoji:
        result = await conn.execute(
            delete(reactions).where(
                reactions.c.message_row_id == target_row, reactions.c.reactor == reactor, reactions.c.at <= at
            )
        )
        return bool(result.rowcount)
    stmt = pg_insert(reactions).values(message_row_id=target_row, reactor=reactor, emoji=emoji, at=at)
    stmt = stmt.on_conflict_do_update(
        index_elements=[reactions.c.message_row_id, reactions.c.reactor],
        set_={"emoji": stmt.excluded.emoji, "at": stmt.excluded.at},
        where=reactions.c.at <= stmt.excluded.at,
    )
    return bool((await conn.execute(stmt)).rowcount)


async def vote(conn: AsyncConnection, poll_row: str, voter: str, selected: Sequence[str], at: datetime) -> bool:
    """Set `voter`'s choice on a poll (none withdraws it), unless a later vote is stored; return if changed."""
    if not selected:
        result = await conn.execute(
            delete(poll_votes).where(
                poll_votes.c.message_row_id == poll_row, poll_votes.c.voter == voter, poll_votes.c.at <= at
            )
        )
        return bool(result.rowcount)
    stmt = pg_insert(poll_votes).values(message_row_id=poll_row, voter=voter, selected=list(selected), at=at)
    stmt = stmt.on_conflict_do_update(
        index_elements=[poll_votes.c.message_row_id, poll_votes.c.voter],
        set_={"selected": stmt.excluded.selected, "at": stmt.excluded.at},
        where=poll_votes.c.at <= stmt.excluded.at,
    )
    return bool((await conn.execute(stmt)).rowcount)


async def edit(
    conn: AsyncConnection, target: Target, content: str, payload: dict[str, Any] | None, at: datetime
) -> None:
    """Give a message its new content, keeping the one it replaces in `message_edits`."""
    await conn.execute(
        message_edits.insert().values(
            message_row_id=target.row_id, content=target.content, payload=target.payload, replaced_at=at
        )
    )
    await conn.execute(
        update(messages)
        .where(messages.c.id == target.row_id)
        .values(content=content, payload=payload, edited_at=at, updated_at=at)
    )


async def revoke(conn: AsyncConnection, target: Target, at: datetime, *, erase: bool) -> None:
    """Mark a message deleted for everyone; with `erase`, its content and earlier versions go too."""
    values: dict[str, Any] = {"deleted_at": at, "updated_at": at}
    if erase:
        values |= {"content": "", "payload": None, "mentions": None}
        await conn.execute(delete(message_edits).where(message_edits.c.message_row_id == target.row_id))
    await conn.execute(update(messages).where(messages.c.id == target.row_id).values(**values))


@dataclass(frozen=True, slots=True)
class ReactionRow:
    """One reactor's emoji on a message."""

    reactor: str
    emoji: str
    at: datetime


@dataclass(frozen=True, slots=True)
class VoteRow:
    """One voter's choice on a poll."""

    voter: str
    selected: tuple[str, ...]
    at: datetime


@dataclass(frozen=True, slots=True)
class EditRow:
    """An earlier version of an edited message."""

    content: str
    payload: dict[str, Any] | None
    replaced_at: datetime


@dataclass(frozen=True, slots=True)
class Annotations:
    """What other messages did to some messages: reactions, votes, earlier versions, by message row id."""

    reactions: dict[str, list[ReactionRow]]
    votes: dict[str, list[VoteRow]]
    edits: dict[str, list[EditRow]]


async def annotations_of(conn: AsyncConnection, rows: Collection[str], *, with_edits: bool = False) -> Annotations:
    """The reactions, poll votes (and with `with_edits` the earlier versions) of the messages `rows`."""
    found = Annotations({}, {}, {})
    if not rows:
        return found
    wanted = sorted(rows)
    for row in await conn.execute(
        select(reactions).where(reactions.c.message_row_id.in_(wanted)).order_by(reactions.c.at, reactions.c.reactor)
    ):
        found.reactions.setdefault(row.message_row_id, []).append(ReactionRow(row.reactor, row.emoji, row.at))
    for row in await conn.execute(
        select(poll_votes).where(poll_votes.c.message_row_id.in_(wanted)).order_by(poll_votes.c.at, poll_votes.c.voter)
    ):
        found.votes.setdefault(row.message_row_id, []).append(VoteRow(row.voter, tuple(row.selected), row.at))
    if with_edits:
        for row in await conn.execute(
            select(message_edits).where(and_(message_edits.c.message_row_id.in_(wanted))).order_by(message_edits.c.id)
        ):
            found.edits.setdefault(row.message_row_id, []).append(EditRow(row.content, row.payload, row.replaced_at))
    return found


async def chat_jid(conn: AsyncConnection, session_row: str, key: str) -> str | None:
    """The chat JID the session's latest message with contact `key` was stored with, if any."""
    stmt = (
        select(messages.c.chat_jid)
        .join(contacts, contacts.c.id == messages.c.contact_id)
        .where(messages.c.session_id == session_row, contacts.c.phone_number == key, messages.c.chat_jid.is_not(None))
        .order_by(messages.c.timestamp.desc())
        .limit(1)
    )
    found: str | None = (await conn.execute(stmt)).scalar_one_or_none()
    return found


@dataclass(frozen=True, slots=True)
class Unread:
    """A received message not marked read yet."""

    row_id: str
    message_id: str
    wa_message_id: str
    sender_jid: str | None
    chat_jid: str | None


async def unread(
    conn: AsyncConnection, session_row: str, key: str, message_ids: Collection[str] | None, *, limit: int
) -> list[Unread]:
    """The session's received messages from contact `key` not read yet (those of `message_ids` only, if given)."""
    stmt = (
        select(
            messages.c.id, messages.c.message_id, messages.c.wa_message_id, messages.c.sender_jid, messages.c.chat_jid
        )
        .join(contacts, contacts.c.id == messages.c.contact_id)
        .where(
            messages.c.session_id == session_row,
            contacts.c.phone_number == key,
            messages.c.direction == "inbound",
            messages.c.status != "read",
        )
        .order_by(messages.c.timestamp)
        .limit(limit)
    )
    if message_ids is not None:
        stmt = stmt.where(messages.c.message_id.in_(sorted(message_ids)))
    return [
        Unread(row.id, row.message_id, row.wa_message_id or row.message_id, row.sender_jid, row.chat_jid)
        for row in await conn.execute(stmt)
    ]


async def mark_read(conn: AsyncConnection, rows: Collection[str]) -> None:
    """Mark received messages read."""
    await conn.execute(
        update(messages).where(messages.c.id.in_(sorted(rows))).values(status="read", updated_at=func.now())
    )
