"""Media files made on the spot with Pillow and PyAV: tones, test videos, images, office files.

Every maker writes `path` and returns it. Tones rise from silence to full scale over their duration (so a
waveform of one is not flat); videos show a moving square, so their frames differ.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from fractions import Fraction
from pathlib import Path

import av
import av.container
import numpy as np
from av.stream import Disposition
from PIL import Image

TONE_HZ = 440


def tone_samples(seconds: float, rate: int, *, rising: bool = True) -> np.ndarray:
    """A float32 sine whose loudness rises linearly from 0 to 0.8 (or stays at 0.8)."""
    count = round(seconds * rate)
    t = np.arange(count) / rate
    envelope = np.linspace(0.0, 0.8, count) if rising else np.full(count, 0.8)
    return (np.sin(2 * np.pi * TONE_HZ * t) * envelope).astype(np.float32)


def write_tone(
    path: Path,
    *,
    container: str,
    codec: str,
    rate: int = 44_100,
    channels: int = 1,
    seconds: float = 1.0,
    silent: bool = False,
    options: dict[str, str] | None = None,
    codec_options: dict[str, str] | None = None,
) -> Path:
    """Encode a rising tone of `seconds` with `codec` into `container` (`options` for the muxer)."""
    layout = "stereo" if channels == 2 else "mono"
    mono = np.zeros(round(seconds * rate), np.float32) if silent else tone_samples(seconds, rate)
    with av.open(str(path), "w", format=container, options=options or {}) as target:
        stream = target.add_stream(codec, rate=rate, layout=layout, options=codec_options or {})
        assert isinstance(stream, av.AudioStream)
        _encode_audio(target, stream, codec, rate, layout, mono)
    return path


def _encode_audio(
    target: av.container.OutputContainer, stream: av.AudioStream, codec: str, rate: int, layout: str, mono: np.ndarray
) -> None:
    formats = stream.codec_context.codec.audio_formats
    resampler = av.AudioResampler(
        format=formats[0].name if formats else "fltp", layout=layout, rate=rate, frame_size=_FRAME_SIZES.get(codec)
    )
    planes = np.stack([mono] * (2 if layout == "stereo" else 1))
    frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
    frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
    written = 0
    for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
        resampled.pts, resampled.time_base = written, Fraction(1, rate)
        written += resampled.samples
        target.mux(stream.encode(resampled))
    target.mux(stream.encode(None))


_FRAME_SIZES = {"libopus": None, "aac": 1024, "libmp3lame": 1152, "libopencore_amrnb": 160}


def write_video(
    path: Path,
    *,
    container: str,
    codec: str = "libx264",
    audio_codec: str | None = "aac",
    size: tuple[int, int] = (160, 120),
    frames: int = 25,
    rate: int = 25,
) -> Path:
    """Encode `frames` frames (a square moving across a coloured field) and, optionally, their length of tone."""
    width, height = size
    with av.open(str(path), "w", format=container) as target:
        video = target.add_stream(codec, rate=rate)
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio: av.AudioStream | None = None
        if audio_codec is not None:
            stream = target.add_stream(audio_codec, rate=48_000, layout="stereo")
            assert isinstance(stream, av.AudioStream)
            audio = stream
        for index in range(frames):
            pixels = np.zeros((height, width, 3), np.uint8)
            pixels[:, :, 2] = 120
            x = index * max(1, width // frames)
            pixels[height // 4 : height // 2, x : x + max(2, width // 8), 0] = 255
            picture_frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            picture_frame.pts = index
            target.mux(video.encode(picture_frame))
        target.mux(video.encode(None))
        if audio is not None and audio_codec is not None:
            _encode_audio(target, audio, audio_codec, 48_000, "stereo", tone_samples(frames / rate, 48_000))
    return path


def picture(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """A gradient with a bright block: something a thumbnail can show."""
    width, height = size
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    pixels = np.zeros((height, width, 4), np.uint8)
    pixels[:, :, 0] = ramp
    pixels[:, :, 1] = 255 - ramp
    pixels[:, :, 2] = 90
    pixels[:, :, 3] = 255
    pixels[:, : width // 4, 3] = 0  # a transparent band, for the modes that keep it
    pixels[height // 3 : height // 2, width // 3 : width // 2, :3] = 250
    return Image.fromarray(pixels, "RGBA").convert(mode)


def write_image(path: Path, size: tuple[int, int], image_format: str, mode: str = "RGB", **options: object) -> Path:
    """Save `picture(size)` as `image_format` (JPEG, PNG, GIF, WEBP)."""
    picture(size, mode).save(path, image_format, **options)
    return path


def write_animation(
    path: Path, size: tuple[int, int], image_format: str, *, frames: int = 4, noise: bool = False
) -> Path:
    """An animation of `frames` frames (WEBP or GIF); `noise` makes frames that do not compress."""
    rng = np.random.default_rng(7)
    images = [
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
        if noise
        else picture(size).rotate(index * 90)
        for index in range(frames)
    ]
    extra: dict[str, object] = {"lossless": True} if noise else {}
    images[0].save(path, image_format, save_all=True, append_images=images[1:], duration=100, loop=0, **extra)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG that claims `width` x `height` pixels: a decompression bomb's announcement."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width * 3 + 1) * 4)  # a few rows; a decoder would want them all
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


PDF_BYTES = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


def office_zip(parts: dict[str, bytes]) -> bytes:
    """A zip with `parts` in that order, as Office writes its files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return buffer.getvalue()


CONTENT_TYPES = b'<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>'


def docx_bytes() -> bytes:
    return office_zip({"[Content_Types].xml": CONTENT_TYPES, "_rels/.rels": b"<r/>", "word/document.xml": b"<w/>"})


def odt_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), b"application/vnd.oasis.opendocument.text")
        archive.writestr("content.xml", b"<office/>", zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def write_mp3_with_cover(path: Path, cover_side: int = 600) -> Path:
    """A second of MP3 carrying cover art, which FFmpeg shows as a one-picture video stream."""
    art = io.BytesIO()
    picture((cover_side, cover_side)).save(art, "JPEG")
    with av.open(str(path), "w", format="mp3") as target:
        audio = target.add_stream("libmp3lame", rate=44_100, layout="mono")
        assert isinstance(audio, av.AudioStream)
        cover = target.add_stream("mjpeg")
        assert isinstance(cover, av.VideoStream)
        cover.width, cover.height, cover.pix_fmt = cover_side, cover_side, "yuvj420p"
        cover.disposition = Disposition.attached_pic
        packet = av.Packet(art.getvalue())
        packet.stream, packet.pts, packet.dts = cover, 0, 0
        target.mux(packet)
        _encode_audio(target, audio, "libmp3lame", 44_100, "mono", tone_samples(1.0, 44_100))
    return path
