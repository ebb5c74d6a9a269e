"""Which session a notification names: a worker acts on that one alone, or on every one when unsure."""

from __future__ import annotations

import pytest

from zapgate.engines.base import SessionRef
from zapgate.services.hosted import named_session


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ("acme/alice", SessionRef("acme", "alice")),
        ("acme_2/user-1_x", SessionRef("acme_2", "user-1_x")),
        (None, None),  # the listener reconnected: notifications may have been lost
        ("", None),  # a NOTIFY without payload
        ("acme", None),
        ("acme/", None),
        ("/alice", None),
        ("Acme/alice", None),  # not a client id
        ("acme/alice/extra", None),  # not a session id
        ("acme/" + "a" * 65, None),  # cut short or too long
    ],
)
def test_a_payload_names_a_session_or_none(payload: str | None, named: SessionRef | None) -> None:
    assert named_session(payload) == named
