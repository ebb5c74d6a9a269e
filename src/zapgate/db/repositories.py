"""Repositories over one client's tables: what the seed's Prisma snippets do, returning domain records.

Each repository runs its statements through an `Executor`: a `ClientConnection` handle runs every call in
a transaction of its own (like a Prisma client), a `Transaction` runs them all in the caller's transaction.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final, Literal, Protocol, TypeVar

from sqlalchemy import (
    RowMapping,
    Select,
    Text,
    and_,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate import metrics
from zapgate.db.driver import driver
from zapgate.db.notify import EVENTS
from zapgate.db.tables import audit_log, contacts, events, messages, sessions
from zapgate.domain.ids import new_id
from zapgate.domain.records import AuditEntry, Contact, Direction, Event, Message, MessageStatus, Session
from zapgate.errors import ContactNotFound, InvalidRequest, MessageNotFound, SessionNotFound

T = TypeVar("T")


class _Unset(Enum):
    UNSET = "UNSET"


UNSET: Final = _Unset.UNSET
"""Marks an `update` argument that was not given (None means "set to NULL")."""


class Executor(Protocol):
    """Runs one repository operation on a connection bound to the client's schema."""

    async def run(self, op: str, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T: ...


def _changes(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not UNSET}


def _session(row: RowMapping) -> Session:
    return Session(
        id=row["id"],
        session_id=row["session_id"],
        client_id=row["client_id"],
        status=row["status"],
        qr_code=row["qr_code"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        engine=row["engine"],
        phone_number=row["phone_number"],
        jid=row["jid"],
        pairing_code=row["pairing_code"],
        qr_expires_at=row["qr_expires_at"],
        last_error=row["last_error"],
        status_code=row["status_code"],
        status_details=row["status_details"],
    )


def _contact(row: RowMapping, prefix: str = "") -> Contact:
    return Contact(
        id=row[prefix + "id"],
        session_id=row[prefix + "session_id"],
        phone_number=row[prefix + "phone_number"],
        name=row[prefix + "name"],
        profile_pic=row[prefix + "profile_pic"],
        is_group=row[prefix + "is_group"],
        jid=row[prefix + "jid"],
        lid=row[prefix + "lid"],
        push_name=row[prefix + "push_name"],
        business_name=row[prefix + "business_name"],
        picture_url=row[prefix + "picture_url"],
        picture_id=row[prefix + "picture_id"],
        picture_checked_at=row[prefix + "picture_checked_at"],
        picture_expires_at=row[prefix + "picture_expires_at"],
        on_whatsapp=row[prefix + "on_whatsapp"],
        blocked=row[prefix + "blocked"],
        created_at=row[prefix + "created_at"],
        updated_at=row[prefix + "updated_at"],
    )


contact_from_row = _contact


def _message(row: RowMapping, *, with_contact: bool = False) -> Message:
    return Message(
        id=row["id"],
        session_id=row["session_id"],
        contact_id=row["contact_id"],
        message_id=row["message_id"],
        content=row["content"],
        type=row["type"],
        direction=Direction(row["direction"]),
        status=MessageStatus(row["status"]),
        timestamp=row["timestamp"],
        contact=_contact(row, "contact__") if with_contact else None,
        chat_jid=row["chat_jid"],
        error=row["error"],
        sent_at=row["sent_at"],
        wa_message_id=row["wa_message_id"],
        error_code=row["error_code"],
        sender_jid=row["sender_jid"],
        sender_lid=row["sender_lid"],
        source=row["source"],
        attempts=row["attempts"],
        payload=row["payload"],
        context=row["context"],
        mentions=tuple(row["mentions"] or ()),
        edited_at=row["edited_at"],
        deleted_at=row["deleted_at"],
    )


def _event(row: RowMapping) -> Event:
    return Event(
        id=row["id"],
        session_id=row["session_id"],
        type=row["type"],
        payload=dict(row["payload"]),
        created_at=row["created_at"],
    )


def _in_session(session_id: str | None) -> list[Any]:
    return [] if session_id is None else [messages.c.session_id == session_id]


def _limit(limit: int | None) -> int | None:
    if limit is not None and limit < 0:
        raise InvalidRequest("limit must not be negative", limit=limit)
    return limit


class SessionRepository:
    """The client's WhatsApp sessions (the seed's `tx.session`)."""

    def __init__(self, executor: Executor) -> None:
        self._x = executor

    async def create(
        self,
        *,
        session_id: str,
        client_id: str,
        status: str = "disconnected",
        qr_code: str | None = None,
        engine: str = "whatsmeow",
    ) -> Session:
        """Insert a session; raise DuplicateRecord if `session_id` is taken."""
        stmt = (
            insert(sessions)
            .values(
                id=new_id(), session_id=session_id, client_id=client_id, status=status, qr_code=qr_code, engine=engine
            )
            .returning(*sessions.c)
        )

        async def run(conn: AsyncConnection) -> Session:
            return _session((await conn.execute(stmt)).mappings().one())

        return await self._x.run("sessions.create", run)

    async def find_unique(self, session_id: str) -> Session | None:
        """Return the session called `session_id`, or None."""
        stmt = select(sessions).where(sessions.c.session_id == session_id)

        async def run(conn: AsyncConnection) -> Session | None:
            row = (await conn.execute(stmt)).mappings().one_or_none()
            return None if row is None else _session(row)

        return await self._x.run("sessions.find_unique", run)

    async def find_many(
        self,
        *,
        status: str | Sequence[str] | None = None,
        order_by: Literal["created_at", "updated_at", "session_id"] = "created_at",
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Session]:
        """Return sessions, optionally only those in `status` (one or several), in the order asked."""
        stmt = select(sessions)
        if isinstance(status, str):
            stmt = stmt.where(sessions.c.status == status)
        elif status is not None:
            stmt = stmt.where(sessions.c.status.in_(list(status)))
        column = sessions.c[order_by]
        stmt = stmt.order_by(column.desc() if descending else column.asc(), sessions.c.id)
        stmt = stmt.limit(_limit(limit)).offset(offset)

        async def run(conn: AsyncConnection) -> list[Session]:
            return [_session(row) for row in (await conn.execute(stmt)).mappings()]

        return await self._x.run("sessions.find_many", run)

    async def update(
        self,
        session_id: str,
        *,
        status: str | _Unset = UNSET,
        qr_code: str | _Unset | None = UNSET,
        qr_expires_at: datetime | _Unset | None = UNSET,
        phone_number: str | _Unset | None = UNSET,
        jid: str | _Unset | None = UNSET,
        pairing_code: str | _Unset | None = UNSET,
        last_error: str | _Unset | None = UNSET,
        status_code: str | _Unset | None = UNSET,
        status_details: dict[str, Any] | _Unset | None = UNSET,
    ) -> Session:
        """Change the given fields of `session_id` (and `updated_at`); raise SessionNotFound if absent."""
        changes = _changes(
            status=status,
            qr_code=qr_code,
            qr_expires_at=qr_expires_at,
            phone_number=phone_number,
            jid=jid,
            pairing_code=pairing_code,
            last_error=last_error,
            status_code=status_code,
            status_details=status_details,
        )
        stmt = (
            update(sessions)
            .where(sessions.c.session_id == session_id)
            .values(**changes, updated_at=func.now())
            .returning(*sessions.c)
        )

        async def run(conn: AsyncConnection) -> Session:
            row = (await conn.execute(stmt)).mappings().one_or_none()
            if row is None:
                raise SessionNotFound(f"session {session_id!r} not found", session_id=session_id)
            return _session(row)

        return await self._x.run("sessions.update", run)

    async def delete(self, session_id: str) -> Session:
        """Delete `session_id` with its contacts and messages; raise SessionNotFound if absent."""
        stmt = delete(sessions).where(sessions.c.session_id == session_id).returning(*sessions.c)

        async def run(conn: AsyncConnection) -> Session:
            row = (await conn.execute(stmt)).mappings().one_or_none()
            if row is None:
                raise SessionNotFound(f"session {session_id!r} not found", session_id=session_id)
            return _session(row)

        return await self._x.run("sessions.delete", run)

    async def count(self, *, status: str | None = None) -> int:
        """Return how many sessions there are (in `status`, if given)."""
        stmt = select(func.count()).select_from(sessions)
        if status is not None:
            stmt = stmt.where(sessions.c.status == status)

        async def run(conn: AsyncConnection) -> int:
            return int((await conn.execute(stmt)).scalar_one())

        return await self._x.run("sessions.count", run)


class ContactRepository:
    """The chat partners of the client's sessions (the seed's `tx.contact`)."""

    def __init__(self, executor: Executor) -> None:
        self._x = executor

    async def create(
        self,
        *,
        session_id: str,
        phone_number: str,
        name: str | None = None,
        profile_pic: str | None = None,
        is_group: bool = False,
    ) -> Contact:
        """Insert a contact of session row `session_id`; raise DuplicateRecord if the number is known."""
        stmt = (
            insert(contacts)
            .values(
                id=new_id(),
                session_id=session_id,
                phone_number=phone_number,
                name=name,
                profile_pic=profile_pic,
                is_group=is_group,
            )
            .returning(*contacts.c)
        )

        async def run(conn: AsyncConnection) -> Contact:
            return _contact((await conn.execute(stmt)).mappings().one())

        return await self._x.run("contacts.create", run)

    async def upsert(
        self, *, session_id: str, phone_number: str, name: str | None = None, is_group: bool = False
    ) -> Contact:
        """Return the contact for (`session_id`, `phone_number`), creating it or refreshing its name."""
        values = pg_insert(contacts).values(
            id=new_id(), session_id=session_id, phone_number=phone_number, name=name, is_group=is_group
        )
        stmt = values.on_conflict_do_update(
            index_elements=[contacts.c.session_id, contacts.c.phone_number],
            set_={"name": func.coalesce(values.excluded.name, contacts.c.name)},
        ).returning(*contacts.c)

        async def run(conn: AsyncConnection) -> Contact:
            return _contact((await conn.execute(stmt)).mappings().one())

        return await self._x.run("contacts.upsert", run)

    async def find_unique(self, contact_id: str) -> Contact | None:
        """Return the contact with row id `contact_id`, or None."""
        stmt = select(contacts).where(contacts.c.id == contact_id)

        async def run(conn: AsyncConnection) -> Contact | None:
            row = (await conn.execute(stmt)).mappings().one_or_none()
            return None if row is None else _contact(row)

        return await self._x.run("contacts.find_unique", run)

    async def find_many(
        self,
        *,
        session_id: str | None = None,
        phone_number: str | None = None,
        is_group: bool | None = None,
        after: tuple[str, str] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Contact]:
        """Return contacts matching every filter given, ordered by phone number.

        `after` is a keyset cursor: the (phone number, row id) of the last contact of the previous page.
        """
        conditions = []
        if after is not None:
            conditions.append(tuple_(contacts.c.phone_number, contacts.c.id) > tuple_(*after))
        if session_id is not None:
            conditions.append(contacts.c.session_id == session_id)
        if phone_number is not None:
            conditions.append(contacts.c.phone_number == phone_number)
        if is_group is not None:
            conditions.append(contacts.c.is_group == is_group)
        stmt = (
            select(contacts)
            .where(and_(True, *conditions))
            .order_by(contacts.c.phone_number, contacts.c.id)
            .limit(_limit(limit))
            .offset(offset)
        )

        async def run(conn: AsyncConnection) -> list[Contact]:
            return [_contact(row) for row in (await conn.execute(stmt)).mappings()]

        return await self._x.run("contacts.find_many", run)

    async def update(
        self,
        contact_id: str,
        *,
        name: str | _Unset | None = UNSET,
        profile_pic: str | _Unset | None = UNSET,
        is_group: bool | _Unset = UNSET,
    ) -> Contact:
        """Change the given fields of contact `contact_id`; raise ContactNotFound if absent."""
        values = _changes(name=name, profile_pic=profile_pic, is_group=is_group)
        if not values:
            raise InvalidRequest("nothing to update: name, profile_pic or is_group expected")
        stmt = update(contacts).where(contacts.c.id == contact_id).values(**values).returning(*contacts.c)

        async def run(conn: AsyncConnection) -> Contact:
            row = (await conn.execute(stmt)).mappings().one_or_none()
            if row is None:
                raise ContactNotFound(f"contact {contact_id!r} not found", contact_id=contact_id)
            return _contact(row)

        return await self._x.run("contacts.update", run)

    async def delete(self, contact_id: str) -> Contact:
        """Delete contact `contact_id` and its messages; raise ContactNotFound if absent."""
        stmt = delete(contacts).where(contacts.c.id == contact_id).returning(*contacts.c)

        async def run(conn: AsyncConnection) -> Contact:
            row = (await conn.execute(stmt)).mappings().one_or_none()
            if row is None:
                raise ContactNotFound(f"contact {contact_id!r} not found", contact_id=contact_id)
            return _contact(row)

        return await self._x.run("contacts.delete", run)


_MESSAGE_WITH_CONTACT = [*messages.c, *(column.label("contact__" + column.name) for column in contacts.c)]


class MessageRepository:
    """Messages sent and received by the client's sessions (the seed's `tx.message`)."""

    def __init__(self, executor: Executor) -> None:
        self._x = executor

    async def create(
        self,
        *,
        session_id: str,
        contact_id: str,
        message_id: str,
        content: str,
        direction: Direction | str,
        type: str = "text",
        status: MessageStatus | str = MessageStatus.PENDING,
        timestamp: datetime | None = None,
    ) -> Message:
        """Insert a message; raise DuplicateRecord if `message_id` is taken."""
        try:
            direction, status = Direction(direction), MessageStatus(status)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        stmt = (
            insert(messages)
            .values(
                id=new_id(),
                session_id=session_id,
                contact_id=contact_id,
                message_id=message_id,
                content=content,
                type=type,
                direction=direction.value,
                status=status.value,
                timestamp=timestamp or datetime.now(UTC),
            )
            .returning(*messages.c)
        )

        async def run(conn: AsyncConnection) -> Message:
            return _message((await conn.execute(stmt)).mappings().one())

        return await self._x.run("messages.create", run)

    async def insert_if_new(
        self,
        *,
        session_id: str,
        contact_id: str,
        message_id: str,
        content: str,
        direction: str,
        type: str,
        status: str,
        timestamp: datetime,
        chat_jid: str | None,
        wa_message_id: str | None = None,
        sender_jid: str | None = None,
        sender_lid: str | None = None,
        source: str | None = None,
        error: str | None = None,
        payload: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        mentions: Sequence[str] = (),
    ) -> str | None:
        """Insert a message unless its `message_id` (or WhatsApp id) is known; return its row id (None: known)."""
        stmt = (
            pg_insert(messages)
            .values(
                id=new_id(),
                session_id=session_id,
                contact_id=contact_id,
                message_id=message_id,
                content=content,
                type=type,
                direction=direction,
                status=status,
                timestamp=timestamp,
                chat_jid=chat_jid,
                wa_message_id=wa_message_id,
                sender_jid=sender_jid,
                sender_lid=sender_lid,
                source=source,
                error=error,
                payload=payload,
                context=context,
                mentions=list(mentions) or None,
            )
            .on_conflict_do_nothing()  # the same message id, or the same WhatsApp id (our own send, echoed)
            .returning(messages.c.id)
        )

        async def run(conn: AsyncConnection) -> str | None:
            row = (await conn.execute(stmt)).one_or_none()
            return None if row is None else str(row.id)

        return await self._x.run("messages.insert_if_new", run)

    async def find_unique(
        self, message_id: str, *, session_id: str | None = None, include_contact: bool = False
    ) -> Message | None:
        """Return the message whose `message_id` is given (in session row `session_id`, if given), or None.

        A message id is unique per session; without `session_id` the first match (oldest) is returned.
        """
        stmt = (
            self._select(include_contact)
            .where(messages.c.message_id == message_id, *_in_session(session_id))
            .order_by(messages.c.timestamp, messages.c.id)
            .limit(1)
        )

        async def run(conn: AsyncConnection) -> Message | None:
            row = (await conn.execute(stmt)).mappings().one_or_none()
            return None if row is None else _message(row, with_contact=include_contact)

        return await self._x.run("messages.find_unique", run)

    async def find_known(self, message_id: str, *, session_id: str) -> Message | None:
        """Return the message of session row `session_id` that WhatsApp knows as `message_id` (or, failing that,
        whose own id it is), or None."""
        stmt = (
            select(messages)
            .where(
                messages.c.session_id == session_id,
                or_(messages.c.wa_message_id == message_id, messages.c.message_id == message_id),
            )
            .order_by((messages.c.wa_message_id == message_id).desc().nulls_last())
            .limit(1)
        )

        async def run(conn: AsyncConnection) -> Message | None:
            row = (await conn.execute(stmt)).mappings().one_or_none()
            return None if row is None else _message(row)

        return await self._x.run("messages.find_known", run)

    async def find_many(
        self,
        *,
        session_id: str | None = None,
        contact_id: str | None = None,
        direction: Direction | str | None = None,
        status: MessageStatus | str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        contact_phone: str | None = None,
        before: tuple[datetime, str] | None = None,
        include_contact: bool = False,
        newest_first: bool = True,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Message]:
        """Return messages matching every filter given, newest first unless told otherwise.

        `contact_phone` is the contact's number (or JID); `before` is a keyset cursor, the (timestamp, row id)
        of the last message of the previous page (newest first only).
        """
        conditions = []
        if session_id is not None:
            conditions.append(messages.c.session_id == session_id)
        if contact_id is not None:
            conditions.append(messages.c.contact_id == contact_id)
        if contact_phone is not None:
            conditions.append(
                # its key, or its LID when its key is its number
                messages.c.contact_id.in_(
                    select(contacts.c.id).where(
                        or_(contacts.c.phone_number == contact_phone, contacts.c.lid == contact_phone)
                    )
                )
            )
        if before is not None:
            conditions.append(tuple_(messages.c.timestamp, messages.c.id) < tuple_(*before))
        if direction is not None:
            conditions.append(messages.c.direction == str(direction))
        if status is not None:
            conditions.append(messages.c.status == str(status))
        if since is not None:
            conditions.append(messages.c.timestamp >= since)
        if until is not None:
            conditions.append(messages.c.timestamp < until)
        order = (
            (messages.c.timestamp.desc(), messages.c.id.desc())
            if newest_first
            else (messages.c.timestamp.asc(), messages.c.id.asc())
        )
        stmt = (
            self._select(include_contact)
            .where(and_(True, *conditions))
            .order_by(*order)
            .limit(_limit(limit))
            .offset(offset)
        )

        async def run(conn: AsyncConnection) -> list[Message]:
            rows = (await conn.execute(stmt)).mappings()
            return [_message(row, with_contact=include_contact) for row in rows]

        return await self._x.run("messages.find_many", run)

    async def update(
        self,
        message_id: str,
        *,
        session_id: str | None = None,
        status: MessageStatus | str | _Unset = UNSET,
        content: str | _Unset = UNSET,
    ) -> Message:
        """Change the given fields of `message_id`; raise MessageNotFound if absent."""
        if status is not UNSET:
            try:
                status = MessageStatus(status).value
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from exc
        values = _changes(status=status, content=content)
        if not values:
            raise InvalidRequest("nothing to update: status or content expected")
        stmt = update(messages).where(messages.c.message_id == message_id).values(**values).returning(*messages.c)

        async def run(conn: AsyncConnection) -> Message:
            row = (await conn.execute(stmt)).mappings().one_or_none()
            if row is None:
                raise MessageNotFound(f"message {message_id!r} not found", message_id=message_id)
            return _message(row)

        return await self._x.run("messages.update", run)

    async def delete(self, message_id: str, *, session_id: str | None = None) -> Message:
        """Delete the message `message_id` (in session row `session_id`, if given); raise MessageNotFound."""
        stmt = (
            delete(messages).where(messages.c.message_id == message_id, *_in_session(session_id)).returning(*messages.c)
        )

        async def run(conn: AsyncConnection) -> Message:
            row = (await conn.execute(stmt)).mappings().one_or_none()
            if row is None:
                raise MessageNotFound(f"message {message_id!r} not found", message_id=message_id)
            return _message(row)

        return await self._x.run("messages.delete", run)

    @staticmethod
    def _select(include_contact: bool) -> Select[Any]:
        if include_contact:
            return select(*_MESSAGE_WITH_CONTACT).join(contacts, contacts.c.id == messages.c.contact_id)
        return select(messages)


# Appending takes a per-client lock held to commit, so a client's events commit in id order: a reader
# that has seen id N has seen every committed id below N, which is what lets SSE resume from
# `Last-Event-ID` and webhooks deliver from a cursor without a gap. The lock's key space (two int4 keys,
# the first our constant) is apart from the single-bigint advisory locks used elsewhere.
_EVENT_LOCK_CLASS: Final = 0x7A67
_BEFORE_APPEND = text(
    "SELECT pg_advisory_xact_lock(:lock_class, hashtext(current_schema())), pg_notify(:channel, current_schema())"
).bindparams(lock_class=_EVENT_LOCK_CLASS, channel=EVENTS)


# A batch in one statement, the lock and the NOTIFY of _BEFORE_APPEND included (one round trip, not one per
# event plus one): the rows get their ids in the order of `n`, the order they were given in. The CTE calls
# volatile functions, so it is evaluated once and before any row reaches the INSERT (no row without it), and
# so before any id is drawn. The lock is held until commit, so the shorter the transaction the better.
_APPEND_MANY = """
    WITH locked AS (
        SELECT pg_advisory_xact_lock(CAST($1 AS integer), hashtext(current_schema())),
               pg_notify(CAST($2 AS text), current_schema())
    )
    -- the events as one JSON array of [session, type, payload]: one document to encode and send, not three
    -- arrays whose every element the driver checks and encodes on its own (a busy worker's every send is three)
    INSERT INTO events (session_id, type, payload)
    SELECT i.e ->> 0, i.e ->> 1, i.e -> 2
    FROM locked, jsonb_array_elements(CAST($3 AS jsonb)) WITH ORDINALITY AS i(e, n)
    ORDER BY i.n
    """


class EventRepository:
    """The client's event log: appended in id order (commit order too), read from a cursor."""

    def __init__(self, executor: Executor) -> None:
        self._x = executor

    async def append(self, *, type: str, session_id: str | None = None, payload: dict[str, Any]) -> Event:
        """Append one event and return it with its id."""
        stmt = insert(events).values(session_id=session_id, type=type, payload=payload).returning(*events.c)

        async def run(conn: AsyncConnection) -> Event:
            await conn.execute(_BEFORE_APPEND)
            return _event((await conn.execute(stmt)).mappings().one())

        metrics.EVENTS_PUBLISHED.labels(type).inc()

        return await self._x.run("events.append", run)

    async def append_many(self, entries: Sequence[tuple[str, str | None, dict[str, Any]]]) -> None:
        """Append events given as (type, session_id, payload), in this order (ids increase along it)."""
        if not entries:
            return
        document = json.dumps([[session, kind, payload] for kind, session, payload in entries])

        async def run(conn: AsyncConnection) -> None:
            # on every send, receipt and arriving message: the hot path (db/driver.py)
            await driver(conn).execute(_APPEND_MANY, _EVENT_LOCK_CLASS, EVENTS, document)

        for kind, count in Counter(kind for kind, _, _ in entries).items():
            metrics.EVENTS_PUBLISHED.labels(kind).inc(count)

        await self._x.run("events.append_many", run)

    async def list_after(
        self,
        after_id: int = 0,
        *,
        session_id: str | None = None,
        types: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """Return up to `limit` events with an id greater than `after_id`, oldest first."""
        stmt = select(events).where(events.c.id > after_id)
        if session_id is not None:
            stmt = stmt.where(events.c.session_id == session_id)
        if types is not None:
            stmt = stmt.where(events.c.type.in_(list(types)))
        stmt = stmt.order_by(events.c.id).limit(_limit(limit))

        async def run(conn: AsyncConnection) -> list[Event]:
            return [_event(row) for row in (await conn.execute(stmt)).mappings()]

        return await self._x.run("events.list_after", run)

    async def latest(self, session_id: str, types: Sequence[str]) -> Event | None:
        """Return the newest event of session `session_id` with one of `types`, or None."""
        stmt = (
            select(events)
            .where(events.c.session_id == session_id, events.c.type.in_(list(types)))
            .order_by(events.c.id.desc())
            .limit(1)
        )

        async def run(conn: AsyncConnection) -> Event | None:
            row = (await conn.execute(stmt)).mappings().first()
            return None if row is None else _event(row)

        return await self._x.run("events.latest", run)

    async def message_statuses(self, session_id: str, message_ids: Sequence[str]) -> list[Event]:
        """Return the message-status events of session `session_id` for any of `message_ids`, oldest first."""
        key = literal_column("payload ->> 'messageId'", Text)  # a constant key, as the index has it
        stmt = (
            select(events)
            .where(
                events.c.type == "message-status",
                key.in_(list(message_ids)),
                events.c.session_id == session_id,
            )
            .order_by(events.c.id)
        )

        async def run(conn: AsyncConnection) -> list[Event]:
            return [_event(row) for row in (await conn.execute(stmt)).mappings()]

        return await self._x.run("events.message_statuses", run)

    async def last_id(self) -> int:
        """Return the id of the newest event, or 0 when the log is empty."""
        stmt = select(func.coalesce(func.max(events.c.id), 0))

        async def run(conn: AsyncConnection) -> int:
            return int((await conn.execute(stmt)).scalar_one())

        return await self._x.run("events.last_id", run)


def _audit(row: RowMapping) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=row["at"],
        actor=row["actor"],
        action=row["action"],
        session_id=row["session_id"],
        outcome=row["outcome"],
        status=row["status"],
        detail=dict(row["detail"]),
    )


# a batch of entries in one statement (not one INSERT per entry), in the order given: one JSON document of
# [at, actor, action, session, outcome, status, detail] entries (not seven arrays whose every element the
# driver checks and encodes on its own: an entry per API call)
_AUDIT_MANY = """
    INSERT INTO audit_log (at, actor, action, session_id, outcome, status, detail)
    SELECT CAST(i.e ->> 0 AS timestamptz), i.e ->> 1, i.e ->> 2, i.e ->> 3, i.e ->> 4, CAST(i.e ->> 5 AS integer),
           i.e -> 6
    FROM jsonb_array_elements(CAST($1 AS jsonb)) WITH ORDINALITY AS i(e, n)
    ORDER BY i.n
    """


class AuditRepository:
    """The client's audit log: who did what, when, with what outcome."""

    def __init__(self, executor: Executor) -> None:
        self._x = executor

    async def append_many(self, entries: Sequence[AuditEntry]) -> None:
        """Append entries (their `id` is ignored: the log numbers them), keeping their times."""
        if not entries:
            return
        document = json.dumps(
            [[e.at.isoformat(), e.actor, e.action, e.session_id, e.outcome, e.status, e.detail] for e in entries]
        )

        async def run(conn: AsyncConnection) -> None:
            await driver(conn).execute(_AUDIT_MANY, document)

        await self._x.run("audit.append_many", run)

    async def find_many(
        self,
        *,
        session_id: str | None = None,
        action: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Return entries matching every filter given, newest first (`before_id`: ids below it only)."""
        conditions = []
        if session_id is not None:
            conditions.append(audit_log.c.session_id == session_id)
        if action is not None:
            conditions.append(audit_log.c.action == action)
        if before_id is not None:
            conditions.append(audit_log.c.id < before_id)
        stmt = select(audit_log).where(and_(True, *conditions)).order_by(audit_log.c.id.desc()).limit(_limit(limit))

        async def run(conn: AsyncConnection) -> list[AuditEntry]:
            return [_audit(row) for row in (await conn.execute(stmt)).mappings()]

        return await self._x.run("audit.find_many", run)


class Repositories:
    """The repositories of one client, named as in the seed (`tx.session`, `tx.message`, ...)."""

    def __init__(self, executor: Executor) -> None:
        self.session = SessionRepository(executor)
        self.contact = ContactRepository(executor)
        self.message = MessageRepository(executor)
        self.event = EventRepository(executor)
        self.audit = AuditRepository(executor)
