import os
import re
import threading

import pytest

from zapgate.domain import ids
from zapgate.domain.ids import client_id, new_id, new_message_id, row_id, schema_for
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


def test_random_bytes_are_never_handed_out_twice_across_refills_and_threads() -> None:
    taken: list[bytes] = []
    lock = threading.Lock()

    def take() -> None:
        mine = [ids.random_bytes(n) for n in (1, 7, 16, 10, 3000, 5000) * 40]  # several refills, one beyond 4 KiB
        with lock:
            taken.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [len(chunk) for chunk in taken].count(5000) == 160
    long_ones = [chunk for chunk in taken if len(chunk) >= 10]  # short ones repeat by chance, 10 bytes do not
    assert len(set(long_ones)) == len(long_ones)
    ones = b"".join(chunk for chunk in taken if len(chunk) == 5000)
    assert len(set(ones)) > 200  # random, not zeros


def test_a_forked_child_does_not_reuse_its_parents_random_bytes() -> None:
    ids.random_bytes(16)  # the pool is filled, most of it not yet handed out
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.write(write, ids.random_bytes(64))
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    from_child = os.read(read, 64)
    os.close(read)
    assert len(from_child) == 64 and from_child != ids.random_bytes(64)


def test_ids_keep_their_forms() -> None:
    assert re.fullmatch(r"3EB0[0-9A-F]{20}", new_message_id())
    assert re.fullmatch(r"[a-z][0-9a-z]{24}", new_id())
    assert len({new_id() for _ in range(10_000)}) == 10_000
