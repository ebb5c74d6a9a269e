"""Contacts with one identity, in a client's schema: find or make a person's row, merge two rows of one person.

A sighting (`domain.contacts.Sighting`: a phone-number JID, a LID or both) is matched against every row of the
session holding one of its ids; none makes a row, several merge into one in the caller's transaction: the rows
that point at a contact (`REFERENCES`) move to the one kept, the others are deleted. Concurrent sightings of one
person queue on transaction-scoped advisory locks (one per id, taken in sorted order), and the partial unique
indexes on (session, jid) and (session, lid) with ON CONFLICT make a duplicate impossible even past them.

Statements for the transaction of a `ConnectionManager` (its search_path names the client's schema).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, RowMapping, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db import chats
from zapgate.db.outbound import Recipient
from zapgate.db.repositories import contact_from_row as _contact
from zapgate.db.tables import contacts, sessions
from zapgate.domain.contacts import ContactUpdate, Sighting, holds, keeper, merged, noticed, sighting, spelled_as
from zapgate.domain.ids import new_id
from zapgate.domain.records import Contact


@dataclass(frozen=True, slots=True)
class Reference:
    """A table whose rows point at a contact, and how they follow a merge.

    By default its `column` is set to the contact kept. A table where a contact has at most one row (a chat)
    gives `merge`: one SQL statement with `:kept` and `:others` (text[]) that folds the others' rows into the
    kept one's and leaves none pointing at the others.
    """

    table: str
    column: str = "contact_id"
    merge: str | None = None


# every table that references contacts.id: add one line for a new one (a merge must leave none behind)
REFERENCES: tuple[Reference, ...] = (Reference("messages"), Reference("chats", merge=chats.MERGE))

_LOCK_CLASS = 31338  # advisory lock class of contact identities (31337: idempotency keys, db/outbound.py)
_INSERT_ATTEMPTS = 5  # a concurrent insert of the same person makes ours do nothing: look again
_NO_PICTURE = timedelta(hours=24)  # a removed picture is taken as none for this long (as a looked-up answer)


async def identify(
    conn: AsyncConnection,
    session_row: str,
    seen: Sighting,
    *,
    create: bool = True,
    updates: list[ContactUpdate] | None = None,
) -> Contact | None:
    """Return the session's contact for `seen`, made if new (unless not `create`), merged if split, refreshed.

    In the caller's transaction: a merge and the rows it moves commit or roll back with it. What changed that
    a user would hear of (rows merged, a name) is added to `updates`, for the caller's contact-update events.
    """
    keys = seen.lookup_keys
    if not keys:
        return None
    rows = await _matching(conn, session_row, seen, keys)
    if len(rows) == 1 and holds(rows[0], seen):
        # the usual case: one row has every id seen; its lock and the unique indexes keep anyone from adding another
        return await _merge(conn, rows, seen, updates)
    await lock(conn, session_row, keys)
    for _ in range(_INSERT_ATTEMPTS):
        rows = await _matching(conn, session_row, seen, keys)
        if rows:
            merged_row = await _merge_or_conflict(conn, rows, seen, updates)
            if merged_row is not None:
                return merged_row
            continue
        if not create:
            return None
        made = await _insert(conn, session_row, seen)
        if made is not None:
            return made
    raise RuntimeError("a contact kept being inserted concurrently: not found after the conflicts")


async def _merge_or_conflict(
    conn: AsyncConnection, rows: list[Contact], seen: Sighting, updates: list[ContactUpdate] | None
) -> Contact | None:
    """Merge in a savepoint; None when a send made a row with one of the ids meanwhile (sends take no identity
    lock): the caller looks again, and finds it."""
    found: list[ContactUpdate] = []
    try:
        async with conn.begin_nested():
            kept = await _merge(conn, rows, seen, found)
    except IntegrityError:
        return None
    if updates is not None:
        updates.extend(found)
    return kept


async def lock(conn: AsyncConnection, session_row: str, keys: Sequence[str]) -> None:
    """Take the transaction's advisory locks of a person's ids (sorted: two sightings never wait on each other)."""
    await conn.execute(
        text(
            "SELECT pg_advisory_xact_lock(:class, hashtext(current_schema() || ':' || :row || ':' || k))"
            " FROM unnest(CAST(:keys AS text[])) AS k"
        ),
        {"class": _LOCK_CLASS, "row": session_row, "keys": sorted(keys)},
    )


async def _matching(conn: AsyncConnection, session_row: str, seen: Sighting, keys: list[str]) -> list[Contact]:
    conditions: list[ColumnElement[bool]] = [contacts.c.phone_number.in_(keys)]
    if seen.jid is not None:
        conditions.append(contacts.c.jid == seen.jid)
    if seen.lid is not None:
        conditions.append(contacts.c.lid == seen.lid)
    # FOR NO KEY UPDATE: sends to these contacts (their foreign keys' KEY SHARE locks) go on meanwhile
    stmt = (
        select(contacts)
        .where(contacts.c.session_id == session_row, or_(*conditions))
        .order_by(contacts.c.id)
        .with_for_update(key_share=True)
    )
    found = [_contact(row) for row in (await conn.execute(stmt)).mappings()]
    # a row keyed by the asked digits is this person only while WhatsApp named no account for it (spelled_as)
    return [row for row in found if row.phone_number != seen.number or spelled_as(row, seen) or _named(row, seen)]


def _named(contact: Contact, seen: Sighting) -> bool:
    """Whether `contact` holds the JID or the LID `seen` names."""
    return (seen.jid is not None and contact.jid == seen.jid) or (seen.lid is not None and contact.lid == seen.lid)


async def _insert(conn: AsyncConnection, session_row: str, seen: Sighting) -> Contact | None:
    assert seen.key is not None
    stmt = (
        pg_insert(contacts)
        .values(
            id=new_id(),
            session_id=session_row,
            phone_number=seen.key,
            jid=seen.jid,
            lid=seen.lid,
            name=None if seen.is_group else seen.push_name,
            push_name=seen.push_name,
            business_name=seen.business_name,
            on_whatsapp=seen.on_whatsapp,
            is_group=seen.is_group,
        )
        .on_conflict_do_nothing()  # any of the three unique indexes: someone else made it meanwhile
        .returning(*contacts.c)
    )
    row = (await conn.execute(stmt)).mappings().one_or_none()
    return None if row is None else _contact(row)


async def _merge(
    conn: AsyncConnection, rows: list[Contact], seen: Sighting, updates: list[ContactUpdate] | None = None
) -> Contact:
    kept = keeper(rows)
    others = [row for row in rows if row.id != kept.id]
    changes = merged(kept, others, seen)
    if others:
        gone = [row.id for row in others]
        # FOR UPDATE waits for the sends that hold these rows (their messages are committed, then moved) and keeps
        # new ones off: a message must never be added after the move, or the delete would take it with the row
        await conn.execute(select(contacts.c.id).where(contacts.c.id.in_(gone)).with_for_update())
        await repoint(conn, kept.id, gone)
        # deleted before the kept row takes their ids: the unique indexes never see two holders
        await conn.execute(delete(contacts).where(contacts.c.id.in_(gone)))
    row = kept
    if changes:
        stmt = update(contacts).where(contacts.c.id == kept.id).values(**changes, updated_at=func.now())
        row = _contact((await conn.execute(stmt.returning(*contacts.c))).mappings().one())
    update_seen = noticed(kept, row, others)
    if update_seen is not None and updates is not None:
        updates.append(update_seen)
    return row


async def repoint(conn: AsyncConnection, kept: str, others: list[str]) -> None:
    """Move every row that points at one of the contacts `others` to the contact `kept` (see REFERENCES)."""
    for reference in REFERENCES:
        if reference.merge is not None:
            await conn.execute(text(reference.merge), {"kept": kept, "others": others})
        else:
            await conn.execute(
                text(
                    f"UPDATE {reference.table} SET {reference.column} = :kept"  # names are constants (REFERENCES)
                    f" WHERE {reference.column} = ANY(CAST(:others AS text[]))"
                ),
                {"kept": kept, "others": others},
            )


async def learn_answers(
    conn: AsyncConnection,
    session_row: str,
    answers: Sequence[Recipient],
    updates: list[ContactUpdate] | None = None,
) -> dict[str, Contact | None]:
    """Record WhatsApp's answers about numbers on the session's contacts: each number on WhatsApp is one contact
    by its JID and LID (made if new, merged if split); one that is not is marked so where it is a contact.

    A number asked under another spelling than its account's (Brazil's ninth digit) is that account's contact:
    a contact made for the asked digits before (a send's) merges into it. Returns the contact of each number
    asked (None for a number not on WhatsApp); merges go to `updates`.
    """
    found: dict[str, Contact | None] = {}
    absent = sorted({answer.phone_number for answer in answers if not answer.on_whatsapp})
    if absent:
        await conn.execute(
            update(contacts)
            .where(contacts.c.session_id == session_row, contacts.c.phone_number.in_(absent))
            .values(on_whatsapp=False, updated_at=func.now())
        )
    for answer in answers:
        if answer.on_whatsapp and (answer.jid or answer.lid):
            seen = sighting(answer.jid, answer.lid, on_whatsapp=True, number=answer.phone_number)
            found[answer.phone_number] = await identify(conn, session_row, seen, updates=updates)
        else:
            found.setdefault(answer.phone_number, None)
    return found


async def session_id_of(conn: AsyncConnection, session_row: str) -> str | None:
    """The public id of the session with row id `session_row`."""
    stmt = select(sessions.c.session_id).where(sessions.c.id == session_row)
    return (await conn.execute(stmt)).scalar_one_or_none()


async def find(conn: AsyncConnection, contact_id: str, *, lock: bool = False) -> Contact | None:
    """Return the contact with id `contact_id`, or None (`lock`: against other changes, until commit)."""
    stmt = select(contacts).where(contacts.c.id == contact_id)
    if lock:
        stmt = stmt.with_for_update(key_share=True)
    row = (await conn.execute(stmt)).mappings().one_or_none()
    return None if row is None else _contact(row)


async def set_blocked(
    conn: AsyncConnection, contact_id: str, blocked: bool, *, source: str = "api"
) -> tuple[Contact, ContactUpdate | None] | None:
    """Record whether the contact is blocked; return it, with the update to announce if that changed (None if
    the contact is gone)."""
    before = await find(conn, contact_id, lock=True)
    if before is None:
        return None
    if before.blocked == blocked:
        return before, None
    after = await _update(conn, contact_id, blocked=blocked)
    if after is None:
        return None
    return after, ContactUpdate(after, {"blocked": blocked}, {"blocked": before.blocked}, source)


async def blocked_of(conn: AsyncConnection, session_row: str) -> list[Contact]:
    """The session's contacts that are blocked."""
    stmt = select(contacts).where(contacts.c.session_id == session_row, contacts.c.blocked)
    return [_contact(row) for row in (await conn.execute(stmt.order_by(contacts.c.id))).mappings()]


async def picture_changed(
    conn: AsyncConnection, contact_id: str, *, removed: bool, picture_id: str | None, at: datetime
) -> Contact | None:
    """Record that the contact changed its profile picture (or removed it): a removed one is known to be none
    until it changes again; a new one is not known yet (its link is not told), and the next look asks for it."""
    if removed:
        expires = at + _NO_PICTURE
        return await set_picture(conn, contact_id, url=None, picture_id=None, checked_at=at, expires_at=expires)
    return await _update(
        conn,
        contact_id,
        picture_url=None,
        profile_pic=None,
        picture_id=picture_id,
        picture_checked_at=None,
        picture_expires_at=None,
    )


async def set_picture(
    conn: AsyncConnection,
    contact_id: str,
    *,
    url: str | None,
    picture_id: str | None,
    checked_at: datetime,
    expires_at: datetime,
) -> Contact | None:
    """Cache the contact's profile picture (None: it has none, or shows it to nobody) until `expires_at`."""
    return await _update(
        conn,
        contact_id,
        picture_url=url,
        picture_id=picture_id,
        picture_checked_at=checked_at,
        picture_expires_at=expires_at,
        profile_pic=url,
    )


async def _update(conn: AsyncConnection, contact_id: str, **values: Any) -> Contact | None:
    stmt = update(contacts).where(contacts.c.id == contact_id).values(**values, updated_at=func.now())
    row: RowMapping | None = (await conn.execute(stmt.returning(*contacts.c))).mappings().one_or_none()
    return None if row is None else _contact(row)
