"""Media files as zapgate keeps them: their kinds, their record, where their bytes live.

A media file's bytes live in a media store (PostgreSQL chunks or an S3 bucket) under a key laid out
`{session_row_id}/{media_id}` inside the client's space; its record (a `media` row) says what it is and
where its bytes are. The store key is made here, once, so every store and every repository agree on it.

WhatsApp's size limits per kind are in `domain/media_limits.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class FileKind(StrEnum):
    """What a stored file is: a message's kind of media, a voice note, or a thumbnail beside another file.

    WhatsApp's size limits per kind are in `domain/media_limits.py`."""

    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    VOICE = "voice"  # a push-to-talk voice note: audio shown as a waveform
    DOCUMENT = "document"
    STICKER = "sticker"
    THUMBNAIL = "thumbnail"


class MediaStatus(StrEnum):
    """Whether a media file's bytes are in the store."""

    PENDING = "pending"  # being stored (an upload or a download is in progress)
    STORED = "stored"
    FAILED = "failed"  # they never arrived; `error` says why


class StoreName(StrEnum):
    """Where the bytes of a media file live."""

    POSTGRES = "postgres"  # chunks in the client's schema
    S3 = "s3"  # an object in an S3-compatible bucket


_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)


def check_key(key: str) -> str:
    """Return `key` if it is a store key (segments of A-Z, a-z, 0-9, _ and -, joined by `/`); else raise ValueError.

    Keys never come from users as they are, but a key that could climb out of its folder (`..`, a leading
    `/`) or hide another client's prefix must never reach a store.
    """
    if not isinstance(key, str) or not all(_SEGMENT.fullmatch(part) for part in key.split("/")):
        raise ValueError(f"invalid media store key {key!r}: expected segments of A-Z, a-z, 0-9, _ and -, joined by /")
    return key


def store_key(session_row_id: str, media_id: str) -> str:
    """Return the store key of a media file: `{session_row_id}/{media_id}` (its client is the store's concern)."""
    return check_key(f"{session_row_id}/{media_id}")


def media_id_of(key: str) -> str:
    """Return the media id a store key names (its last segment)."""
    return check_key(key).rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """Where ZAPGATE_MEDIA_STORE puts media: PostgreSQL, or a bucket and a key prefix in it."""

    store: StoreName
    bucket: str | None = None
    prefix: str = ""


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,255}", re.ASCII)


def parse_store_location(value: str) -> StoreLocation:
    """Return where `value` (`postgres`, or `s3://bucket` with an optional `/prefix`) says to keep media.

    Raises:
        ValueError: `value` is neither.
    """
    text = value.strip()
    if text.lower() == StoreName.POSTGRES:
        return StoreLocation(StoreName.POSTGRES)
    if text[:5].lower() != "s3://":
        raise ValueError("expected postgres or s3://bucket/prefix")
    bucket, _, prefix = text[5:].partition("/")
    if _BUCKET.fullmatch(bucket) is None:
        raise ValueError("expected an S3 bucket name of 3-63 characters of a-z, 0-9, . and - (s3://bucket/prefix)")
    segments = [part for part in prefix.split("/") if part]
    if not all(_PREFIX_SEGMENT.fullmatch(part) and part not in {".", ".."} for part in segments):
        raise ValueError("expected a key prefix of A-Z, a-z, 0-9, ., _ and - segments joined by / (s3://bucket/prefix)")
    return StoreLocation(StoreName.S3, bucket, "/".join(segments))


@dataclass(frozen=True, slots=True)
class MediaRecord:
    """One media file of a session: what it is, whether its bytes are stored, and where."""

    id: str
    session_id: str  # the session's row id (sessions.id)
    message_row_id: str | None  # the message it belongs to (messages.id); None before the message exists
    kind: FileKind
    mime_type: str
    status: MediaStatus
    store: StoreName
    store_key: str
    created_at: datetime
    size: int | None = None  # bytes; known once stored
    sha256: str | None = None  # hex; known once stored
    filename: str | None = None
    width: int | None = None  # pixels (images, videos, stickers, thumbnails)
    height: int | None = None
    duration_ms: int | None = None  # audio, voice, video
    pages: int | None = None  # documents
    error: str | None = None  # why it failed
    thumbnail_id: str | None = None  # another media record: this one's thumbnail
    expires_at: datetime | None = None  # retention: deleted after this moment
    waveform: bytes | None = None  # a voice note's 64 loudness values (0-100)
    handle: bytes | None = None  # an arrived file not downloaded yet: the engine's handle for it
    attempts: int = 0  # downloads tried and failed


@dataclass(frozen=True, slots=True)
class StoredObject:
    """Where the bytes of one media record are: enough to delete them from their store."""

    media_id: str
    store: StoreName
    store_key: str
