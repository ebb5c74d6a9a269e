"""The records a client's schema holds, as the seed models them (Session, Contact, Message) plus the event log."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Direction(StrEnum):
    """Which way a message travelled."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"


class MessageStatus(StrEnum):
    """Where a message is on its way; `pending` until a worker hands it to WhatsApp."""

    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    PLAYED = "played"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Session:
    """One WhatsApp number connected by a client (the seed's `Session`)."""

    id: str
    session_id: str
    client_id: str
    status: str
    qr_code: str | None
    created_at: datetime
    updated_at: datetime
    engine: str = "whatsmeow"
    phone_number: str | None = None  # the linked account's number
    jid: str | None = None  # the linked device's JID
    pairing_code: str | None = None
    qr_expires_at: datetime | None = None
    last_error: str | None = None
    status_code: str | None = None  # why it is in its status, for programs
    status_details: dict[str, Any] | None = None  # that reason's data


@dataclass(frozen=True, slots=True)
class Contact:
    """A chat partner of a session: a person (by phone-number JID, LID or both) or a group (the seed's `Contact`).

    `phone_number` is its key: a number's digits once its phone JID is known, else its LID, or a group's JID.
    """

    id: str
    session_id: str
    phone_number: str
    name: str | None
    profile_pic: str | None
    is_group: bool
    jid: str | None = None  # the phone-number JID (a group's JID for a group)
    lid: str | None = None
    push_name: str | None = None
    business_name: str | None = None  # a business account's verified name
    picture_url: str | None = None
    picture_id: str | None = None
    picture_checked_at: datetime | None = None
    picture_expires_at: datetime | None = None
    on_whatsapp: bool | None = None
    blocked: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """A text (or summarised other kind) sent or received by a session (the seed's `Message`)."""

    id: str
    session_id: str
    contact_id: str
    message_id: str
    content: str
    type: str
    direction: Direction
    status: MessageStatus
    timestamp: datetime
    contact: Contact | None = None
    chat_jid: str | None = None
    error: str | None = None
    sent_at: datetime | None = None
    wa_message_id: str | None = None  # WhatsApp's id (ours is message_id; both WhatsApp's for inbound)
    error_code: str | None = None
    sender_jid: str | None = None  # who wrote it, in a group
    sender_lid: str | None = None
    source: str | None = None  # outbound: "api" or "phone"
    attempts: int = 0
    payload: dict[str, Any] | None = None  # the content in its public shape (None: a text, in `content`)
    context: dict[str, Any] | None = None  # the message it replies to
    mentions: tuple[str, ...] = ()
    edited_at: datetime | None = None
    deleted_at: datetime | None = None  # deleted for everyone by its author


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a client's event log; ids only ever increase."""

    id: int
    session_id: str | None
    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One mutating call: who (the API key's prefix), what, when, with what outcome."""

    at: datetime
    actor: str
    action: str
    outcome: str
    status: int
    session_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Client:
    """A tenant of the gateway, as the registry knows it."""

    client_id: str
    created_at: datetime
    key_prefixes: tuple[str, ...] = ()
