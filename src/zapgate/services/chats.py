"""What a session does in a chat at once, through its worker: show typing or recording, mark read, look numbers up.

Each is an engine call (`services/engine_calls.py`): answered by the worker that hosts the session, or a
clear error (the session is not connected, the worker did not answer in time).
"""

from __future__ import annotations

from typing import Any

from zapgate.db import conversation, outbound
from zapgate.db.conversation import Unread
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.domain.ids import client_id as valid_client_id
from zapgate.domain.ids import session_id as valid_session_id
from zapgate.domain.phones import parse_recipient
from zapgate.engines.base import Presence
from zapgate.errors import InvalidRequest, SessionNotFound
from zapgate.services.contacts import recipient_for
from zapgate.services.engine_calls import EngineCalls, chat_jid_of

MAX_NUMBERS = 50  # numbers looked up in one request
MAX_READ = 500  # messages marked read in one request


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
