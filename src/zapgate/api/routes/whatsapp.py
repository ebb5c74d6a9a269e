"""The client's WhatsApp API (the seed's endpoints), authenticated by the client's API key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.datastructures import FormData, UploadFile
from starlette.types import Receive, Scope, Send

from zapgate import metrics
from zapgate.api.connections import Connection, Connections, transport_of, unsent_bytes
from zapgate.api.deps import (
    AppSettings,
    Audit,
    Chats,
    Events,
    Messages,
    Sessions,
    client_of_request,
    from_state,
    presented_key,
)
from zapgate.api.events import event_body
from zapgate.api.schemas import (
    Accepted,
    AuditEntryOut,
    AuditPage,
    ContactOut,
    CreateSessionRequest,
    EditMessageRequest,
    EnterCodeRequest,
    FaultRequest,
    InboundAccepted,
    InboundRequest,
    MessageAccepted,
    MessageOut,
    MessagePage,
    MessageRequest,
    PairingCodeRequest,
    PresenceOut,
    PresenceRequest,
    Problem,
    QrOut,
    ReactionOut,
    ReadOut,
    ReadRequest,
    ScanRequest,
    SendMessageRequest,
    SessionList,
    SessionOut,
    StatusStepOut,
    VoteOut,
)
from zapgate.domain.content import parse_outgoing
from zapgate.domain.ids import MAX_ROW_ID, SESSION_ID_PATTERN, row_id
from zapgate.domain.ids import ClientId as ClientIdType
from zapgate.domain.records import AuditEntry, Contact, Session
from zapgate.engines import registry
from zapgate.errors import InvalidRequest, NotFound
from zapgate.log import get_logger
from zapgate.services.clients import hash_key
from zapgate.services.events import Subscription
from zapgate.services.messages import MessageView
from zapgate.services.qr import qr_data_url, qr_png, qr_svg
from zapgate.services.sandbox import InboundFile
from zapgate.services.send_intake import SendAccepted
from zapgate.services.sessions import SessionService

ClientId = Annotated[str, Depends(client_of_request)]
OpenConnections = Annotated[Connections, Depends(from_state("connections", Connections))]
log = get_logger(__name__)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong API key."},
    422: {"model": Problem, "description": "Invalid input, with the invalid fields."},
    429: {
        "model": Problem,
        "description": "Over the API key's request rate (ZAPGATE_REQUEST_RATE); `Retry-After` says when to retry.",
        "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    },
    503: {"model": Problem, "description": "The database is unavailable."},
}

router = APIRouter(prefix="/whatsapp", tags=["whatsapp"], responses=_ERRORS)


def session_out(session: Session, desired: str | None = None) -> SessionOut:
    """Return the API view of a session."""
    return SessionOut(
        session_id=session.session_id,
        status=session.status,
        engine=session.engine,
        sandbox=registry.simulated(session.engine),
        phone_number=session.phone_number,
        jid=session.jid,
        qr_code=session.qr_code,
        qr_expires_at=session.qr_expires_at,
        pairing_code=session.pairing_code,
        last_error=session.last_error,
        status_code=session.status_code,
        status_details=session.status_details,
        desired=desired,
        created_at=session.created_at,
        updated_at=session.updated_at,
    )


@router.post(
    "/session",
    status_code=status.HTTP_201_CREATED,
    responses={
        403: {"model": Problem, "description": "The engine is turned off for this client (`engine_not_allowed`)."},
        409: {
            "model": Problem,
            "description": "A session with this id exists, or the client holds its quota of sessions "
            "(`quota_exceeded`, with `quota` and `limit`).",
        },
    },
)
async def create_session(body: CreateSessionRequest, client: ClientId, sessions: Sessions) -> SessionOut:
    """Create a session; a worker starts it at once: QR codes to scan, or with `phoneNumber` a pairing code."""
    created = await sessions.create(client, body.session_id, engine=body.engine, phone_number=body.phone_number)
    return session_out(created, "running")


@router.get("/sessions")
async def list_sessions(client: ClientId, sessions: Sessions) -> SessionList:
    """List the client's sessions, oldest first."""
    return SessionList(sessions=[session_out(session) for session in await sessions.list(client)])


