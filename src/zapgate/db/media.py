"""Media records in a client's schema: insert pending, mark stored or failed, find, and find what to delete.

Statements for the transaction of a `ConnectionManager` (its search_path names the client's schema), so every
lookup is the client's own. The bytes are the media store's (`zapgate.media`); these functions only keep the
records, and hand back `StoredObject`s (store and key) for the caller to delete the bytes with:

    record = await media.insert_pending(conn, session_row_id=s.id, kind=FileKind.IMAGE, mime_type="image/jpeg",
                                        store=store.name)       # committed before the store's put
    stored = await store.put(client_id, record.store_key, chunks)
    await media.mark_stored(conn, record.id, size=stored.size, sha256=stored.sha256, width=640, height=480)

Deleting a media row deletes its PostgreSQL chunks with it (a foreign key); S3 objects are deleted by the
caller, with the store keys these functions return, after the rows' transaction committed.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db.tables import media, messages
from zapgate.domain.ids import new_id
from zapgate.domain.media import FileKind, MediaRecord, MediaStatus, StoredObject, StoreName, store_key


def _record(row: RowMapping) -> MediaRecord:
    return MediaRecord(
        id=row["id"],
        session_id=row["session_id"],
        message_row_id=row["message_row_id"],
        kind=FileKind(row["kind"]),
        mime_type=row["mime_type"],
        status=MediaStatus(row["status"]),
        store=StoreName(row["store"]),
        store_key=row["store_key"],
        created_at=row["created_at"],
        size=row["size"],
        sha256=row["sha256"],
        filename=row["filename"],
        width=row["width"],
        height=row["height"],
        duration_ms=row["duration_ms"],
        pages=row["pages"],
        error=row["error"],
        thumbnail_id=row["thumbnail_id"],
        expires_at=row["expires_at"],
        waveform=row["waveform"],
        handle=row["handle"],
        attempts=row["attempts"],
    )


_STORED_OBJECT = (media.c.id, media.c.store, media.c.store_key)


def _stored_object(row: RowMapping) -> StoredObject:
    return StoredObject(row["id"], StoreName(row["store"]), row["store_key"])


async def insert_pending(
    conn: AsyncConnection,
    *,
    session_row_id: str,
    kind: FileKind | str,
    mime_type: str,
    store: StoreName | str,
    message_row_id: str | None = None,
    filename: str | None = None,
    expires_at: datetime | None = None,
    media_id: str | None = None,
) -> MediaRecord:
    """Insert the record of a media file about to be stored (status `pending`); its store key is made here.

    Raises (through the manager) InvalidRequest when the session or the message does not exist, and
    DuplicateRecord when `media_id` is taken.
    """
    mid = media_id or new_id()
    stmt = (
        insert(media)
        .values(
            id=mid,
            session_id=session_row_id,
            message_row_id=message_row_id,
            kind=FileKind(kind).value,
            mime_type=mime_type,
            filename=filename,
            status=MediaStatus.PENDING.value,
            store=StoreName(store).value,
            store_key=store_key(session_row_id, mid),
            expires_at=expires_at,
        )
        .returning(*media.c)
    )
    return _record((await conn.execute(stmt)).mappings().one())


async def mark_stored(
    conn: AsyncConnection,
    media_id: str,
    *,
    size: int,
    sha256: str,
    width: int | None = None,
    height: int | None = None,
    duration_ms: int | None = None,
    pages: int | None = None,
    thumbnail_id: str | None = None,
    waveform: bytes | None = None,
) -> MediaRecord | None:
    """Record that a media file's bytes are stored (their size, SHA-256 and what is known of the file); None if
    there is no such record."""
    values = {
        "status": MediaStatus.STORED.value,
        "error": None,
        "size": size,
        "sha256": sha256,
        "width": width,
        "height": height,
        "duration_ms": duration_ms,
        "pages": pages,
        "thumbnail_id": thumbnail_id,
        "waveform": waveform,
        "handle": None,
        "announce": None,
        "next_attempt_at": None,
    }
    stmt = update(media).where(media.c.id == media_id).values(**values).returning(*media.c)
    row = (await conn.execute(stmt)).mappings().one_or_none()
    return None if row is None else _record(row)


async def mark_failed(conn: AsyncConnection, media_id: str, error: str) -> MediaRecord | None:
    """Record that a media file's bytes could not be stored, and why; None if there is no such record."""
    stmt = (
        update(media)
        .where(media.c.id == media_id)
        .values(status=MediaStatus.FAILED.value, error=error, handle=None, announce=None, next_attempt_at=None)
        .returning(*media.c)
    )
    row = (await conn.execute(stmt)).mappings().one_or_none()
    return None if row is None else _record(row)


