"""Chats and presence: a session's conversations, their state on the account, and contacts' presence (issue 14)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from zapgate.api.deps import Chats, Messages, client_of_request
from zapgate.api.routes.whatsapp import message_out
from zapgate.api.schemas import (
    ChatLastMessage,
    ChatOut,
    ChatPage,
    ChatReadOut,
    MessagePage,
    MuteRequest,
    OwnPresenceOut,
    OwnPresenceRequest,
    PresenceSubscribeOut,
    PresenceSubscribeRequest,
    Problem,
)
from zapgate.db.chats import ChatRow
from zapgate.domain.chats import ChatState, SeenPresence, mute_state, muted_until_out
from zapgate.domain.ids import SESSION_ID_PATTERN
from zapgate.domain.phones import GROUP_SERVER, LID_SERVER, phone_jid

ClientId = Annotated[str, Depends(client_of_request)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong API key."},
    422: {"model": Problem, "description": "Invalid input, with the invalid fields."},
    503: {"model": Problem, "description": "The database is unavailable."},
}
_CHAT_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "No such chat."}}
_CALL_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such chat (or session)."},
    409: {"model": Problem, "description": "The session is not connected."},
    502: {
        "model": Problem,
        "description": "WhatsApp refused, or the engine cannot do it (`reason`: the engine's code, e.g. "
        "`not_supported` for archive, pin and mute on whatsmeow with neonize 0.5.2).",
    },
    504: {"model": Problem, "description": "The session's worker did not answer in time: try again."},
}

router = APIRouter(prefix="/whatsapp", tags=["chats"], responses=_ERRORS)

ChatId = Annotated[str, Path(min_length=1, max_length=64, description="The chat's id (its contact's id).")]
_Limit = Annotated[int, Query(ge=1, le=500, description="Items per page (1-500).")]
_Cursor = Annotated[str | None, Query(max_length=512, description="`nextCursor` of the previous page.")]


def _audited(action: str) -> Callable[[Request], None]:
    """A dependency naming the route's audit action (api/guard.py reads it from the request's state)."""

    def name(request: Request) -> None:
        request.state.action = action

    return name


def chat_out(row: ChatRow) -> ChatOut:
    """Return the API view of a chat."""
    contact = row.contact
    key = contact.phone_number
    jid = contact.jid or (key if "@" in key else str(phone_jid(key)))
    muted, until = muted_until_out(row.muted_until)
    last = row.last
    return ChatOut(
        id=contact.id,
        session_id=row.session_id,
        chat=key,
        jid=jid,
        lid=contact.lid or (jid if jid.endswith("@" + LID_SERVER) else None),
        name=contact.name or contact.push_name or contact.business_name,
        is_group=contact.is_group or jid.endswith("@" + GROUP_SERVER),
        last_message=None
        if last is None
        else ChatLastMessage(
            id=last.message_id,
            whatsapp_message_id=last.wa_message_id,
            direction="outbound" if last.direction == "outbound" else "inbound",
            type=last.type,
            text=last.text,
            timestamp=last.timestamp,
            status=last.status,
        ),
        unread_count=row.unread,
        marked_unread=row.marked_unread,
        archived=row.archived,
        pinned=row.pinned_at is not None,
        pinned_at=row.pinned_at,
        muted=muted,
        muted_until=until,
    )


@router.get("/chats", responses={404: {"model": Problem, "description": "No such session."}})
async def list_chats(
    client: ClientId,
    chats: Chats,
    session_id: Annotated[str, Query(alias="sessionId", pattern=SESSION_ID_PATTERN)],
    archived: Annotated[bool | None, Query(description="Only archived chats (true), or only the others.")] = None,
    limit: _Limit = 50,
    cursor: _Cursor = None,
) -> ChatPage:
    """List the session's chats, newest activity first: each with its contact or group, its last message, how
    many received messages are unread, and whether it is archived, pinned or muted."""
    page = await chats.list_chats(client, session_id, archived=archived, limit=limit, cursor=cursor)
    return ChatPage(chats=[chat_out(row) for row in page.items], next_cursor=page.next_cursor)


@router.get("/chats/{chatId}", responses=_CHAT_NOT_FOUND)
async def get_chat(chatId: ChatId, client: ClientId, chats: Chats) -> ChatOut:
    """Return one chat."""
    return chat_out(await chats.chat(client, chatId))


@router.get("/chats/{chatId}/messages", responses=_CHAT_NOT_FOUND)
async def chat_messages(
    chatId: ChatId,
    client: ClientId,
    chats: Chats,
    messages: Messages,
    direction: Annotated[Literal["inbound", "outbound"] | None, Query()] = None,
    since: Annotated[datetime | None, Query(description="Only from this time on (ISO 8601).")] = None,
    limit: _Limit = 50,
    cursor: _Cursor = None,
) -> MessagePage:
    """List the chat's messages both ways, newest first, a page at a time."""
    found = await chats.chat(client, chatId)
    page = await messages.list_messages(
        client,
        session=found.session_id,
        contact_id=found.contact.id,
        direction=direction,
        since=since,
        limit=limit,
        cursor=cursor,
    )
    return MessagePage(messages=[message_out(view) for view in page.items], next_cursor=page.next_cursor)