@router.get("/sessions/{sessionId}", responses={404: {"model": Problem, "description": "No such session."}})
async def get_session(sessionId: str, client: ClientId, sessions: Sessions) -> SessionOut:
    """Return one session: its status, the current QR code or pairing code, the linked number."""
    view = await sessions.get(client, sessionId)
    return session_out(view.session, view.desired)


@router.post(
    "/send",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MessageAccepted,
    responses={
        404: {"model": Problem, "description": "No such session."},
        409: {"model": Problem, "description": "The session cannot send in its state (logged out, failed, ...)."},
        429: {
            "model": Problem,
            "description": "Over the session's send rate, or the API key's request rate; `Retry-After` says when "
            "to try again.",
            "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
        },
    },
)
async def send_message(
    body: SendMessageRequest,
    client: ClientId,
    sessions: Sessions,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="Any unique string per message: a retry with the same key answers the first result "
            "and sends nothing new (keys are kept a day).",
        ),
    ] = None,
) -> Response:
    """Accept a text for sending: stored before this answers, then sent by the session's worker in order.

    Accepted while the session reconnects, it goes out once the session is back. Over the session's send
    rate (ZAPGATE_SEND_RATE per second, bursts of ZAPGATE_SEND_BURST) the answer is 429 with Retry-After.
    """
    with metrics.ACCEPT_LATENCY.time():
        accepted = await sessions.send_text(
            client, body.session_id, body.to, body.message, idempotency_key=idempotency_key
        )
    # the hot path: the body is built directly (MessageAccepted documents it; a test checks they agree)
    headers = {"Idempotent-Replayed": "true"} if accepted.replayed else None
    return JSONResponse(accepted.as_json(), status_code=status.HTTP_202_ACCEPTED, headers=headers)


_IDEMPOTENCY_KEY = Header(
    alias="Idempotency-Key",
    max_length=255,
    description="Any unique string per message: a retry with the same key answers the first result "
    "and sends nothing new (keys are kept a day).",
)


def _accepted(accepted: SendAccepted) -> Response:
    headers = {"Idempotent-Replayed": "true"} if accepted.replayed else None
    return JSONResponse(accepted.as_json(), status_code=status.HTTP_202_ACCEPTED, headers=headers)


@router.post(
    "/messages",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MessageAccepted,
    responses={
        403: {"model": Problem, "description": "group_invite: the session is not an admin of the group."},
        404: {"model": Problem, "description": "No such session (or, for group_invite, no such group)."},
        409: {"model": Problem, "description": "The session cannot send in its state (logged out, failed, ...)."},
        429: {
            "model": Problem,
            "description": "Over the session's send rate, or the API key's request rate; `Retry-After` says when.",
            "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
        },
    },
)
async def send_typed_message(
    body: MessageRequest,
    client: ClientId,
    sessions: Sessions,
    idempotency_key: Annotated[str | None, _IDEMPOTENCY_KEY] = None,
) -> Response:
    """Accept a message of any kind, in the WhatsApp Cloud API's shape: stored, then sent in order.

    `type` names the kind and the object of that name holds it: `text`, `image`, `video`, `audio` (a voice
    note with `voice: true`), `document`, `sticker`, `location`, `contacts`, `reaction` (an empty emoji
    removes it), `poll` or `group_invite` (`{group_id, caption?}`: an invitation to a group the session is an
    admin of, with the group's current code, asked of WhatsApp now: 403 for a member who is not an admin).
    `context.message_id` makes it a reply; `mentions` names who it mentions. Every kind shares the send queue,
    the Idempotency-Key, the rate limit and pacing of `POST /whatsapp/send`.
    """
    fields = body.model_dump(
        exclude_none=True, exclude_unset=True, exclude={"session_id", "to", "messaging_product", "recipient_type"}
    )
    outgoing = parse_outgoing({"type": body.type, **fields})
    accepted = await sessions.send_message(client, body.session_id, body.to, outgoing, idempotency_key=idempotency_key)
    return _accepted(accepted)


_MESSAGE_ID = Annotated[str, Path(min_length=1, max_length=128)]
_CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such session or message."},
    409: {"model": Problem, "description": "Not a message WhatsApp lets the session change now (see detail)."},
}


