"""Videos as WhatsApp plays them: MP4 with H.264 and AAC, a size, a duration and a first-frame thumbnail."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest
from PIL import Image

from tests.unit.media.conftest import MediaFactory
from zapgate.domain import media_limits
from zapgate.domain.media_limits import MB
from zapgate.errors import InvalidMedia
from zapgate.media import process
from zapgate.media.process import THUMBNAIL_SIDE, prepare
from zapgate.media.sniff import sniff_file


def streams_of(path: Path) -> tuple[list[str], float, str]:
    """(codec names, duration in seconds, video pixel format) as a player would find them."""
    with av.open(str(path)) as container:
        assert container.duration is not None
        video = container.streams.video[0]
        names = [stream.codec_context.name for stream in container.streams]
        return names, container.duration / 1_000_000, video.codec_context.pix_fmt or ""


def test_an_h264_aac_mp4_is_sent_as_it_is(media: MediaFactory) -> None:
    path = media("clip.mp4")
    prepared = prepare("video", path)
    assert (prepared.path, prepared.converted, prepared.mime) == (path, False, "video/mp4")
    assert (prepared.width, prepared.height) == (160, 120)
    assert prepared.duration_seconds == pytest.approx(1.0, abs=0.1)
    assert prepared.seconds == 1
    assert prepared.thumbnail is not None
    thumb = Image.open(io.BytesIO(prepared.thumbnail.jpeg))
    assert thumb.format == "JPEG" and thumb.size == (THUMBNAIL_SIDE, 54)
    assert not prepared.is_animated


@pytest.mark.parametrize(
    ("sample", "size"),
    [
        ("clip.webm", (160, 120)),  # VP8 + Opus
        ("clip.mov", (160, 120)),  # H.264 + AAC, but QuickTime
        ("clip.mkv", (160, 120)),  # MPEG-4 part 2 + MP3
        ("clip.avi", (160, 120)),  # odd 161 x 121: H.264 4:2:0 wants even sides
        ("clip-mpeg4.mp4", (160, 120)),  # MP4, but not H.264
    ],
)
def test_other_videos_are_converted_to_h264_aac_mp4(media: MediaFactory, sample: str, size: tuple[int, int]) -> None:
    source = media(sample)
    with av.open(str(source)) as original:
        had_audio = len(original.streams.audio) > 0
    prepared = prepare("video", source)
    assert prepared.converted and prepared.path != source
    assert prepared.mime == "video/mp4" == sniff_file(prepared.path).mime
    names, duration, pix_fmt = streams_of(prepared.path)
    assert names == (["h264", "aac"] if had_audio else ["h264"])
    assert pix_fmt == "yuv420p"
    assert duration == pytest.approx(1.0, abs=0.1)
    assert (prepared.width, prepared.height) == size
    assert prepared.thumbnail is not None and prepared.thumbnail.jpeg.startswith(b"\xff\xd8")


def test_a_gif_becomes_a_silent_looping_mp4(media: MediaFactory) -> None:
    prepared = prepare("video", media("moving.gif"))
    assert prepared.is_animated  # sent with gifPlayback
    names, duration, _ = streams_of(prepared.path)
    assert names == ["h264"]
    assert duration == pytest.approx(0.4, abs=0.1)


@pytest.mark.parametrize("sample", ["tone.m4a", "photo.jpg", "doc.pdf"])
def test_a_file_without_pictures_is_no_video(media: MediaFactory, sample: str) -> None:
    with pytest.raises(InvalidMedia) as caught:
        prepare("video", media(sample), declared_mime="video/mp4")
    assert (caught.value.field, caught.value.code) == ("video", "media_type_not_allowed")


def test_a_video_over_16_mb_is_refused(media: MediaFactory) -> None:
    path = media("clip.mp4")
    with path.open("ab") as file:  # players ignore bytes after the last box
        file.write(b"\0" * (17 * MB - path.stat().st_size))
    with pytest.raises(InvalidMedia) as caught:
        prepare("video", path)
    assert caught.value.message == "video: 17 MB is over WhatsApp's 16 MB limit for videos"


def test_a_video_wider_than_4096_is_refused(media: MediaFactory) -> None:
    with pytest.raises(InvalidMedia) as caught:
        prepare("video", media("wide.avi"))
    assert caught.value.code == "media_too_large"
    assert "4200x16" in caught.value.message


def test_a_video_longer_than_the_limit_is_refused(media: MediaFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media_limits, "MAX_DURATION", 0.5)
    monkeypatch.setattr(process, "MAX_DURATION", 0.5)
    with pytest.raises(InvalidMedia) as caught:
        prepare("video", media("clip.webm"))
    assert caught.value.code == "media_too_large"


def test_a_truncated_video_is_undecodable_and_leaves_no_file(media: MediaFactory, tmp_path: Path) -> None:
    path = tmp_path / "cut.webm"
    path.write_bytes(media("clip.webm").read_bytes()[:300])
    with pytest.raises(InvalidMedia) as caught:
        prepare("video", path, workdir=tmp_path)
    assert (caught.value.field, caught.value.code) == ("video", "media_undecodable")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.webm", "cut.webm"]


def test_without_an_h264_encoder_a_conversion_is_refused_naming_what_is_accepted(
    media: MediaFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "_H264_ENCODERS", ("no-such-encoder",))
    with pytest.raises(InvalidMedia) as caught:
        prepare("video", media("clip.webm"))
    assert caught.value.code == "media_type_not_allowed"
    assert "send MP4 with H.264 video and AAC audio" in caught.value.message
    assert prepare("video", media("clip.mp4")).mime == "video/mp4"  # what needs no conversion still goes


def test_a_conversion_that_fails_midway_leaves_no_file(
    media: MediaFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(job: object, out: Path, encoder: str, *, keep_audio: bool) -> tuple[int, int]:
        out.write_bytes(b"half a video")
        raise ValueError("the decoder gave up")

    monkeypatch.setattr(process, "_transcode_video", broken)
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(InvalidMedia) as caught:
        prepare("video", media("clip.webm"), workdir=workdir)
    assert caught.value.code == "media_undecodable"
    assert list(workdir.iterdir()) == []
