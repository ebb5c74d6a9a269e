"""Received files: described and previewed for the console, whatever state they arrive in."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests.support import media_files as mf
from tests.unit.media.conftest import MediaFactory
from zapgate.media.process import THUMBNAIL_SIDE, MediaInfo, inspect, thumbnail


def test_an_image_is_described_from_its_bytes(media: MediaFactory) -> None:
    path = media("photo.jpg")
    assert inspect(path) == MediaInfo("image/jpeg", "jpg", path.stat().st_size, width=320, height=200)


def test_a_video_has_its_size_and_duration(media: MediaFactory) -> None:
    info = inspect(media("clip.mp4"))
    assert (info.mime, info.width, info.height) == ("video/mp4", 160, 120)
    assert info.duration_seconds == pytest.approx(1.0, abs=0.1)


def test_audio_has_a_duration_and_no_size(media: MediaFactory) -> None:
    info = inspect(media("tone.mp3"))
    assert (info.mime, info.width, info.height) == ("audio/mpeg", None, None)
    assert info.duration_seconds == pytest.approx(1.0, abs=0.1)


def test_animation_is_reported(media: MediaFactory) -> None:
    assert inspect(media("moving.gif")).is_animated
    assert inspect(media("moving.webp")).is_animated
    assert not inspect(media("photo.webp")).is_animated


@pytest.mark.parametrize(("sample", "cut"), [("photo.jpg", 300), ("clip.mp4", 200), ("tone.mp3", 40)])
def test_a_damaged_file_is_described_without_sizes_and_without_an_error(
    media: MediaFactory, tmp_path: Path, sample: str, cut: int
) -> None:
    damaged = tmp_path / f"damaged-{sample}"
    damaged.write_bytes(media(sample).read_bytes()[:cut])
    info = inspect(damaged)
    assert info.mime == inspect(media(sample)).mime  # still told from its first bytes
    assert info.size == cut
    assert thumbnail(damaged, info.mime) is None


@pytest.mark.parametrize(("sample", "aspect"), [("photo.jpg", 320 / 200), ("photo.png", 2.0), ("clip.webm", 4 / 3)])
def test_images_and_videos_get_a_small_jpeg_preview(media: MediaFactory, sample: str, aspect: float) -> None:
    preview = thumbnail(media(sample), "application/octet-stream")
    assert preview is not None
    image = Image.open(io.BytesIO(preview))
    assert image.format == "JPEG"
    assert max(image.size) == THUMBNAIL_SIDE
    assert image.width / image.height == pytest.approx(aspect, rel=0.05)


def test_a_preview_can_be_larger_for_the_console(media: MediaFactory) -> None:
    preview = thumbnail(media("photo.jpg"), "image/jpeg", side=200)
    assert preview is not None and Image.open(io.BytesIO(preview)).size == (200, 125)


@pytest.mark.parametrize("sample", ["doc.pdf", "tone.mp3", "notes.txt"])
def test_files_without_pictures_have_no_preview(media: MediaFactory, sample: str) -> None:
    assert thumbnail(media(sample), "image/jpeg") is None  # the claimed type does not make a picture


def test_a_decompression_bomb_gets_no_preview(tmp_path: Path) -> None:
    bomb = mf.png_header_only(tmp_path / "bomb.png", 30_000, 30_000)
    assert thumbnail(bomb, "image/png") is None
    assert inspect(bomb).mime == "image/png"


def test_a_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        inspect(tmp_path / "gone.jpg")
