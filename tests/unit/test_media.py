"""Media vocabulary: WhatsApp's size limits per kind, store keys, and where ZAPGATE_MEDIA_STORE puts media."""

import pytest

from zapgate.domain.media import (
    MB,
    MediaKind,
    StoreLocation,
    StoreName,
    check_key,
    limit_for,
    media_id_of,
    parse_store_location,
    store_key,
    within_limit,
)


@pytest.mark.parametrize(
    ("kind", "animated", "limit"),
    [
        (MediaKind.IMAGE, False, 5_000_000),
        (MediaKind.VIDEO, False, 16_000_000),
        (MediaKind.AUDIO, False, 16_000_000),
        (MediaKind.VOICE, False, 16_000_000),  # a voice note is audio
        (MediaKind.DOCUMENT, False, 100_000_000),
        (MediaKind.STICKER, False, 100_000),
        (MediaKind.STICKER, True, 500_000),
        (MediaKind.IMAGE, True, 5_000_000),  # `animated` is for stickers only
        ("video", False, 16 * MB),  # the kind as stored, a string
    ],
)
def test_whatsapps_limits_per_kind(kind: MediaKind | str, animated: bool, limit: int) -> None:
    assert limit_for(kind, animated=animated) == limit


def test_every_kind_has_a_limit() -> None:
    assert all(limit_for(kind) > 0 for kind in MediaKind)


def test_limits_are_inclusive_and_in_decimal_megabytes() -> None:
    assert within_limit("image", 5_000_000)
    assert not within_limit("image", 5_000_001)
    assert not within_limit("image", 5 * 1024 * 1024)  # 5 MiB is more than WhatsApp's 5 MB
    assert within_limit("sticker", 400_000, animated=True)
    assert not within_limit("sticker", 400_000)
    assert not within_limit("document", -1)


def test_an_unknown_kind_has_no_limit() -> None:
    with pytest.raises(ValueError):
        limit_for("gif")


def test_store_keys_are_session_then_media() -> None:
    key = store_key("cl0sess", "cm0media")
    assert key == "cl0sess/cm0media"
    assert media_id_of(key) == "cm0media"


@pytest.mark.parametrize("bad", ["", "/a", "a/", "a//b", "../a", "a/../b", "a/./b", "a b", "a\\b", "é", "a" * 65])
def test_keys_that_could_leave_their_folder_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        check_key(bad)
    with pytest.raises(ValueError):
        store_key("s", bad)


@pytest.mark.parametrize(
    ("value", "location"),
    [
        ("postgres", StoreLocation(StoreName.POSTGRES)),
        (" Postgres ", StoreLocation(StoreName.POSTGRES)),
        ("s3://media", StoreLocation(StoreName.S3, "media", "")),
        ("s3://media/", StoreLocation(StoreName.S3, "media", "")),
        ("S3://my.media-bucket/zapgate/prod/", StoreLocation(StoreName.S3, "my.media-bucket", "zapgate/prod")),
        ("s3://media//a//b", StoreLocation(StoreName.S3, "media", "a/b")),
    ],
)
def test_store_locations(value: str, location: StoreLocation) -> None:
    assert parse_store_location(value) == location


@pytest.mark.parametrize(
    "bad",
    ["", "sqlite", "file:///tmp/media", "s3://", "s3://ab", "s3://Media", "s3://-media", "s3://m/../x", "s3://m/a b"],
)
def test_store_locations_that_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_store_location(bad)
