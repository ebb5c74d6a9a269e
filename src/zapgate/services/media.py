"""Media files through zapgate: uploads, files for sends, arrived files, reads and signed links.

- An upload (`POST /whatsapp/media`) spools to a temporary file (up to the largest file WhatsApp takes), is
  sniffed from its bytes and stored; its id is then used by a send, within UPLOAD_TTL.
- A send names a file by id or by link: it is fetched (links as webhooks are guarded), checked and made into
  what WhatsApp takes for the kind (`media/process.py`, on a thread), and stored as the message's own file,
  with its thumbnail, before the send is accepted: a bad file is the caller's error, named by its field, and
  nothing of it is kept.
- The worker copies a message's file to a temporary file for the engine to upload, and stores the files
  that arrive (`store_arrived`), with a thumbnail for images and videos.
- Reads stream from the store (byte ranges included); a signed link reaches one file of one client until
  it expires, without the API key (for webhook consumers).

Temporary files live in one folder per call and are removed when it ends, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from zapgate.db import link_keys, outbound
from zapgate.db import media as records
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.domain import signed_links
from zapgate.domain.content import Media, MediaKind, MediaSource
from zapgate.domain.ids import client_id as valid_client_id
from zapgate.domain.ids import session_id as valid_session_id
from zapgate.domain.media import FileKind, MediaRecord, MediaStatus, StoredObject, StoreName
from zapgate.domain.media_limits import SEND_LIMIT, human_size
from zapgate.errors import (
    AuthenticationFailed,
    ClientNotFound,
    InvalidMedia,
    InvalidRequest,
    MediaNotFound,
    SessionNotFound,
)
from zapgate.log import get_logger
from zapgate.media import process
from zapgate.media.sniff import sniff_file
from zapgate.media.store import MediaStore, MediaStream
from zapgate.services.media_links import LinkFetcher

log = get_logger(__name__)

UPLOAD_LIMIT = SEND_LIMIT[MediaKind.DOCUMENT]  # bytes: the largest file WhatsApp takes (a document)
UPLOAD_TTL = timedelta(days=30)  # an upload not sent by then is deleted (as the Cloud API keeps uploads)
UNSENT_TTL = timedelta(days=1)  # a prepared file whose message was refused after all is deleted then
READ_CHUNK = 1024 * 1024  # bytes per chunk when copying a stored file to disk
LINK_TTL = 7 * 86_400.0  # seconds a signed link lives by default
PREPARE_AT_ONCE = 2  # files made ready at once per process: decoding is CPU and memory, bounded here


@dataclass(frozen=True, slots=True)
class MediaView:
    """A stored file as the API shows it."""

    record: MediaRecord
    url: str  # a signed link to its bytes (no API key needed) until `url_expires`
    url_expires: datetime


class MediaFiles:
    """The files of every client's messages, in the deployment's media store."""

    def __init__(
        self,
        manager: ConnectionManager,
        store: MediaStore,
        *,
        fetcher: LinkFetcher | None = None,
        link_ttl: float = LINK_TTL,
        public_url: str = "",
    ) -> None:
        self._manager = manager
        self.store = store
        self._fetcher = fetcher
        self._link_ttl = link_ttl
        self._public_url = public_url.rstrip("/")
        self._preparing = asyncio.Semaphore(PREPARE_AT_ONCE)

    async def close(self) -> None:
        if self._fetcher is not None:
            await self._fetcher.close()
        await self.store.close()

    # -- uploads and files for sends ------------------------------------------------------------------

    async def upload(
        self,
        client: str,
        session: str,
        chunks: AsyncIterable[bytes],
        *,
        filename: str | None = None,
    ) -> MediaRecord:
        """Store an uploaded file for a later send of `session`; its type comes from its bytes."""
        cid = valid_client_id(client)
        row = await self._session_row(cid, session)
        with _workdir() as folder:
            path = folder / "upload"
            size = 0
            with path.open("wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > UPLOAD_LIMIT:
                        raise InvalidMedia(
                            f"file: over the {human_size(UPLOAD_LIMIT)} of the largest file WhatsApp takes",
                            field="file",
                            code=InvalidMedia.TOO_LARGE,
                        )
                    out.write(chunk)
            if size == 0:
                raise InvalidMedia("file: the file is empty", field="file", code=InvalidMedia.UNDECODABLE)
            sniffed = await asyncio.to_thread(sniff_file, path)
            kind = _file_kind(sniffed.mime)
            expires = datetime.now(UTC) + UPLOAD_TTL
            return await self._store_file(cid, row, path, kind, sniffed.mime, filename=filename, expires_at=expires)

    async def prepare_outgoing(self, client: str, session: str, media: Media, source: MediaSource) -> Media:
        """Make the file of a media message to send into what WhatsApp takes, store it; return the Media naming it.

        Raises InvalidMedia (or InvalidRequest for a link) naming the field; nothing is kept then.
        """
        cid = valid_client_id(client)
        row = await self._session_row(cid, session)
        kind = media.kind
        with _workdir() as folder:
            original = folder / "original"
            declared = filename = None
            if source.media_id is not None:
                found = await self._record(cid, source.media_id, field=f"{kind.value}.id")
                await self._copy_to(cid, found, original)
                declared, filename = found.mime_type, found.filename
            else:
                if self._fetcher is None:
                    raise InvalidRequest(f"{kind.value}.link: this deployment does not fetch links", field="link")
                assert source.link is not None
                # converted files may shrink (a WAV voice note): the input is bounded by the largest WhatsApp takes
                field = f"{kind.value}.link"
                fetched = await self._fetcher.fetch(source.link, original, limit=UPLOAD_LIMIT, field=field)
                declared, filename = fetched.content_type, fetched.filename
            async with self._preparing:
                prepared = await asyncio.to_thread(
                    process.prepare,
                    kind,
                    original,
                    declared_mime=declared,
                    filename=media.filename or filename,
                    voice=media.voice,
                    field=kind.value,
                    workdir=folder,
                )
            thumb_id = None
            if prepared.thumbnail is not None:
                thumb = folder / "thumbnail.jpg"
                thumb.write_bytes(prepared.thumbnail.jpeg)
                stored_thumb = await self._store_file(
                    cid,
                    row,
                    thumb,
                    FileKind.THUMBNAIL,
                    "image/jpeg",
                    width=prepared.thumbnail.width,
                    height=prepared.thumbnail.height,
                    expires_at=datetime.now(UTC) + UNSENT_TTL,
                )
                thumb_id = stored_thumb.id
            file_kind = FileKind.VOICE if media.voice else FileKind(kind.value)
            stored = await self._store_file(
                cid,
                row,
                prepared.path,
                file_kind,
                prepared.mime,
                filename=prepared.filename if kind is MediaKind.DOCUMENT else None,
                width=prepared.width,
                height=prepared.height,
                duration=prepared.duration_seconds,
                waveform=prepared.waveform,
                thumbnail_id=thumb_id,
                expires_at=datetime.now(UTC) + UNSENT_TTL,
            )
        return replace(
            media,
            media_id=stored.id,
            mime_type=stored.mime_type,
            size=stored.size,
            sha256=stored.sha256,
            filename=stored.filename,
            width=stored.width,
            height=stored.height,
            duration_seconds=prepared.duration_seconds,
            animated=prepared.is_animated,
        )

    async def keep_for_message(self, client: str, media_id: str, message_id: str) -> None:
        """A file's message (our id) was queued: keep the file (and its thumbnail) as long as the message."""
        await self._manager.execute_transaction(
            valid_client_id(client), lambda tx: records.keep(tx.connection, media_id, message_id)
        )

    async def prune(self, client: str, now: datetime, *, stored_before: datetime | None = None) -> int:
        """Delete the client's files no longer needed: expired uploads, files of deleted messages, and with
        `stored_before` every file stored before then (the client's media retention); return how many."""
        total = 0
        while True:

            async def batch(tx: Transaction) -> list[StoredObject]:
                unneeded = await records.unneeded(tx.connection, now, stored_before=stored_before)
                return await records.delete_records(tx.connection, unneeded)

            gone = await self._manager.execute_transaction(client, batch)
            if not gone:
                return total
            await self.store.delete(client, [item.store_key for item in gone if item.store is not StoreName.POSTGRES])
            total += len(gone)

    # -- the worker: sending and receiving --------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def materialized(self, client: str, media: Media) -> AsyncIterator[Media]:
        """The Media of a message to send with its file copied to a temporary path (and its thumbnail, waveform)."""
        if media.media_id is None:
            raise MediaNotFound("the message names no stored file")
        found = await self._record(client, media.media_id, field="media")
        with _workdir() as folder:
            path = folder / "file"
            await self._copy_to(client, found, path)
            thumbnail = None
            if found.thumbnail_id is not None:
                with contextlib.suppress(MediaNotFound):
                    thumb = await self._record(client, found.thumbnail_id, field="thumbnail")
                    async with await self.store.open(client, thumb.store_key) as stream:
                        thumbnail = b"".join([chunk async for chunk in stream])
            yield replace(media, path=str(path), thumbnail=thumbnail, waveform=found.waveform)

    async def store_arrived(self, client: str, record: MediaRecord, path: Path) -> MediaRecord:
        """Store the downloaded bytes of an arrived file (its record pending), with what they are and a thumbnail."""
        info = await asyncio.to_thread(process.inspect, path)
        preview = await asyncio.to_thread(process.thumbnail, path, info.mime)
        thumb_id = None
        if preview is not None:
            thumb = path.with_suffix(".thumbnail.jpg")
            thumb.write_bytes(preview)
            thumb_id = (
                await self._store_file(
                    client,
                    record.session_id,
                    thumb,
                    FileKind.THUMBNAIL,
                    "image/jpeg",
                    message_row_id=record.message_row_id,
                )
            ).id
        stored = await self.store.put(client, record.store_key, _file_chunks(path))
        duration = None if info.duration_seconds is None else round(info.duration_seconds * 1000)

        async def mark(tx: Transaction) -> MediaRecord | None:
            return await records.mark_stored(
                tx.connection,
                record.id,
                size=stored.size,
                sha256=stored.sha256,
                width=info.width,
                height=info.height,
                duration_ms=duration,
                thumbnail_id=thumb_id,
            )

        marked = await self._manager.execute_transaction(client, mark)
        if marked is None:
            raise MediaNotFound(f"media {record.id!r} is gone")
        return marked

    # -- reading --------------------------------------------------------------------------------------

    async def get(self, client: str, media_id: str) -> MediaView:
        """A file's record, with a fresh signed link."""
        cid = valid_client_id(client)
        found = await self._record(cid, media_id, field="mediaId")
        url, expires = await self.link(cid, found.id)
        return MediaView(found, url, expires)

    async def open(
        self, client: str, media_id: str, *, start: int = 0, end: int | None = None
    ) -> tuple[MediaRecord, MediaStream]:
        """A stored file's record and its bytes from `start` to `end` (exclusive)."""
        cid = valid_client_id(client)
        found = await self._record(cid, media_id, field="mediaId")
        if found.status is not MediaStatus.STORED:
            raise MediaNotFound(f"media {media_id!r} is {found.status.value}: it has no bytes to read")
        return found, await self.store.open(cid, found.store_key, start=start, end=end)

    async def open_signed(
        self, client: str, media_id: str, expires: int, signature: str, *, start: int = 0, end: int | None = None
    ) -> tuple[MediaRecord, MediaStream]:
        """As `open`, for a signed link (AuthenticationFailed when it is expired, altered or revoked)."""
        try:
            cid = valid_client_id(client)
            key = await self._manager.execute_transaction(cid, lambda tx: link_keys.key(tx.connection))
        except (InvalidRequest, ClientNotFound) as exc:  # told apart from a bad signature, it would name clients
            raise AuthenticationFailed("this media link is not valid (altered, or its key was rotated)") from exc
        signed_links.verify(key, cid, media_id, expires, signature, now=time.time())
        return await self.open(cid, media_id, start=start, end=end)

    async def link(self, client: str, media_id: str, *, tx: Transaction | None = None) -> tuple[str, datetime]:
        """A signed link to a file of `client`, and when it expires."""
        if tx is None:
            key = await self._manager.execute_transaction(client, lambda t: link_keys.key(t.connection))
        else:
            key = await link_keys.key(tx.connection)
        return self.signed(client, media_id, key)

    def signed(self, client: str, media_id: str, key: bytes) -> tuple[str, datetime]:
        """A link signed with the client's `key`."""
        expires = int(time.time() + self._link_ttl)
        signature = signed_links.signature(key, client, media_id, expires)
        url = f"{self._public_url}/media/{client}/{media_id}?expires={expires}&signature={signature}"
        return url, datetime.fromtimestamp(expires, UTC)

    async def rotate_links(self, client: str) -> None:
        """Revoke every signed link of the client made so far."""
        await self._manager.execute_transaction(valid_client_id(client), lambda tx: link_keys.rotate(tx.connection))

    # -- helpers --------------------------------------------------------------------------------------

    async def _session_row(self, cid: str, session: str) -> str:
        sid = valid_session_id(session)

        async def find(tx: Transaction) -> str:
            found = await outbound.sessions_for_send(tx.connection, {sid})
            if sid not in found:
                raise SessionNotFound(f"session {sid!r} not found", session_id=sid)
            return found[sid][0]

        return await self._manager.execute_transaction(cid, find)

    async def _record(self, client: str, media_id: str, *, field: str) -> MediaRecord:
        if not isinstance(media_id, str) or not 1 <= len(media_id) <= 64:
            raise InvalidRequest(f"{field}: a media id expected", field=field)
        found = await self._manager.execute_transaction(client, lambda tx: records.get(tx.connection, media_id))
        if found is None:
            raise MediaNotFound(f"media {media_id!r} not found", media_id=media_id)
        return found

    async def _copy_to(self, client: str, record: MediaRecord, path: Path) -> None:
        if record.status is not MediaStatus.STORED:
            raise MediaNotFound(f"media {record.id!r} is {record.status.value}: it has no bytes")
        async with await self.store.open(client, record.store_key) as stream:
            with path.open("wb") as out:
                async for chunk in stream:
                    out.write(chunk)

    async def _store_file(
        self,
        client: str,
        session_row: str,
        path: Path,
        kind: FileKind,
        mime: str,
        *,
        filename: str | None = None,
        width: int | None = None,
        height: int | None = None,
        duration: float | None = None,
        waveform: bytes | None = None,
        thumbnail_id: str | None = None,
        expires_at: datetime | None = None,
        message_row_id: str | None = None,
    ) -> MediaRecord:
        async def insert(tx: Transaction) -> MediaRecord:
            return await records.insert_pending(
                tx.connection,
                session_row_id=session_row,
                kind=kind,
                mime_type=mime,
                store=self.store.name,
                filename=filename,
                expires_at=expires_at,
                message_row_id=message_row_id,
            )

        pending = await self._manager.execute_transaction(client, insert)
        try:
            stored = await self.store.put(client, pending.store_key, _file_chunks(path))
        except BaseException:
            with contextlib.suppress(Exception):
                await self._manager.execute_transaction(
                    client, lambda tx: records.delete_records(tx.connection, [pending.id])
                )
            raise

        async def mark(tx: Transaction) -> MediaRecord | None:
            return await records.mark_stored(
                tx.connection,
                pending.id,
                size=stored.size,
                sha256=stored.sha256,
                width=width,
                height=height,
                duration_ms=None if duration is None else round(duration * 1000),
                waveform=waveform,
                thumbnail_id=thumbnail_id,
            )

        marked = await self._manager.execute_transaction(client, mark)
        assert marked is not None
        return marked


def _file_kind(mime: str) -> FileKind:
    family = mime.split("/", 1)[0]
    if family in {"image", "video", "audio"}:
        return FileKind(family)
    return FileKind.DOCUMENT


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := await asyncio.to_thread(source.read, READ_CHUNK):
            yield chunk


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="zapgate-media-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def media_object(record: MediaRecord, url: str | None) -> dict[str, Any]:
    """A file as events and the API show it (beside a message's content)."""
    body: dict[str, Any] = {
        "id": record.id,
        "status": record.status.value,
        "mime_type": record.mime_type,
        "size": record.size,
        "sha256": record.sha256,
    }
    for name, value in (
        ("width", record.width),
        ("height", record.height),
        ("duration", None if record.duration_ms is None else record.duration_ms / 1000),
        ("filename", record.filename),
        ("error", record.error),
    ):
        if value is not None:
            body[name] = value
    if url is not None and record.status is MediaStatus.STORED:
        body["url"] = url
    return body
