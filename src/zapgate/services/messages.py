"""Reading what the client's sessions sent and received: messages (with their status history) and contacts.

Pages are keyset cursors (opaque strings): stable while new messages arrive, cheap at any depth.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from zapgate.db import conversation
from zapgate.db.conversation import Annotations, ReactionRow, VoteRow
from zapgate.db.manager import ClientConnection, ConnectionManager
from zapgate.domain.contacts import is_contact_id
from zapgate.domain.ids import client_id as valid_client_id
from zapgate.domain.ids import session_id as valid_session_id
from zapgate.domain.phones import parse_recipient
from zapgate.domain.records import Contact, Direction, Message, MessageStatus
from zapgate.errors import InvalidRequest, MessageNotFound, SessionNotFound

MAX_PAGE = 500
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StatusStep:
    """One status a message reached, and when."""

    status: str
    at: datetime | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class MessageView:
    """A message as the API shows it: the public session id, its contact, its status history if asked."""

    message: Message
    session_id: str
    contact: Contact | None
    history: list[StatusStep] = field(default_factory=list)
    reactions: list[ReactionRow] = field(default_factory=list)
    votes: list[VoteRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ContactView:
    """A contact with the public id of its session."""

    contact: Contact
    session_id: str


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; `next_cursor` fetches the next (None on the last)."""

    items: list[T]
    next_cursor: str | None


def _encode(parts: list[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


def _decode(cursor: str, size: int) -> list[str]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        parts = None
    if not isinstance(parts, list) or len(parts) != size or not all(isinstance(p, str) for p in parts):
        raise InvalidRequest("cursor: not a cursor this listing returned (use nextCursor as given)")
    return parts


encode_cursor, decode_cursor = _encode, _decode  # for the other listings (chats)


def page_limit(limit: int) -> int:
    """`limit` if it is a page size the listings accept, else InvalidRequest."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit: 1 to {MAX_PAGE} expected")
    return limit


class MessageService:
    """Lists and shows the messages and contacts of a client's sessions."""

    def __init__(self, manager: ConnectionManager) -> None:
        self._manager = manager

    async def _sessions(self, db: ClientConnection) -> dict[str, str]:
        return {session.id: session.session_id for session in await db.session.find_many()}

    async def _session_row(self, db: ClientConnection, session: str) -> str:
        sid = valid_session_id(session)
        found = await db.session.find_unique(sid)
        if found is None:
            raise SessionNotFound(f"session {sid!r} not found", session_id=sid)
        return found.id

    async def list_messages(
        self,
        client: str,
        *,
        session: str | None = None,
        contact: str | None = None,
        contact_id: str | None = None,
        direction: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[MessageView]:
        """The client's messages matching every filter given, newest first, a page at a time."""
        db = await self._manager.get_connection(valid_client_id(client))
        limit = page_limit(limit)
        if direction is not None and direction not in set(Direction):
            raise InvalidRequest(f"direction: one of {', '.join(Direction)} expected")
        if status is not None and status not in set(MessageStatus):
            raise InvalidRequest(f"status: one of {', '.join(MessageStatus)} expected")
        by_id = contact is not None and is_contact_id(contact)
        if by_id and contact_id is not None and contact != contact_id:
            return Page(items=[], next_cursor=None)  # one chat's messages, filtered by another contact
        contact_key = None if contact is None or by_id else parse_recipient(contact, field="contact").key
        before = None
        if cursor is not None:
            stamp, row = _decode(cursor, 2)
            try:
                before = (datetime.fromisoformat(stamp), row)
            except ValueError as exc:
                raise InvalidRequest("cursor: not a cursor this listing returned") from exc
        names = await self._sessions(db)
        row_id = None if session is None else await self._session_row(db, session)
        found = await db.message.find_many(
            session_id=row_id,
            contact_id=contact_id if contact_id is not None else (contact if by_id else None),
            contact_phone=contact_key,
            direction=direction,
            status=status,
            since=since,
            before=before,
            include_contact=True,
            limit=limit + 1,
        )
        shown = found[:limit]
        notes = await self._annotations(client, shown)
        items = [
            MessageView(
                m,
                names.get(m.session_id, ""),
                m.contact,
                reactions=notes.reactions.get(m.id, []),
                votes=notes.votes.get(m.id, []),
            )
            for m in shown
        ]
        last = found[limit - 1] if len(found) > limit else None
        next_cursor = None if last is None else _encode([last.timestamp.isoformat(), last.id])
        return Page(items, next_cursor)

    async def _annotations(self, client: str, shown: list[Message]) -> Annotations:
        """The reactions and votes on `shown` (one query each, only when one of them may have some)."""
        if not shown:
            return Annotations({}, {}, {})
        rows = [m.id for m in shown]
        return await self._manager.execute_transaction(
            valid_client_id(client), lambda tx: conversation.annotations_of(tx.connection, rows)
        )

    async def get_message(self, client: str, message_id: str, *, session: str | None = None) -> MessageView:
        """One message by its WhatsApp id, with its status history (in `session`, when two hold the id)."""
        db = await self._manager.get_connection(valid_client_id(client))
        if not 1 <= len(message_id) <= 128:
            raise InvalidRequest("messageId: 1 to 128 characters expected")
        row_id = None if session is None else await self._session_row(db, session)
        found = await db.message.find_unique(message_id, session_id=row_id, include_contact=True)
        if found is None:
            raise MessageNotFound(f"message {message_id!r} not found", message_id=message_id)
        names = await self._sessions(db)
        public = names.get(found.session_id, "")
        notes = await self._annotations(client, [found])
        return MessageView(
            found,
            public,
            found.contact,
            await self._history(db, found, public),
            reactions=notes.reactions.get(found.id, []),
            votes=notes.votes.get(found.id, []),
        )

    async def _history(self, db: ClientConnection, message: Message, session: str) -> list[StatusStep]:
        if message.direction == Direction.INBOUND:
            return [StatusStep(MessageStatus.DELIVERED.value, message.timestamp)]
        steps = [StatusStep(MessageStatus.PENDING.value, message.timestamp)]
        for event in await db.event.message_statuses(session, [message.message_id]):
            payload: dict[str, Any] = event.payload
            stamp = payload.get("timestamp")
            at = datetime.fromisoformat(stamp) if isinstance(stamp, str) else event.created_at
            steps.append(StatusStep(str(payload.get("status")), at, payload.get("error")))
        return steps

    async def list_contacts(
        self, client: str, *, session: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[ContactView]:
        """The contacts of the client's sessions (of `session` only, if given), by number, a page at a time."""
        db = await self._manager.get_connection(valid_client_id(client))
        limit = page_limit(limit)
        after = None if cursor is None else _decode(cursor, 2)
        names = await self._sessions(db)
        row_id = None if session is None else await self._session_row(db, session)
        found = await db.contact.find_many(
            session_id=row_id, after=None if after is None else (after[0], after[1]), limit=limit + 1
        )
        items = [ContactView(c, names.get(c.session_id, "")) for c in found[:limit]]
        last = found[limit - 1] if len(found) > limit else None
        return Page(items, None if last is None else _encode([last.phone_number, last.id]))
