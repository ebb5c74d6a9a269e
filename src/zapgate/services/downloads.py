"""Files that arrive: downloaded by the worker into the media store, then announced.

The recorder stores an arrived media message at once (so WhatsApp's copy can be acknowledged) with a
`pending` file that keeps the engine's download handle and the message-received event to announce. This
downloads it; the event goes out once the file is settled, with the file's signed link, so a webhook
consumer never gets a message whose file it cannot fetch yet:

- stored: message-received with `media.status` stored and `media.url`;
- WhatsApp's servers no longer have it (expired, 403/404/410): the phone is asked to upload it again; its
  answer (MediaReuploaded) gives a new handle and the download is tried again;
- it cannot be had (the phone does not have it either, the engine cannot ask, or MAX_ATTEMPTS failures
  with a backoff): message-received with `media.status` failed and its `error`, and a media-failed event.

Everything is rows: a worker that dies mid-way leaves the file pending and due, and the session's next host
downloads it (`wake` when a session connects).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from zapgate.background import TaskGroup
from zapgate.db import link_keys
from zapgate.db import media as records
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.db.media import Download
from zapgate.domain.content import Media, MediaKind, MessageKey
from zapgate.domain.events import EventType
from zapgate.domain.media import FileKind, MediaRecord
from zapgate.domain.sessions import SessionStatus
from zapgate.engines.base import EngineError, MediaGone, NotConnected, SessionRef
from zapgate.log import get_logger
from zapgate.services.hosted import Hosted, HostedSessions
from zapgate.services.media import MediaFiles, media_object

log = get_logger(__name__)

MAX_ATTEMPTS = 5  # downloads tried before a file fails for good
RETRY_BASE = 2.0  # seconds before the second attempt, doubled for each further one
REUPLOAD_WAIT = 120.0  # seconds the phone has to upload a file again before the next attempt
DOWNLOAD_TIMEOUT = 300.0  # seconds one download may take


class Downloads:
    """Download the arrived files of a worker's sessions, one session at a time each."""

    def __init__(
        self,
        manager: ConnectionManager,
        hosted: HostedSessions,
        media: MediaFiles,
        tasks: TaskGroup,
        *,
        timeout: float = DOWNLOAD_TIMEOUT,
    ) -> None:
        self._manager = manager
        self._hosted = hosted
        self._media = media
        self._tasks = tasks
        self._timeout = timeout
        self._running: set[SessionRef] = set()
        self._again: set[SessionRef] = set()

    def wake(self, ref: SessionRef | None = None) -> None:
        """Look for due downloads of `ref` (None: of every connected session)."""
        refs = [ref] if ref is not None else list(self._hosted)
        for one in refs:
            if one in self._running:
                self._again.add(one)
            else:
                self._running.add(one)
                self._tasks.spawn(self._session(one), name="downloads")

    async def gone(self, ref: SessionRef, media_ids: list[str], error: str) -> None:
        """The phone no longer has these files either: they fail for good, and their messages are announced."""
        waiting = await self._manager.execute_transaction(
            ref.client_id, lambda tx: records.downloads_of(tx.connection, media_ids)
        )
        for download in waiting:
            await self._failed(ref, download, error, permanent=True)

    async def _session(self, ref: SessionRef) -> None:
        try:
            while True:
                self._again.discard(ref)
                hosted = self._hosted.get(ref)
                if hosted is None or hosted.status is not SessionStatus.CONNECTED:
                    return
                due = await self._manager.execute_transaction(ref.client_id, partial(_due, hosted.session_row_id))
                for download in due:
                    await self._one(ref, hosted, download)
                if not due and ref not in self._again:
                    return
        except Exception as exc:
            log.warning("downloads.failed", session=str(ref), error=repr(exc))
        finally:
            self._running.discard(ref)
        self._later(ref, RETRY_BASE)

    def _later(self, ref: SessionRef, seconds: float) -> None:
        async def wake_later() -> None:
            await asyncio.sleep(seconds)
            self.wake(ref)

        self._tasks.spawn(wake_later(), name="downloads.later")

    async def _one(self, ref: SessionRef, hosted: Hosted, download: Download) -> None:
        record = download.record
        media = _media_of(record)
        folder = Path(tempfile.mkdtemp(prefix="zapgate-download-"))
        try:
            path = folder / "file"
            try:
                await asyncio.wait_for(hosted.engine.download(ref, media, str(path)), self._timeout)
            except TimeoutError as exc:
                raise EngineError(f"the download took over {self._timeout:g} s") from exc
            stored = await self._media.store_arrived(ref.client_id, record, path)
            await self._announce(ref, stored, download.announce, failed=None)
            log.info("media.downloaded", session=str(ref), media=record.id, size=stored.size)
        except NotConnected:
            return  # after the reconnection (wake)
        except MediaGone as exc:
            await self._ask_again(ref, hosted, download, media, exc)
        except EngineError as exc:
            await self._failed(ref, download, exc.message, permanent=not exc.retryable)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def _ask_again(
        self, ref: SessionRef, hosted: Hosted, download: Download, media: Media, gone: MediaGone
    ) -> None:
        """WhatsApp's servers no longer have the file: ask the phone for it (once per attempt)."""
        announce = download.announce or {}
        if download.record.attempts + 1 >= MAX_ATTEMPTS:
            await self._failed(ref, download, gone.message, permanent=True)
            return
        # the attempt is counted first: the phone's answer (a new handle, due at once) may come before this returns
        retry_at = datetime.now(UTC) + timedelta(seconds=REUPLOAD_WAIT)
        media_id = download.record.id
        await self._manager.execute_transaction(
            ref.client_id,
            lambda tx: records.download_failed(tx.connection, media_id, error=gone.message, retry_at=retry_at),
        )
        key = MessageKey(
            id=str(announce.get("whatsappMessageId") or ""),
            from_me=bool(announce.get("fromMe")),
            sender_jid=announce.get("senderJid") if announce.get("isGroup") else None,
        )
        try:
            await asyncio.wait_for(
                hosted.engine.request_reupload(ref, str(announce.get("chatJid") or ""), key, media), self._timeout
            )
        except (EngineError, TimeoutError) as exc:
            reason = exc.message if isinstance(exc, EngineError) else "the phone was not reached"
            error = f"{gone.message}; asking the phone again failed: {reason}"
            await self._failed(ref, download, error, permanent=True)
            return
        self._later(ref, REUPLOAD_WAIT)

    async def _failed(self, ref: SessionRef, download: Download, error: str, *, permanent: bool) -> None:
        record = download.record
        if permanent or record.attempts + 1 >= MAX_ATTEMPTS:
            failed = await self._manager.execute_transaction(
                ref.client_id, lambda tx: records.mark_failed(tx.connection, record.id, error)
            )
            if failed is not None:
                await self._announce(ref, failed, download.announce, failed=error)
            log.warning("media.failed", session=str(ref), media=record.id, error=error)
            return
        delay = RETRY_BASE * 2**record.attempts
        retry_at = datetime.now(UTC) + timedelta(seconds=delay)
        await self._manager.execute_transaction(
            ref.client_id, lambda tx: records.download_failed(tx.connection, record.id, error=error, retry_at=retry_at)
        )
        self._later(ref, delay)

    async def _announce(
        self, ref: SessionRef, record: MediaRecord, announce: dict[str, Any] | None, *, failed: str | None
    ) -> None:
        """Announce the message whose file is now settled (and, when it failed, the failure)."""
        if announce is None:
            return

        async def work(tx: Transaction) -> None:
            url = None
            if failed is None:
                url, _ = self._media.signed(ref.client_id, record.id, await link_keys.key(tx.connection))
            body = {**announce, "media": media_object(record, url)}
            entries = [(EventType.MESSAGE_RECEIVED.value, ref.session_id, body)]
            if failed is not None:
                entries.append(
                    (
                        EventType.MEDIA_FAILED.value,
                        ref.session_id,
                        {
                            "sessionId": ref.session_id,
                            "messageId": announce.get("messageId"),
                            "mediaId": record.id,
                            "error": failed,
                        },
                    )
                )
            await tx.event.append_many(entries)

        await self._manager.execute_transaction(ref.client_id, work)


async def _due(session_row: str, tx: Transaction) -> list[Download]:
    return await records.due_downloads(tx.connection, session_row)


def _media_of(record: MediaRecord) -> Media:
    voice = record.kind is FileKind.VOICE
    kind = MediaKind.AUDIO if voice else MediaKind(record.kind.value)
    return Media(
        kind=kind,
        media_id=record.id,
        mime_type=record.mime_type,
        size=record.size,
        sha256=record.sha256,
        filename=record.filename,
        voice=voice,
        handle=record.handle,
    )


def file_kind(media: Media) -> FileKind:
    """The kind a stored file of `media` is kept as."""
    return FileKind.VOICE if media.voice else FileKind(media.kind.value)