@router.patch(
    "/messages/{messageId}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MessageAccepted,
    responses=_CHANGE_ERRORS,
)
async def edit_message(
    messageId: _MESSAGE_ID, body: EditMessageRequest, client: ClientId, sessions: Sessions
) -> Response:
    """Edit a text (or a caption) the session sent, within WhatsApp's 15 minutes: the edit is queued as a message.

    Once sent, the message shows the new text (`editedAt`; the earlier one is kept) and a `message-edited`
    event is announced.
    """
    return _accepted(await sessions.change_message(client, body.session_id, messageId, text=body.text))


@router.delete(
    "/messages/{messageId}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MessageAccepted,
    responses=_CHANGE_ERRORS,
)
async def delete_message(
    messageId: _MESSAGE_ID,
    client: ClientId,
    sessions: Sessions,
    session_id: Annotated[str, Query(alias="sessionId", pattern=SESSION_ID_PATTERN)],
) -> Response:
    """Delete a message the session sent for everyone (within about two and a half days, as WhatsApp allows).

    Queued as a message; once sent, the message is marked `deletedAt` (its content kept or erased as
    ZAPGATE_ERASE_DELETED_MESSAGES says) and a `message-deleted` event is announced.
    """
    return _accepted(await sessions.change_message(client, session_id, messageId))


_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "No such session."}}


@router.get(
    "/sessions/{sessionId}/qr",
    responses={
        **_NOT_FOUND,
        200: {
            "description": "The current QR code: JSON (raw code and PNG data URL), or the image itself by Accept.",
            "content": {"image/png": {}, "image/svg+xml": {}},
        },
    },
)
async def get_qr(sessionId: str, request: Request, client: ClientId, sessions: Sessions) -> Response:
    """Return the session's current QR code; 404 with the reason when it shows none (linked, not started...)."""
    view = await sessions.get(client, sessionId)
    session = view.session
    if not session.qr_code:
        raise NotFound(
            f"session {sessionId!r} shows no QR code: it is {session.status}"
            + (" (pairing by code)" if session.pairing_code else ""),
            status=session.status,
        )
    accept = request.headers.get("accept", "")
    if "image/png" in accept:
        return Response(qr_png(session.qr_code), media_type="image/png")
    if "image/svg+xml" in accept:
        return Response(qr_svg(session.qr_code), media_type="image/svg+xml")
    body = QrOut(
        session_id=session.session_id,
        qr=session.qr_code,
        qr_data_url=qr_data_url(session.qr_code),
        expires_at=session.qr_expires_at,
    )
    return JSONResponse(body.model_dump(by_alias=True, mode="json"))


@router.post("/sessions/{sessionId}/pairing-code", status_code=status.HTTP_202_ACCEPTED, responses=_NOT_FOUND)
async def request_pairing_code(
    sessionId: str, body: PairingCodeRequest, client: ClientId, sessions: Sessions
) -> SessionOut:
    """Pair by a code for `phoneNumber` instead of by QR; the code arrives on the session and as an event."""
    view = await sessions.request_pairing_code(client, sessionId, body.phone_number)
    return session_out(view.session, view.desired)


@router.post("/sessions/{sessionId}/restart", status_code=status.HTTP_202_ACCEPTED, responses=_NOT_FOUND)
async def restart_session(sessionId: str, client: ClientId, sessions: Sessions) -> SessionOut:
    """Start the session again: restored from its keys when linked, else a new pairing by QR code."""
    view = await sessions.restart(client, sessionId)
    return session_out(view.session, view.desired)


@router.post("/sessions/{sessionId}/logout", status_code=status.HTTP_202_ACCEPTED, responses=_NOT_FOUND)
async def logout_session(sessionId: str, client: ClientId, sessions: Sessions) -> SessionOut:
    """Unlink the session from the phone and delete its keys (final: a restart pairs anew)."""
    view = await sessions.logout(client, sessionId)
    return session_out(view.session, view.desired)


@router.delete("/sessions/{sessionId}", status_code=status.HTTP_204_NO_CONTENT, responses=_NOT_FOUND)
async def delete_session(sessionId: str, client: ClientId, sessions: Sessions) -> Response:
    """Delete the session with its contacts and messages; its worker stops it."""
    await sessions.delete(client, sessionId)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/sandbox/sessions/{sessionId}/scan",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["sandbox"],
    responses={**_NOT_FOUND, 422: {"model": Problem, "description": "Not a sandbox session, or a bad number."}},
)
async def sandbox_scan(sessionId: str, body: ScanRequest, client: ClientId, sessions: Sessions) -> Accepted:
    """Sandbox: a simulated phone with `phoneNumber` scans the session's current QR code (it links at once)."""
    await sessions.sandbox_scan(client, sessionId, body.phone_number)
    return Accepted(accepted=True)


