"""WhatsApp's size limits, and the words a user reads when a file is over one."""

from __future__ import annotations

import pytest

from zapgate.domain.content import MediaKind
from zapgate.domain.media_limits import KB, MB, check_duration, check_size, human_size, send_limit
from zapgate.errors import InvalidMedia, InvalidRequest


@pytest.mark.parametrize(
    ("size", "text"),
    [(900, "900 bytes"), (95 * KB, "95 KB"), (int(6.2 * MB), "6.2 MB"), (5 * MB, "5 MB"), (100 * MB, "100 MB")],
)
def test_sizes_read_as_people_write_them(size: int, text: str) -> None:
    assert human_size(size) == text


@pytest.mark.parametrize(
    ("kind", "animated", "limit"),
    [
        (MediaKind.IMAGE, False, 5 * MB),
        (MediaKind.VIDEO, False, 16 * MB),
        (MediaKind.AUDIO, False, 16 * MB),
        (MediaKind.DOCUMENT, False, 100 * MB),
        (MediaKind.STICKER, False, 100 * KB),
        (MediaKind.STICKER, True, 500 * KB),
    ],
)
def test_each_kind_has_whatsapps_limit(kind: MediaKind, animated: bool, limit: int) -> None:
    assert send_limit(kind, animated=animated) == limit
    check_size(kind, limit, field="file", animated=animated)  # the limit itself is allowed
    with pytest.raises(InvalidMedia) as caught:
        check_size(kind, limit + 1, field="file", animated=animated)
    assert caught.value.code == "media_too_large"


def test_an_oversized_image_says_both_sizes_and_names_the_field() -> None:
    with pytest.raises(InvalidMedia) as caught:
        check_size(MediaKind.IMAGE, int(6.2 * MB), field="image")
    error = caught.value
    assert isinstance(error, InvalidRequest)  # answered as the caller's mistake
    assert error.message == "image: 6.2 MB is over WhatsApp's 5 MB limit for images"
    assert (error.field, error.code) == ("image", "media_too_large")
    assert error.details["field"] == "image"  # where api/problems.py reads the field


def test_one_byte_over_does_not_read_as_equal_sizes() -> None:
    with pytest.raises(InvalidMedia) as caught:
        check_size(MediaKind.IMAGE, 5 * MB + 1, field="image")
    assert caught.value.message == f"image: {5 * MB + 1} bytes is over WhatsApp's 5 MB limit for images"


def test_animated_stickers_are_named_as_such() -> None:
    with pytest.raises(InvalidMedia) as caught:
        check_size(MediaKind.STICKER, 600 * KB, field="sticker", animated=True)
    assert caught.value.message == "sticker: 600 KB is over WhatsApp's 500 KB limit for animated stickers"


def test_a_three_hour_recording_is_over_the_two_hours_processed() -> None:
    check_duration(2 * 3600, field="audio")
    with pytest.raises(InvalidMedia) as caught:
        check_duration(3 * 3600, field="audio")
    assert caught.value.message == "audio: 180 minutes is over the 120 minutes zapgate processes"
    assert caught.value.code == "media_too_large"
