"""The pieces every media store shares: re-chunking a source as it streams, and streams that close once."""

from collections.abc import AsyncIterator, Iterable

import pytest

from zapgate.media.store import Digest, MediaStream, check_prefix, check_range, rechunk


async def source(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def cut(parts: list[bytes], size: int) -> tuple[list[bytes], Digest]:
    digest = Digest()
    return [piece async for piece in rechunk(source(parts), size, digest)], digest


@pytest.mark.parametrize(
    ("parts", "size", "expected"),
    [
        ([b"abcdefg"], 3, [b"abc", b"def", b"g"]),
        ([b"a", b"b", b"", b"cd", b"efgh"], 4, [b"abcd", b"efgh"]),  # an exact multiple: no empty tail
        ([b"ab"], 4, [b"ab"]),
        ([], 4, [b""]),  # nothing at all is one empty piece: "stored and empty"
        ([b"", b""], 4, [b""]),
    ],
)
async def test_rechunk_cuts_equal_pieces_and_a_shorter_last(
    parts: list[bytes], size: int, expected: list[bytes]
) -> None:
    pieces, digest = await cut(parts, size)
    assert pieces == expected
    assert digest.stored().size == len(b"".join(parts))


async def test_rechunk_counts_and_hashes_what_passes() -> None:
    import hashlib

    _, digest = await cut([b"hello ", b"world"], 4)
    assert digest.stored().sha256 == hashlib.sha256(b"hello world").hexdigest()


async def test_a_stream_closes_once_at_its_end_or_when_told() -> None:
    closed: list[str] = []

    async def on_close() -> None:
        closed.append("closed")

    stream = MediaStream(source([b"a", b"b"]), on_close=on_close)
    assert await stream.read() == b"ab"
    await stream.aclose()
    assert closed == ["closed"]

    early = MediaStream(source([b"a", b"b"]), on_close=on_close)
    async with early:
        assert await anext(early) == b"a"
    assert closed == ["closed", "closed"]

    untouched = MediaStream(source([b"a"]), on_close=on_close)
    await untouched.aclose()  # never iterated: what it holds is released all the same
    assert len(closed) == 3


def test_ranges_and_prefixes_are_checked() -> None:
    check_range(0, None)
    check_range(5, 5)
    for start, end in [(-1, None), (5, 4)]:
        with pytest.raises(ValueError):
            check_range(start, end)
    assert check_prefix("sess/") == "sess"
    with pytest.raises(ValueError):
        check_prefix("")