@router.post(
    "/sandbox/sessions/{sessionId}/enter-code",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["sandbox"],
    responses={**_NOT_FOUND, 422: {"model": Problem, "description": "Not a sandbox session, or no code given."}},
)
async def sandbox_enter_code(sessionId: str, body: EnterCodeRequest, client: ClientId, sessions: Sessions) -> Accepted:
    """Sandbox: the simulated phone of the pairing types the session's pairing code (a right code links it)."""
    await sessions.sandbox_enter_code(client, sessionId, body.code)
    return Accepted(accepted=True)


_INBOUND_MULTIPART = {
    "type": "object",
    "properties": {
        "message": {
            "type": "string",
            "description": "The request as JSON (the application/json body, without the file's `data`).",
            "example": '{"sessionId": "bot", "from": "447700900123", "type": "image", "image": {"caption": "hi"}}',
        },
        "file": {"type": "string", "format": "binary", "description": "The file of the media message."},
    },
    "required": ["message", "file"],
}
_INBOUND_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": InboundRequest.model_json_schema(by_alias=True)},
        "multipart/form-data": {"schema": _INBOUND_MULTIPART},
    },
}


@router.post(
    "/sandbox/inbound",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["sandbox"],
    responses={
        **_NOT_FOUND,
        403: {"model": Problem, "description": "The sandbox is turned off for this client (`engine_not_allowed`)."},
        409: {"model": Problem, "description": "The session is not linked to a simulated phone now."},
        413: {"model": Problem, "description": "The body is over 1.4 MB (JSON) or 100 MB (multipart)."},
        422: {"model": Problem, "description": "Not a sandbox session, or bad input."},
    },
    openapi_extra={"requestBody": _INBOUND_BODY},
)
async def sandbox_inbound(request: Request, client: ClientId, sessions: Sessions) -> InboundAccepted:
    """Sandbox: deliver a message to a session as if the phone `from` wrote it (a message-received follows).

    Only a session linked now receives it, and only that session: never another that linked its number since.

    **A text**: `message`. **Any kind**: `type` and the object of that type, in the shape of the send body
    (WhatsApp Cloud API; snake_case inside the object): `text` `{body}`, `location` `{latitude, longitude, name,
    address, url}`, `contacts` `[{name: {formatted_name}, phones: [{phone, wa_id, type}], vcard}]`, `poll`
    `{question, options, selectable_count}`, `reaction` `{message_id, emoji}` (`""` removes it); what only a
    phone writes: `poll_vote` `{message_id, selected: [option, ...]}` (`[]` withdraws the vote), `edit`
    `{message_id, text}`, `revoke` `{message_id}` (deleted for everyone: the phone's own messages only) and
    `group_invite` `{group_id, code, expires_at, subject, caption}` (an invitation to a group).
    `context: {message_id}` makes it a reply, `mentions` lists the numbers or JIDs it mentions.
    A `message_id` is WhatsApp's id of a message as the session knows it (`whatsappMessageId`; the session's
    own message ids are taken too): the session's own messages are named as its, the phone's as the phone's.

    **Media** (`image`, `video`, `audio`, `document`, `sticker`) carry `caption`, `filename` (documents),
    `voice` (a voice note), `view_once` as in a send, and what the phone tells about the file: `mime_type`,
    `width`, `height`, `duration` (seconds), `animated`. The file comes inline as `data` (base64, up to 1 MiB
    decoded), or as a multipart/form-data upload of up to 100 MiB: the field `file` holds it and the field
    `message` the rest of the request as JSON (the upload's content type and file name fill in `mime_type`
    and a document's `filename` when not given). The session downloads it from the sandbox's media server.

    Also what a real session meets: a sender known by LID only (`from` = `digits@lid`), a message written on
    the session's own phone (`fromMe`), in a group (`group`), a story (`story`), or instead a notice
    (`notice`: `undecryptable` or `history_sync`).

    **Chats and presence**, instead of a message: `appState` `{archived, pinned, muted, mutedUntil, read}` is a
    change the session's own phone made to its chat with `from` (or `group`): a chat-update event follows and
    the chat's row changes. `presence` (`available`, `unavailable` with `lastSeen`; `composing`, `recording`,
    `paused` in its chat with the session, or in `group`) is what `from` shows: a presence event follows.

    **Contacts**, instead of a message: `blocked` true (or false) is the session's own phone blocking (or
    unblocking) `from`; `picture` (`changed`, `removed`) is `from` changing its profile picture. A
    contact-update event follows either, and the contact shows it.
    """
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=1) as form:
            body, upload = _inbound_upload(form)
            return await _inject(request, body, upload, client, sessions)
    return await _inject(request, _inbound_json(await request.body()), None, client, sessions)