async def attach(conn: AsyncConnection, media_ids: Collection[str], message_row_id: str) -> int:
    """Link media records (stored before their message existed, as for a send) to a message; return how many."""
    if not media_ids:
        return 0
    stmt = update(media).where(media.c.id.in_(sorted(media_ids))).values(message_row_id=message_row_id)
    return (await conn.execute(stmt)).rowcount


async def get(conn: AsyncConnection, media_id: str) -> MediaRecord | None:
    """Return the client's media record with this id, or None."""
    row = (await conn.execute(select(media).where(media.c.id == media_id))).mappings().one_or_none()
    return None if row is None else _record(row)


async def list_for_message(conn: AsyncConnection, message_row_id: str) -> list[MediaRecord]:
    """Return the media records of a message (by its row id), oldest first."""
    stmt = select(media).where(media.c.message_row_id == message_row_id).order_by(media.c.created_at, media.c.id)
    return [_record(row) for row in (await conn.execute(stmt)).mappings()]


async def delete_records(conn: AsyncConnection, media_ids: Collection[str]) -> list[StoredObject]:
    """Delete media records (their PostgreSQL chunks go with them); return where the bytes of each were."""
    if not media_ids:
        return []
    stmt = delete(media).where(media.c.id.in_(sorted(media_ids))).returning(*_STORED_OBJECT)
    return [_stored_object(row) for row in (await conn.execute(stmt)).mappings()]


async def objects_of_session(
    conn: AsyncConnection, session_row_id: str, *, after: str | None = None, limit: int = 1000
) -> list[StoredObject]:
    """Return where the bytes of a session's media are, in id order from after `after` (to clean up a session)."""
    stmt = select(*_STORED_OBJECT).where(media.c.session_id == session_row_id)
    if after is not None:
        stmt = stmt.where(media.c.id > after)
    stmt = stmt.order_by(media.c.id).limit(limit)
    return [_stored_object(row) for row in (await conn.execute(stmt)).mappings()]


async def expired(conn: AsyncConnection, now: datetime, *, limit: int = 1000) -> list[StoredObject]:
    """Return up to `limit` media whose `expires_at` has passed, the longest expired first (for retention)."""
    stmt = (
        select(*_STORED_OBJECT).where(media.c.expires_at <= now).order_by(media.c.expires_at, media.c.id).limit(limit)
    )
    return [_stored_object(row) for row in (await conn.execute(stmt)).mappings()]


async def stale_pending(conn: AsyncConnection, before: datetime, *, limit: int = 1000) -> list[StoredObject]:
    """Return up to `limit` media still `pending` since before `before`: puts whose process died mid-way."""
    stmt = (
        select(*_STORED_OBJECT)
        .where(media.c.status == MediaStatus.PENDING.value, media.c.created_at < before)
        .order_by(media.c.created_at, media.c.id)
        .limit(limit)
    )
    return [_stored_object(row) for row in (await conn.execute(stmt)).mappings()]


async def await_download(
    conn: AsyncConnection, media_id: str, *, handle: bytes, announce: dict[str, Any] | None
) -> None:
    """Keep what an arrived file needs until it is downloaded: the engine's handle, the event to announce then."""
    await conn.execute(
        update(media).where(media.c.id == media_id).values(handle=handle, announce=announce, next_attempt_at=func.now())
    )


