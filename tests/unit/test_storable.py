"""Text from outside made storable before it reaches PostgreSQL."""

import json
import math

import pytest

from zapgate.domain.storable import REPLACEMENT, storable, storable_json, storable_or_none


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("hello", "hello"),
        ("a\x00b", "ab"),
        ("\x00\x00", ""),
        ("x\ud800y", f"x{REPLACEMENT}y"),  # a lone surrogate cannot be encoded as UTF-8
        ("\udfff", REPLACEMENT),
        ("olá 👋 مرحبا", "olá 👋 مرحبا"),  # everything else passes untouched
        ("", ""),
    ],
)
def test_nul_bytes_go_and_lone_surrogates_are_replaced(given: str, kept: str) -> None:
    assert storable(given) == kept
    storable(given).encode("utf-8")  # encodable, as PostgreSQL needs


def test_json_values_are_cleaned_keys_and_all() -> None:
    cleaned = storable_json({"a\x00": ["x\x00", {"k": "\ud800"}], "n": 1, "f": 1.5, "none": None, "t": True})
    assert cleaned == {"a": ["x", {"k": REPLACEMENT}], "n": 1, "f": 1.5, "none": None, "t": True}
    json.dumps(cleaned).encode("utf-8")


def test_numbers_json_cannot_hold_become_null() -> None:
    # a location at NaN degrees (a protobuf double carries NaN): jsonb refuses NaN and infinities
    cleaned = storable_json({"latitude": math.nan, "longitude": [math.inf, -math.inf, 0.5]})
    assert cleaned == {"latitude": None, "longitude": [None, None, 0.5]}
    json.dumps(cleaned, allow_nan=False)


def test_none_passes_through() -> None:
    assert storable_or_none(None) is None
    assert storable_or_none("a\x00") == "a"
