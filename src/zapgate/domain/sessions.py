"""The life of a session: its statuses and the transitions allowed between them.

    created ──► connecting ──► qr ──────────► connecting ──► connected ◄──┐
       │            │  │        │ (scanned)                    │         │
       │            │  └──► pairing ─────────────────────────► │    reconnecting ──► failed
       ▼            │           │                               ▼         │  (watchdog window)
    unplaced        │           └──► qr_timeout            logged_out ◄───┘
                    └──► failed                              (final: keys deleted)

`reconnecting` is a live session whose connection dropped while the engine dials again by itself
(whatsmeow does); the worker's watchdog fails it when that lasts longer than the reconnect window.
`disconnected` is a connection that ended and that nobody redials until the worker starts it again.

`stopped` is a session closed on purpose (API, shutdown, WHATSAPP_SESSION_TIMEOUT); `stopped`, `failed`,
`qr_timeout` and `logged_out` can be started again (a logged-out session then pairs anew).
"""

from __future__ import annotations

from enum import StrEnum

from zapgate.errors import InvalidTransition


class SessionStatus(StrEnum):
    """Where a session is in its life."""

    CREATED = "created"
    UNPLACED = "unplaced"  # no worker has room for it (WHATSAPP_MAX_SESSIONS each); placed when one has
    CONNECTING = "connecting"
    QR = "qr"
    PAIRING = "pairing"  # a pairing code was issued; waiting for it to be typed on the phone
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # the connection ended; the worker decides what follows
    RECONNECTING = "reconnecting"  # the connection dropped; the engine is dialling again by itself
    STOPPED = "stopped"
    LOGGED_OUT = "logged_out"
    FAILED = "failed"
    QR_TIMEOUT = "qr_timeout"


S = SessionStatus

# the statuses a session may move to from each status
TRANSITIONS: dict[SessionStatus, frozenset[SessionStatus]] = {
    S.CREATED: frozenset({S.CONNECTING, S.UNPLACED, S.STOPPED, S.FAILED, S.LOGGED_OUT}),
    S.UNPLACED: frozenset({S.CONNECTING, S.STOPPED, S.FAILED, S.LOGGED_OUT}),
    S.CONNECTING: frozenset({S.QR, S.PAIRING, S.CONNECTED, S.DISCONNECTED, S.FAILED, S.LOGGED_OUT, S.STOPPED}),
    S.QR: frozenset({S.CONNECTING, S.PAIRING, S.CONNECTED, S.QR_TIMEOUT, S.DISCONNECTED, S.FAILED, S.STOPPED}),
    S.PAIRING: frozenset({S.CONNECTING, S.CONNECTED, S.QR_TIMEOUT, S.DISCONNECTED, S.FAILED, S.STOPPED}),
    # connected → connecting: another worker restores it after its worker died without a word
    S.CONNECTED: frozenset({S.CONNECTING, S.DISCONNECTED, S.RECONNECTING, S.LOGGED_OUT, S.STOPPED, S.FAILED}),
    S.DISCONNECTED: frozenset({S.CONNECTING, S.CONNECTED, S.RECONNECTING, S.FAILED, S.LOGGED_OUT, S.STOPPED}),
    S.RECONNECTING: frozenset({S.CONNECTING, S.CONNECTED, S.DISCONNECTED, S.FAILED, S.LOGGED_OUT, S.STOPPED}),
    S.STOPPED: frozenset({S.CONNECTING, S.UNPLACED, S.LOGGED_OUT}),
    S.FAILED: frozenset({S.CONNECTING, S.UNPLACED, S.LOGGED_OUT, S.STOPPED}),
    S.QR_TIMEOUT: frozenset({S.CONNECTING, S.UNPLACED, S.STOPPED, S.LOGGED_OUT}),
    S.LOGGED_OUT: frozenset({S.CONNECTING, S.UNPLACED}),
}

# statuses in which a worker holds (or is trying to hold) a connection for the session
ACTIVE = frozenset({S.CONNECTING, S.QR, S.PAIRING, S.CONNECTED, S.DISCONNECTED, S.RECONNECTING})
# statuses in which the session waits for someone to start it again
RESTING = frozenset({S.STOPPED, S.FAILED, S.QR_TIMEOUT, S.LOGGED_OUT})
# statuses in which messages accepted now will go out later without anyone's help
CAN_QUEUE_SENDS = frozenset({S.CREATED, S.UNPLACED, S.CONNECTING, S.CONNECTED, S.DISCONNECTED, S.RECONNECTING})


def can_transition(current: SessionStatus, new: SessionStatus) -> bool:
    """Return whether a session may move from `current` to `new` (staying put is always allowed)."""
    return new == current or new in TRANSITIONS[current]


def transition(current: SessionStatus, new: SessionStatus) -> SessionStatus:
    """Return `new` if a session may move there from `current`; raise InvalidTransition otherwise."""
    if not can_transition(current, new):
        raise InvalidTransition(
            f"a session cannot go from {current.value} to {new.value}", current=current.value, new=new.value
        )
    return new


def restart_mode(jid: str | None, status: str) -> str:
    """How a restarted session starts: "restore" from its keys while it is linked, else "qr" (a new pairing)."""
    return "restore" if jid and status != SessionStatus.LOGGED_OUT else "qr"
