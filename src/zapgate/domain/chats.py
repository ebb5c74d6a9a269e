"""Chats and presence, the vocabulary: a chat's state on the account (WhatsApp's app state) and what a contact shows.

A `ChatState` is a change: each field None is left as it is. It travels as engine-call arguments
(`chat_state_args`/`chat_state_of`), becomes columns of `chats` (`state_columns`) and the `changes` of a
`chat-update` event (`ChatState.changes`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from zapgate.errors import InvalidRequest

MAX_MUTE = timedelta(days=366)  # the longest mute with an end (WhatsApp offers 8 hours, a week, or always)
FOREVER = datetime.max.replace(tzinfo=UTC)  # a mute for ever, stored as PostgreSQL's infinity


class SeenPresence(StrEnum):
    """What a contact shows: online or not, and in a chat, typing or recording."""

    AVAILABLE = "available"  # online
    UNAVAILABLE = "unavailable"  # offline (with when it was last seen, if it shares that)
    COMPOSING = "composing"  # typing… in a chat
    RECORDING = "recording"  # recording audio… in a chat
    PAUSED = "paused"  # stopped typing in a chat


@dataclass(frozen=True, slots=True)
class ChatState:
    """A change to a chat's state on the account (WhatsApp's app state); None: not part of this change.

    `muted_until` with `muted` True: muted until then (None: for ever). `read` True: the chat was read
    (its messages up to `timestamp`); False: marked unread.
    """

    archived: bool | None = None
    pinned: bool | None = None
    muted: bool | None = None
    muted_until: datetime | None = None
    read: bool | None = None

    def changes(self) -> dict[str, Any]:
        """What this change sets, by name (the public `chat-update` shape)."""
        found: dict[str, Any] = {}
        if self.archived is not None:
            found["archived"] = self.archived
        if self.pinned is not None:
            found["pinned"] = self.pinned
        if self.muted is not None:
            found["muted"] = self.muted
            found["mutedUntil"] = self.muted_until.isoformat() if self.muted and self.muted_until else None
        if self.read is not None:
            found["read"] = self.read
        return found


def mute_state(*, muted: bool, until: datetime | None = None, duration: float | None = None) -> ChatState:
    """The ChatState of a mute (`until` a moment, or for `duration` seconds, or for ever) or an unmute."""
    if not muted:
        return ChatState(muted=False)
    if until is not None and duration is not None:
        raise InvalidRequest("until: give `until` or `duration`, not both", field="until")
    now = datetime.now(UTC)
    if duration is not None:
        if not 1 <= duration <= MAX_MUTE.total_seconds():
            raise InvalidRequest(f"duration: 1 to {int(MAX_MUTE.total_seconds())} seconds", field="duration")
        until = now + timedelta(seconds=duration)
    elif until is not None:
        if until.tzinfo is None:
            raise InvalidRequest("until: a time with its UTC offset expected (ISO 8601)", field="until")
        if not now < until <= now + MAX_MUTE:
            raise InvalidRequest("until: a moment in the next 366 days expected", field="until")
    return ChatState(muted=True, muted_until=until)


def chat_state_args(state: ChatState) -> dict[str, Any]:
    """A ChatState as engine call arguments (JSON)."""
    args: dict[str, Any] = {}
    if state.archived is not None:
        args["archived"] = state.archived
    if state.pinned is not None:
        args["pinned"] = state.pinned
    if state.muted is not None:
        args["muted"] = state.muted
        args["mutedUntil"] = state.muted_until.isoformat() if state.muted_until else None
    return args


def chat_state_of(args: dict[str, Any]) -> ChatState:
    """The ChatState that `chat_state_args` wrote."""
    until = args.get("mutedUntil")
    return ChatState(
        archived=args.get("archived"),
        pinned=args.get("pinned"),
        muted=args.get("muted"),
        muted_until=datetime.fromisoformat(until) if isinstance(until, str) else None,
    )


def state_columns(state: ChatState, at: datetime | None = None) -> dict[str, Any]:
    """The `chats` columns a ChatState sets (a pin at `at`, else now)."""
    values: dict[str, Any] = {}
    if state.archived is not None:
        values["archived"] = state.archived
        if state.archived:
            values["pinned_at"] = None  # WhatsApp unpins a chat it archives
    if state.pinned is not None:
        values["pinned_at"] = (at or datetime.now(UTC)) if state.pinned else None
        if state.pinned:
            values["archived"] = False  # and unarchives a chat it pins
    if state.muted is not None:
        values["muted_until"] = (state.muted_until or FOREVER) if state.muted else None
    if state.read is not None:
        values["marked_unread"] = not state.read
    return values


def muted_until_out(value: datetime | None) -> tuple[bool, datetime | None]:
    """(muted, until) of a stored `muted_until` at this moment: until None when muted for ever."""
    if value is None:
        return False, None
    if value.year >= FOREVER.year:
        return True, None  # infinity (asyncpg reads it back without its time zone)
    if value <= datetime.now(UTC):
        return False, None  # the mute is over
    return True, value
