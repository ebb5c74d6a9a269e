"""The client's WhatsApp API (the seed's endpoints), authenticated by the client's API key."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, status

from zapgate.api.deps import Sessions, client_of_request
from zapgate.api.schemas import (
    CreateSessionRequest,
    MessageAccepted,
    Problem,
    SendMessageRequest,
    SessionList,
    SessionOut,
)
from zapgate.domain.records import Session

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
    responses={
        404: {"model": Problem, "description": "No such session."},
        409: {"model": Problem, "description": "The session cannot send in its state (logged out, failed, ...)."},
    },
)
async def send_message(body: SendMessageRequest, client: ClientId, sessions: Sessions) -> MessageAccepted:
    """Accept a text for sending: stored before this answers, then sent by the session's worker in order.

    Accepted while the session reconnects, it goes out once the session is back.
    """
    message = await sessions.send_text(client, body.session_id, body.to, body.message)
    return MessageAccepted(
        message_id=message.message_id,
        session_id=body.session_id,
        status=message.status.value,
        timestamp=message.timestamp,
    )
