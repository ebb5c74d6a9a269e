"""Images and stickers as WhatsApp takes them: JPEG or PNG with a small thumbnail; 512 x 512 WebP stickers."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support import media_files as mf
from tests.unit.media.conftest import MediaFactory
from zapgate.domain.media_limits import KB, MB
from zapgate.errors import InvalidMedia
from zapgate.media.process import THUMBNAIL_SIDE, Prepared, prepare


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def assert_small_jpeg_thumbnail(prepared: Prepared, aspect: float) -> None:
    assert prepared.thumbnail is not None
    thumb = opened(prepared.thumbnail.jpeg)
    assert thumb.format == "JPEG"
    assert thumb.size == (prepared.thumbnail.width, prepared.thumbnail.height)
    assert max(thumb.size) == THUMBNAIL_SIDE
    assert thumb.width / thumb.height == pytest.approx(aspect, rel=0.05)
    assert len(prepared.thumbnail.jpeg) < 5 * KB


@pytest.mark.parametrize(
    ("sample", "mime", "size"), [("photo.jpg", "image/jpeg", (320, 200)), ("photo.png", "image/png", (300, 150))]
)
def test_jpeg_and_png_are_sent_as_they_are(media: MediaFactory, sample: str, mime: str, size: tuple[int, int]) -> None:
    path = media(sample)
    prepared = prepare("image", path)
    assert (prepared.path, prepared.converted, prepared.mime) == (path, False, mime)
    assert (prepared.width, prepared.height) == size
    assert prepared.size == path.stat().st_size
    assert prepared.sha256 == hashlib.sha256(path.read_bytes()).digest()
    assert_small_jpeg_thumbnail(prepared, size[0] / size[1])


@pytest.mark.parametrize(
    ("sample", "mime", "image_format"),
    [("photo.webp", "image/jpeg", "JPEG"), ("alpha.webp", "image/png", "PNG"), ("still.gif", "image/jpeg", "JPEG")],
)
def test_other_images_become_jpeg_or_png_when_transparent(
    media: MediaFactory, tmp_path: Path, sample: str, mime: str, image_format: str
) -> None:
    source = media(sample)
    workdir = tmp_path / "out"
    workdir.mkdir()
    prepared = prepare("image", source, workdir=workdir)
    assert prepared.converted and prepared.path.parent == workdir
    assert prepared.mime == mime
    result = opened(prepared.path.read_bytes())
    assert result.format == image_format
    assert result.size == opened(source.read_bytes()).size == (prepared.width, prepared.height)
    assert prepared.sha256 == hashlib.sha256(prepared.path.read_bytes()).digest()
    if mime == "image/png":
        assert np.asarray(result.convert("RGBA"))[1, 1, 3] == 0  # the transparent band survived


def test_a_turned_photo_reports_the_size_it_is_shown_at(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown a quarter turn (portrait)
    path = mf.write_image(tmp_path / "turned.jpg", (200, 100), "JPEG", exif=exif.tobytes())
    prepared = prepare("image", path)
    assert (prepared.width, prepared.height) == (100, 200)
    assert prepared.thumbnail is not None
    assert (prepared.thumbnail.width, prepared.thumbnail.height) == (36, 72)


def test_an_animated_gif_is_not_an_image(media: MediaFactory) -> None:
    with pytest.raises(InvalidMedia) as caught:
        prepare("image", media("moving.gif"))
    assert (caught.value.field, caught.value.code) == ("image", "media_type_not_allowed")
    assert "video" in caught.value.message


@pytest.mark.parametrize("sample", ["doc.pdf", "clip.mp4", "notes.txt"])
def test_a_file_that_is_no_image_is_refused_as_an_image(media: MediaFactory, sample: str) -> None:
    with pytest.raises(InvalidMedia) as caught:
        prepare("image", media(sample), declared_mime="image/jpeg", field="media")
    assert (caught.value.field, caught.value.code) == ("media", "media_type_not_allowed")
    assert caught.value.message.startswith("media: ")
    assert "send JPEG, PNG, WebP or GIF" in caught.value.message


def test_an_image_over_5_mb_is_refused_with_its_size(media: MediaFactory) -> None:
    path = media("photo.jpg")
    with path.open("ab") as file:  # a JPEG decoder ignores what follows the image
        file.write(b"\0" * (int(6.2 * MB) - path.stat().st_size))
    with pytest.raises(InvalidMedia) as caught:
        prepare("image", path)
    assert caught.value.message == "image: 6.2 MB is over WhatsApp's 5 MB limit for images"
    assert caught.value.code == "media_too_large"


def test_a_truncated_image_is_undecodable(media: MediaFactory, tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    path.write_bytes(media("photo.jpg").read_bytes()[:600])
    with pytest.raises(InvalidMedia) as caught:
        prepare("image", path)
    assert (caught.value.field, caught.value.code) == ("image", "media_undecodable")
    assert "could not be decoded" in caught.value.message


@pytest.mark.parametrize(("width", "height"), [(10_000, 6_000), (20_000, 3), (60_000, 60_000)])
def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path: Path, width: int, height: int) -> None:
    path = mf.png_header_only(tmp_path / "bomb.png", width, height)
    assert path.stat().st_size < 100 * KB
    with pytest.raises(InvalidMedia) as caught:
        prepare("image", path)
    assert (caught.value.field, caught.value.code) == ("image", "media_too_large")
    assert "50 megapixels" in caught.value.message


def test_a_bomb_cannot_become_a_sticker_either(tmp_path: Path) -> None:
    with pytest.raises(InvalidMedia) as caught:
        prepare("sticker", mf.png_header_only(tmp_path / "bomb.png", 12_000, 12_000))
    assert caught.value.code == "media_too_large"


# -- stickers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", ["photo.png", "photo.jpg", "photo.webp", "still.gif"])
def test_a_picture_becomes_a_512_square_webp_with_transparent_padding(media: MediaFactory, sample: str) -> None:
    prepared = prepare("sticker", media(sample))
    assert prepared.converted and prepared.mime == "image/webp" and not prepared.is_animated
    assert (prepared.width, prepared.height) == (512, 512)
    assert prepared.size <= 100 * KB
    sticker = opened(prepared.path.read_bytes()).convert("RGBA")
    assert sticker.size == (512, 512)
    alpha = np.asarray(sticker)[:, :, 3]
    assert alpha[2, 256] == 0  # the wide picture leaves bands above and below
    assert alpha[256, 300] == 255  # the picture itself, opaque in its middle


def test_a_ready_static_sticker_is_sent_as_it_is(media: MediaFactory) -> None:
    path = media("sticker.webp")
    prepared = prepare("sticker", path)
    assert (prepared.path, prepared.converted, prepared.is_animated) == (path, False, False)


def test_an_animated_webp_sticker_is_accepted_within_500_kb(media: MediaFactory) -> None:
    path = media("moving.webp")
    prepared = prepare("sticker", path)
    assert (prepared.path, prepared.converted, prepared.is_animated) == (path, False, True)
    assert (prepared.mime, prepared.width, prepared.height) == ("image/webp", 512, 512)


def test_an_animated_sticker_over_500_kb_is_refused(media: MediaFactory) -> None:
    with pytest.raises(InvalidMedia) as caught:
        prepare("sticker", media("heavy-moving.webp"))
    assert caught.value.code == "media_too_large"
    assert caught.value.message.endswith("over WhatsApp's 500 KB limit for animated stickers")


@pytest.mark.parametrize(("sample", "words"), [("small-moving.webp", "512x512"), ("moving.gif", "animated WebP")])
def test_an_animated_sticker_must_be_a_512_square_webp(media: MediaFactory, sample: str, words: str) -> None:
    with pytest.raises(InvalidMedia) as caught:
        prepare("sticker", media(sample))
    assert (caught.value.field, caught.value.code) == ("sticker", "media_type_not_allowed")
    assert words in caught.value.message


def test_a_noisy_picture_is_recompressed_until_it_fits_100_kb(tmp_path: Path) -> None:
    noisy = mf.write_animation(tmp_path / "noise.png", (512, 512), "PNG", frames=1, noise=True)
    prepared = prepare("sticker", noisy)
    assert 50 * KB < prepared.size <= 100 * KB  # noise: only a lower quality makes it fit
