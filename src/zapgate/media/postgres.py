"""The PostgreSQL media store: a file's bytes as numbered chunks in `media_chunks` of the client's schema.

Nothing to run besides the database, backed up with it, and gone with the client's schema.

How a put relates to the media record: the record comes first. The caller inserts the `media` row (status
`pending`, `db.media.insert_pending`) and commits it; the row's `store_key` is the key handed to `put`, and
its id is the key's last segment. Chunks name that id (`media_chunks.media_id`, a foreign key), so they go
when the row goes: with its session, with the client's schema, or by `db.media.delete_records`. A put under a
key with no such row raises `MediaNotFound`.

Transactions: one per chunk, each short. A put of 100 MB fed by a slow upload would otherwise hold a pooled
connection (and the oldest open transaction, which holds back vacuum everywhere) for as long as the upload
takes. A put that fails (the source raises, the database refuses, the task is cancelled) deletes the chunks it
wrote before it re-raises. A process that dies mid-put leaves chunks behind a record still `pending`: readers
only open `stored` records, and `db.media.stale_pending` finds those records for a sweep, whose delete takes
the chunks along. One put per key at a time: each file gets a media id of its own, so two never meet.

Chunks are `CHUNK_SIZE` bytes, the last one shorter (an empty file is one empty chunk, so "stored and empty"
differs from "missing"). A read fetches one chunk per query, each in its own transaction, so a slow reader
holds no connection either; a range read starts at the chunk that holds `start` (the first chunk's length is
the file's chunk size) and cuts the first and last with `substring`, which reads only the needed slices of an
uncompressed (EXTERNAL) value. `benchmarks/media_store.py` measured the chunk size (README: Performance).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db.manager import ConnectionManager
from zapgate.domain.media import media_id_of
from zapgate.errors import DatabaseError, InvalidRequest, MediaNotFound, MediaStoreError, NotFound
from zapgate.log import get_logger
from zapgate.media.store import (
    Digest,
    MediaStream,
    Stored,
    check_prefix,
    check_range,
    empty_stream,
    rechunk,
)

log = get_logger(__name__)
T = TypeVar("T")

CHUNK_SIZE = 1 << 20  # bytes: 1 MiB beat 256 KiB by 1.3-1.5x for 3.4 MiB more per transfer (README: Performance)

_RECORD = text("SELECT 1 FROM media WHERE id = :id AND store_key = :key")
_CLEAR = text("DELETE FROM media_chunks WHERE media_id = :id")
_INSERT = text("INSERT INTO media_chunks (media_id, seq, data) VALUES (:id, :seq, :data)")
_CHUNK_SIZE = text("SELECT octet_length(data) FROM media_chunks WHERE media_id = :id AND seq = 0")
_SLICE = text("SELECT substring(data FROM :from FOR :count) FROM media_chunks WHERE media_id = :id AND seq = :seq")
_DELETE_MANY = text("DELETE FROM media_chunks WHERE media_id = ANY(CAST(:ids AS text[]))")
_DELETE_UNDER = text(
    """
    DELETE FROM media_chunks c USING media m
    WHERE c.media_id = m.id AND m.session_id = :session AND starts_with(m.store_key, :prefix)
    """
)
_DELETE_ALL = text("DELETE FROM media_chunks")


class PostgresMediaStore:
    """Media bytes in chunks in each client's schema, through the shared ConnectionManager."""

    name = "postgres"

    def __init__(self, manager: ConnectionManager, *, chunk_size: int = CHUNK_SIZE) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1 byte")
        self._manager = manager
        self.chunk_size = chunk_size

    async def put(self, client_id: str, key: str, chunks: AsyncIterable[bytes]) -> Stored:
        """Store `chunks` under `key`, a chunk per transaction; on failure delete what was written."""
        media_id = media_id_of(key)
        await self._run(client_id, lambda conn: self._start_put(conn, media_id, key))
        digest = Digest()
        try:
            seq = 0
            async for piece in rechunk(chunks, self.chunk_size, digest):
                await self._run(client_id, functools.partial(_insert, media_id=media_id, seq=seq, data=piece))
                seq += 1
        except BaseException:
            await self._discard(client_id, media_id)
            raise
        return digest.stored()

    async def _start_put(self, conn: AsyncConnection, media_id: str, key: str) -> None:
        if (await conn.execute(_RECORD, {"id": media_id, "key": key})).first() is None:
            raise MediaNotFound("no media record under this store key: insert it (pending) before the put", key=key)
        await conn.execute(_CLEAR, {"id": media_id})  # a put replaces

    async def _discard(self, client_id: str, media_id: str) -> None:
        # shielded: a cancelled put must still take its chunks away
        cleanup = asyncio.ensure_future(self._run(client_id, lambda conn: conn.execute(_CLEAR, {"id": media_id})))
        try:
            await asyncio.shield(cleanup)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # the record stays pending: db.media.stale_pending finds it, and its delete takes the chunks along
            log.warning("media.put_cleanup_failed", media_id=media_id, error=repr(exc))

    async def open(self, client_id: str, key: str, *, start: int = 0, end: int | None = None) -> MediaStream:
        """Return a stream of the bytes under `key` from `start` to `end` (exclusive), a chunk per query."""
        check_range(start, end)
        media_id = media_id_of(key)
        chunk_size = await self._run(client_id, lambda conn: conn.scalar(_CHUNK_SIZE, {"id": media_id}))
        if chunk_size is None:
            raise MediaNotFound("nothing is stored under this key", key=key)
        if chunk_size == 0 or start == end:
            return empty_stream()
        return MediaStream(self._chunks(client_id, media_id, int(chunk_size), start, end))

    async def _chunks(
        self, client_id: str, media_id: str, chunk_size: int, start: int, end: int | None
    ) -> AsyncIterator[bytes]:
        seq, offset = divmod(start, chunk_size)
        position = start
        while end is None or position < end:
            count = chunk_size - offset if end is None else min(chunk_size - offset, end - position)
            data = await self._run(
                client_id, functools.partial(_slice, media_id=media_id, seq=seq, offset=offset, count=count)
            )
            if not data:  # past the last chunk (or the file was deleted while read)
                return
            yield data
            position += len(data)
            if offset + len(data) < chunk_size and (end is None or position < end):
                return  # a short chunk is the last one
            seq, offset = seq + 1, 0

    async def delete(self, client_id: str, keys: Iterable[str]) -> None:
        """Delete the chunks under `keys` (their media records stay: `db.media.delete_records` removes those)."""
        ids = sorted({media_id_of(key) for key in keys})
        if ids:
            await self._run(client_id, lambda conn: conn.execute(_DELETE_MANY, {"ids": ids}))

    async def delete_prefix(self, client_id: str, prefix: str) -> None:
        """Delete the chunks of every key under `prefix` (its first segment is the session's row id)."""
        path = check_prefix(prefix)
        params = {"session": path.split("/", 1)[0], "prefix": path + "/"}
        await self._run(client_id, lambda conn: conn.execute(_DELETE_UNDER, params))

    async def delete_client(self, client_id: str) -> None:
        """Delete every chunk in the client's schema."""
        await self._run(client_id, lambda conn: conn.execute(_DELETE_ALL))

    async def close(self) -> None:
        """Nothing to release: the ConnectionManager owns the connections."""

    async def _run(self, client_id: str, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        try:
            return await self._manager.execute_transaction(client_id, lambda tx: fn(tx.connection))
        except (NotFound, MediaStoreError):
            raise
        except InvalidRequest as exc:
            if exc.details.get("sqlstate") == "23503":  # the media record went (its session was deleted) mid-put
                raise MediaNotFound("the media record is gone", media_store="postgres") from exc
            raise
        except DatabaseError as exc:
            # the database's words stay in the chained error (and the log): they may quote data
            raise MediaStoreError("the PostgreSQL media store failed") from exc


async def _insert(conn: AsyncConnection, *, media_id: str, seq: int, data: bytes) -> None:
    await conn.execute(_INSERT, {"id": media_id, "seq": seq, "data": data})


async def _slice(conn: AsyncConnection, *, media_id: str, seq: int, offset: int, count: int) -> bytes | None:
    data = await conn.scalar(_SLICE, {"id": media_id, "seq": seq, "from": offset + 1, "count": count})
    return None if data is None else bytes(data)