async def _inject(
    request: Request, body: InboundRequest, upload: InboundFile | None, client: str, sessions: SessionService
) -> InboundAccepted:
    request.state.session_id = body.session_id  # for the audit log: the body is not read by the guard here
    states = (body.app_state, body.presence, body.blocked, body.picture)  # chats, presence, contacts (issue 14)
    if any(state is not None for state in states):
        return await _inject_phone_state(body, upload, client, sessions)
    part = body.message_part()
    message_id = await sessions.sandbox_inject(
        client,
        body.session_id,
        body.from_number,
        body.message if part is None or body.type is not None else None,
        from_me=body.from_me,
        group=body.group,
        story=body.story,
        from_lid=body.from_lid,
        push_name=body.push_name,
        business_name=body.business_name,
        notice=body.notice,
        content=part,
        file=upload,
    )
    return InboundAccepted(message_id=message_id, session_id=body.session_id)


async def _inject_phone_state(
    body: InboundRequest, upload: InboundFile | None, client: str, sessions: SessionService
) -> InboundAccepted:
    """The phone changed a chat's state or its blocklist, or `from` shows a presence or a new picture: no message."""
    for name, value in (("message", body.message), ("type", body.type), ("notice", body.notice), ("file", upload)):
        if value is not None:
            raise InvalidRequest(f"{name}: an appState, presence, blocked or picture carries no message", field=name)
    if body.from_me or body.story:
        raise InvalidRequest("fromMe: an appState, presence, blocked or picture is not a message", field="fromMe")
    injected = await sessions.sandbox_phone_state(
        client,
        body.session_id,
        body.from_number,
        from_lid=body.from_lid,
        group=body.group,
        app_state=None if body.app_state is None else body.app_state.mail(),
        presence=body.presence,
        last_seen=body.last_seen,
        blocked=body.blocked,
        picture=body.picture,
    )
    return InboundAccepted(message_id=injected, session_id=body.session_id)


def _inbound_json(raw: bytes | str) -> InboundRequest:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        error = {"loc": ("body",), "msg": "JSON decode error: a JSON object is expected", "type": "json_invalid"}
        raise RequestValidationError([error]) from exc
    try:
        return InboundRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from exc


def _inbound_upload(form: FormData) -> tuple[InboundRequest, InboundFile]:
    message, file = form.get("message"), form.get("file")
    if not isinstance(message, str):
        raise InvalidRequest("message: the request as JSON is expected in the form field `message`", field="message")
    if not isinstance(file, UploadFile):
        raise InvalidRequest("file: the file is expected in the form field `file`", field="file")
    return _inbound_json(message), InboundFile(file.file, file.content_type, file.filename)


@router.post(
    "/sandbox/sessions/{sessionId}/fault",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["sandbox"],
    responses={**_NOT_FOUND, 422: {"model": Problem, "description": "Not a sandbox session, or an unknown fault."}},
)
async def sandbox_fault(sessionId: str, body: FaultRequest, client: ClientId, sessions: Sessions) -> Accepted:
    """Sandbox: inject a fault into the session, to see how your application copes with it.

    `drop_connection` (it reconnects by itself), `logout` (unlinked from the phone), `reject_next_send`,
    `restrict` (the next send is refused as from a restricted account, code 463), `fail_transient` (the next
    `count` sends fail with a retryable error, and are tried again).
    """
    await sessions.sandbox_fault(client, sessionId, body.fault, body.count)
    return Accepted(accepted=True)


_SSE_EXAMPLE = (
    "id: 42\nevent: status-change\ndata: "
    '{"eventId": 42, "type": "status-change", "sessionId": "user123", "createdAt": "2026-11-29T10:00:00+00:00", '
    '"status": "connected", "previousStatus": "connecting", "reason": null, "code": null, "engine": "sandbox", '
    '"phoneNumber": "5511999999999"}\n\n'
)


