"""The events a client's applications hear about (SSE, Socket.IO, webhooks), by name."""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    """The seed's event names, plus message-status and pairing-code."""

    QR_CODE = "qr-code"
    PAIRING_CODE = "pairing-code"
    STATUS_CHANGE = "status-change"
    MESSAGE_RECEIVED = "message-received"
    MESSAGE_STATUS = "message-status"
    ERROR = "error"
