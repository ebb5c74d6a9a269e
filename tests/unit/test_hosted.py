"""Which session a notification names: a worker acts on that one alone, or on every one when unsure; what a
session remembers of WhatsApp's answers about numbers."""

from __future__ import annotations

import pytest

from zapgate.db.outbound import Recipient
from zapgate.engines.base import SessionRef
from zapgate.services import hosted
from zapgate.services.hosted import RecipientCache, named_session


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


def test_an_answer_about_a_number_expires_when_it_was_asked_plus_the_ttl_however_often_it_is_used() -> None:
    cache = RecipientCache()
    answer = Recipient("5521911111111", True, "5521911111111@s.whatsapp.net", None)
    cache.put("5521911111111", answer, expires=100.0)
    assert cache.get("5521911111111", now=50.0) is answer
    assert cache.get("5521911111111", now=99.0) is answer  # used: still the expiry of when it was asked
    assert cache.get("5521911111111", now=100.0) is None  # asked again by the outbox
    assert len(cache) == 0


def test_a_session_keeps_the_answers_it_used_last_up_to_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache used to keep every number a session ever sent to, for the life of the worker."""
    monkeypatch.setattr(hosted, "RECIPIENTS_KEPT", 3)
    cache = RecipientCache()
    for n in range(3):
        cache.put(f"55219{n}", Recipient(f"55219{n}", True, None, None), expires=100.0)
    assert cache.get("552190", now=0.0) is not None  # used: the least recently used is now 552191
    cache.put("552199", Recipient("552199", True, None, None), expires=100.0)
    assert len(cache) == 3
    assert cache.get("552191", now=0.0) is None
    assert all(cache.get(n, now=0.0) is not None for n in ("552190", "552192", "552199"))