def _event_cursor(header: str | None, query: int | None) -> int | None:
    if query is not None:
        if query > MAX_ROW_ID:  # past bigint: no event has it, and the database would refuse it as an error
            raise InvalidRequest(f"lastEventId: at most {MAX_ROW_ID} (the id of an event)", field="lastEventId")
        return query
    if header is None or header.strip() == "":
        return None
    value = header.strip()
    after = row_id(value)
    if after is None:
        raise InvalidRequest(f"invalid Last-Event-ID {value[:40]!r}: expected the id of an event (digits)")
    return after


class _Stream(EventSourceResponse):
    """An SSE response that ends when told to (its key was revoked) and is dropped when its reader lags.

    What a reader has not taken yet waits in the socket's buffers and ours: past `backlog` unsent bytes the
    stream waits for the reader, and a reader that takes nothing for `stall` seconds is aborted (a plain
    close would wait for a drain that never comes), its memory freed. It resumes with Last-Event-ID.
    """

    def __init__(self, *, backlog: int, stall: float, **kwargs: Any) -> None:
        super().__init__(send_timeout=stall, **kwargs)
        self.backlog, self.stall = backlog, stall
        self.conn: Connection | None = None
        self.subscription: Subscription | None = None
        self.ending: tuple[str, str] | None = None  # (code, detail) once told to end
        self._transport: asyncio.Transport | None = None
        self._connections: Connections | None = None
        self._finished = False

    def register(self, connections: Connections, conn: Connection) -> None:
        self._connections, self.conn = connections, conn

    def end(self, code: str, detail: str) -> None:
        """End the stream with an `error` event saying why; abort it if its reader does not take that soon."""
        self.ending = (code, detail)
        if self.subscription is not None:
            self.subscription.close()  # the event loop below stops at once
        asyncio.get_running_loop().call_later(STREAM_END_GRACE, self.drop, code)

    def _lagging(self) -> bool:
        return self._transport is not None and unsent_bytes(self._transport) > self.backlog

    async def room(self) -> bool:
        """Wait until no more than `backlog` bytes wait unsent; False when the reader took none for `stall` s."""
        if not self._lagging():
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stall
        while self._lagging():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def drop(self, reason: str) -> None:
        """Abort the connection (unless it ended): the socket and every buffer of it go at once."""
        if self._finished:
            return
        self._finished = True
        log.info("stream.dropped", client_id=self.conn.client if self.conn else None, reason=reason)
        if self._transport is not None:
            self._transport.abort()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._transport = transport_of(send)
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:  # the reader took nothing for `stall` seconds
            self.drop("stalled")
        finally:
            self._finished = True
            if self._connections is not None and self.conn is not None:
                self._connections.release(self.conn)


STREAM_END_GRACE = 5.0  # seconds a stream told to end may take to send its last event before it is aborted


