"""Media vocabulary: store keys, and where ZAPGATE_MEDIA_STORE puts media."""

import pytest

from zapgate.domain.media import (
    StoreLocation,
    StoreName,
    check_key,
    media_id_of,
    parse_store_location,
    store_key,
)


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
