"""The rules a text to send must pass: its text, its Idempotency-Key, its fingerprint, the session's rate."""

from __future__ import annotations

import re

import pytest

from zapgate.domain.sends import checked_idempotency_key, message_text, over_grant, request_fingerprint
from zapgate.errors import InvalidRequest


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("Olá!", None),
        ("x" * 4096, None),
        ("  padded  ", None),
        ("", "is required"),
        ("   \n", "is required"),
        (None, "is required"),
        (42, "is required"),
        ("x" * 4097, "at most 4096 characters (4097 given)"),
        ("a\x00b", "NUL"),
    ],
)
def test_message_text(text: object, refusal: str | None) -> None:
    if refusal is None:
        assert message_text(text) == text
    else:
        with pytest.raises(InvalidRequest, match=re.escape(refusal)):
            message_text(text)


@pytest.mark.parametrize(
    ("key", "accepted"),
    [
        ("k", True),
        ("order-42/retry#1", True),
        ("x" * 255, True),
        ("", False),
        ("x" * 256, False),
        ("chave-é", False),
        ("tab\there", False),
    ],
)
def test_idempotency_keys(key: str, accepted: bool) -> None:
    if accepted:
        assert checked_idempotency_key(key) == key
    else:
        with pytest.raises(InvalidRequest, match="Idempotency-Key"):
            checked_idempotency_key(key)


def test_a_fingerprint_tells_requests_apart_by_session_recipient_and_text() -> None:
    first = request_fingerprint("s1", "5511988800001", "hi")
    assert first == request_fingerprint("s1", "5511988800001", "hi") and len(first) == 64
    others = {
        request_fingerprint("s2", "5511988800001", "hi"),
        request_fingerprint("s1", "5511988800002", "hi"),
        request_fingerprint("s1", "5511988800001", "hi!"),
        request_fingerprint("s1", "5511988800001hi", ""),  # fields do not run into each other
    }
    assert first not in others and len(others) == 4


@pytest.mark.parametrize(
    ("sessions", "granted", "refused"),
    [
        ([], {}, []),
        (["a", "a", "a"], {"a": 3}, []),
        (["a", "a", "a"], {"a": 1}, [1, 2]),
        (["a", "b", "a", "b", "a"], {"a": 2, "b": 0}, [1, 3, 4]),
        (["a", "b", "a"], {"a": 0, "b": 5}, [0, 2]),
    ],
)
def test_the_last_sends_of_a_session_beyond_its_grant_are_refused(
    sessions: list[str], granted: dict[str, int], refused: list[int]
) -> None:
    assert over_grant(sessions, granted) == refused
