"""The media store contract, over every store: PostgreSQL (a real server) and S3 (moto's server on loopback).

Each store runs with its smallest unit (a PostgreSQL chunk, an S3 part) as small as it allows, so a few units
of data exercise the streaming paths quickly.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from tests.support.s3 import S3Server
from zapgate.db import media as media_records
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.domain.ids import new_id
from zapgate.domain.media import FileKind, store_key
from zapgate.errors import MediaNotFound
from zapgate.media.factory import media_store
from zapgate.media.postgres import PostgresMediaStore
from zapgate.media.s3 import READ_SIZE, S3MediaStore
from zapgate.media.store import MediaStore
from zapgate.settings import Settings

PG_CHUNK = 64 << 10  # bytes
S3_PART = 5 << 20  # bytes: S3's smallest part


class SourceFailed(Exception):
    """The source a put reads from broke (a download that died)."""


@dataclass
class Harness:
    """A store under test, and what the test needs to look behind its back."""

    store: MediaStore
    unit: int  # bytes of a chunk (PostgreSQL) or a part (S3)
    read_unit: int  # the largest piece a read hands out
    # a key ready for a put of `client` (PostgreSQL: its media record inserted), in session `session`
    key: Callable[..., Awaitable[str]]
    # how much of the key's bytes the store holds, in its units, finished or not (chunks; objects + parts)
    held: Callable[[str, str], Awaitable[int]]


async def _pg_harness(manager: ConnectionManager) -> Harness:
    store = PostgresMediaStore(manager, chunk_size=PG_CHUNK)

    async def key(client: str, session: str = "sess1", media_id: str | None = None) -> str:
        async def prepare(tx: Transaction) -> str:
            conn = tx.connection
            await conn.execute(
                text("INSERT INTO sessions (id, session_id, client_id) VALUES (:id, :id, :c) ON CONFLICT DO NOTHING"),
                {"id": session, "c": client},
            )
            record = await media_records.insert_pending(
                conn,
                session_row_id=session,
                kind=FileKind.DOCUMENT,
                mime_type="application/pdf",
                store=store.name,
                media_id=media_id,
            )
            return record.store_key

        return await manager.execute_transaction(client, prepare)

    async def held(client: str, key: str) -> int:
        query = text("SELECT count(*) FROM media_chunks WHERE media_id = :id")
        return int(
            await manager.execute_transaction(
                client, lambda tx: tx.connection.scalar(query, {"id": key.rsplit("/", 1)[-1]})
            )
            or 0
        )

    return Harness(store, PG_CHUNK, PG_CHUNK, key, held)


async def _s3_harness(s3_server: S3Server) -> Harness:
    bucket = await s3_server.new_bucket()
    store = S3MediaStore(
        bucket,
        prefix="media/test",
        endpoint_url=s3_server.endpoint_url,
        region=s3_server.region,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
        part_size=S3_PART,
    )

    async def key(client: str, session: str = "sess1", media_id: str | None = None) -> str:
        return store_key(session, media_id or new_id())

    async def held(client: str, key: str) -> int:
        object_key = store.object_key(client, key)
        async with s3_server.client() as s3:
            listed = await s3.list_objects_v2(Bucket=bucket, Prefix=object_key)
            count = len(listed.get("Contents", []))
            uploads = await s3.list_multipart_uploads(Bucket=bucket, Prefix=object_key)
            for upload in uploads.get("Uploads", []):
                count += 1  # an upload begun and not aborted holds storage even with no part yet
                parts = await s3.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                count += len(parts.get("Parts", []))
        return count

    return Harness(store, S3_PART, READ_SIZE, key, held)


@pytest.fixture(params=["postgres", "s3"])
def backend(request: pytest.FixtureRequest) -> ConnectionManager | S3Server:
    """What a store runs on: a ConnectionManager on a fresh database, or the S3 server (each only when used)."""
    return request.getfixturevalue("manager" if request.param == "postgres" else "s3_server")  # type: ignore[no-any-return]


@pytest.fixture
async def harness(backend: ConnectionManager | S3Server) -> AsyncIterator[Harness]:
    made = await (_pg_harness(backend) if isinstance(backend, ConnectionManager) else _s3_harness(backend))
    try:
        yield made
    finally:
        await made.store.close()


def payload(size: int) -> bytes:
    return os.urandom(size)


async def pieces(data: bytes, sizes: Iterable[int] = (1, 1000, 65_535, 300_000, 7)) -> AsyncIterator[bytes]:
    """Yield `data` in pieces of uneven sizes (cycling through `sizes`), as a network source would."""
    sizes = list(sizes)
    position, turn = 0, 0
    while position < len(data):
        size = sizes[turn % len(sizes)]
        yield data[position : position + size]
        position += size
        turn += 1
        await asyncio.sleep(0)


async def read(store: MediaStore, client: str, key: str, start: int = 0, end: int | None = None) -> bytes:
    return await (await store.open(client, key, start=start, end=end)).read()


async def test_bytes_come_back_with_their_size_and_sha256(harness: Harness) -> None:
    store = harness.store
    data = payload(2 * harness.unit + 12_345)
    key = await harness.key("acme")
    stored = await store.put("acme", key, pieces(data))
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert await read(store, "acme", key) == data


async def test_small_and_empty_files(harness: Harness) -> None:
    store = harness.store
    small, empty = await harness.key("acme"), await harness.key("acme")
    assert (await store.put("acme", small, pieces(b"hello"))).size == 5
    stored = await store.put("acme", empty, pieces(b""))
    assert (stored.size, stored.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert await read(store, "acme", small) == b"hello"
    assert await read(store, "acme", empty) == b""
    assert await read(store, "acme", empty, 0, 10) == b""  # an empty file is there, with nothing in any range


async def test_a_put_writes_as_bytes_arrive_and_a_read_streams_in_pieces(harness: Harness) -> None:
    store = harness.store
    data = payload(3 * harness.unit + harness.unit // 2)
    key = await harness.key("acme")
    held_midway: list[int] = []

    async def source() -> AsyncIterator[bytes]:
        async for piece in pieces(data, [harness.unit // 4]):
            yield piece
        held_midway.append(await harness.held("acme", key))  # the source is done, the put has not returned

    await store.put("acme", key, source())
    assert held_midway[0] >= 3, "the put waited for the whole file before writing"

    received = []
    async for chunk in await store.open("acme", key):
        received.append(chunk)
    assert b"".join(received) == data
    assert len(received) > 3
    assert max(len(chunk) for chunk in received) <= harness.read_unit

    # a reader that stops early closes the stream and leaves nothing open
    stream = await store.open("acme", key)
    assert len(await anext(stream)) > 0
    await stream.aclose()
    await stream.aclose()


# ranges as (start, end) of a file of `size` bytes whose store unit is `unit` bytes
RANGES: dict[str, Callable[[int, int], tuple[int, int | None]]] = {
    "first byte": lambda unit, size: (0, 1),
    "within the first unit": lambda unit, size: (5, 1000),
    "across a boundary": lambda unit, size: (unit - 1, unit + 1),
    "exactly one unit": lambda unit, size: (unit, 2 * unit),
    "to the end": lambda unit, size: (123, None),
    "past the end: cut": lambda unit, size: (size - 10, size + 100),
    "from the end: nothing": lambda unit, size: (size, None),
    "wholly past the end: nothing": lambda unit, size: (size + 50, size + 60),
    "empty": lambda unit, size: (7, 7),
}


@pytest.mark.parametrize("name", RANGES)
async def test_ranges_read_what_a_slice_would(harness: Harness, name: str) -> None:
    size = 2 * harness.unit + 777
    data = payload(size)
    key = await harness.key("acme")
    await harness.store.put("acme", key, pieces(data))
    start, end = RANGES[name](harness.unit, size)
    assert await read(harness.store, "acme", key, start, end) == data[start:end]


async def test_an_invalid_range_or_key_is_refused(harness: Harness) -> None:
    key = await harness.key("acme")
    await harness.store.put("acme", key, pieces(b"abc"))
    with pytest.raises(ValueError):
        await harness.store.open("acme", key, start=2, end=1)
    with pytest.raises(ValueError):
        await harness.store.open("acme", key, start=-1)
    for bad in ("../x", "/abs", "a//b", "a/b/", "a b"):
        with pytest.raises(ValueError):
            await harness.store.open("acme", bad)


async def test_a_put_replaces_what_was_under_its_key(harness: Harness) -> None:
    key = await harness.key("acme")
    await harness.store.put("acme", key, pieces(payload(harness.unit + 10)))
    await harness.store.put("acme", key, pieces(b"second"))
    assert await read(harness.store, "acme", key) == b"second"


async def test_missing_keys_are_media_not_found(harness: Harness) -> None:
    key = await harness.key("acme")
    with pytest.raises(MediaNotFound):
        await harness.store.open("acme", key)  # a record, no bytes yet
    with pytest.raises(MediaNotFound):
        await harness.store.open("acme", store_key("sess1", new_id()))
    with pytest.raises(MediaNotFound):
        await harness.store.open("acme", key, start=3, end=3)


async def test_delete_takes_the_bytes_and_skips_missing_keys(harness: Harness) -> None:
    store = harness.store
    gone, kept = await harness.key("acme"), await harness.key("acme")
    await store.put("acme", gone, pieces(b"gone"))
    await store.put("acme", kept, pieces(b"kept"))
    await store.delete("acme", [gone, store_key("sess1", new_id())])
    with pytest.raises(MediaNotFound):
        await store.open("acme", gone)
    assert await harness.held("acme", gone) == 0
    assert await read(store, "acme", kept) == b"kept"
    await store.delete("acme", [gone])  # again: nothing to do
    await store.delete("acme", [])


async def test_delete_prefix_deletes_that_sessions_media_only(harness: Harness) -> None:
    store = harness.store
    doomed = [await harness.key("acme", "sessA") for _ in range(3)]
    neighbour = await harness.key("acme", "sessA2")  # a session whose id starts with the other's
    other = await harness.key("acme", "sessB")
    elsewhere = await harness.key("globex", "sessA")  # the same session row id under another client
    for key in doomed:
        await store.put("acme", key, pieces(b"doomed"))
    await store.put("acme", neighbour, pieces(b"neighbour"))
    await store.put("acme", other, pieces(b"other"))
    await store.put("globex", elsewhere, pieces(b"elsewhere"))

    await store.delete_prefix("acme", "sessA")

    for key in doomed:
        with pytest.raises(MediaNotFound):
            await store.open("acme", key)
    assert await read(store, "acme", neighbour) == b"neighbour"
    assert await read(store, "acme", other) == b"other"
    assert await read(store, "globex", elsewhere) == b"elsewhere"


async def test_delete_client_deletes_that_clients_media_only(harness: Harness) -> None:
    store = harness.store
    mine, theirs = await harness.key("acme"), await harness.key("globex")
    await store.put("acme", mine, pieces(b"mine"))
    await store.put("globex", theirs, pieces(b"theirs"))
    await store.delete_client("acme")
    with pytest.raises(MediaNotFound):
        await store.open("acme", mine)
    assert await read(store, "globex", theirs) == b"theirs"


async def test_two_clients_keep_apart_under_the_same_key(harness: Harness) -> None:
    store = harness.store
    media_id = new_id()
    key = await harness.key("acme", "sess1", media_id)
    assert await harness.key("globex", "sess1", media_id) == key
    await store.put("acme", key, pieces(b"acme's"))
    with pytest.raises(MediaNotFound):
        await store.open("globex", key)
    await store.put("globex", key, pieces(b"globex's"))
    assert await read(store, "acme", key) == b"acme's"
    assert await read(store, "globex", key) == b"globex's"
    await store.delete("globex", [key])
    assert await read(store, "acme", key) == b"acme's"


async def test_a_put_whose_source_breaks_leaves_nothing(harness: Harness) -> None:
    key = await harness.key("acme")

    async def breaks() -> AsyncIterator[bytes]:
        async for piece in pieces(payload(2 * harness.unit + 5), [harness.unit // 2]):
            yield piece
        assert await harness.held("acme", key) >= 2  # it did write before the break
        raise SourceFailed("the download died")

    with pytest.raises(SourceFailed):
        await harness.store.put("acme", key, breaks())
    assert await harness.held("acme", key) == 0
    with pytest.raises(MediaNotFound):
        await harness.store.open("acme", key)


async def test_a_cancelled_put_leaves_nothing(harness: Harness) -> None:
    key = await harness.key("acme")
    stuck = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        async for piece in pieces(payload(harness.unit + 5), [harness.unit // 2]):
            yield piece
        stuck.set()
        await asyncio.Event().wait()  # a source that hangs until the put is given up
        yield b""

    put = asyncio.create_task(harness.store.put("acme", key, stalls()))
    await asyncio.wait_for(stuck.wait(), 30)
    put.cancel()
    with pytest.raises(asyncio.CancelledError):
        await put
    assert await harness.held("acme", key) == 0


async def test_postgres_puts_need_their_media_record_first(manager: ConnectionManager) -> None:
    store = PostgresMediaStore(manager, chunk_size=PG_CHUNK)
    with pytest.raises(MediaNotFound):
        await store.put("acme", store_key("sess1", new_id()), pieces(b"orphan"))


async def test_s3_objects_are_laid_out_by_prefix_client_session_and_media(s3_server: S3Server) -> None:
    harness = await _s3_harness(s3_server)
    store = harness.store
    assert isinstance(store, S3MediaStore)
    try:
        key = store_key("sess1", "media1")
        await store.put("acme", key, pieces(b"laid out"))
        async with s3_server.client() as s3:
            listed = await s3.list_objects_v2(Bucket=store.bucket)
        assert [item["Key"] for item in listed["Contents"]] == ["media/test/acme/sess1/media1"]
    finally:
        await store.close()


async def test_the_settings_choose_the_store(manager: ConnectionManager, s3_server: S3Server) -> None:
    assert isinstance(media_store(Settings(), manager), PostgresMediaStore)
    bucket = await s3_server.new_bucket()
    settings = Settings(
        media_store=f"s3://{bucket}/zapgate/",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_region=s3_server.region,
        s3_access_key_id=s3_server.access_key_id,
        s3_secret_access_key=s3_server.secret_access_key,
    )
    store = media_store(settings, manager)
    assert isinstance(store, S3MediaStore)
    try:
        await store.put("acme", "sess1/media1", pieces(b"through the settings"))
        assert await read(store, "acme", "sess1/media1") == b"through the settings"
        assert store.object_key("acme", "sess1/media1") == "zapgate/acme/sess1/media1"
    finally:
        await store.close()
