"""Messages that act on other messages: a reaction, a poll vote, an edit, a delete for everyone.

Whoever stores such a message (the recorder for what arrives or what the phone sent, the outbox for what a
session sent through zapgate) calls `apply` in the same transaction as its insert, so each is applied once.
WhatsApp names the target by its id and author; only its author may edit or delete a message, and a late
reaction or vote never overwrites a newer one. A target zapgate never stored (older than the session's
link, say) leaves the acting message stored and announced, with `targetKnown: false`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from zapgate.db import conversation
from zapgate.db.conversation import Target
from zapgate.domain.content import (
    Content,
    ContentKind,
    Edit,
    Media,
    MessageKey,
    PollVote,
    Reaction,
    Revoke,
    Text,
    from_payload,
    summary,
    to_payload,
)
from zapgate.domain.events import EventType
from zapgate.log import get_logger
from zapgate.services.receipts import EventEntry

log = get_logger(__name__)

ME = "me"  # the reactor or voter that is the session itself (its phone, or zapgate on its behalf)
HASHED = "sha256:"  # an option an engine could not name: the SHA-256 (hex) of its name, as WhatsApp sends it

ACTING = (Reaction, PollVote, Edit, Revoke)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: the session itself (`from_me`), or the author of an arrived message."""

    from_me: bool
    jid: str | None  # the author's JID (phone JID when known), None when from_me

    @property
    def name(self) -> str:
        return ME if self.from_me else (self.jid or "unknown")


async def target_of(tx: Any, session_row: str, key: MessageKey) -> Target | None:
    """The stored message `key` names (by WhatsApp's id), or None."""
    found = await conversation.targets(tx.connection, session_row, wa_ids=[key.id])
    return found[0] if found else None


async def apply(
    tx: Any,
    *,
    session_id: str,
    session_row: str,
    content: Content | None,
    actor: Actor,
    at: datetime,
    erase_deleted: bool,
) -> tuple[Target | None, list[EventEntry]]:
    """Apply an acting `content` to its target; return the target (if stored) and the events it causes.

    Content that acts on nothing (a text, a file, ...) is left alone: (None, []).
    """
    if not isinstance(content, ACTING):
        return None, []
    target = await target_of(tx, session_row, content.key)
    if target is None:
        log.info("conversation.target_unknown", kind=type(content).__name__, session=session_id)
        return None, []
    if isinstance(content, Reaction):
        await conversation.react(tx.connection, target.row_id, actor.name, content.emoji, at)
        return target, []
    if isinstance(content, PollVote):
        if target.type != ContentKind.POLL.value:
            return None, []
        names = option_names(target, content.selected)
        await conversation.vote(tx.connection, target.row_id, actor.name, names, at)
        return target, []
    if not _authored_by(target, actor):
        log.warning("conversation.not_the_author", kind=type(content).__name__, session=session_id)
        return None, []
    if isinstance(content, Edit):
        return target, await _edit(tx, session_id, target, content, at)
    await conversation.revoke(tx.connection, target, at, erase=erase_deleted)
    payload = {
        "messageId": target.message_id,
        "whatsappMessageId": target.wa_message_id,
        "chatJid": target.chat_jid,
        "fromMe": actor.from_me,
        "deletedAt": at.isoformat(),
        "erased": erase_deleted,
    }
    return target, [(EventType.MESSAGE_DELETED.value, session_id, {"sessionId": session_id, **payload})]


def _authored_by(target: Target, actor: Actor) -> bool:
    if actor.from_me:
        return target.direction == "outbound"
    if target.direction != "inbound":
        return False
    return target.sender_jid is None or actor.jid is None or target.sender_jid == actor.jid


async def _edit(tx: Any, session_id: str, target: Target, content: Edit, at: datetime) -> list[EventEntry]:
    previous = target.content
    edited = edited_content(target, content.text)
    if edited is None:
        return []
    payload = None if target.payload is None else to_payload(edited)
    await conversation.edit(tx.connection, target, summary(edited), payload, at)
    body = {
        "sessionId": session_id,
        "messageId": target.message_id,
        "whatsappMessageId": target.wa_message_id,
        "chatJid": target.chat_jid,
        "text": content.text,
        "previousText": previous,
        "editedAt": at.isoformat(),
    }
    return [(EventType.MESSAGE_EDITED.value, session_id, body)]


def edited_content(target: Target, text: str) -> Content | None:
    """`target`'s content with its text (or caption) replaced by `text`; None for a kind without text."""
    if target.payload is None:
        return Text(body=text) if target.type == ContentKind.TEXT.value else None
    try:
        current = from_payload(target.payload)
    except ValueError:
        return None
    if isinstance(current, Text):
        return Text(body=text, preview_url=current.preview_url)
    if isinstance(current, Media) and current.kind.value in {"image", "video", "document"}:
        return replace(current, caption=text)
    return None


def option_names(poll: Target, selected: tuple[str, ...]) -> list[str]:
    """The options of a vote by name: hashed ones (`sha256:<hex>`) are named from the poll's options."""
    options: list[str] = []
    if poll.payload is not None:
        options = list(poll.payload.get("poll", {}).get("options", []))
    by_hash = {hashlib.sha256(option.encode()).hexdigest(): option for option in options}
    names = []
    for choice in selected:
        if choice.startswith(HASHED):
            names.append(by_hash.get(choice.removeprefix(HASHED), choice))
        else:
            names.append(choice)
    return names