@router.post("/chats/{chatId}/read", responses=_CALL_ERRORS, dependencies=[Depends(_audited("chat.read"))])
async def read_chat(chatId: ChatId, client: ClientId, chats: Chats) -> ChatReadOut:
    """Mark the chat read: the senders see blue ticks (read receipts for its newest 500 unread messages go to
    WhatsApp) and every received message of it becomes `read`; its unread count is 0 after."""
    done = await chats.read_chat(client, chatId)
    return ChatReadOut(chat=chat_out(await chats.chat(client, chatId)), read=done["read"])


async def _change(chats: Any, client: str, chat_id: str, state: ChatState) -> ChatOut:
    return chat_out(await chats.change_chat(client, chat_id, state))


@router.post("/chats/{chatId}/archive", responses=_CALL_ERRORS, dependencies=[Depends(_audited("chat.archive"))])
async def archive_chat(chatId: ChatId, client: ClientId, chats: Chats) -> ChatOut:
    """Archive the chat on the account (the phone shows it archived; WhatsApp unpins it)."""
    return await _change(chats, client, chatId, ChatState(archived=True))


@router.post("/chats/{chatId}/unarchive", responses=_CALL_ERRORS, dependencies=[Depends(_audited("chat.unarchive"))])
async def unarchive_chat(chatId: ChatId, client: ClientId, chats: Chats) -> ChatOut:
    """Take the chat out of the archive."""
    return await _change(chats, client, chatId, ChatState(archived=False))


@router.post("/chats/{chatId}/pin", responses=_CALL_ERRORS, dependencies=[Depends(_audited("chat.pin"))])
async def pin_chat(chatId: ChatId, client: ClientId, chats: Chats) -> ChatOut:
    """Pin the chat to the top of the phone's list (WhatsApp unarchives it)."""
    return await _change(chats, client, chatId, ChatState(pinned=True))


@router.post("/chats/{chatId}/unpin", responses=_CALL_ERRORS, dependencies=[Depends(_audited("chat.unpin"))])
async def unpin_chat(chatId: ChatId, client: ClientId, chats: Chats) -> ChatOut:
    """Unpin the chat."""
    return await _change(chats, client, chatId, ChatState(pinned=False))


@router.post("/chats/{chatId}/mute", responses=_CALL_ERRORS, dependencies=[Depends(_audited("chat.mute"))])
async def mute_chat(chatId: ChatId, client: ClientId, chats: Chats, body: MuteRequest | None = None) -> ChatOut:
    """Mute the chat's notifications: `until` a moment, for `duration` seconds, or (neither) for ever."""
    body = body or MuteRequest(until=None, duration=None)
    return await _change(chats, client, chatId, mute_state(muted=True, until=body.until, duration=body.duration))


@router.post("/chats/{chatId}/unmute", responses=_CALL_ERRORS, dependencies=[Depends(_audited("chat.unmute"))])
async def unmute_chat(chatId: ChatId, client: ClientId, chats: Chats) -> ChatOut:
    """Unmute the chat."""
    return await _change(chats, client, chatId, mute_state(muted=False))


@router.post(
    "/sessions/{sessionId}/presence/subscribe",
    responses=_CALL_ERRORS,
    dependencies=[Depends(_audited("presence.subscribe"))],
)
async def subscribe_presence(
    sessionId: str, body: PresenceSubscribeRequest, client: ClientId, chats: Chats
) -> PresenceSubscribeOut:
    """Subscribe to a contact's presence: `presence` events follow (available; unavailable with `lastSeen`;
    composing, recording or paused in a chat). WhatsApp forgets subscriptions when the session reconnects:
    subscribe again after a `status-change` to connected."""
    done = await chats.subscribe_presence(client, sessionId, body.to)
    return PresenceSubscribeOut(session_id=sessionId, subscribed=done["subscribed"])


@router.post(
    "/sessions/{sessionId}/presence/own", responses=_CALL_ERRORS, dependencies=[Depends(_audited("presence.own"))]
)
async def set_own_presence(sessionId: str, body: OwnPresenceRequest, client: ClientId, chats: Chats) -> OwnPresenceOut:
    """Show the session online (available) or offline (unavailable) to the contacts subscribed to its presence."""
    done = await chats.set_available(client, sessionId, body.presence == SeenPresence.AVAILABLE.value)
    return OwnPresenceOut(session_id=sessionId, presence=done["presence"])
