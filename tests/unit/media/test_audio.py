"""Audio: voice notes as WhatsApp records them (Ogg/Opus mono, duration, waveform); other audio as it plays."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from tests.support.media_files import write_tone
from tests.unit.media.conftest import MediaFactory
from zapgate.domain import media_limits
from zapgate.domain.media_limits import MB
from zapgate.errors import InvalidMedia
from zapgate.media import process
from zapgate.media.process import Prepared, prepare
from zapgate.media.sniff import sniff_file


def assert_voice_note(prepared: Prepared, seconds: float = 1.0) -> None:
    """Opened again as a player would: Ogg, Opus, one channel, the right length, a waveform that moves."""
    assert prepared.mime == "audio/ogg; codecs=opus" == sniff_file(prepared.path).mime
    with av.open(str(prepared.path)) as container:
        assert container.format.name == "ogg"
        assert len(container.streams) == 1
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus"
        assert stream.codec_context.channels == 1
        assert container.duration is not None
        assert container.duration / 1_000_000 == pytest.approx(seconds, abs=0.1)
    assert prepared.duration_seconds == pytest.approx(seconds, abs=0.1)
    waveform = prepared.waveform
    assert waveform is not None and len(waveform) == 64
    assert all(0 <= value <= 100 for value in waveform)
    assert len(set(waveform)) > 10 and max(waveform) == 100
    assert sum(waveform[:16]) < sum(waveform[-16:])  # the tone gets louder, so does its waveform


@pytest.mark.parametrize(
    "sample", ["tone.wav", "tone.mp3", "tone.aac", "tone.m4a", "tone.vorbis.ogg", "tone-stereo.opus.ogg", "clip.webm"]
)
def test_any_decodable_audio_becomes_a_voice_note(media: MediaFactory, sample: str) -> None:
    source = media(sample)
    prepared = prepare("audio", source, voice=True)
    assert prepared.converted and prepared.path != source
    assert_voice_note(prepared)


def test_a_voice_note_is_encoded_at_16_khz_as_whatsapp_records_them(media: MediaFactory) -> None:
    prepared = prepare("audio", media("tone.wav"), voice=True)
    head = prepared.path.read_bytes()[:64]
    opus_head = head[head.index(b"OpusHead") :]
    assert opus_head[9] == 1  # channels
    assert int.from_bytes(opus_head[12:16], "little") == 16_000  # input sample rate


def test_a_mono_opus_file_is_already_a_voice_note(media: MediaFactory) -> None:
    path = media("tone.opus.ogg")
    prepared = prepare("audio", path, voice=True)
    assert (prepared.path, prepared.converted) == (path, False)
    assert_voice_note(prepared)


def test_silence_has_a_flat_waveform(media: MediaFactory) -> None:
    prepared = prepare("audio", media("silence.wav"), voice=True)
    assert prepared.waveform == bytes(64)
    assert prepared.duration_seconds == pytest.approx(1.0, abs=0.1)


def test_a_longer_voice_note_keeps_its_length(tmp_path: Path) -> None:
    source = write_tone(tmp_path / "long.wav", container="wav", codec="pcm_s16le", seconds=7.3)
    prepared = prepare("audio", source, voice=True)
    assert_voice_note(prepared, seconds=7.3)
    assert prepared.seconds == 7


@pytest.mark.parametrize(
    ("sample", "mime"),
    [
        ("tone.mp3", "audio/mpeg"),
        ("tone-raw.mp3", "audio/mpeg"),
        ("tone.aac", "audio/aac"),
        ("tone.m4a", "audio/mp4"),
        ("tone.amr", "audio/amr"),
        ("tone.opus.ogg", "audio/ogg; codecs=opus"),
    ],
)
def test_audio_whatsapp_plays_is_sent_as_it_is(media: MediaFactory, sample: str, mime: str) -> None:
    path = media(sample)
    prepared = prepare("audio", path)
    assert (prepared.path, prepared.converted, prepared.mime) == (path, False, mime)
    assert prepared.duration_seconds == pytest.approx(1.0, abs=0.1)
    assert prepared.waveform is None


@pytest.mark.parametrize("sample", ["tone.wav", "tone.vorbis.ogg", "clip.mp4"])
def test_other_audio_is_converted_to_aac(media: MediaFactory, sample: str) -> None:
    prepared = prepare("audio", media(sample))
    assert prepared.converted
    assert prepared.mime == "audio/mp4" == sniff_file(prepared.path).mime
    with av.open(str(prepared.path)) as container:
        assert [stream.codec_context.name for stream in container.streams] == ["aac"]
        assert container.duration is not None
        assert container.duration / 1_000_000 == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("sample", ["photo.png", "doc.pdf", "notes.txt"])
def test_a_file_that_is_no_audio_is_refused(media: MediaFactory, sample: str) -> None:
    with pytest.raises(InvalidMedia) as caught:
        prepare("audio", media(sample), declared_mime="audio/mpeg", voice=True)
    assert (caught.value.field, caught.value.code) == ("audio", "media_type_not_allowed")


def test_a_video_without_sound_has_no_audio(media: MediaFactory) -> None:
    with pytest.raises(InvalidMedia) as caught:
        prepare("audio", media("clip-mpeg4.mp4"), voice=True)
    assert caught.value.code == "media_type_not_allowed"
    assert "no audio" in caught.value.message


def test_audio_over_16_mb_is_refused(media: MediaFactory) -> None:
    path = media("tone.mp3")
    with path.open("ab") as file:
        file.write(b"\0" * (20 * MB - path.stat().st_size))
    with pytest.raises(InvalidMedia) as caught:
        prepare("audio", path)
    assert caught.value.message == "audio: 20 MB is over WhatsApp's 16 MB limit for audio"


@pytest.mark.parametrize("voice", [True, False])
def test_headers_without_sound_are_undecodable(media: MediaFactory, tmp_path: Path, voice: bool) -> None:
    whole = media("tone.opus.ogg").read_bytes()
    path = tmp_path / "cut.ogg"
    path.write_bytes(whole[: whole.index(b"OggS", 100)])  # the two header pages, no audio page
    with pytest.raises(InvalidMedia) as caught:
        prepare("audio", path, voice=voice)
    assert (caught.value.field, caught.value.code) == ("audio", "media_undecodable")


def test_audio_longer_than_the_limit_is_refused(media: MediaFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media_limits, "MAX_DURATION", 0.5)
    monkeypatch.setattr(process, "MAX_DURATION", 0.5)
    with pytest.raises(InvalidMedia) as caught:
        prepare("audio", media("tone.wav"), voice=True)
    assert caught.value.code == "media_too_large"
    assert caught.value.message == "audio: 1.0 seconds is over the 0.5 seconds zapgate processes"


def test_cover_art_does_not_make_an_mp3_a_video(media: MediaFactory) -> None:
    path = media("cover.mp3")
    prepared = prepare("audio", path)
    assert (prepared.path, prepared.mime) == (path, "audio/mpeg")
    assert_voice_note(prepare("audio", path, voice=True))
    with pytest.raises(InvalidMedia) as caught:
        prepare("video", path)
    assert caught.value.code == "media_type_not_allowed"


def test_a_conversion_too_large_for_whatsapp_is_refused_and_removed(
    media: MediaFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(media_limits.SEND_LIMIT, media_limits.MediaKind.AUDIO, 1000)  # bytes
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(InvalidMedia) as caught:
        prepare("audio", media("tone.wav"), voice=True, workdir=workdir)
    assert caught.value.code == "media_too_large"
    assert caught.value.message.endswith("over WhatsApp's 1000 bytes limit for audio")
    assert list(workdir.iterdir()) == []
