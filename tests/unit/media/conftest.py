"""Media fixtures: each sample is made once a session, and each test gets its own copy to work on."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import media_files as mf

MediaFactory = Callable[[str], Path]

_MAKERS: dict[str, Callable[[Path], Path]] = {
    "tone.wav": lambda p: mf.write_tone(p, container="wav", codec="pcm_s16le"),
    "silence.wav": lambda p: mf.write_tone(p, container="wav", codec="pcm_s16le", silent=True),
    "tone.mp3": lambda p: mf.write_tone(p, container="mp3", codec="libmp3lame", channels=2),
    "tone-raw.mp3": lambda p: mf.write_tone(
        p, container="mp3", codec="libmp3lame", options={"id3v2_version": "0", "write_xing": "0"}
    ),
    "cover.mp3": lambda p: mf.write_mp3_with_cover(p, cover_side=4200),  # art bigger than any video we take
    "tone.aac": lambda p: mf.write_tone(p, container="adts", codec="aac"),
    "tone.m4a": lambda p: mf.write_tone(p, container="ipod", codec="aac"),
    "tone.opus.ogg": lambda p: mf.write_tone(p, container="ogg", codec="libopus", rate=48_000),
    "tone-stereo.opus.ogg": lambda p: mf.write_tone(p, container="ogg", codec="libopus", rate=48_000, channels=2),
    "tone.vorbis.ogg": lambda p: mf.write_tone(
        p, container="ogg", codec="vorbis", channels=2, codec_options={"strict": "experimental"}
    ),
    "tone.amr": lambda p: mf.write_tone(p, container="amr", codec="libopencore_amrnb", rate=8_000),
    "clip.mp4": lambda p: mf.write_video(p, container="mp4"),
    "clip.mov": lambda p: mf.write_video(p, container="mov"),
    "clip.3gp": lambda p: mf.write_video(p, container="3gp"),
    "clip.webm": lambda p: mf.write_video(p, container="webm", codec="libvpx", audio_codec="libopus"),
    "clip.mkv": lambda p: mf.write_video(p, container="matroska", codec="mpeg4", audio_codec="libmp3lame"),
    "clip.avi": lambda p: mf.write_video(p, container="avi", codec="mpeg4", audio_codec="libmp3lame", size=(161, 121)),
    "clip-mpeg4.mp4": lambda p: mf.write_video(p, container="mp4", codec="mpeg4", audio_codec=None),
    "wide.avi": lambda p: mf.write_video(
        p, container="avi", codec="mpeg4", audio_codec=None, size=(4200, 16), frames=2
    ),
    "photo.jpg": lambda p: mf.write_image(p, (320, 200), "JPEG"),
    "photo.png": lambda p: mf.write_image(p, (300, 150), "PNG", "RGBA"),
    "photo.webp": lambda p: mf.write_image(p, (320, 200), "WEBP"),
    "alpha.webp": lambda p: mf.write_image(p, (320, 200), "WEBP", "RGBA"),
    "still.gif": lambda p: mf.write_image(p, (120, 80), "GIF", "P"),
    "moving.gif": lambda p: mf.write_animation(p, (120, 80), "GIF"),
    "moving.webp": lambda p: mf.write_animation(p, (512, 512), "WEBP"),
    "small-moving.webp": lambda p: mf.write_animation(p, (200, 100), "WEBP"),
    "heavy-moving.webp": lambda p: mf.write_animation(p, (512, 512), "WEBP", frames=2, noise=True),
    "sticker.webp": lambda p: mf.write_image(p, (512, 512), "WEBP", "RGBA"),
    "doc.pdf": lambda p: _write(p, mf.PDF_BYTES),
    "report.docx": lambda p: _write(p, mf.docx_bytes()),
    "notes.txt": lambda p: _write(p, "Olá, mundo\nsecond line\n".encode()),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def _samples(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    folder = tmp_path_factory.mktemp("media-samples")

    def sample(name: str) -> Path:
        path = folder / name
        if not path.exists():
            _MAKERS[name](path)
        return path

    return sample


@pytest.fixture
def media(_samples: Callable[[str], Path], tmp_path: Path) -> MediaFactory:
    """`media("tone.mp3")`: a fresh copy of a sample in the test's own folder."""

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copyfile(_samples(name), target)
        return target

    return copy
