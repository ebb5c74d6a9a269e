"""Make a file into what WhatsApp accepts for a message kind, and describe files received.

Every function here is **blocking** (decoding, encoding, hashing): call it from a worker thread
(`asyncio.to_thread`) or a process pool, never on the event loop. Libraries bring their own codecs: Pillow for
images, PyAV (FFmpeg inside its wheel, with libx264, libopus and AAC) for audio and video; nothing else is
installed beside Python.

Files stay on disk: audio and video are decoded and encoded frame by frame, so a video is never in memory
whole; images (at most 5 MB) are read into memory. The guards in `domain/media_limits.py` bound the work one
file can cause: pixels decoded (decompression bombs), video size, duration.

`prepare(kind, path, ...)` validates and normalises an outbound file: the type comes from the bytes, never
from the client's word; a converted file is written beside the input (or in `workdir`) and belongs to the
caller (`Prepared.converted`). `inspect(path)` and `thumbnail(path, mime)` describe inbound files and never
raise for a file they cannot decode.

Choices made against WhatsApp's own files and the clients that talk to it:
- Voice notes are Ogg/Opus, mono, 16 kHz: a voice note recorded by WhatsApp has `OpusHead` with one channel
  and an input rate of 16000, `OpusTags` vendor "WhatsApp", about 15 kbit/s. `waveform` is 64 values 0-100
  (Baileys `getAudioWaveform` and wa-js `prepareAudioWaveform`: 64 samples, normalised to the loudest).
- Thumbnails (`jpegThumbnail`) fit in 72 x 72 px, as mautrix-whatsapp makes them (`pkg/msgconv/thumbnail.go`,
  thumbnailMaxSize = 72).
- Images go as JPEG or PNG, videos as MP4 H.264/AAC, audio as AAC, MP4, MP3, AMR or Ogg/Opus: the types
  mautrix-whatsapp sends as they are (`pkg/msgconv/from-matrix.go`, reuploadFileToWhatsApp).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import itertools
import os
import re
import struct
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final

import av
import av.container
import numpy as np
from av.stream import Disposition
from PIL import Image, ImageOps, UnidentifiedImageError

from zapgate.domain.content import MediaKind
from zapgate.domain.media_limits import (
    MAX_CONVERSION_INPUT,
    MAX_DURATION,
    MAX_IMAGE_PIXELS,
    SEND_LIMIT,
    SENDABLE_MIMES,
    STICKER_SIDE,
    VOICE_MIME,
    check_duration,
    check_input_size,
    check_pixels,
    check_size,
    check_video_frame,
)
from zapgate.errors import InvalidMedia
from zapgate.media.sniff import OCTET_STREAM, Sniffed, sniff_file

THUMBNAIL_SIDE: Final = 72  # px, the longer side of a jpegThumbnail
THUMBNAIL_QUALITY: Final = 75
VOICE_RATE: Final = 16_000  # Hz, as WhatsApp records voice notes
VOICE_BITRATE: Final = 24_000  # bit/s
WAVEFORM_SAMPLES: Final = 64
AUDIO_RATE: Final = 44_100  # Hz, for audio converted to AAC
AUDIO_BITRATE: Final = 128_000  # bit/s
VIDEO_MAX_SIDE: Final = 1_280  # px: a converted video is scaled down to fit, as WhatsApp itself sends them
_FRAME_SIZE = {"libopus": VOICE_RATE // 50, "aac": 1024}  # samples an encoder takes a frame (20 ms of Opus)
_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")  # the only decoders Pillow may use on a user's file
_IMAGE_INPUTS = {"image/jpeg", "image/png", "image/webp", "image/gif"}
_H264_ENCODERS = ("libx264", "h264")
_DECODE_ERRORS = (
    av.FFmpegError,
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    struct.error,
    zlib.error,
    UnidentifiedImageError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
    IndexError,
)


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """A small JPEG preview and its size in pixels."""

    jpeg: bytes
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Prepared:
    """A file ready to be uploaded to WhatsApp, with what its message fields need."""

    kind: MediaKind
    path: Path  # the file to send: the input itself, or a new file when `converted`
    mime: str
    size: int  # bytes
    sha256: bytes  # the file's digest (WhatsApp's fileSha256)
    converted: bool  # `path` is a new file, the caller's to delete
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    waveform: bytes | None = None  # voice notes: 64 values 0-100
    thumbnail: Thumbnail | None = None
    filename: str | None = None
    is_animated: bool = False  # animated sticker; or a GIF sent as video (gifPlayback)

    @property
    def seconds(self) -> int | None:
        """The duration in whole seconds, as WhatsApp's `seconds` fields want it (at least 1)."""
        return None if self.duration_seconds is None else max(1, round(self.duration_seconds))


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What a received file is: its type from its bytes, and its size where it could be decoded."""

    mime: str
    extension: str
    size: int
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    is_animated: bool = False


def prepare(
    kind: MediaKind | str,
    path: Path,
    *,
    declared_mime: str | None = None,
    filename: str | None = None,
    voice: bool = False,
    field: str | None = None,
    workdir: Path | None = None,
) -> Prepared:
    """Validate `path` for a WhatsApp message of `kind` and convert it where WhatsApp needs another form.

    Args:
        kind: image, video, audio, document or sticker.
        declared_mime: what the client said; only ever picks a subtype within the family the bytes prove
            (a CSV among texts, a .doc among OLE files), never overrides them.
        filename: kept for documents (its directories dropped).
        voice: for audio: make a voice note (Ogg/Opus mono, waveform).
        field: the request field named in errors (default: the kind).
        workdir: where converted files are written (default: beside the input).

    Raises:
        InvalidMedia: `media_too_large`, `media_type_not_allowed` or `media_undecodable`, naming `field`.
        OSError: `path` cannot be read.
    """
    kind = MediaKind(kind)
    job = _Job(kind, path, field or kind.value, workdir or path.parent, sniff_file(path), path.stat().st_size)
    if kind is MediaKind.IMAGE:
        return _prepare_image(job)
    if kind is MediaKind.STICKER:
        return _prepare_sticker(job)
    if kind is MediaKind.VIDEO:
        return _prepare_video(job)
    if kind is MediaKind.AUDIO:
        return _prepare_audio(job, voice=voice)
    return _prepare_document(job, declared_mime, filename)


def inspect(path: Path) -> MediaInfo:
    """Describe a received file: its type from its bytes; dimensions and duration when it decodes.

    Raises:
        OSError: `path` cannot be read (a file that does not decode is no error: its sizes stay None).
    """
    sniffed = sniff_file(path)
    info = MediaInfo(sniffed.mime, sniffed.extension, path.stat().st_size, is_animated=sniffed.animated)
    with contextlib.suppress(*_DECODE_ERRORS, InvalidMedia):
        if sniffed.mime in _IMAGE_INPUTS:
            with _pillow_guard(), Image.open(path, formats=_IMAGE_FORMATS) as image:
                width, height = _displayed_size(image)
                animated = sniffed.animated or (sniffed.mime == "image/gif" and _is_animated(image))
                return dataclasses.replace(info, width=width, height=height, is_animated=animated)
        if sniffed.family in {"audio", "video"} or sniffed.mime == "application/ogg":
            probe = _probe(path, "file")
            return dataclasses.replace(info, width=probe.width, height=probe.height, duration_seconds=probe.duration)
    return info


def thumbnail(path: Path, mime: str, *, side: int = THUMBNAIL_SIDE) -> bytes | None:
    """Return a JPEG preview (fitting `side` px) of a received image or video; None when there is none.

    The type is told from the bytes when they are recognised; `mime` (what WhatsApp said) only when not.
    """
    sniffed = sniff_file(path)
    effective = mime if sniffed.mime == OCTET_STREAM else sniffed.mime
    family = effective.split("/", 1)[0]
    with contextlib.suppress(*_DECODE_ERRORS, InvalidMedia):
        if effective in _IMAGE_INPUTS:
            with _pillow_guard(), Image.open(path, formats=_IMAGE_FORMATS) as image:
                check_pixels(*image.size, field="file")
                image.draft("RGB", (side * 2, side * 2))  # JPEG: decode at a fraction of the size
                return _thumbnail_of(image, side).jpeg
        if family == "video":
            with _open_av(path) as container:
                for stream in _moving_pictures(container)[:1]:
                    check_video_frame(stream.codec_context.width, stream.codec_context.height, field="file")
                    first = _first_frame(container)
                    return None if first is None else _thumbnail_of(first, side).jpeg
    return None


# -- the work of one prepare ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Job:
    kind: MediaKind
    path: Path
    field: str
    workdir: Path
    sniffed: Sniffed
    size: int
    created: list[Path] = dataclasses.field(default_factory=list)

    def new_file(self, suffix: str) -> Path:
        """A new empty file in the work directory, named so that nobody else's collides."""
        descriptor, name = tempfile.mkstemp(prefix="zapgate-", suffix=suffix, dir=self.workdir)
        os.close(descriptor)
        self.created.append(Path(name))
        return Path(name)

    def refuse(self, reason: str) -> InvalidMedia:
        return InvalidMedia(f"{self.field}: {reason}", field=self.field, code=InvalidMedia.TYPE_NOT_ALLOWED)

    def undecodable(self, what: str) -> InvalidMedia:
        return InvalidMedia(
            f"{self.field}: the file looks like {what} but could not be decoded (damaged or truncated?)",
            field=self.field,
            code=InvalidMedia.UNDECODABLE,
        )

    @contextlib.contextmanager
    def decoding(self, what: str) -> Iterator[None]:
        """Turn a decoder's failure into `media_undecodable`."""
        try:
            yield
        except InvalidMedia:
            raise
        except _DECODE_ERRORS as exc:
            raise self.undecodable(what) from exc

    def result(
        self,
        out: Path,
        mime: str,
        *,
        width: int | None = None,
        height: int | None = None,
        duration_seconds: float | None = None,
        waveform: bytes | None = None,
        thumbnail: Thumbnail | None = None,
        filename: str | None = None,
        is_animated: bool = False,
    ) -> Prepared:
        return Prepared(
            kind=self.kind,
            path=out,
            mime=mime,
            size=out.stat().st_size,
            sha256=_sha256(out),
            converted=out != self.path,
            width=width,
            height=height,
            duration_seconds=duration_seconds,
            waveform=waveform,
            thumbnail=thumbnail,
            filename=filename,
            is_animated=is_animated,
        )


