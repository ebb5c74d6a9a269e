"""Media records (db/media.py) in a client's schema: their life from pending to stored or failed, and cleanup."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.support.records import new_message, new_session
from zapgate.db import media
from zapgate.db.manager import ConnectionManager
from zapgate.domain.media import FileKind, MediaRecord, MediaStatus, StoredObject, StoreName
from zapgate.errors import DuplicateRecord, InvalidRequest
from zapgate.media.postgres import PostgresMediaStore

T = TypeVar("T")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def in_client(
    manager: ConnectionManager, client: str
) -> Callable[[Callable[[AsyncConnection], Awaitable[T]]], Awaitable[T]]:
    """Run a statement function in one transaction of `client`'s schema."""

    def run(fn: Callable[[AsyncConnection], Awaitable[T]]) -> Awaitable[T]:
        return manager.execute_transaction(client, lambda tx: fn(tx.connection))

    return run


async def _image(conn: AsyncConnection, *, session_row_id: str) -> MediaRecord:
    return await media.insert_pending(
        conn, session_row_id=session_row_id, kind="image", mime_type="image/png", store="postgres"
    )


async def test_a_record_goes_from_pending_to_stored(manager: ConnectionManager) -> None:
    run = in_client(manager, "acme")
    session = await new_session(manager, "acme")
    pending = await run(
        lambda c: media.insert_pending(
            c,
            session_row_id=session,
            kind=FileKind.IMAGE,
            mime_type="image/jpeg",
            store=StoreName.S3,
            filename="a.jpg",
        )
    )
    assert (pending.status, pending.store, pending.kind) == (MediaStatus.PENDING, StoreName.S3, FileKind.IMAGE)
    assert pending.store_key == f"{session}/{pending.id}"
    assert len(pending.id) == 25 and pending.size is None and pending.sha256 is None
    assert pending.created_at.tzinfo is not None

    stored = await run(lambda c: media.mark_stored(c, pending.id, size=1234, sha256="ab" * 32, width=640, height=480))
    assert stored is not None
    assert (stored.status, stored.size, stored.sha256, stored.width, stored.height) == (
        MediaStatus.STORED,
        1234,
        "ab" * 32,
        640,
        480,
    )
    assert await run(lambda c: media.get(c, pending.id)) == stored
    assert await run(lambda c: media.mark_stored(c, "nope", size=1, sha256="00")) is None


async def test_a_record_can_fail_with_its_reason(manager: ConnectionManager) -> None:
    run = in_client(manager, "acme")
    session = await new_session(manager, "acme")
    pending = await run(
        lambda c: media.insert_pending(c, session_row_id=session, kind="voice", mime_type="audio/ogg", store="postgres")
    )
    failed = await run(lambda c: media.mark_failed(c, pending.id, "download: 410 Gone"))
    assert failed is not None and (failed.status, failed.error) == (MediaStatus.FAILED, "download: 410 Gone")
    assert await run(lambda c: media.mark_failed(c, "nope", "x")) is None


async def test_records_refuse_what_they_cannot_hold(manager: ConnectionManager) -> None:
    run = in_client(manager, "acme")
    session = await new_session(manager, "acme")
    with pytest.raises(InvalidRequest):  # no such session
        await run(lambda c: media.insert_pending(c, session_row_id="ghost", kind="image", mime_type="x", store="s3"))
    with pytest.raises(ValueError):
        await run(lambda c: media.insert_pending(c, session_row_id=session, kind="gif", mime_type="x", store="s3"))
    with pytest.raises(InvalidRequest):  # no such message
        await run(
            lambda c: media.insert_pending(
                c, session_row_id=session, kind="image", mime_type="x", store="s3", message_row_id="ghost"
            )
        )
    first = await run(
        lambda c: media.insert_pending(c, session_row_id=session, kind="image", mime_type="x", store="s3")
    )
    with pytest.raises(DuplicateRecord):
        await run(
            lambda c: media.insert_pending(
                c, session_row_id=session, kind="image", mime_type="x", store="s3", media_id=first.id
            )
        )
    with pytest.raises(InvalidRequest):  # the database's own check, for writers that bypass the enum
        await run(lambda c: c.execute(text("UPDATE media SET kind = 'gif' WHERE id = :id"), {"id": first.id}))


async def test_a_clients_records_are_its_own(manager: ConnectionManager) -> None:
    acme_session = await new_session(manager, "acme")
    await new_session(manager, "globex")
    record = await in_client(manager, "acme")(
        lambda c: media.insert_pending(c, session_row_id=acme_session, kind="image", mime_type="x", store="s3")
    )
    assert await in_client(manager, "globex")(lambda c: media.get(c, record.id)) is None
    assert await in_client(manager, "globex")(lambda c: media.delete_records(c, [record.id])) == []
    assert await in_client(manager, "acme")(lambda c: media.get(c, record.id)) == record


