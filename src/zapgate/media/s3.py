"""The S3 media store: each file one object in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, Garage, ...).

`ZAPGATE_MEDIA_STORE=s3://bucket/prefix`; object keys are `{prefix}/{client_id}/{session_row_id}/{media_id}`,
so a session's media, or a client's, is one listing away (`delete_prefix`, `delete_client`).

Library: aiobotocore. It is asyncio-native (aiohttp underneath), so a put or a read streams on the event loop
with no thread per transfer; it gives the multipart calls themselves (create, upload part, complete, abort),
so a failed put is aborted by us and leaves no parts; and it is botocore, the client every S3-compatible
server tests against (signing, retries, the AWS credential chain when no keys are set). Its cost is weight:
botocore is ~30 MB installed and aiobotocore pins a narrow botocore range. boto3 (sync: a thread per
transfer, and its managed transfers hide the abort) and minio (sync too) were the others; both are lighter,
neither fits an asyncio server without threads. Vendor types stay in this module.

A put streams: bytes are cut into parts of `PART_SIZE` (S3 wants ≥ 5 MiB but the last) and each is uploaded
as soon as it is full, so a put holds a part or two (and the HTTP layer's copy), whatever the file's size:
~30 MiB measured (README: Performance). A file smaller than one part is one PUT. If anything fails (the source
raises, the server refuses, the task is cancelled) the multipart upload is aborted before the error goes on,
so no object appears and no parts stay billed. A process that dies mid-put leaves an incomplete upload: give
the bucket a lifecycle rule that aborts incomplete uploads after a day (README: Operations, "Media store").
A read is one GET (with `Range` for a byte range), streamed as it arrives.

Checksums are sent only where S3 requires them (`when_required`): botocore's newer default (a CRC32 trailer
on every upload, with aws-chunked encoding) is refused by many S3-compatible servers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from zapgate.domain.ids import client_id as valid_client_id
from zapgate.domain.media import check_key
from zapgate.errors import MediaNotFound, MediaStoreError
from zapgate.log import get_logger
from zapgate.media.store import Digest, MediaStream, Stored, check_prefix, check_range, empty_stream, rechunk

if TYPE_CHECKING:
    from aiobotocore.response import StreamingBody
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef, GetObjectOutputTypeDef

log = get_logger(__name__)

PART_SIZE = 8 << 20  # bytes per multipart part (S3: at least 5 MiB, except the last; at most 10,000 parts)
READ_SIZE = 256 << 10  # bytes asked of the response body at a time
DELETE_BATCH = 1000  # keys per DeleteObjects (S3's limit)
MAX_CONNECTIONS = 64  # open connections to the server; a stream being read holds one until it ends
_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}


class S3MediaStore:
    """Media bytes as objects in an S3-compatible bucket, one per file."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_size: int = PART_SIZE,
    ) -> None:
        """Unset keys (and region) fall back to botocore's own chain: AWS_* variables, ~/.aws, instance roles."""
        if part_size < 5 << 20:
            raise ValueError("part_size must be at least 5 MiB (S3's smallest part)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self._client_options: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region_name": region,
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
            "config": AioConfig(
                # S3-compatible servers at an address of their own rarely serve bucket.host names
                s3={"addressing_style": "path" if endpoint_url else "auto"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"mode": "standard", "max_attempts": 3},
                connect_timeout=10,
                read_timeout=60,
                max_pool_connections=MAX_CONNECTIONS,
            ),
        }
        self._client: S3Client | None = None
        self._exit = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()

    def object_key(self, client_id: str, key: str) -> str:
        """Return the bucket's key for a client's store key: `{prefix}/{client_id}/{key}`."""
        return "/".join(part for part in (self.prefix, valid_client_id(client_id), check_key(key)) if part)

    def _folder(self, client_id: str, prefix: str | None = None) -> str:
        parts = (self.prefix, valid_client_id(client_id), None if prefix is None else check_prefix(prefix))
        return "/".join(part for part in parts if part) + "/"

    async def _s3(self) -> S3Client:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    creator = get_session().create_client("s3", **self._client_options)
                    self._client = await self._exit.enter_async_context(creator)
        return self._client

    async def put(self, client_id: str, key: str, chunks: AsyncIterable[bytes]) -> Stored:
        """Store `chunks` under `key`: one PUT for a small file, a multipart upload (aborted on failure) else."""
        object_key = self.object_key(client_id, key)
        s3 = await self._s3()
        digest = Digest()
        upload_id: str | None = None
        parts: list[CompletedPartTypeDef] = []
        try:
            async for piece in rechunk(chunks, self.part_size, digest):
                if upload_id is None and len(piece) < self.part_size:  # the first piece is the last: one PUT
                    with _translated(key):
                        await s3.put_object(Bucket=self.bucket, Key=object_key, Body=piece)
                    continue
                if upload_id is None:
                    with _translated(key):
                        created = await s3.create_multipart_upload(Bucket=self.bucket, Key=object_key)
                    upload_id = created["UploadId"]
                number = len(parts) + 1
                with _translated(key):
                    part = await s3.upload_part(
                        Bucket=self.bucket, Key=object_key, UploadId=upload_id, PartNumber=number, Body=piece
                    )
                parts.append({"PartNumber": number, "ETag": part["ETag"]})
            if upload_id is not None:
                with _translated(key):
                    await s3.complete_multipart_upload(
                        Bucket=self.bucket, Key=object_key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                    )
        except BaseException:
            if upload_id is not None:
                await self._abort(object_key, upload_id)
            raise
        return digest.stored()

    async def _abort(self, object_key: str, upload_id: str) -> None:
        # shielded: a cancelled put must still abort its upload
        aborting = asyncio.ensure_future(self._abort_now(object_key, upload_id))
        try:
            await asyncio.shield(aborting)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # a lifecycle rule on the bucket aborts incomplete uploads in the end (README: Operations, "Media store")
            log.warning("media.abort_failed", error=repr(exc))

    async def _abort_now(self, object_key: str, upload_id: str) -> None:
        s3 = await self._s3()
        await s3.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload_id)

    async def open(self, client_id: str, key: str, *, start: int = 0, end: int | None = None) -> MediaStream:
        """Return a stream of the object under `key` from `start` to `end` (exclusive): one GET, with Range."""
        check_range(start, end)
        object_key = self.object_key(client_id, key)
        s3 = await self._s3()
        if start == end:
            await self._exists(s3, object_key, key)
            return empty_stream()
        try:
            with _translated(key):
                response = await self._get(s3, object_key, start, end)
        except MediaStoreError as exc:
            if _code(exc.__cause__) != "InvalidRange":  # a range past the end, or any range of an empty object
                raise
            await self._exists(s3, object_key, key)
            return empty_stream()
        body = response["Body"]
        return MediaStream(_read(body, key), on_close=body.aclose)

    async def _get(self, s3: S3Client, object_key: str, start: int, end: int | None) -> GetObjectOutputTypeDef:
        if start == 0 and end is None:
            return await s3.get_object(Bucket=self.bucket, Key=object_key)
        ranged = f"bytes={start}-{'' if end is None else end - 1}"  # HTTP ranges end inclusive
        return await s3.get_object(Bucket=self.bucket, Key=object_key, Range=ranged)

    async def _exists(self, s3: S3Client, object_key: str, key: str) -> None:
        with _translated(key):
            await s3.head_object(Bucket=self.bucket, Key=object_key)

    async def delete(self, client_id: str, keys: Iterable[str]) -> None:
        """Delete the objects under `keys` (a key with no object is no error)."""
        await self._delete_objects(sorted({self.object_key(client_id, key) for key in keys}))

    async def delete_prefix(self, client_id: str, prefix: str) -> None:
        """Delete every object (and abort every upload) under `prefix`, a session's row id or deeper."""
        await self._delete_folder(self._folder(client_id, prefix))

    async def delete_client(self, client_id: str) -> None:
        """Delete every object (and abort every upload) of the client."""
        await self._delete_folder(self._folder(client_id))

    async def _delete_folder(self, folder: str) -> None:
        s3 = await self._s3()
        with _translated(folder):
            async for listing in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder):
                await self._delete_objects([item["Key"] for item in listing.get("Contents", []) if "Key" in item])
            uploads = s3.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=folder)
            async for page in uploads:
                for upload in page.get("Uploads", []):
                    await s3.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])

    async def _delete_objects(self, object_keys: list[str]) -> None:
        if not object_keys:
            return
        s3 = await self._s3()
        for first in range(0, len(object_keys), DELETE_BATCH):
            batch = object_keys[first : first + DELETE_BATCH]
            with _translated(batch[0]):
                answer = await s3.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
            if errors := answer.get("Errors"):
                raise MediaStoreError(
                    "the S3 media store kept some objects it was asked to delete",
                    count=len(errors),
                    code=errors[0].get("Code"),
                )

    async def close(self) -> None:
        """Close the client and its connections."""
        async with self._lock:
            await self._exit.aclose()
            self._client = None
            self._exit = contextlib.AsyncExitStack()


async def _read(body: StreamingBody, key: str) -> AsyncIterator[bytes]:
    try:
        with _translated(key):
            async for chunk in body.iter_chunks(READ_SIZE):
                yield chunk
    finally:
        await body.aclose()


def _code(exc: BaseException | None) -> str | None:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return None


@contextlib.contextmanager
def _translated(key: str) -> Iterator[None]:
    """Turn botocore's and aiohttp's errors into MediaNotFound / MediaStoreError (chained)."""
    try:
        yield
    except ClientError as exc:
        code = _code(exc)
        if code in _NOT_FOUND:
            raise MediaNotFound("nothing is stored under this key", key=key) from exc
        _fail(exc, code)
    except (BotoCoreError, aiohttp.ClientError, TimeoutError) as exc:
        _fail(exc, type(exc).__name__)


def _fail(exc: BaseException, code: str | None) -> NoReturn:
    raise MediaStoreError(f"the S3 media store failed: {code}", code=code) from exc