def _describe(sniffed: Sniffed) -> str:
    names = {
        "application/pdf": "a PDF document",
        "application/octet-stream": "a file of unknown type",
        "text/plain": "a text file",
        "text/csv": "a CSV file",
    }
    return names.get(sniffed.mime, sniffed.mime)


# -- images -------------------------------------------------------------------------------------------------


def _prepare_image(job: _Job) -> Prepared:
    if job.sniffed.mime not in _IMAGE_INPUTS:
        raise job.refuse(f"{_describe(job.sniffed)} is not an image WhatsApp shows; send JPEG, PNG, WebP or GIF")
    check_size(MediaKind.IMAGE, job.size, field=job.field)  # also the bound for decoding it in memory
    with _temporary_output(job):
        if job.sniffed.mime == "image/jpeg":
            return _prepare_jpeg(job)  # sent as it is: only its thumbnail is decoded, at a fraction of its size
        image = _decode_image(job)
        if _is_animated(image):
            raise job.refuse("an animated image is sent as a video (GIF) or a sticker (WebP), not as an image")
        if job.sniffed.mime in SENDABLE_MIMES[MediaKind.IMAGE]:
            out, mime = job.path, job.sniffed.mime
        elif _has_alpha(image):
            out, mime = job.new_file(".png"), "image/png"
            image.save(out, "PNG", optimize=True)
        else:
            out, mime = job.new_file(".jpg"), "image/jpeg"
            image.convert("RGB").save(out, "JPEG", quality=90)
        check_size(MediaKind.IMAGE, out.stat().st_size, field=job.field)
        width, height = _displayed_size(image)
        return job.result(out, mime, width=width, height=height, thumbnail=_optional_thumbnail(image))


