"""The events a client's applications hear about (SSE, Socket.IO, webhooks): their names and their JSON body."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from zapgate.domain.records import Event


class EventType(StrEnum):
    """The seed's event names, plus message-status and pairing-code."""

    QR_CODE = "qr-code"
    PAIRING_CODE = "pairing-code"
    STATUS_CHANGE = "status-change"
    MESSAGE_RECEIVED = "message-received"
    MESSAGE_STATUS = "message-status"
    ERROR = "error"


def event_body(event: Event) -> dict[str, Any]:
    """The JSON body of `event`: its payload with the event's id, type, session and time."""
    body: dict[str, Any] = {
        "eventId": event.id,
        "type": event.type,
        "sessionId": event.session_id,
        "createdAt": event.created_at.isoformat() if event.created_at is not None else None,
    }
    body.update(event.payload)
    return body
