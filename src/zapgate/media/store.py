"""The media store: where the bytes of media files live, behind one seam (`MediaStore`).

Two stores implement it: `PostgresMediaStore` (chunks in the client's schema; nothing else to run) and
`S3MediaStore` (any S3-compatible bucket). Both stream: a put takes the bytes as they arrive and never holds
the whole file, a read hands them out chunk by chunk, and byte ranges are served from the store (for HTTP
Range). Both keep each client apart: every call names the client, and the store lays its keys out under it.

Keys are `{session_row_id}/{media_id}` (`zapgate.domain.media.store_key`), relative to the client; a store
never sees a key it did not validate (`check_key`). Errors are `MediaNotFound` (nothing under that key) and
`MediaStoreError` (the store failed us, the vendor's error chained); an exception raised by the source a put
reads from passes through as it is, and the put leaves nothing behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from zapgate.domain.media import check_key


@dataclass(frozen=True, slots=True)
class Stored:
    """What a put stored: how many bytes, and their SHA-256 (hex)."""

    size: int
    sha256: str


class MediaStream:
    """The bytes of one stored file (or of a range of it), chunk by chunk.

    Iterate it to the end, or close it (`aclose`, or `async with`) when stopping early: a stream may hold a
    connection to the store until then.
    """

    def __init__(self, chunks: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]] | None = None) -> None:
        self._chunks = chunks
        self._on_close = on_close

    def __aiter__(self) -> MediaStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Release what the stream holds (idempotent)."""
        closer, self._on_close = self._on_close, None
        try:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            if closer is not None:
                await closer()

    async def __aenter__(self) -> MediaStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def read(self) -> bytes:
        """Return every byte left (for small files and tests: it holds them all in memory)."""
        async with self:
            return b"".join([chunk async for chunk in self])


def empty_stream() -> MediaStream:
    """Return a stream with no bytes (a range past the end of a file)."""
    return MediaStream(_nothing())


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield  # an async generator that yields nothing


class MediaStore(Protocol):
    """Where media bytes live; every call names the client whose bytes they are."""

    @property
    def name(self) -> str:
        """The store's name as media records keep it: `postgres` or `s3`."""
        ...

    async def put(self, client_id: str, key: str, chunks: AsyncIterable[bytes]) -> Stored:
        """Store the bytes `chunks` yields under `key` (replacing what was there), as they arrive.

        On any failure (the store's, or `chunks` raising), nothing of this put remains.
        Raises:
            MediaNotFound: the store needs a record under this key first (PostgreSQL: its `media` row).
            MediaStoreError: the store failed.
        """
        ...

    async def open(self, client_id: str, key: str, *, start: int = 0, end: int | None = None) -> MediaStream:
        """Return the bytes under `key` from `start` up to `end` (exclusive; None: to the end), as a stream.

        A range past the end is cut at the end (or is empty), as a slice would be: `bytes=a-b` of HTTP is
        `start=a, end=b + 1`.
        Raises:
            MediaNotFound: nothing is stored under `key` for this client.
            MediaStoreError: the store failed.
        """
        ...

    async def delete(self, client_id: str, keys: Iterable[str]) -> None:
        """Delete the bytes under `keys` (keys with nothing stored are skipped)."""
        ...

    async def delete_prefix(self, client_id: str, prefix: str) -> None:
        """Delete the bytes under every key that starts with the segments `prefix` (a session's row id: all
        of that session's media)."""
        ...

    async def delete_client(self, client_id: str) -> None:
        """Delete every byte stored for the client (PostgreSQL: dropping its schema does it already)."""
        ...

    async def close(self) -> None:
        """Release the store's connections."""
        ...


class Digest:
    """Count the bytes of a put and hash them as they pass."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)
        self.size += len(data)

    def stored(self) -> Stored:
        return Stored(self.size, self._hash.hexdigest())


def check_range(start: int, end: int | None) -> None:
    """Raise ValueError unless `start` and `end` make a range (0 <= start, start <= end)."""
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"invalid byte range start={start} end={end}: expected 0 <= start <= end")


def check_prefix(prefix: str) -> str:
    """Return `prefix` without a trailing `/` if it is made of key segments; else raise ValueError."""
    return check_key(prefix.removesuffix("/"))


async def rechunk(chunks: AsyncIterable[bytes], size: int, digest: Digest) -> AsyncIterator[bytes]:
    """Yield the bytes of `chunks` in pieces of exactly `size` bytes (the last one shorter, or empty when there
    were no bytes at all), feeding `digest` on the way; never holds more than one piece and one input chunk."""
    buffer = bytearray()
    emitted = False
    async for chunk in chunks:
        if not chunk:
            continue
        digest.update(chunk)
        buffer += chunk
        while len(buffer) >= size:
            with memoryview(buffer) as view:
                piece = bytes(view[:size])  # one copy (a slice of the bytearray would be a second)
            del buffer[:size]
            emitted = True
            yield piece
    if buffer or not emitted:
        yield bytes(buffer)
