from __future__ import annotations

from datetime import UTC, datetime

from zapgate.domain.events import event_body
from zapgate.domain.records import Event

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def test_a_message_received_keeps_its_event_type_and_shows_the_message_kind_as_message_type() -> None:
    event = Event(7, "alice", "message-received", {"messageId": "M1", "type": "text", "text": "hi"}, NOW)
    body = event_body(event)
    assert body["type"] == "message-received"
    assert body["messageType"] == "text"
    assert body == {
        "eventId": 7,
        "type": "message-received",
        "sessionId": "alice",
        "createdAt": NOW.isoformat(),
        "messageId": "M1",
        "messageType": "text",
        "text": "hi",
    }


def test_no_payload_key_overwrites_the_envelope() -> None:
    payload = {"eventId": 1, "sessionId": "mallory", "createdAt": "never", "type": "image", "status": "ok"}
    body = event_body(Event(9, "alice", "message-status", payload, NOW))
    assert (body["eventId"], body["type"], body["sessionId"], body["createdAt"]) == (
        9,
        "message-status",
        "alice",
        NOW.isoformat(),
    )
    assert body["status"] == "ok" and body["messageType"] == "image"
