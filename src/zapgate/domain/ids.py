"""Identifiers and their validation: the only door a client id passes through."""

from __future__ import annotations

import os
import re
import threading
from typing import NewType

from zapgate.errors import InvalidClientId, InvalidSessionId

ClientId = NewType("ClientId", str)
SessionId = NewType("SessionId", str)
SchemaName = NewType("SchemaName", str)

CLIENT_ID_PATTERN = r"^[a-z0-9][a-z0-9_]{0,47}$"
_CLIENT_ID = re.compile(r"[a-z0-9][a-z0-9_]{0,47}", re.ASCII)
SCHEMA_PREFIX = "client_"
REGISTRY_SCHEMA = SchemaName("zapgate")

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)

_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
MAX_ROW_ID = 2**63 - 1  # PostgreSQL bigint: the ids of events, deliveries and audit entries


def client_id(value: object) -> ClientId:
    """Return `value` as a ClientId, or raise InvalidClientId saying what a client id must look like."""
    if not isinstance(value, str) or _CLIENT_ID.fullmatch(value) is None:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise InvalidClientId(
            f"invalid client id {shown}: expected 1-48 characters of a-z, 0-9 and _, starting with a letter or digit",
            value=value,
        )
    return ClientId(value)


def session_id(value: object) -> SessionId:
    """Return `value` as a SessionId, or raise InvalidSessionId saying what a session id must look like."""
    if not isinstance(value, str) or _SESSION_ID.fullmatch(value) is None:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise InvalidSessionId(
            f"invalid session id {shown}: expected 1-64 characters of A-Z, a-z, 0-9, _ and -", value=value
        )
    return SessionId(value)


def new_message_id() -> str:
    """Return a new WhatsApp message id (the form WhatsApp Web uses: 3EB0 and 20 hex digits)."""
    return "3EB0" + random_bytes(10).hex().upper()


def random_bytes(count: int) -> bytes:
    """Return `count` bytes from the operating system's random source (`os.urandom`, as `secrets` does), read
    4 KiB at a time: one system call for some hundred ids instead of one each (a send made three, at a few
    microseconds each in a virtual machine). No two callers get the same bytes, nor does a forked child get its
    parent's (the pool is dropped at fork)."""
    global _pool, _taken
    with _pool_lock:
        start = _taken
        if start + count > len(_pool):
            _pool, start = os.urandom(max(_POOL_SIZE, count)), 0
        _taken = start + count
        return _pool[start : start + count]


_POOL_SIZE = 4096
_pool = b""
_taken = 0
_pool_lock = threading.Lock()


def _drop_pool() -> None:
    global _pool, _taken, _pool_lock
    _pool, _taken, _pool_lock = b"", 0, threading.Lock()  # a lock held by another thread at fork stays held


os.register_at_fork(after_in_child=_drop_pool)


def schema_for(client: ClientId) -> SchemaName:
    """Return the PostgreSQL schema that holds `client`'s data."""
    return SchemaName(SCHEMA_PREFIX + client_id(client))


def new_id() -> str:
    """Return a new collision-resistant row id in cuid2's form (as the seed's `cuid()`): a letter, then 24 base-36
    characters from 124 random bits. Made here from `os.urandom` (about 20 times faster than the cuid2 package's
    hash-based generator, which took 7 % of a send's CPU)."""
    number, first = divmod(int.from_bytes(random_bytes(16), "big"), 26)
    chars = [_BASE36[10 + first]]
    for _ in range(12):  # two base-36 digits at a time, least significant first (two ids per send)
        number, pair = divmod(number, 1296)
        chars.append(_PAIRS[pair])
    return "".join(chars)


_PAIRS = [_BASE36[pair % 36] + _BASE36[pair // 36] for pair in range(36 * 36)]


def client_of_schema(schema: str) -> ClientId | None:
    """Return the client whose schema is `schema`, or None when it is no client's schema."""
    if not schema.startswith(SCHEMA_PREFIX):
        return None
    candidate = schema[len(SCHEMA_PREFIX) :]
    return ClientId(candidate) if _CLIENT_ID.fullmatch(candidate) else None


def row_id(text: str) -> int | None:
    """Return `text` as a bigint row id (a cursor, a Last-Event-ID), or None when it is not one.

    ASCII digits only: "²" is a digit to `str.isdigit` and not to `int`, and a number past bigint would reach
    the database as an error of its own.
    """
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if value <= MAX_ROW_ID else None
