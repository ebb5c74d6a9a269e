"""What WhatsApp accepts for each kind of media message, and the guards against hostile files: pure rules.

Sizes are binary (1 MB = 1024 x 1024 bytes, 1 KB = 1024 bytes), as WhatsApp's clients and whatsmeow-based
tools count them (neonize's sticker limit is 512000 = 500 x 1024). The decoding guards bound the work a single
file can cause: pixels decoded, video dimensions, duration.
"""

from __future__ import annotations

from zapgate.domain.content import MediaKind
from zapgate.errors import InvalidMedia

KB = 1024
MB = 1024 * 1024


SEND_LIMIT = {  # bytes, the largest file WhatsApp takes for each kind
    MediaKind.IMAGE: 5 * MB,
    MediaKind.VIDEO: 16 * MB,
    MediaKind.AUDIO: 16 * MB,
    MediaKind.DOCUMENT: 100 * MB,
    MediaKind.STICKER: 100 * KB,  # static; animated below
}
ANIMATED_STICKER_LIMIT = 500 * KB
STICKER_SIDE = 512  # px: WhatsApp stickers are 512 x 512 WebP

# Files sent as they are; anything else of the kind is converted (or refused when it cannot be).
SENDABLE_MIMES: dict[MediaKind, frozenset[str]] = {
    MediaKind.IMAGE: frozenset({"image/jpeg", "image/png"}),
    MediaKind.VIDEO: frozenset({"video/mp4", "video/3gpp"}),
    MediaKind.AUDIO: frozenset({"audio/aac", "audio/mp4", "audio/mpeg", "audio/amr", "audio/ogg; codecs=opus"}),
    MediaKind.STICKER: frozenset({"image/webp"}),
}
VOICE_MIME = "audio/ogg; codecs=opus"

# Guards: a file over these is refused before (or while) it is decoded.
MAX_CONVERSION_INPUT = 100 * MB  # bytes: the largest audio or video file decoded to convert it
MAX_IMAGE_PIXELS = 50_000_000  # decoded pixels (about 8660 x 5773); Pillow's own default warns at 89 M
MAX_IMAGE_SIDE = 16_384  # px
MAX_VIDEO_SIDE = 4_096  # px, a 4K video fits
MAX_DURATION = 2 * 60 * 60  # seconds of audio or video

_NOUNS = {
    MediaKind.IMAGE: "images",
    MediaKind.VIDEO: "videos",
    MediaKind.AUDIO: "audio",
    MediaKind.DOCUMENT: "documents",
    MediaKind.STICKER: "static stickers",
}


def send_limit(kind: MediaKind, *, animated: bool = False) -> int:
    """Return the largest file, in bytes, WhatsApp accepts for `kind` (animated stickers have their own)."""
    if kind is MediaKind.STICKER and animated:
        return ANIMATED_STICKER_LIMIT
    return SEND_LIMIT[kind]


def human_size(size: int) -> str:
    """Write a byte count as a person reads it: `512 bytes`, `95 KB`, `6.2 MB`."""
    if size < KB:
        return f"{size} bytes"
    if size < MB:
        return f"{_one_decimal(size / KB)} KB"
    return f"{_one_decimal(size / MB)} MB"


def _one_decimal(value: float) -> str:
    text = f"{value:.1f}"
    return text.removesuffix(".0")


def check_size(kind: MediaKind, size: int, *, field: str, animated: bool = False) -> None:
    """Refuse a file over WhatsApp's limit for `kind`, with a message that names both sizes.

    Raises:
        InvalidMedia: `media_too_large`.
    """
    limit = send_limit(kind, animated=animated)
    if size <= limit:
        return
    shown, allowed = human_size(size), human_size(limit)
    if shown == allowed:  # 5 MB and one byte must not read as "5 MB is over 5 MB"
        shown = f"{size} bytes"
    noun = "animated stickers" if kind is MediaKind.STICKER and animated else _NOUNS[kind]
    raise InvalidMedia(
        f"{field}: {shown} is over WhatsApp's {allowed} limit for {noun}",
        field=field,
        code=InvalidMedia.TOO_LARGE,
        size=size,
        limit=limit,
    )


def check_input_size(size: int, *, field: str, limit: int, purpose: str) -> None:
    """Refuse an input file larger than zapgate decodes for `purpose` (a conversion, a decode in memory).

    Raises:
        InvalidMedia: `media_too_large`.
    """
    if size > limit:
        raise InvalidMedia(
            f"{field}: {human_size(size)} is over the {human_size(limit)} zapgate accepts {purpose}",
            field=field,
            code=InvalidMedia.TOO_LARGE,
            size=size,
            limit=limit,
        )


def check_pixels(width: int, height: int, *, field: str) -> None:
    """Refuse an image whose decoded size would be a decompression bomb.

    Raises:
        InvalidMedia: `media_too_large`.
    """
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise InvalidMedia(
            f"{field}: {width}x{height} pixels is over what zapgate decodes "
            f"({MAX_IMAGE_PIXELS // 1_000_000} megapixels, {MAX_IMAGE_SIDE} px a side)",
            field=field,
            code=InvalidMedia.TOO_LARGE,
        )


def check_video_frame(width: int, height: int, *, field: str) -> None:
    """Refuse a video larger than MAX_VIDEO_SIDE on a side.

    Raises:
        InvalidMedia: `media_too_large`.
    """
    if width > MAX_VIDEO_SIDE or height > MAX_VIDEO_SIDE:
        raise InvalidMedia(
            f"{field}: {width}x{height} is over the {MAX_VIDEO_SIDE} px a side zapgate processes",
            field=field,
            code=InvalidMedia.TOO_LARGE,
        )


def check_duration(seconds: float, *, field: str) -> None:
    """Refuse audio or video longer than MAX_DURATION.

    Raises:
        InvalidMedia: `media_too_large`.
    """
    if seconds > MAX_DURATION:
        raise InvalidMedia(
            f"{field}: {_duration(seconds)} is over the {_duration(MAX_DURATION)} zapgate processes",
            field=field,
            code=InvalidMedia.TOO_LARGE,
        )


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} minutes" if seconds >= 120 else f"{seconds:.1f} seconds"