@dataclass(frozen=True, slots=True)
class Download:
    """An arrived file to download: its record, and the event to announce once it is settled."""

    record: MediaRecord
    announce: dict[str, Any] | None


async def due_downloads(conn: AsyncConnection, session_row_id: str, *, limit: int = 100) -> list[Download]:
    """The session's arrived files whose download is due (after a restart too), oldest first."""
    stmt = (
        select(media)
        .where(
            media.c.session_id == session_row_id,
            media.c.handle.is_not(None),
            media.c.status == MediaStatus.PENDING.value,
            or_(media.c.next_attempt_at.is_(None), media.c.next_attempt_at <= func.now()),
        )
        .order_by(media.c.created_at, media.c.id)
        .limit(limit)
    )
    return [Download(_record(row), row["announce"]) for row in (await conn.execute(stmt)).mappings()]


async def download_failed(conn: AsyncConnection, media_id: str, *, error: str, retry_at: datetime) -> None:
    """Count a failed download and set when to try again."""
    await conn.execute(
        update(media)
        .where(media.c.id == media_id)
        .values(attempts=media.c.attempts + 1, error=error, next_attempt_at=retry_at)
    )


async def new_handle(conn: AsyncConnection, session_row_id: str, message_row_id: str, handle: bytes) -> list[str]:
    """Give the pending files of a message a new handle (the phone uploaded them again); return their ids."""
    stmt = (
        update(media)
        .where(
            media.c.session_id == session_row_id,
            media.c.message_row_id == message_row_id,
            media.c.status == MediaStatus.PENDING.value,
            media.c.handle.is_not(None),
        )
        .values(handle=handle, next_attempt_at=func.now(), error=None)
        .returning(media.c.id)
    )
    return [str(row.id) for row in await conn.execute(stmt)]


async def keep(conn: AsyncConnection, media_id: str, message_id: str) -> None:
    """Keep a file (and its thumbnail) as long as the message (our id) that sends it: no expiry of its own."""
    found = await conn.execute(
        update(media)
        .where(media.c.id == media_id)
        .values(
            expires_at=None,
            message_row_id=select(messages.c.id)
            .where(messages.c.session_id == media.c.session_id, messages.c.message_id == message_id)
            .scalar_subquery(),
        )
        .returning(media.c.thumbnail_id, media.c.message_row_id)
    )
    row = found.one_or_none()
    if row is not None and row.thumbnail_id is not None:
        await conn.execute(
            update(media)
            .where(media.c.id == row.thumbnail_id)
            .values(expires_at=None, message_row_id=row.message_row_id)
        )


async def unneeded(
    conn: AsyncConnection, now: datetime, *, stored_before: datetime | None = None, limit: int = 500
) -> list[str]:
    """Files to delete: past their expiry (uploads never sent), whose message is gone (deleted, pruned), or
    stored before `stored_before` (the client's retention; a file still downloading is left)."""
    stmt = (
        select(media.c.id)
        .where(
            or_(
                media.c.expires_at <= now,
                and_(media.c.message_row_id.is_(None), media.c.expires_at.is_(None)),
                and_(
                    media.c.created_at < (stored_before or datetime.min.replace(tzinfo=now.tzinfo)),
                    media.c.status != MediaStatus.PENDING.value,
                ),
            )
        )
        .order_by(media.c.id)
        .limit(limit)
    )
    return [str(row.id) for row in await conn.execute(stmt)]


async def downloads_of(conn: AsyncConnection, media_ids: Collection[str]) -> list[Download]:
    """The arrived files `media_ids` still waiting for their download."""
    if not media_ids:
        return []
    stmt = select(media).where(
        media.c.id.in_(sorted(media_ids)), media.c.handle.is_not(None), media.c.status == MediaStatus.PENDING.value
    )
    return [Download(_record(row), row["announce"]) for row in (await conn.execute(stmt)).mappings()]
