"""What a session does in a chat at once, through its worker: show typing or recording, mark read, look numbers up.

Each is an engine call (`services/engine_calls.py`): answered by the worker that hosts the session, or a
clear error (the session is not connected, the worker did not answer in time).

Chats (issue 14): the list of a session's conversations, newest activity first, and a chat's state on the
account (archived, pinned, muted: WhatsApp's app state). A change goes to WhatsApp first (an engine call),
then to the chat's row with a `chat-update` event in one transaction; the phone's own changes arrive as
engine events and are recorded the same way (services/recorder.py). Presence: subscribe to a contact's,
show the session's own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from zapgate.db import chats as chat_rows
from zapgate.db import conversation, outbound
from zapgate.db.chats import ChatRow
from zapgate.db.conversation import Unread
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.domain.chats import ChatState, chat_state_args, state_columns
from zapgate.domain.contacts import ContactIds
from zapgate.domain.events import EventType
from zapgate.domain.ids import client_id as valid_client_id
from zapgate.domain.ids import session_id as valid_session_id
from zapgate.domain.phones import parse_recipient
from zapgate.engines.base import Presence
from zapgate.errors import ChatNotFound, InvalidRequest, SessionNotFound
from zapgate.services.contacts import recipient_for
from zapgate.services.engine_calls import EngineCalls, chat_jid_of
from zapgate.services.messages import Page, decode_cursor, encode_cursor, page_limit

MAX_NUMBERS = 50  # numbers looked up in one request
MAX_READ = 500  # messages marked read in one request (a chat's newest, when a whole chat is read)


class ChatActions:
    """Presence, read receipts and number lookups for a client's sessions."""

    def __init__(self, manager: ConnectionManager, calls: EngineCalls) -> None:
        self._manager = manager
        self._calls = calls

    async def presence(self, client: str, session: str, to: str, presence: str) -> dict[str, Any]:
        """Show `presence` (composing, recording, paused) in the chat with `to`."""
        try:
            shown = Presence(presence)
        except ValueError as exc:
            raise InvalidRequest(f"presence: one of {', '.join(Presence)} expected", field="presence") from exc
        recipient = await recipient_for(self._manager, client, to)
        cid, sid = valid_client_id(client), valid_session_id(session)
        chat = await self._manager.execute_transaction(cid, lambda tx: _chat_of(tx, sid, recipient.key))
        return await self._calls.call(cid, sid, "presence", {"to": chat, "presence": shown.value})

    async def mark_read(
        self, client: str, session: str, chat: str, message_ids: list[str] | None = None
    ) -> dict[str, Any]:
        """Send read receipts for the chat's received messages not read yet (or `message_ids` of them).

        Returns the ids marked; each is `read` afterwards.
        """
        recipient = parse_recipient(chat, field="chat")
        if message_ids is not None and not 1 <= len(message_ids) <= MAX_READ:
            raise InvalidRequest(f"messageIds: 1 to {MAX_READ} ids expected", field="messageIds")
        cid, sid = valid_client_id(client), valid_session_id(session)
        unread = await self._manager.execute_transaction(cid, lambda tx: _unread(tx, sid, recipient.key, message_ids))
        if not unread:
            return {"read": []}
        chat_jid = chat_jid_of(recipient.key, unread[0].chat_jid)
        keys = [{"id": row.wa_message_id, "sender": row.sender_jid} for row in unread]
        await self._calls.call(cid, sid, "read", {"chat": chat_jid, "keys": keys})
        rows = [row.row_id for row in unread]
        await self._manager.execute_transaction(cid, lambda tx: _mark_read(tx, rows))
        return {"read": [row.message_id for row in unread]}

    async def check_numbers(self, client: str, session: str, numbers: list[str]) -> list[dict[str, Any]]:
        """Ask WhatsApp whether each number is on it, and under which JID and LID (the answers are cached)."""
        if not 1 <= len(numbers) <= MAX_NUMBERS:
            raise InvalidRequest(f"numbers: 1 to {MAX_NUMBERS} phone numbers expected", field="numbers")
        digits = []
        for index, number in enumerate(numbers):
            recipient = parse_recipient(number, field=f"numbers[{index}]")
            if recipient.phone is None:
                raise InvalidRequest(f"numbers[{index}]: a phone number is expected, not a JID", field="numbers")
            digits.append(recipient.phone)
        result = await self._calls.call(client, session, "check", {"numbers": list(dict.fromkeys(digits))})
        answers = {answer["number"]: answer for answer in result["numbers"]}
        return [{"input": given, **answers[number]} for given, number in zip(numbers, digits, strict=True)]

    # -- chats (issue 14) ---------------------------------------------------------------------------------

    async def list_chats(
        self, client: str, session: str, *, archived: bool | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[ChatRow]:
        """The session's chats, newest activity first, a page at a time (`archived` filters)."""
        cid, sid = valid_client_id(client), valid_session_id(session)
        limit = page_limit(limit)
        before = None
        if cursor is not None:
            stamp, row = decode_cursor(cursor, 2)
            try:
                before = (datetime.fromisoformat(stamp), row)
            except ValueError as exc:
                raise InvalidRequest("cursor: not a cursor this listing returned", field="cursor") from exc

        async def work(tx: Transaction) -> list[ChatRow]:
            row = await _session_row(tx, sid)
            return await chat_rows.list_chats(tx.connection, row, archived=archived, before=before, limit=limit + 1)

        found = await self._manager.execute_transaction(cid, work)
        last = found[limit - 1] if len(found) > limit else None
        next_cursor = None
        if last is not None and last.activity is not None:
            next_cursor = encode_cursor([last.activity.isoformat(), last.contact.id])
        return Page(found[:limit], next_cursor)

    async def chat(self, client: str, chat_id: str) -> ChatRow:
        """One chat by its id (its contact's); ChatNotFound if the client has none such."""
        cid = valid_client_id(client)
        if not 1 <= len(chat_id) <= 64:
            raise ChatNotFound(f"chat {chat_id!r} not found", chat_id=chat_id)
        found = await self._manager.execute_transaction(cid, lambda tx: chat_rows.chat(tx.connection, chat_id))
        if found is None:
            raise ChatNotFound(f"chat {chat_id!r} not found", chat_id=chat_id)
        return found

    async def read_chat(self, client: str, chat_id: str) -> dict[str, Any]:
        """Mark the chat read: read receipts for its newest unread messages (up to MAX_READ) go to WhatsApp, and
        every received message of it becomes `read` (unread 0). Returns how many were marked."""
        cid = valid_client_id(client)
        found = await self.chat(cid, chat_id)
        keys = await self._manager.execute_transaction(
            cid, lambda tx: chat_rows.newest_unread(tx.connection, chat_id, limit=MAX_READ)
        )
        if keys:
            jid = await self._chat_jid(cid, found)
            receipts = [{"id": key.wa_message_id, "sender": key.sender_jid} for key in keys]
            await self._calls.call(cid, found.session_id, "read", {"chat": jid, "keys": receipts})

        async def record(tx: Transaction) -> int:
            count = await chat_rows.read_all(tx.connection, chat_id)
            if found.marked_unread:
                await chat_rows.set_state(tx.connection, found.contact.session_id, chat_id, {"marked_unread": False})
            if count or found.marked_unread:
                await _chat_update(tx, found, {"read": True}, source="api")
            return count

        return {"read": await self._manager.execute_transaction(cid, record)}

    async def change_chat(self, client: str, chat_id: str, state: ChatState) -> ChatRow:
        """Archive, pin or mute the chat (or undo it) on WhatsApp, then record it; return the chat as it is now."""
        cid = valid_client_id(client)
        found = await self.chat(cid, chat_id)
        jid = await self._chat_jid(cid, found)
        await self._calls.call(cid, found.session_id, "chat", {"chat": jid, **chat_state_args(state)})

        async def record(tx: Transaction) -> None:
            await chat_rows.set_state(tx.connection, found.contact.session_id, chat_id, state_columns(state))
            await _chat_update(tx, found, state.changes(), source="api")

        await self._manager.execute_transaction(cid, record)
        return await self.chat(cid, chat_id)

    async def subscribe_presence(self, client: str, session: str, to: str) -> dict[str, Any]:
        """Ask WhatsApp for a contact's presence (`to`: a number, a JID, a LID or a contact id): `presence` events
        follow (online, last seen, typing)."""
        recipient = await recipient_for(self._manager, client, to)
        if recipient.is_group:
            raise InvalidRequest("to: a contact's number or JID is expected, not a group's", field="to")
        cid, sid = valid_client_id(client), valid_session_id(session)
        jid = await self._manager.execute_transaction(cid, lambda tx: _chat_of(tx, sid, recipient.key))
        return await self._calls.call(cid, sid, "subscribe", {"jid": jid})

    async def set_available(self, client: str, session: str, available: bool) -> dict[str, Any]:
        """Show the session online (available) or offline to the contacts subscribed to its presence."""
        return await self._calls.call(client, session, "available", {"available": bool(available)})

    async def _chat_jid(self, cid: str, found: ChatRow) -> str:
        key = found.contact.phone_number
        stored = await self._manager.execute_transaction(
            cid, lambda tx: conversation.chat_jid(tx.connection, found.contact.session_id, key)
        )
        return chat_jid_of(key, stored)


async def _chat_update(tx: Transaction, chat: ChatRow, changes: dict[str, Any], *, source: str) -> None:
    """Append the chat's `chat-update` event."""
    payload = {
        "sessionId": chat.session_id,
        "chatId": chat.contact.id,
        "chat": chat.contact.phone_number,
        "chatJid": chat_jid_of(chat.contact.phone_number, None),
        "isGroup": chat.contact.is_group,
        "changes": changes,
        "source": source,
        **ContactIds(chat.contact.id, chat.contact.jid, chat.contact.lid).fields(),
    }
    await tx.event.append(type=EventType.CHAT_UPDATE.value, session_id=chat.session_id, payload=payload)


async def _session_row(tx: Transaction, sid: str) -> str:
    found = await outbound.sessions_for_send(tx.connection, {sid})
    if sid not in found:
        raise SessionNotFound(f"session {sid!r} not found", session_id=sid)
    return found[sid][0]


async def _chat_of(tx: Transaction, sid: str, key: str) -> str:
    """The JID of the session's chat with `key` as its messages know it (a number's own JID otherwise)."""
    return chat_jid_of(key, await conversation.chat_jid(tx.connection, await _session_row(tx, sid), key))


async def _unread(tx: Transaction, sid: str, key: str, message_ids: list[str] | None) -> list[Unread]:
    return await conversation.unread(tx.connection, await _session_row(tx, sid), key, message_ids, limit=MAX_READ)


async def _mark_read(tx: Transaction, rows: list[str]) -> None:
    await conversation.mark_read(tx.connection, rows)
