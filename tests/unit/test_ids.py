import pytest

from zapgate.domain.ids import client_id, new_id, row_id, schema_for
from zapgate.errors import InvalidClientId, InvalidRequest

BAD_CLIENT_IDS = [
    "",
    "Acme",
    "ACME",
    "acme'",
    'ac"me',
    "acme;drop",
    "a;b",
    "ac-me",
    "..",
    "a..b",
    "ac me",
    " acme",
    "acme\n",
    "_acme",
    "a" * 49,
    "açme",
    "ácme",
    "acme\u0000",
    "\u0430cme",  # Cyrillic a
    "\uff11\uff12\uff13",  # full-width digits
]


@pytest.mark.parametrize("value", BAD_CLIENT_IDS)
def test_bad_client_ids_are_refused_with_a_clear_message(value: str) -> None:
    with pytest.raises(InvalidClientId) as caught:
        client_id(value)
    assert isinstance(caught.value, InvalidRequest)
    assert "expected 1-48 characters of a-z, 0-9 and _" in caught.value.message


@pytest.mark.parametrize("value", [None, 42, b"acme", ["acme"]])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(InvalidClientId):
        client_id(value)


@pytest.mark.parametrize("value", ["acme", "a", "0", "novo_cliente_123", "a" * 48, "9_9"])
def test_good_client_ids_pass_and_map_to_their_schema(value: str) -> None:
    assert client_id(value) == value
    assert schema_for(client_id(value)) == f"client_{value}"


def test_schema_for_validates_too() -> None:
    with pytest.raises(InvalidClientId):
        schema_for("x; DROP SCHEMA public")  # type: ignore[arg-type]


def test_new_ids_are_cuids_and_distinct() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 25 and i.isalnum() and i.islower() for i in ids)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("9223372036854775807", 2**63 - 1),
        ("9223372036854775808", None),
        ("9999999999999999999", None),
        ("²", None),
        ("1²", None),
        ("\u0661\u0662", None),
        ("", None),
        ("-1", None),
        ("9" * 400, None),
    ],
)
def test_row_ids_are_ascii_digits_within_bigint(text: str, expected: int | None) -> None:
    assert row_id(text) == expected
