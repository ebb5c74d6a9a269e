"""The groups of a client's sessions, in its schema: `groups` and `group_participants`, as WhatsApp last told.

Statements for the transaction of a `ConnectionManager`. A group is refreshed whole from its info (the
engine's answer, or a JOINED event) and piecewise from change events; a group the session left keeps its row
(`left_at`) with the participants it last knew.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db.tables import group_participants, groups, messages
from zapgate.domain.groups import GroupInfo, GroupParticipant
from zapgate.domain.ids import new_id


@dataclass(frozen=True, slots=True)
class StoredGroup:
    """A group as stored for a session."""

    info: GroupInfo
    updated_at: datetime
    left_at: datetime | None


async def _row_id(conn: AsyncConnection, session_row: str, jid: str) -> str:
    """The row id of the session's group `jid`, inserting a bare row if there is none yet."""
    stmt = (
        pg_insert(groups)
        .values(id=new_id(), session_id=session_row, jid=jid)
        .on_conflict_do_update(index_elements=[groups.c.session_id, groups.c.jid], set_={"updated_at": func.now()})
        .returning(groups.c.id)
    )
    return str((await conn.execute(stmt)).scalar_one())


async def save_info(conn: AsyncConnection, session_row: str, info: GroupInfo) -> None:
    """Store what the group is now (the session is in it): its fields and all its participants."""
    row = await _row_id(conn, session_row, info.jid)
    await conn.execute(
        update(groups)
        .where(groups.c.id == row)
        .values(
            subject=info.subject,
            description=info.description,
            owner_jid=info.owner_jid,
            announce=info.announce,
            locked=info.locked,
            picture_id=info.picture_id if info.picture_id is not None else groups.c.picture_id,
            created_at=info.created_at,
            left_at=None,
            updated_at=func.now(),
        )
    )
    await conn.execute(delete(group_participants).where(group_participants.c.group_id == row))
    if info.participants:
        await conn.execute(
            pg_insert(group_participants)
            .values(
                [
                    {
                        "group_id": row,
                        "jid": p.jid,
                        "lid": p.lid,
                        "is_admin": p.is_admin,
                        "is_super_admin": p.is_super_admin,
                    }
                    for p in info.participants
                ]
            )
            .on_conflict_do_nothing()
        )


async def save_infos(conn: AsyncConnection, session_row: str, infos: Sequence[GroupInfo]) -> None:
    """Store every group the session is in now; the others it knew it has left."""
    for info in infos:
        await save_info(conn, session_row, info)
    await conn.execute(
        update(groups)
        .where(
            groups.c.session_id == session_row,
            groups.c.jid.not_in([info.jid for info in infos]) if infos else groups.c.jid.is_not(None),
            groups.c.left_at.is_(None),
        )
        .values(left_at=func.now(), updated_at=func.now())
    )


async def update_settings(conn: AsyncConnection, session_row: str, jid: str, values: dict[str, Any]) -> None:
    """Store new values of the group's settings (subject, description, picture_id, announce, locked)."""
    row = await _row_id(conn, session_row, jid)
    if values:
        await conn.execute(update(groups).where(groups.c.id == row).values(**values, updated_at=func.now()))


async def change_participants(
    conn: AsyncConnection, session_row: str, jid: str, action: str, participants: Collection[str]
) -> None:
    """Apply a participants change (add, join-by-link, approved, remove, leave, promote, demote) to the stored
    group; join requests (requested, rejected) change no participant."""
    row = await _row_id(conn, session_row, jid)
    if not participants:
        return
    people = list(participants)
    if action in ("add", "join-by-link", "approved"):
        await conn.execute(
            pg_insert(group_participants)
            .values([{"group_id": row, "jid": person} for person in people])
            .on_conflict_do_nothing()
        )
    elif action in ("remove", "leave"):
        await conn.execute(
            delete(group_participants).where(group_participants.c.group_id == row, group_participants.c.jid.in_(people))
        )
    elif action in ("promote", "demote"):
        await conn.execute(
            update(group_participants)
            .where(group_participants.c.group_id == row, group_participants.c.jid.in_(people))
            .values(is_admin=action == "promote")
        )


async def mark_left(conn: AsyncConnection, session_row: str, jid: str, at: datetime) -> None:
    """Record that the session is no longer in the group."""
    row = await _row_id(conn, session_row, jid)
    await conn.execute(update(groups).where(groups.c.id == row).values(left_at=at, updated_at=func.now()))


async def list_groups(conn: AsyncConnection, session_row: str, *, include_left: bool = False) -> list[StoredGroup]:
    """The session's groups (those it is in, unless `include_left`), by subject, with their participants."""
    stmt = select(groups).where(groups.c.session_id == session_row)
    if not include_left:
        stmt = stmt.where(groups.c.left_at.is_(None))
    rows = (await conn.execute(stmt.order_by(groups.c.subject, groups.c.jid))).mappings().all()
    members = await _participants(conn, [row["id"] for row in rows])
    return [_stored(row, members.get(row["id"], [])) for row in rows]


async def get_group(conn: AsyncConnection, session_row: str, jid: str) -> StoredGroup | None:
    """The session's group `jid` with its participants, or None."""
    stmt = select(groups).where(groups.c.session_id == session_row, groups.c.jid == jid)
    row = (await conn.execute(stmt)).mappings().one_or_none()
    if row is None:
        return None
    members = await _participants(conn, [row["id"]])
    return _stored(row, members.get(row["id"], []))


async def _participants(conn: AsyncConnection, rows: list[str]) -> dict[str, list[GroupParticipant]]:
    if not rows:
        return {}
    stmt = (
        select(group_participants)
        .where(group_participants.c.group_id.in_(rows))
        .order_by(
            group_participants.c.is_super_admin.desc(), group_participants.c.is_admin.desc(), group_participants.c.jid
        )
    )
    found: dict[str, list[GroupParticipant]] = {}
    for p in (await conn.execute(stmt)).mappings():
        found.setdefault(p["group_id"], []).append(
            GroupParticipant(jid=p["jid"], lid=p["lid"], is_admin=p["is_admin"], is_super_admin=p["is_super_admin"])
        )
    return found


def _stored(row: Any, participants: list[GroupParticipant]) -> StoredGroup:
    info = GroupInfo(
        jid=row["jid"],
        subject=row["subject"],
        description=row["description"],
        owner_jid=row["owner_jid"],
        announce=row["announce"],
        locked=row["locked"],
        picture_id=row["picture_id"],
        created_at=row["created_at"],
        participants=tuple(participants),
    )
    return StoredGroup(info=info, updated_at=row["updated_at"], left_at=row["left_at"])


async def received_invite(
    conn: AsyncConnection, session_row: str, message_id: str
) -> tuple[dict[str, Any], str | None] | None:
    """The public content and the author of the session's received message `message_id` (our id), or None."""
    stmt = select(messages.c.payload, messages.c.sender_jid, messages.c.chat_jid).where(
        messages.c.session_id == session_row,
        messages.c.message_id == message_id,
        messages.c.direction == "inbound",
    )
    row = (await conn.execute(stmt)).first()
    if row is None:
        return None
    return (row.payload or {}), (row.sender_jid or row.chat_jid)
