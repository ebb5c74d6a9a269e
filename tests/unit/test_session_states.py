import itertools

import pytest

from zapgate.domain.sessions import (
    ACTIVE,
    RESTING,
    TRANSITIONS,
    SessionStatus,
    can_transition,
    restart_mode,
    transition,
)
from zapgate.errors import InvalidTransition

S = SessionStatus

# the happy paths a user sees
ALLOWED = [
    (S.CREATED, S.CONNECTING),
    (S.CONNECTING, S.QR),
    (S.QR, S.CONNECTING),  # scanned: pair success, then the login
    (S.CONNECTING, S.CONNECTED),
    (S.CONNECTED, S.DISCONNECTED),
    (S.DISCONNECTED, S.CONNECTING),
    (S.DISCONNECTED, S.FAILED),  # retries exhausted
    (S.CONNECTED, S.LOGGED_OUT),  # from the phone or the API
    (S.QR, S.QR_TIMEOUT),
    (S.CONNECTING, S.PAIRING),
    (S.PAIRING, S.CONNECTED),
    (S.CREATED, S.UNPLACED),  # no worker has room
    (S.UNPLACED, S.CONNECTING),
    (S.FAILED, S.CONNECTING),  # restart
    (S.QR_TIMEOUT, S.CONNECTING),
    (S.LOGGED_OUT, S.CONNECTING),  # pair anew
    (S.STOPPED, S.CONNECTING),
]

REFUSED = [
    (S.CREATED, S.CONNECTED),  # never connected without a connection attempt
    (S.LOGGED_OUT, S.CONNECTED),  # keys are gone: only a new pairing
    (S.LOGGED_OUT, S.DISCONNECTED),
    (S.QR_TIMEOUT, S.CONNECTED),
    (S.FAILED, S.CONNECTED),
    (S.CONNECTED, S.QR),  # a linked session never shows a QR again
    (S.CONNECTED, S.CREATED),
    (S.STOPPED, S.DISCONNECTED),
]


@pytest.mark.parametrize(("current", "new"), ALLOWED)
def test_allowed_transitions(current: SessionStatus, new: SessionStatus) -> None:
    assert can_transition(current, new)
    assert transition(current, new) is new


@pytest.mark.parametrize(("current", "new"), REFUSED)
def test_refused_transitions_raise_a_typed_error(current: SessionStatus, new: SessionStatus) -> None:
    assert not can_transition(current, new)
    with pytest.raises(InvalidTransition) as caught:
        transition(current, new)
    assert caught.value.details == {"current": current.value, "new": new.value}


def test_every_status_has_its_transitions_and_staying_is_allowed() -> None:
    assert set(TRANSITIONS) == set(SessionStatus)
    for status in SessionStatus:
        assert can_transition(status, status)
        assert status not in TRANSITIONS[status]


def test_every_status_is_reachable_from_created() -> None:
    seen, frontier = {S.CREATED}, [S.CREATED]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(SessionStatus)


def test_every_resting_status_can_start_again_and_no_active_one_is_resting() -> None:
    assert not ACTIVE & RESTING
    for status in RESTING:
        assert can_transition(status, S.CONNECTING)


def test_the_table_matches_the_lists() -> None:
    # every pair is either in ALLOWED/REFUSED consistently with the table (guards against edits of one only)
    for current, new in itertools.chain(ALLOWED, REFUSED):
        assert (new in TRANSITIONS[current]) == ((current, new) in ALLOWED)


@pytest.mark.parametrize(
    ("jid", "status", "mode"),
    [
        ("5511999990001@s.whatsapp.net", SessionStatus.CONNECTED, "restore"),
        ("5511999990001@s.whatsapp.net", SessionStatus.STOPPED, "restore"),
        ("5511999990001@s.whatsapp.net", SessionStatus.FAILED, "restore"),
        ("5511999990001@s.whatsapp.net", SessionStatus.LOGGED_OUT, "qr"),
        (None, SessionStatus.STOPPED, "qr"),
        ("", SessionStatus.CREATED, "qr"),
        (None, SessionStatus.QR_TIMEOUT, "qr"),
    ],
)
def test_a_restart_restores_a_linked_session_and_pairs_anew_otherwise(
    jid: str | None, status: SessionStatus, mode: str
) -> None:
    assert restart_mode(jid, status) == mode
