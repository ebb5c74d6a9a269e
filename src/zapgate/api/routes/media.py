"""Media over HTTP: upload a file, send a message with its file in the same request, read files, signed links."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request, status
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from zapgate.api.deps import Sessions, client_of_request, from_state
from zapgate.api.limits import address_of
from zapgate.api.routes.whatsapp import _accepted
from zapgate.api.schemas import MediaOut, MessageAccepted, MessageRequest, Problem
from zapgate.domain.content import parse_outgoing
from zapgate.domain.ids import SESSION_ID_PATTERN
from zapgate.domain.media import MediaRecord
from zapgate.errors import AuthenticationFailed, InvalidRequest, TooManyFailures
from zapgate.log import get_logger
from zapgate.media.store import MediaStream
from zapgate.services.media import MediaFiles, MediaView, media_object

ClientId = Annotated[str, Depends(client_of_request)]
Media = Annotated[MediaFiles, Depends(from_state("media", MediaFiles))]

router = APIRouter(prefix="/whatsapp", tags=["media"])
public = APIRouter(tags=["media"])
log = get_logger(__name__)

_MEDIA_ID = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "No such file."}}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_FILE_PART = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        }
    }
}


def media_out(view: MediaView) -> MediaOut:
    """The API view of a stored file."""
    return MediaOut.model_validate(
        {**media_object(view.record, view.url), "url": view.url, "url_expires_at": view.url_expires}
    )


async def _file_of(request: Request) -> tuple[dict[str, Any], UploadFile]:
    form = await request.form(max_files=1, max_fields=10)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("file: a multipart/form-data part named file is required", field="file")
    fields = {name: value for name, value in form.items() if isinstance(value, str)}
    return fields, upload


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(1024 * 1024):
        yield chunk


@router.post(
    "/media",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_FILE_PART,
    responses={404: {"model": Problem, "description": "No such session."}},
)
async def upload_media(
    request: Request,
    client: ClientId,
    media: Media,
    session_id: Annotated[str, Query(alias="sessionId", pattern=SESSION_ID_PATTERN)],
) -> MediaOut:
    """Upload a file (multipart, part `file`) to send later by its `id` (`image: {"id": ...}`): kept 30 days.

    Its type is told from its bytes, never from the file name or the declared type. Up to 100 MB (the
    largest file WhatsApp takes, a document); each kind's own limit is checked when it is sent.
    """
    request.state.session_id = session_id
    _, upload = await _file_of(request)
    try:
        record = await media.upload(client, session_id, _chunks(upload), filename=upload.filename)
    finally:
        await upload.close()
    return media_out(await media.get(client, record.id))


@router.post(
    "/messages/upload",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MessageAccepted,
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["message", "file"],
                        "properties": {
                            "message": {"type": "string", "description": "The JSON body of POST /whatsapp/messages."},
                            "file": {"type": "string", "format": "binary"},
                        },
                    }
                }
            }
        }
    },
)
async def send_upload(request: Request, client: ClientId, media: Media, sessions: Sessions) -> Response:
    """Send a media message with its file in the same request: multipart parts `message` (the JSON body of
    `POST /whatsapp/messages`, its media object without `id` or `link`) and `file`."""
    fields, upload = await _file_of(request)
    try:
        try:
            body = MessageRequest.model_validate(json.loads(fields.get("message", "")))
        except (ValueError, ValidationError) as exc:
            raise InvalidRequest(f"message: the JSON body of POST /whatsapp/messages expected ({exc})") from exc
        request.state.session_id = body.session_id
        part = (
            getattr(body, body.type, None) if body.type in {"image", "video", "audio", "document", "sticker"} else None
        )
        if part is None:
            raise InvalidRequest(f"message.type: a media type with its {body.type} object expected", field="type")
        if part.id is not None or part.link is not None:
            raise InvalidRequest(f"message.{body.type}: no id or link with an uploaded file", field=body.type)
        stored = await media.upload(client, body.session_id, _chunks(upload), filename=upload.filename)
    finally:
        await upload.close()
    fields_out = body.model_dump(
        exclude_none=True, exclude_unset=True, exclude={"session_id", "to", "messaging_product", "recipient_type"}
    )
    fields_out[body.type]["id"] = stored.id
    outgoing = parse_outgoing({"type": body.type, **fields_out})
    return _accepted(await sessions.send_message(client, body.session_id, body.to, outgoing))


@router.get("/media/{mediaId}/info", responses=_NOT_FOUND)
async def media_info(mediaId: _MEDIA_ID, client: ClientId, media: Media) -> MediaOut:
    """A file's type, size, SHA-256, dimensions or duration, and a fresh signed link to it (no API key needed)."""
    return media_out(await media.get(client, mediaId))


