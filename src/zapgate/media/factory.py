"""The media store a deployment uses, chosen by ZAPGATE_MEDIA_STORE."""

from __future__ import annotations

from zapgate.db.manager import ConnectionManager
from zapgate.domain.media import StoreName, parse_store_location
from zapgate.media.postgres import PostgresMediaStore
from zapgate.media.store import MediaStore
from zapgate.settings import Settings


def media_store(settings: Settings, manager: ConnectionManager) -> MediaStore:
    """Return the media store `settings` name: PostgreSQL through `manager`, or an S3 bucket."""
    location = parse_store_location(settings.media_store)
    if location.store is StoreName.POSTGRES:
        return PostgresMediaStore(manager)
    from zapgate.media.s3 import S3MediaStore  # aiobotocore (and botocore) load only where S3 is used

    assert location.bucket is not None
    secret = settings.s3_secret_access_key
    return S3MediaStore(
        location.bucket,
        prefix=location.prefix,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=None if secret is None else secret.get_secret_value(),
    )
