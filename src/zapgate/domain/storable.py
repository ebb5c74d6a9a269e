"""Values from outside made storable: what WhatsApp (or a webhook receiver, or a caller) sends may hold what
PostgreSQL refuses. A NUL byte in one inbound text used to fail the store of the whole batch; a data error
is never worth a retry, so it is prevented here, before anything reaches the database.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # NUL (text and jsonb refuse it) and lone surrogates (not UTF-8)
REPLACEMENT = "\ufffd"


def storable(value: str) -> str:
    """Return `value` with NUL bytes removed and lone surrogates replaced by U+FFFD."""
    if not _UNSTORABLE.search(value):
        return value
    return _UNSTORABLE.sub(lambda m: "" if m.group() == "\x00" else REPLACEMENT, value)


def storable_or_none(value: str | None) -> str | None:
    """`storable`, passing None through."""
    return None if value is None else storable(value)


def storable_json(value: Any) -> Any:
    """Return a JSON-ready value with every string in it (keys too) made storable, and every number that JSON
    cannot hold (NaN, infinities: a protobuf double may carry them, jsonb refuses them) made null."""
    kind = type(value)  # the usual types first: a check against an abstract class costs a Python call
    if kind is str:
        return storable(value)
    if kind is dict:
        return {storable(str(k)): storable_json(v) for k, v in value.items()}
    if kind is int or kind is bool or value is None:
        return value
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {storable(str(k)): storable_json(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [storable_json(v) for v in value]
    return value