_BYTES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file's bytes, of its type.",
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
    },
    206: {
        "description": "The range asked for.",
        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
    },
    416: {"description": "A range outside the file."},
}


@router.get("/media/{mediaId}", response_class=Response, responses={**_NOT_FOUND, **_BYTES})
async def download_media(mediaId: _MEDIA_ID, request: Request, client: ClientId, media: Media) -> Response:
    """The bytes of a file (byte ranges with `Range`)."""
    return await _serve(request, lambda start, end: media.open(client, mediaId, start=start, end=end))


@public.get(
    "/media/{clientId}/{mediaId}",
    response_class=Response,
    responses={**_NOT_FOUND, **_BYTES, 401: {"model": Problem, "description": "The link expired, or is not valid."}},
)
async def signed_media(
    clientId: Annotated[str, Path(max_length=48)],
    mediaId: _MEDIA_ID,
    request: Request,
    media: Media,
    expires: Annotated[int, Query(ge=0)],
    signature: Annotated[str, Query(min_length=1, max_length=128)],
) -> Response:
    """The bytes of a file by a signed link (as events and webhooks carry them): no API key, until it expires.

    An address whose links keep failing (`ZAPGATE_ADMIN_MAX_FAILURES` in `ZAPGATE_ADMIN_FAILURE_WINDOW`, as for
    admin keys) is refused with 429 until its window ends, even with a good link.
    """
    failures = request.app.state.limits.link_failures
    address, now = address_of(request), time.monotonic()
    wait = failures.blocked(address, now)
    if wait > 0:
        raise TooManyFailures("too many invalid media links from this address: try again later", retry_after=wait)
    try:
        return await _serve(
            request,
            lambda start, end: media.open_signed(clientId, mediaId, expires, signature, start=start, end=end),
        )
    except AuthenticationFailed:
        if failures.fail(address, now):
            log.warning("media.address_locked_out", address=address, seconds=failures.window)
        raise


async def _serve(request: Request, opener: Any) -> Response:
    wanted = request.headers.get("range")
    start, end = 0, None
    if wanted is not None:
        match = _RANGE.fullmatch(wanted.strip())
        if match is None or match.group(1) == "":
            return Response(status_code=416)
        start = int(match.group(1))
        end = int(match.group(2)) + 1 if match.group(2) else None
        if end is not None and end <= start:
            return Response(status_code=416)
    record: MediaRecord
    stream: MediaStream
    record, stream = await opener(start, end)
    size = record.size or 0
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{record.sha256}"',
        "Cache-Control": "private, max-age=3600",
        "X-Content-Type-Options": "nosniff",
    }
    if record.filename:
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{_quote(record.filename)}"
    if wanted is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(stream, media_type=record.mime_type, headers=headers)
    if start >= size:
        await stream.aclose()
        return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
    last = min(size, end if end is not None else size) - 1
    headers["Content-Range"] = f"bytes {start}-{last}/{size}"
    headers["Content-Length"] = str(last - start + 1)
    return StreamingResponse(stream, status_code=206, media_type=record.mime_type, headers=headers)


def _quote(name: str) -> str:
    return quote(name, safe="")