@router.get(
    "/stream",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": (
                "Server-Sent Events: one per event of the log (`qr-code`, `pairing-code`, `status-change`, "
                "`message-received`, `message-status`, `error`), each with `id:` (its id in the log), `event:` "
                "(its type) and `data:` (JSON). Comments (`: ping`) keep the connection alive. A stream that "
                "the server ends says why in a last `error` event without `id:` (`key_revoked`). A resume from an "
                "event that retention pruned starts with a `gap` event (no `id:`)."
            ),
            "content": {"text/event-stream": {"schema": {"type": "string"}, "example": _SSE_EXAMPLE}},
        },
        404: {"model": Problem, "description": "No such session."},
        429: {"model": Problem, "description": "The API key holds as many streams and sockets as it may."},
    },
)
async def stream(
    client: ClientId,
    key: Annotated[str | None, Depends(presented_key)],
    sessions: Sessions,
    hub: Events,
    connections: OpenConnections,
    settings: AppSettings,
    session_id: Annotated[
        str | None, Query(alias="sessionId", pattern=SESSION_ID_PATTERN, description="Only this session's events.")
    ] = None,
    last_event_id_query: Annotated[
        int | None,
        Query(alias="lastEventId", ge=0, description="Resume after this event id (as the Last-Event-ID header)."),
    ] = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Resume after this event id: nothing missed.")
    ] = None,
) -> EventSourceResponse:
    """Stream the client's events as they happen (the seed's SSE endpoint).

    Without `Last-Event-ID` the stream starts with the next event; with it, it first replays every event
    after that id, in order, with no gap and no duplicate (browsers' `EventSource` sends it on reconnect).
    If retention pruned events after that id, the stream first sends a `gap` event (data
    `{"requestedLastEventId", "oldestEventId"}`, no `id:`) and goes on from the oldest event kept.
    A reader more than ZAPGATE_STREAM_BACKLOG_BYTES behind that takes nothing for ZAPGATE_STALL_TIMEOUT
    seconds is disconnected: it resumes with `Last-Event-ID`. Revoking the API key
    (rotation, deleting the client) ends its streams at once.
    """
    after = _event_cursor(last_event_id, last_event_id_query)
    if session_id is not None:
        await sessions.get(client, session_id)  # 404 for another client's or an unknown session
    # a resume from before what retention pruned is told so, then goes on from the oldest event kept
    gap = await hub.gap(client, after) if after is not None else None
    if gap is not None:
        cursor = gap.oldest - 1
    else:
        cursor = after if after is not None else await hub.head(client)
    wanted = None if session_id is None else [session_id]

    async def events() -> AsyncIterator[ServerSentEvent]:
        if gap is not None:
            yield ServerSentEvent(data=json.dumps(gap.payload()), event="gap")
        async with hub.subscription(client, after=cursor, sessions=wanted) as subscription:
            response.subscription = subscription
            if response.ending is not None:
                subscription.close()
            async for event in subscription.events():
                if not await response.room():
                    response.drop("backlog_exceeded")
                    return
                yield ServerSentEvent(data=json.dumps(event_body(event)), id=str(event.id), event=event.type)
                metrics.EVENTS_STREAMED.labels("sse").inc()
        if response.ending is not None:
            code, detail = response.ending
            yield ServerSentEvent(data=json.dumps({"code": code, "detail": detail, "status": 401}), event="error")

    response = _Stream(
        content=events(),
        backlog=settings.stream_backlog_bytes,
        stall=settings.stall_timeout,
        ping=settings.sse_heartbeat,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
    response.register(connections, connections.open(ClientIdType(client), hash_key(key or ""), "sse", response.end))
    return response


def contact_out(contact: Contact, session_id: str) -> ContactOut:
    """Return the API view of a contact."""
    return ContactOut(
        id=contact.id,
        session_id=session_id,
        phone_number=contact.phone_number,
        name=contact.name,
        profile_pic=contact.profile_pic,
        is_group=contact.is_group,
        jid=contact.jid,
        lid=contact.lid,
        push_name=contact.push_name,
        business_name=contact.business_name,
        picture_url=contact.picture_url,
        picture_expires_at=contact.picture_expires_at,
        on_whats_app=contact.on_whatsapp,
        blocked=contact.blocked,
        updated_at=contact.updated_at,
    )


def message_out(view: MessageView, *, history: bool = False) -> MessageOut:
    """Return the API view of a message (with its status history if asked)."""
    message = view.message
    return MessageOut(
        id=message.id,
        message_id=message.message_id,
        session_id=view.session_id,
        direction=message.direction.value,
        status=message.status.value,
        type=message.type,
        content=message.content,
        timestamp=message.timestamp,
        sent_at=message.sent_at,
        chat_jid=message.chat_jid,
        whatsapp_message_id=message.wa_message_id,
        sender_jid=message.sender_jid,
        sender_lid=message.sender_lid,
        source=message.source,
        error=message.error,
        error_code=message.error_code,
        attempts=message.attempts,
        contact_id=message.contact_id,
        contact=None if view.contact is None else contact_out(view.contact, view.session_id),
        history=[StatusStepOut(status=s.status, at=s.at, error=s.error) for s in view.history] if history else None,
        message=message.payload or {"type": "text", "text": {"body": message.content}},
        context=message.context,
        mentions=list(message.mentions) or None,
        edited_at=message.edited_at,
        deleted_at=message.deleted_at,
        reactions=[ReactionOut(reactor=r.reactor, emoji=r.emoji, at=r.at) for r in view.reactions] or None,
        votes=[VoteOut(voter=v.voter, selected=list(v.selected), at=v.at) for v in view.votes] or None,
    )


_Limit = Annotated[int, Query(ge=1, le=500, description="Items per page (1-500).")]
_Cursor = Annotated[str | None, Query(max_length=512, description="`nextCursor` of the previous page.")]
_SessionFilter = Annotated[
    str | None, Query(alias="sessionId", pattern=SESSION_ID_PATTERN, description="Only this session's.")
]


@router.get("/messages", responses={404: {"model": Problem, "description": "No such session."}})
async def list_messages(
    client: ClientId,
    messages: Messages,
    session_id: _SessionFilter = None,
    contact: Annotated[
        str | None, Query(max_length=64, description="Only with this number, JID, LID, group JID or contact id.")
    ] = None,
    direction: Annotated[Literal["inbound", "outbound"] | None, Query()] = None,
    status_: Annotated[
        Literal["pending", "sent", "delivered", "read", "played", "failed"] | None, Query(alias="status")
    ] = None,
    since: Annotated[datetime | None, Query(description="Only from this time on (ISO 8601).")] = None,
    limit: _Limit = 50,
    cursor: _Cursor = None,
) -> MessagePage:
    """List the client's messages, newest first, each with its contact; filter by any of the parameters."""
    page = await messages.list_messages(
        client,
        session=session_id,
        contact=contact,
        direction=direction,
        status=status_,
        since=since,
        limit=limit,
        cursor=cursor,
    )
    return MessagePage(messages=[message_out(view) for view in page.items], next_cursor=page.next_cursor)


@router.get("/messages/{messageId}", responses={404: {"model": Problem, "description": "No such message."}})
async def get_message(
    messageId: Annotated[str, Path(min_length=1, max_length=128)],
    client: ClientId,
    messages: Messages,
    session_id: _SessionFilter = None,
) -> MessageOut:
    """Return one message by its WhatsApp id, with every status it reached (`sessionId` when two hold it)."""
    return message_out(await messages.get_message(client, messageId, session=session_id), history=True)


_CALL_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such session."},
    409: {"model": Problem, "description": "The session is not connected."},
    502: {"model": Problem, "description": "WhatsApp refused (the engine's reason in `reason`)."},
    504: {"model": Problem, "description": "The session's worker did not answer in time: try again."},
}


