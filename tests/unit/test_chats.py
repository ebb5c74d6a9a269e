"""A chat's state: mutes, what a change sets on the row and tells in its event, and how it travels to the worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from zapgate.domain.chats import (
    FOREVER,
    ChatState,
    chat_state_args,
    chat_state_of,
    mute_state,
    muted_until_out,
    state_columns,
)
from zapgate.errors import InvalidRequest

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_a_mute_lasts_for_a_duration_until_a_moment_or_for_ever() -> None:
    timed = mute_state(muted=True, duration=3600)
    assert timed.muted is True and timed.muted_until is not None
    assert abs(timed.muted_until - datetime.now(UTC) - timedelta(hours=1)) < timedelta(seconds=5)
    until = datetime.now(UTC) + timedelta(days=7)
    assert mute_state(muted=True, until=until) == ChatState(muted=True, muted_until=until)
    assert mute_state(muted=True) == ChatState(muted=True, muted_until=None)
    assert mute_state(muted=False, duration=60) == ChatState(muted=False)


@pytest.mark.parametrize(
    ("until", "duration", "field"),
    [
        (datetime.now(UTC) + timedelta(hours=1), 60, "until"),  # both
        (datetime(2001, 1, 1, tzinfo=UTC), None, "until"),  # past
        (datetime.now(UTC) + timedelta(days=400), None, "until"),  # too far
        (datetime(2099, 1, 1), None, "until"),  # noqa: DTZ001 (no offset: refused)
        (None, 0, "duration"),
        (None, 400 * 86_400, "duration"),
    ],
)
def test_a_mute_out_of_bounds_names_its_field(until: datetime | None, duration: int | None, field: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        mute_state(muted=True, until=until, duration=duration)
    assert raised.value.details["field"] == field


@pytest.mark.parametrize(
    ("state", "columns", "changes"),
    [
        (ChatState(archived=True), {"archived": True, "pinned_at": None}, {"archived": True}),
        (ChatState(archived=False), {"archived": False}, {"archived": False}),
        (ChatState(pinned=True), {"pinned_at": AT, "archived": False}, {"pinned": True}),
        (ChatState(pinned=False), {"pinned_at": None}, {"pinned": False}),
        (ChatState(muted=True), {"muted_until": FOREVER}, {"muted": True, "mutedUntil": None}),
        (
            ChatState(muted=True, muted_until=AT),
            {"muted_until": AT},
            {"muted": True, "mutedUntil": AT.isoformat()},
        ),
        (ChatState(muted=False), {"muted_until": None}, {"muted": False, "mutedUntil": None}),
        (ChatState(read=False), {"marked_unread": True}, {"read": False}),
        (ChatState(read=True), {"marked_unread": False}, {"read": True}),
    ],
)
def test_a_change_sets_its_columns_and_tells_what_changed(
    state: ChatState, columns: dict[str, object], changes: dict[str, object]
) -> None:
    assert state_columns(state, at=AT) == columns
    assert state.changes() == changes
    if state.read is None:  # read travels as its own call, not as a chat change
        assert chat_state_of(chat_state_args(state)) == state


def test_a_stored_mute_reads_back_as_muted_or_not() -> None:
    assert muted_until_out(None) == (False, None)
    assert muted_until_out(datetime.max) == (True, None)  # noqa: DTZ901 (infinity, as asyncpg reads it)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert muted_until_out(later) == (True, later)
    assert muted_until_out(datetime.now(UTC) - timedelta(seconds=1)) == (False, None)  # over