async def test_a_messages_media_outlive_the_message_until_their_bytes_go(manager: ConnectionManager) -> None:
    run = in_client(manager, "acme")
    session = await new_session(manager, "acme")
    message = await new_message(manager, "acme", session, "3EB0AAA")
    later = await run(
        lambda c: media.insert_pending(
            c, session_row_id=session, kind="image", mime_type="image/jpeg", store="s3", message_row_id=message
        )
    )
    earlier = await run(
        lambda c: media.insert_pending(
            c, session_row_id=session, kind="thumbnail", mime_type="image/jpeg", store="s3", message_row_id=message
        )
    )
    unattached = await run(
        lambda c: media.insert_pending(c, session_row_id=session, kind="document", mime_type="x", store="s3")
    )
    await run(lambda c: c.execute(text("UPDATE media SET created_at = :t WHERE id = :id"), {"t": T0, "id": earlier.id}))
    assert [m.id for m in await run(lambda c: media.list_for_message(c, message))] == [earlier.id, later.id]

    assert await run(lambda c: media.attach(c, [unattached.id], message)) == 1
    assert len(await run(lambda c: media.list_for_message(c, message))) == 3

    db = await manager.get_connection("acme")
    await db.message.delete("3EB0AAA")
    survivor = await run(lambda c: media.get(c, later.id))
    assert survivor is not None and survivor.message_row_id is None  # its S3 key is still known


async def test_deleting_records_hands_back_their_objects_and_takes_their_chunks(manager: ConnectionManager) -> None:
    run = in_client(manager, "acme")
    session = await new_session(manager, "acme")
    store = PostgresMediaStore(manager, chunk_size=4)
    record = await run(
        lambda c: media.insert_pending(
            c, session_row_id=session, kind="sticker", mime_type="image/webp", store="postgres"
        )
    )
    thumb = await run(
        lambda c: media.insert_pending(c, session_row_id=session, kind="thumbnail", mime_type="x", store="postgres")
    )
    await run(lambda c: media.mark_stored(c, record.id, size=10, sha256="00", thumbnail_id=thumb.id))

    async def data() -> AsyncIterator[bytes]:
        yield b"0123456789"

    await store.put("acme", record.store_key, data())
    gone = await run(lambda c: media.delete_records(c, [thumb.id]))
    assert gone == [StoredObject(thumb.id, StoreName.POSTGRES, thumb.store_key)]
    kept = await run(lambda c: media.get(c, record.id))
    assert kept is not None and kept.thumbnail_id is None

    assert await run(lambda c: media.delete_records(c, [record.id, "nope"])) == [
        StoredObject(record.id, StoreName.POSTGRES, record.store_key)
    ]
    assert await run(lambda c: c.scalar(text("SELECT count(*) FROM media_chunks"))) == 0
    assert await run(lambda c: media.delete_records(c, [])) == []


async def test_a_sessions_deletion_takes_its_records_and_chunks(manager: ConnectionManager) -> None:
    run = in_client(manager, "acme")
    doomed, kept = await new_session(manager, "acme", "doomed"), await new_session(manager, "acme", "kept")
    store = PostgresMediaStore(manager, chunk_size=4)

    async def data() -> AsyncIterator[bytes]:
        yield b"bytes of a file"

    for session in (doomed, doomed, kept):
        record = await run(functools.partial(_image, session_row_id=session))
        await store.put("acme", record.store_key, data())
    db = await manager.get_connection("acme")
    await db.session.delete("doomed")
    assert await run(lambda c: c.scalar(text("SELECT count(*) FROM media"))) == 1
    assert await run(lambda c: c.scalar(text("SELECT count(DISTINCT media_id) FROM media_chunks"))) == 1


async def test_a_sessions_objects_come_in_pages(manager: ConnectionManager) -> None:
    run = in_client(manager, "acme")
    session, other = await new_session(manager, "acme", "s"), await new_session(manager, "acme", "t")
    made = [
        await run(lambda c: media.insert_pending(c, session_row_id=session, kind="image", mime_type="x", store="s3"))
        for _ in range(5)
    ]
    await run(lambda c: media.insert_pending(c, session_row_id=other, kind="image", mime_type="x", store="s3"))
    first = await run(lambda c: media.objects_of_session(c, session, limit=3))
    rest = await run(lambda c: media.objects_of_session(c, session, after=first[-1].media_id, limit=3))
    assert [o.media_id for o in first + rest] == sorted(r.id for r in made)
    assert {o.store_key for o in first + rest} == {r.store_key for r in made}


async def test_expired_and_stale_records_are_found_for_cleanup(manager: ConnectionManager) -> None:
    run = in_client(manager, "acme")
    session = await new_session(manager, "acme")
    now = datetime.now(UTC)

    async def insert(expires_at: datetime | None) -> str:
        record = await run(
            lambda c: media.insert_pending(
                c, session_row_id=session, kind="video", mime_type="video/mp4", store="s3", expires_at=expires_at
            )
        )
        return record.id

    long_gone, just_gone = await insert(now - timedelta(days=2)), await insert(now - timedelta(seconds=1))
    future, forever = await insert(now + timedelta(days=1)), await insert(None)
    assert [o.media_id for o in await run(lambda c: media.expired(c, now))] == [long_gone, just_gone]
    assert [o.media_id for o in await run(lambda c: media.expired(c, now, limit=1))] == [long_gone]

    await run(lambda c: media.mark_stored(c, future, size=1, sha256="00"))
    old = now - timedelta(hours=2)
    await run(lambda c: c.execute(text("UPDATE media SET created_at = :t WHERE id <> :id"), {"t": old, "id": forever}))
    stale = await run(lambda c: media.stale_pending(c, now - timedelta(hours=1)))
    assert sorted(o.media_id for o in stale) == sorted([long_gone, just_gone])  # `future` is stored, `forever` new