@router.post("/sessions/{sessionId}/presence", responses=_CALL_ERRORS)
async def set_presence(sessionId: str, body: PresenceRequest, client: ClientId, chats: Chats) -> PresenceOut:
    """Show "typing…" (composing), "recording audio…" or stop (paused) in a chat, now.

    WhatsApp shows it for a few seconds: send it again while the user types. Sends through the API show
    typing by themselves on engines that pace (whatsmeow).
    """
    shown = await chats.presence(client, sessionId, body.to, body.presence)
    return PresenceOut(session_id=sessionId, to=shown["to"], presence=shown["presence"])


@router.post("/sessions/{sessionId}/read", responses=_CALL_ERRORS)
async def mark_read(sessionId: str, body: ReadRequest, client: ClientId, chats: Chats) -> ReadOut:
    """Mark a chat's received messages read: WhatsApp shows the sender blue ticks; each message becomes `read`."""
    done = await chats.mark_read(client, sessionId, body.chat, body.message_ids)
    return ReadOut(session_id=sessionId, read=done["read"])


def audit_out(entry: AuditEntry) -> AuditEntryOut:
    """Return the API view of an audit entry."""
    return AuditEntryOut(
        id=entry.id or 0,
        at=entry.at,
        actor=entry.actor,
        action=entry.action,
        session_id=entry.session_id,
        outcome=entry.outcome,
        status=entry.status,
        detail=entry.detail,
    )


@router.get("/audit")
async def list_audit(
    client: ClientId,
    audit: Audit,
    session_id: _SessionFilter = None,
    action: Annotated[str | None, Query(max_length=64, description="Only this action, e.g. message.send.")] = None,
    limit: _Limit = 100,
    cursor: _Cursor = None,
) -> AuditPage:
    """The client's audit log, newest first: every mutating call (who, what, when, outcome).

    Entries are written within a fraction of a second after the call.
    """
    page = await audit.list(client, session=session_id, action=action, limit=limit, cursor=cursor)
    return AuditPage(entries=[audit_out(entry) for entry in page.items], next_cursor=page.next_cursor)
