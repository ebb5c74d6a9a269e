"""The client's WhatsApp API (the seed's endpoints), authenticated by the client's API key."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from zapgate import metrics
from zapgate.api.deps import AppSettings, Audit, Events, Messages, Sessions, client_of_request
from zapgate.api.events import event_body
from zapgate.api.schemas import (
    Accepted,
    AuditEntryOut,
    AuditPage,
    ContactOut,
    ContactPage,
    CreateSessionRequest,
    EnterCodeRequest,
    InboundAccepted,
    InboundRequest,
    MessageAccepted,
    MessageOut,
    MessagePage,
    PairingCodeRequest,
    Problem,
    QrOut,
    ScanRequest,
    SendMessageRequest,
    SessionList,
    SessionOut,
    StatusStepOut,
)
from zapgate.domain.ids import MAX_ROW_ID, SESSION_ID_PATTERN, row_id
from zapgate.domain.records import AuditEntry, Contact, Session
from zapgate.errors import InvalidRequest, NotFound
from zapgate.services.messages import ContactView, MessageView
from zapgate.services.qr import qr_data_url, qr_png, qr_svg

ClientId = Annotated[str, Depends(client_of_request)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong API key."},
    422: {"model": Problem, "description": "Invalid input, with the invalid fields."},
    503: {"model": Problem, "description": "The database is unavailable."},
}

router = APIRouter(prefix="/whatsapp", tags=["whatsapp"], responses=_ERRORS)


def session_out(session: Session, desired: str | None = None) -> SessionOut:
    """Return the API view of a session."""
    return SessionOut(
        session_id=session.session_id,
        status=session.status,
        engine=session.engine,
        sandbox=session.engine == "sandbox",
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
    responses={409: {"model": Problem, "description": "A session with this id exists."}},
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
            "description": "Over the session's send rate; `Retry-After` says when to try again.",
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


@router.post(
    "/sandbox/inbound",
    status_code=status.HTTP_202_ACCEPTED,
    tags=["sandbox"],
    responses={**_NOT_FOUND, 422: {"model": Problem, "description": "Not a sandbox session, or bad input."}},
)
async def sandbox_inbound(body: InboundRequest, client: ClientId, sessions: Sessions) -> InboundAccepted:
    """Sandbox: deliver a text to a session as if the phone `from` wrote it (a message-received follows)."""
    message_id = await sessions.sandbox_inject(client, body.session_id, body.from_number, body.message)
    return InboundAccepted(message_id=message_id, session_id=body.session_id)


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


@router.get(
    "/stream",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": (
                "Server-Sent Events: one per event of the log (`qr-code`, `pairing-code`, `status-change`, "
                "`message-received`, `message-status`, `error`), each with `id:` (its id in the log), `event:` "
                "(its type) and `data:` (JSON). Comments (`: ping`) keep the connection alive."
            ),
            "content": {"text/event-stream": {"schema": {"type": "string"}, "example": _SSE_EXAMPLE}},
        },
        404: {"model": Problem, "description": "No such session."},
    },
)
async def stream(
    client: ClientId,
    sessions: Sessions,
    hub: Events,
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
    """
    after = _event_cursor(last_event_id, last_event_id_query)
    if session_id is not None:
        await sessions.get(client, session_id)  # 404 for another client's or an unknown session
    cursor = after if after is not None else await hub.head(client)
    wanted = None if session_id is None else [session_id]

    async def events() -> AsyncIterator[ServerSentEvent]:
        async with hub.subscription(client, after=cursor, sessions=wanted) as subscription:
            async for event in subscription.events():
                yield ServerSentEvent(data=json.dumps(event_body(event)), id=str(event.id), event=event.type)
                metrics.EVENTS_STREAMED.labels("sse").inc()

    return EventSourceResponse(
        events(),
        ping=settings.sse_heartbeat,
        send_timeout=60.0,  # a consumer that takes no data for a minute is dropped; it resumes by Last-Event-ID
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def contact_out(contact: Contact, session_id: str) -> ContactOut:
    """Return the API view of a contact."""
    return ContactOut(
        id=contact.id,
        session_id=session_id,
        phone_number=contact.phone_number,
        name=contact.name,
        profile_pic=contact.profile_pic,
        is_group=contact.is_group,
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
        contact=None if view.contact is None else contact_out(view.contact, view.session_id),
        history=[StatusStepOut(status=s.status, at=s.at, error=s.error) for s in view.history] if history else None,
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
    contact: Annotated[str | None, Query(max_length=64, description="Only with this number (or group JID).")] = None,
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


@router.get("/contacts", responses={404: {"model": Problem, "description": "No such session."}})
async def list_contacts(
    client: ClientId,
    messages: Messages,
    session_id: _SessionFilter = None,
    limit: _Limit = 100,
    cursor: _Cursor = None,
) -> ContactPage:
    """List the contacts of the client's sessions, by number."""
    page = await messages.list_contacts(client, session=session_id, limit=limit, cursor=cursor)
    items: list[ContactView] = page.items
    return ContactPage(
        contacts=[contact_out(view.contact, view.session_id) for view in items], next_cursor=page.next_cursor
    )


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