def _prepare_jpeg(job: _Job) -> Prepared:
    """A JPEG goes as it is: its size from its header, its thumbnail from a reduced decode (JPEG's draft mode),
    so a 50-megapixel photo never has its pixels in memory whole."""
    with job.decoding(job.sniffed.mime), _pillow_guard():
        try:
            image = Image.open(job.path, formats=("JPEG",))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InvalidMedia(
                f"{job.field}: the image has more pixels than zapgate decodes ({MAX_IMAGE_PIXELS // 1_000_000} "
                "megapixels)",
                field=job.field,
                code=InvalidMedia.TOO_LARGE,
            ) from exc
        with image:
            check_pixels(*image.size, field=job.field)
            width, height = _displayed_size(image)
            image.draft("RGB", (THUMBNAIL_SIDE * 2, THUMBNAIL_SIDE * 2))
            image.load()  # undecodable data fails here, as with every other image
            return job.result(job.path, "image/jpeg", width=width, height=height, thumbnail=_optional_thumbnail(image))


def _decode_image(job: _Job) -> Image.Image:
    """Decode the (at most 5 MB) image in memory, refusing a decompression bomb before its pixels exist."""
    with job.decoding(job.sniffed.mime), _pillow_guard():
        try:
            image = Image.open(io.BytesIO(job.path.read_bytes()), formats=_IMAGE_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            # Past twice Pillow's own limit, it refuses in open(), before we see the size.
            raise InvalidMedia(
                f"{job.field}: the image has more pixels than zapgate decodes ({MAX_IMAGE_PIXELS // 1_000_000} "
                "megapixels)",
                field=job.field,
                code=InvalidMedia.TOO_LARGE,
            ) from exc
        check_pixels(*image.size, field=job.field)
        image.load()
        return image


@contextlib.contextmanager
def _pillow_guard() -> Iterator[None]:
    # Pillow warns (then fails) on huge images by its own MAX_IMAGE_PIXELS: make the warning an error.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def _is_animated(image: Image.Image) -> bool:
    return bool(getattr(image, "is_animated", False))


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or "transparency" in image.info


_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(image: Image.Image) -> int:
    value = image.getexif().get(_ORIENTATION, 1)
    return value if isinstance(value, int) else 1


def _displayed_size(image: Image.Image) -> tuple[int, int]:
    """Width and height as the image is shown: a JPEG's EXIF orientation may turn it a quarter."""
    width, height = image.size
    return (height, width) if _orientation(image) in {5, 6, 7, 8} else (width, height)


def _optional_thumbnail(image: Image.Image) -> Thumbnail | None:
    """A jpegThumbnail, or None for an image mode the JPEG encoder cannot take (the message goes without)."""
    with contextlib.suppress(*_DECODE_ERRORS):
        return _thumbnail_of(image, THUMBNAIL_SIDE)
    return None


def _thumbnail_of(image: Image.Image, side: int) -> Thumbnail:
    """A JPEG fitting `side` x `side`, turned as the image is shown, transparency over white."""
    if image.mode not in {"RGB", "RGBA", "L", "LA"}:
        image_rgb = image.convert("RGBA")
    else:
        image_rgb = image
    factor = max(1, max(image.size) // (side * 4))  # shrink a large image cheaply before the fine resize
    reduced = image_rgb.reduce(factor) if factor > 1 else image_rgb
    small = ImageOps.contain(reduced.convert("RGBA"), (side, side), Image.Resampling.LANCZOS)
    if (transpose := _TRANSPOSE.get(_orientation(image))) is not None:
        small = small.transpose(transpose)
    flat = Image.new("RGB", small.size, (255, 255, 255))
    flat.paste(small, mask=small.getchannel("A"))
    buffer = io.BytesIO()
    flat.save(buffer, "JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    return Thumbnail(buffer.getvalue(), flat.width, flat.height)


# -- stickers -----------------------------------------------------------------------------------------------


_STICKER_QUALITIES = (80, 65, 50, 35, 20)  # WebP quality tried in turn until a sticker fits 100 KB


def _prepare_sticker(job: _Job) -> Prepared:
    if job.sniffed.mime not in _IMAGE_INPUTS:
        raise job.refuse(f"{_describe(job.sniffed)} cannot be a sticker; send WebP, PNG, JPEG or GIF")
    check_input_size(job.size, field=job.field, limit=SEND_LIMIT[MediaKind.IMAGE], purpose="to make a sticker")
    with _temporary_output(job):
        image = _decode_image(job)
        side = (STICKER_SIDE, STICKER_SIDE)
        if _is_animated(image):
            if job.sniffed.mime != "image/webp":
                raise job.refuse("an animated sticker must be an animated WebP")
            if image.size != side:
                raise job.refuse(
                    f"an animated sticker must be {STICKER_SIDE}x{STICKER_SIDE} px (this one is "
                    f"{image.width}x{image.height})"
                )
            check_size(MediaKind.STICKER, job.size, field=job.field, animated=True)
            return job.result(job.path, "image/webp", width=image.width, height=image.height, is_animated=True)
        if job.sniffed.mime == "image/webp" and image.size == side and job.size <= SEND_LIMIT[MediaKind.STICKER]:
            return job.result(job.path, "image/webp", width=STICKER_SIDE, height=STICKER_SIDE)
        canvas = _sticker_canvas(image)
        out = job.new_file(".webp")
        for quality in _STICKER_QUALITIES:
            canvas.save(out, "WEBP", quality=quality)
            if out.stat().st_size <= SEND_LIMIT[MediaKind.STICKER]:
                break
        check_size(MediaKind.STICKER, out.stat().st_size, field=job.field)
        return job.result(out, "image/webp", width=STICKER_SIDE, height=STICKER_SIDE)


def _sticker_canvas(image: Image.Image) -> Image.Image:
    """The image scaled to fit 512 x 512, centred on a transparent square."""
    upright = ImageOps.exif_transpose(image).convert("RGBA")
    fitted = ImageOps.contain(upright, (STICKER_SIDE, STICKER_SIDE), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (STICKER_SIDE, STICKER_SIDE), (0, 0, 0, 0))
    canvas.paste(fitted, ((STICKER_SIDE - fitted.width) // 2, (STICKER_SIDE - fitted.height) // 2))
    return canvas


# -- audio and video: probing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Probe:
    format: str
    video_codec: str | None
    width: int | None
    height: int | None
    pix_fmt: str | None
    audio_codecs: tuple[str, ...]
    channels: int | None
    duration: float | None  # seconds


def _open_av(path: Path) -> av.container.InputContainer:
    return av.open(str(path), "r", options={"probesize": "5000000"})


def _probe(path: Path, field: str) -> _Probe:
    with _open_av(path) as container:
        video = next(iter(_moving_pictures(container)), None)
        audio = container.streams.audio
        duration: float | None = None
        if container.duration is not None:
            duration = container.duration / av.time_base
        elif video is not None and video.duration is not None and video.time_base is not None:
            duration = float(video.duration * video.time_base)
        if duration is not None:
            check_duration(duration, field=field)
        if video is not None:
            check_video_frame(video.codec_context.width, video.codec_context.height, field=field)
        return _Probe(
            format=container.format.name,
            video_codec=video.codec_context.name if video is not None else None,
            width=video.codec_context.width if video is not None else None,
            height=video.codec_context.height if video is not None else None,
            pix_fmt=video.codec_context.pix_fmt if video is not None else None,
            audio_codecs=tuple(stream.codec_context.name for stream in audio),
            channels=audio[0].codec_context.channels if audio else None,
            duration=duration,
        )


def _moving_pictures(container: av.container.InputContainer) -> list[av.VideoStream]:
    """The video streams, less the cover art an MP3 or M4A carries as a one-picture "video"."""
    return [stream for stream in container.streams.video if not stream.disposition & Disposition.attached_pic]


def _first_frame(container: av.container.InputContainer) -> Image.Image | None:
    pictures = _moving_pictures(container)
    if not pictures:
        return None
    for frame in container.decode(pictures[0]):
        return Image.fromarray(frame.to_ndarray(format="rgb24"))
    return None


def _sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
    return digest.digest()


@contextlib.contextmanager
def _temporary_output(job: _Job) -> Iterator[None]:
    """Delete the files a failed prepare had written."""
    try:
        yield
    except BaseException:
        for created in job.created:
            created.unlink(missing_ok=True)
        raise


# -- video --------------------------------------------------------------------------------------------------


def _prepare_video(job: _Job) -> Prepared:
    gif = job.sniffed.mime == "image/gif"
    if job.sniffed.family != "video" and not gif:
        raise job.refuse(f"{_describe(job.sniffed)} is not a video; send MP4 (H.264 video, AAC audio)")
    check_input_size(job.size, field=job.field, limit=MAX_CONVERSION_INPUT, purpose="to convert a video")
    with job.decoding(job.sniffed.mime):
        probe = _probe(job.path, job.field)
        with _open_av(job.path) as container:
            first = _first_frame(container)
    if probe.video_codec is None:
        raise job.refuse("the file has no video track; send it as audio or as a document")
    if first is None:
        raise job.undecodable(job.sniffed.mime)
    sendable = (
        job.sniffed.mime in SENDABLE_MIMES[MediaKind.VIDEO]
        and probe.video_codec == "h264"
        and probe.pix_fmt in {"yuv420p", "yuvj420p"}
        and all(codec == "aac" for codec in probe.audio_codecs)
    )
    if sendable:
        check_size(MediaKind.VIDEO, job.size, field=job.field)
        return job.result(
            job.path,
            job.sniffed.mime,
            width=probe.width,
            height=probe.height,
            duration_seconds=probe.duration,
            thumbnail=_optional_thumbnail(first),
            is_animated=False,
        )
    encoder = _h264_encoder()
    if encoder is None:
        raise job.refuse(
            f"{job.sniffed.mime} ({probe.video_codec}) would need converting to MP4 H.264, which this build "
            "cannot do; send MP4 with H.264 video and AAC audio"
        )
    with _temporary_output(job):
        out = job.new_file(".mp4")
        with job.decoding(job.sniffed.mime):
            width, height = _transcode_video(job, out, encoder, keep_audio=not gif)
            converted = _probe(out, job.field)
        check_size(MediaKind.VIDEO, out.stat().st_size, field=job.field)
        return job.result(
            out,
            "video/mp4",
            width=width,
            height=height,
            duration_seconds=converted.duration,
            thumbnail=_optional_thumbnail(first),
            is_animated=gif,
        )


def _h264_encoder() -> str | None:
    """The H.264 encoder FFmpeg in PyAV's wheel offers (libx264 in the wheels built since PyAV 12)."""
    for name in _H264_ENCODERS:
        if name in av.codecs_available:
            with contextlib.suppress(av.FFmpegError, ValueError):
                av.Codec(name, "w")
                return name
    return None


def _even_fit(width: int, height: int, side: int) -> tuple[int, int]:
    """Scale down to fit `side` and round to even numbers, as yuv420p H.264 needs."""
    scale = min(1.0, side / max(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def _transcode_video(job: _Job, out: Path, encoder: str, *, keep_audio: bool) -> tuple[int, int]:
    with (
        _open_av(job.path) as source,
        av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}) as target,
    ):
        video_in = _moving_pictures(source)[0]
        audio_in = source.streams.audio[0] if keep_audio and source.streams.audio else None
        width, height = _even_fit(video_in.codec_context.width, video_in.codec_context.height, VIDEO_MAX_SIDE)
        time_base = video_in.time_base or Fraction(1, 90_000)
        video_out = target.add_stream(
            encoder, rate=video_in.average_rate or 25, options={"preset": "veryfast", "crf": "26"}
        )
        assert isinstance(video_out, av.VideoStream)
        video_out.width, video_out.height, video_out.pix_fmt = width, height, "yuv420p"
        video_out.codec_context.time_base = time_base
        audio = _AudioEncoder(target, "aac", AUDIO_RATE, _layout(audio_in), AUDIO_BITRATE) if audio_in else None
        last_pts = -1
        streams = [video_in] if audio_in is None else [video_in, audio_in]
        for packet in source.demux(streams):
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    if frame.time is not None and frame.time > MAX_DURATION:
                        check_duration(frame.time, field=job.field)
                    pts = frame.pts if frame.pts is not None and frame.pts > last_pts else last_pts + 1
                    last_pts = pts
                    scaled = frame.reformat(width=width, height=height, format="yuv420p")
                    scaled.pts, scaled.time_base = pts, time_base
                    target.mux(video_out.encode(scaled))
                elif audio is not None and isinstance(frame, av.AudioFrame):
                    audio.encode(frame)
        target.mux(video_out.encode(None))
        if audio is not None:
            audio.finish()
    return width, height


def _layout(stream: av.AudioStream | None) -> str:
    return "stereo" if stream is not None and stream.codec_context.channels >= 2 else "mono"


# -- audio --------------------------------------------------------------------------------------------------


class _AudioEncoder:
    """Resample decoded frames and encode them into one audio stream of `target`, counting samples."""

    def __init__(self, target: av.container.OutputContainer, codec: str, rate: int, layout: str, bit_rate: int) -> None:
        self.target = target
        stream = target.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        self.stream = stream
        self.stream.bit_rate = bit_rate
        self.rate = rate
        sample_format = "s16" if codec == "libopus" else "fltp"
        self.resampler = av.AudioResampler(
            format=sample_format, layout=layout, rate=rate, frame_size=_FRAME_SIZE[codec]
        )
        self.samples = 0
        self.waveform = _Waveform() if layout == "mono" and sample_format == "s16" else None

    def encode(self, frame: av.AudioFrame | None) -> None:
        for resampled in self.resampler.resample(frame):
            if self.waveform is not None:
                self.waveform.feed(resampled.to_ndarray()[0])
            resampled.pts, resampled.time_base = self.samples, Fraction(1, self.rate)
            self.samples += resampled.samples
            self.target.mux(self.stream.encode(resampled))

    def finish(self) -> None:
        self.encode(None)
        self.target.mux(self.stream.encode(None))

    @property
    def duration(self) -> float:
        return self.samples / self.rate


class _Waveform:
    """RMS of 5 ms blocks of 16 kHz mono samples, folded at the end into WAVEFORM_SAMPLES values 0-100."""

    BLOCK = VOICE_RATE // 200  # samples: 5 ms, so 64 values need no more than a third of a second

    def __init__(self) -> None:
        self._energies: list[np.ndarray] = []
        self._rest = np.zeros(0, dtype=np.float64)

    def feed(self, samples: np.ndarray) -> None:
        data = np.concatenate([self._rest, samples.astype(np.float64) / 32768.0])
        whole = len(data) // self.BLOCK * self.BLOCK
        if whole:
            self._energies.append(np.square(data[:whole]).reshape(-1, self.BLOCK).mean(axis=1))
        self._rest = data[whole:]

    def values(self) -> bytes:
        if len(self._rest):
            self._energies.append(np.array([np.square(self._rest).mean()]))
            self._rest = np.zeros(0, dtype=np.float64)
        if not self._energies:
            return bytes(WAVEFORM_SAMPLES)
        energies = np.concatenate(self._energies)
        edges = np.linspace(0, len(energies), WAVEFORM_SAMPLES + 1)
        starts = np.minimum(edges[:-1].astype(int), len(energies) - 1)
        ends = np.maximum(edges[1:].astype(int), starts + 1)
        levels = np.array([np.sqrt(energies[s:e].mean()) for s, e in zip(starts, ends, strict=True)])
        loudest = levels.max()
        if loudest <= 0:
            return bytes(WAVEFORM_SAMPLES)
        return bytes(np.rint(levels / loudest * 100).astype(np.uint8).tolist())


def _sendable_audio(job: _Job, probe: _Probe) -> str | None:
    """The MIME type WhatsApp takes this audio file as, or None when it must be converted."""
    codecs = probe.audio_codecs
    if len(codecs) != 1 or probe.video_codec is not None:
        return None
    expected = {
        "audio/mpeg": ("mp3", "audio/mpeg"),
        "audio/aac": ("aac", "audio/aac"),
        "audio/amr": ("amr", "audio/amr"),
        "audio/mp4": ("aac", "audio/mp4"),
        "video/mp4": ("aac", "audio/mp4"),  # an audio-only MP4 is an M4A whatever its brand
        VOICE_MIME: ("opus", VOICE_MIME),
    }.get(job.sniffed.mime)
    if expected is None or expected[0] not in codecs[0]:
        return None
    return expected[1]


def _prepare_audio(job: _Job, *, voice: bool) -> Prepared:
    if job.sniffed.family not in {"audio", "video"} and job.sniffed.mime != "application/ogg":
        raise job.refuse(f"{_describe(job.sniffed)} is not audio; send MP3, AAC, M4A, Ogg/Opus, AMR or WAV")
    check_input_size(job.size, field=job.field, limit=MAX_CONVERSION_INPUT, purpose="to convert audio")
    with job.decoding(job.sniffed.mime):
        probe = _probe(job.path, job.field)
    if not probe.audio_codecs:
        raise job.refuse("the file has no audio track")
    sendable = _sendable_audio(job, probe)
    what = job.sniffed.mime
    with job.decoding(what), _open_av(job.path) as source:
        if next(_decoded_audio(job, source), None) is None:
            raise job.undecodable(what)
    if voice and sendable == VOICE_MIME and probe.channels == 1:
        with job.decoding(what):
            duration, waveform = _measure_voice(job)
        check_size(MediaKind.AUDIO, job.size, field=job.field)
        return job.result(job.path, VOICE_MIME, duration_seconds=duration, waveform=waveform)
    if not voice and sendable is not None:
        check_size(MediaKind.AUDIO, job.size, field=job.field)
        return job.result(job.path, sendable, duration_seconds=probe.duration)
    with _temporary_output(job):
        if voice:
            out = job.new_file(".ogg")
            with job.decoding(what):
                encoder = _encode_audio(job, out, "ogg", "libopus", VOICE_RATE, "mono", VOICE_BITRATE)
            mime, levels = VOICE_MIME, encoder.waveform.values() if encoder.waveform else None
        else:
            out = job.new_file(".m4a")
            layout = "stereo" if (probe.channels or 1) >= 2 else "mono"
            with job.decoding(what):
                encoder = _encode_audio(job, out, "ipod", "aac", AUDIO_RATE, layout, AUDIO_BITRATE)
            mime, levels = "audio/mp4", None
        check_size(MediaKind.AUDIO, out.stat().st_size, field=job.field)
        return job.result(out, mime, duration_seconds=encoder.duration, waveform=levels)


def _decoded_audio(job: _Job, source: av.container.InputContainer) -> Iterator[av.AudioFrame]:
    """The first audio stream's frames, stopping at MAX_DURATION."""
    for frame in source.decode(audio=0):
        if frame.time is not None and frame.time > MAX_DURATION:
            check_duration(frame.time, field=job.field)
        yield frame


def _encode_audio(
    job: _Job, out: Path, container: str, codec: str, rate: int, layout: str, bit_rate: int
) -> _AudioEncoder:
    with _open_av(job.path) as source, av.open(str(out), "w", format=container) as target:
        encoder = _AudioEncoder(target, codec, rate, layout, bit_rate)
        for frame in _decoded_audio(job, source):
            encoder.encode(frame)
            check_duration(encoder.duration, field=job.field)
        encoder.finish()
    return encoder


def _measure_voice(job: _Job) -> tuple[float, bytes]:
    """Duration and waveform of an Ogg/Opus file sent as it is."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=VOICE_RATE)
    waveform, samples = _Waveform(), 0
    with _open_av(job.path) as source:
        for frame in itertools.chain(_decoded_audio(job, source), [None]):
            for resampled in resampler.resample(frame):
                waveform.feed(resampled.to_ndarray()[0])
                samples += resampled.samples
    return samples / VOICE_RATE, waveform.values()


# -- documents ----------------------------------------------------------------------------------------------


# A declared type may name a subtype of what the bytes prove, never another family.
_REFINEMENTS = {
    "text/plain": {"text/csv", "text/markdown", "text/tab-separated-values", "text/calendar", "text/vcard"},
    "application/x-ole-storage": {"application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint"},
    "application/zip": {"application/epub+zip", "application/vnd.android.package-archive", "application/java-archive"},
}
_EXTENSION_REFINEMENTS = {
    "csv": "text/csv",
    "md": "text/markdown",
    "tsv": "text/tab-separated-values",
    "ics": "text/calendar",
    "vcf": "text/vcard",
    "doc": "application/msword",
    "xls": "application/vnd.ms-excel",
    "ppt": "application/vnd.ms-powerpoint",
    "epub": "application/epub+zip",
    "apk": "application/vnd.android.package-archive",
    "jar": "application/java-archive",
}
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


def _prepare_document(job: _Job, declared_mime: str | None, filename: str | None) -> Prepared:
    check_size(MediaKind.DOCUMENT, job.size, field=job.field)
    name = _clean_filename(filename) or f"document.{job.sniffed.extension}"
    mime = _refine(job.sniffed.mime, declared_mime, name)
    return job.result(job.path, mime, filename=name)


def _refine(sniffed: str, declared: str | None, filename: str) -> str:
    allowed = _REFINEMENTS.get(sniffed, set())
    if declared is not None and declared.split(";", 1)[0].strip().lower() in allowed:
        return declared.split(";", 1)[0].strip().lower()
    by_extension = _EXTENSION_REFINEMENTS.get(filename.rsplit(".", 1)[-1].lower() if "." in filename else "")
    return by_extension if by_extension in allowed else sniffed


def _clean_filename(filename: str | None) -> str | None:
    """The name without its directories or control characters (None when nothing is left)."""
    if filename is None:
        return None
    base = re.split(r"[/\\]", filename)[-1]
    cleaned = _UNSAFE_NAME.sub("", base).strip().strip(".")
    return cleaned[:255] or None
