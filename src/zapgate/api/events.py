"""How an event of the log looks to API clients: the same body over SSE, Socket.IO and (later) webhooks."""

from __future__ import annotations

from typing import Any

from zapgate.domain.records import Event


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
