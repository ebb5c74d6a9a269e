"""The events a client's applications hear about (SSE, Socket.IO, webhooks): their names and their JSON body."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from zapgate.domain.records import Event


class EventType(StrEnum):
    """The seed's event names, plus message-status, pairing-code and what WhatsApp tells besides messages."""

    QR_CODE = "qr-code"
    PAIRING_CODE = "pairing-code"
    STATUS_CHANGE = "status-change"
    MESSAGE_RECEIVED = "message-received"
    MESSAGE_STATUS = "message-status"
    ERROR = "error"
    MESSAGE_UNDECRYPTABLE = "message-undecryptable"  # a message arrived that could not be decrypted
    HISTORY_SYNC = "history-sync"  # the phone sent a chunk of chat history
    CONNECTION_HEALTH = "connection-health"  # keep-alives failing, or answered again
    MESSAGE_EDITED = "message-edited"  # a message's author gave it a new text (or caption)
    MESSAGE_DELETED = "message-deleted"  # a message's author deleted it for everyone
    MEDIA_FAILED = "media-failed"  # an arrived file could not be downloaded, for good
    # -- groups (domain/groups.py builds their bodies) --
    GROUP_UPDATE = "group-update"  # a group's subject, description, picture, settings or invite link changed
    GROUP_PARTICIPANTS = "group-participants"  # participants added, removed, promoted, demoted, joined, left
    GROUP_JOIN = "group-join"  # the session is now in a group (created it, was added, joined by link)
    GROUP_LEAVE = "group-leave"  # the session is no longer in a group (left it, or was removed)
    # chats and presence (issue 14)
    CHAT_UPDATE = "chat-update"  # a chat was archived, pinned, muted, read or marked unread (by the API or the phone)
    PRESENCE = "presence"  # a contact is online, offline (last seen), typing, recording or paused in a chat
    # contacts and identity (issue 14; domain/contacts.py builds the body)
    CONTACT_UPDATE = "contact-update"  # contacts merged; a name, the blocklist or a profile picture changed


def status_change_payload(
    status: str,
    previous: str,
    reason: str | None,
    *,
    code: str | None = None,
    details: dict[str, Any] | None = None,
    engine: str | None = None,
    phone_number: str | None = None,
) -> dict[str, Any]:
    """The body of a `status-change` event (a public contract: every producer builds it here)."""
    payload: dict[str, Any] = {"status": status, "previousStatus": previous, "reason": reason, "code": code}
    if details:
        payload["details"] = details
    if engine is not None:
        payload["engine"] = engine
        payload["phoneNumber"] = phone_number
    return payload


ENVELOPE_KEYS = frozenset({"eventId", "type", "sessionId", "createdAt"})
# payload keys that name something else than the envelope's key of the same name, and where they go instead
_RENAMED = {"type": "messageType"}  # a message-received's kind ("text", "image", ...)


def event_body(event: Event) -> dict[str, Any]:
    """The JSON body of `event`: its payload with the event's id, type, session and time.

    The envelope wins: a consumer dispatches on `type` and must find the event's name there, whatever the
    payload holds. A payload's own `type` (a message's kind, stored under that name) is `messageType`.
    """
    body: dict[str, Any] = {
        "eventId": event.id,
        "type": event.type,
        "sessionId": event.session_id,
        "createdAt": event.created_at.isoformat() if event.created_at is not None else None,
    }
    for key, value in event.payload.items():
        if key not in ENVELOPE_KEYS:
            body[key] = value
        elif key in _RENAMED and _RENAMED[key] not in event.payload:
            body[_RENAMED[key]] = value
    return body
