"""Accepting a text to send, pure: what a text and an Idempotency-Key must be, what makes two requests the
same, and which sends a session's rate limit refuses.

The service stores what these rules let through (`services/send_intake.py`); nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence

from zapgate.domain.phones import MAX_TEXT_LENGTH
from zapgate.errors import InvalidRequest


def message_text(value: object) -> str:
    """Return `value` as a text to send: 1 to MAX_TEXT_LENGTH characters, not only spaces, no NUL."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("message: a text of 1 to 4096 characters is required")
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidRequest(f"message: at most {MAX_TEXT_LENGTH} characters ({len(value)} given)")
    if "\x00" in value:
        raise InvalidRequest("message: NUL characters (\\u0000) cannot be sent")
    return value


def checked_idempotency_key(value: str) -> str:
    """Return an Idempotency-Key header's value: 1 to 255 printable ASCII characters."""
    if not 1 <= len(value) <= 255 or not value.isascii() or not value.isprintable():
        raise InvalidRequest("Idempotency-Key: 1 to 255 printable ASCII characters expected")
    return value


def request_fingerprint(session_id: str, recipient: str, text: str) -> str:
    """What a send asks for, hashed: a key used again with another fingerprint is another request."""
    body = json.dumps([session_id, recipient, text])
    return hashlib.sha256(body.encode()).hexdigest()


def over_grant(sessions: Sequence[str], granted: Mapping[str, int]) -> list[int]:
    """The positions of the sends (of `sessions`, in order) beyond their session's `granted` count: the last ones."""
    used: Counter[str] = Counter()
    refused = []
    for position, session in enumerate(sessions):
        used[session] += 1
        if used[session] > granted[session]:
            refused.append(position)
    return refused
