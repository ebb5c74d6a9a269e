"""POST /whatsapp/send (and GET /health) answered in pure ASGI, in front of FastAPI's routing and dependencies.

Profiled under load (py-spy on the API process, wrk POST /whatsapp/send), FastAPI's route matching, dependency
resolution (`solve_dependencies`) and its exception and exit-stack layers took about as much CPU per send as
the send itself. This layer does the same work without them, and only when it can be sure of the answer:

- the key is looked up as the route's dependency does (`ClientService.authenticate`, cached per process);
- the body is `json.loads` + `SendMessageRequest.model_validate`, what FastAPI does with the route's model;
- the Idempotency-Key header, when there is one, is within the route's 255 characters;
- the key's request rate is metered by the same `ApiLimits.meter` as the route's dependency.

Any other request (no or a wrong key, a body that does not validate, another content type, a repeated header)
goes on to the route in `routes/whatsapp.py`, which answers it exactly as before; the route also documents
the endpoint in OpenAPI. The service's own refusals (404, 409, 422, 429, 503) are rendered by
`problems.zapgate_problem`, as the route's exception handler does, and the audit log sees the same request
(RequestGuard sits outside this layer).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zapgate import metrics
from zapgate.api.deps import key_in_headers
from zapgate.api.problems import zapgate_problem
from zapgate.api.request_id import request_id_of
from zapgate.api.schemas import Health, SendMessageRequest
from zapgate.errors import ZapgateError
from zapgate.services.clients import ClientService, key_display_prefix
from zapgate.services.sessions import SessionService

SEND_PATH = "/whatsapp/send"
SEND_ACTION = "message.send"  # the audit action of the route (guard.ACTIONS["send_message"])
IDEMPOTENCY_KEY_MAX = 255  # the route's Header(max_length=...)
_JSON = b"application/json"


class SendHotPath:
    """Answer well-formed, authenticated POST /whatsapp/send requests; pass everything else to `app`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != SEND_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = _wanted_headers(scope)
        if headers is None or headers.get(b"content-type") != _JSON:
            await self.app(scope, receive, send)
            return
        body, ended = await _read_body(receive)
        if not ended:
            return  # the client went away
        request = _valid_request(body, headers)
        state = scope["app"].state
        client = None
        if request is not None:
            try:
                client = await _client_of(state.clients, headers)
            except ZapgateError:
                client = None  # the route answers the refusal (and tells a wrong key from a database fault)
        if request is None or client is None:
            await self.app(scope, _replay(body, receive), send)
            return
        try:
            state.limits.meter(_key(headers))  # the request rate per key, as the route's dependency meters it
        except ZapgateError as exc:
            await zapgate_problem(exc, scope["path"], request_id_of(scope))(scope, receive, send)
            return
        body_model, idempotency_key = request
        request_state = scope.setdefault("state", {})
        request_state.update(
            client_id=client,
            actor=key_display_prefix(_key(headers) or ""),
            action=SEND_ACTION,
            session_id=body_model.session_id,
        )
        sessions: SessionService = state.sessions
        try:
            with metrics.ACCEPT_LATENCY.time():
                accepted = await sessions.send_text(
                    client, body_model.session_id, body_model.to, body_model.message, idempotency_key=idempotency_key
                )
        except ZapgateError as exc:
            await zapgate_problem(exc, scope["path"], request_id_of(scope))(scope, receive, send)
            return
        payload = json.dumps(accepted.as_json(), ensure_ascii=False, separators=(",", ":")).encode()
        answer: list[tuple[bytes, bytes]] = [(b"idempotent-replayed", b"true")] if accepted.replayed else []
        answer += [(b"content-length", str(len(payload)).encode()), (b"content-type", _JSON)]
        await send({"type": "http.response.start", "status": 202, "headers": answer})
        await send({"type": "http.response.body", "body": payload})


class HealthHotPath:
    """Answer GET /health (liveness: the process answers) in pure ASGI; pass everything else to `app`.

    Probes call it often, and FastAPI's routing (the first match among the app's routes), the route's response
    model and its exception layers were most of its cost (issue 13: 78 % of an empty FastAPI route's rate, the
    target 80 %). The answer is the route's, byte for byte: `{"status":"ok"}`, as JSON. Any other method, or
    another path, goes on to FastAPI (the route still documents it in OpenAPI; PUT answers 405 there).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != HEALTH_PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": _HEALTHY_HEADERS})
        await send({"type": "http.response.body", "body": _HEALTHY})


HEALTH_PATH = "/health"
_HEALTHY = Health(status="ok").model_dump_json().encode()  # what the route's response model renders
_HEALTHY_HEADERS = [(b"content-length", str(len(_HEALTHY)).encode()), (b"content-type", _JSON)]

_WANTED = frozenset({b"content-type", b"x-api-key", b"authorization", b"idempotency-key"})


def _wanted_headers(scope: Scope) -> dict[bytes, bytes] | None:
    """The headers this layer reads, or None when one of them is repeated (the route decides then)."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in _WANTED:
            if name in found:
                return None
            found[name] = value
    return found


def _key(headers: dict[bytes, bytes]) -> str | None:
    x_api_key, authorization = headers.get(b"x-api-key"), headers.get(b"authorization")
    return key_in_headers(
        x_api_key.decode("latin-1") if x_api_key is not None else None,
        authorization.decode("latin-1") if authorization is not None else None,
    )


async def _client_of(clients: ClientService, headers: dict[bytes, bytes]) -> str:
    return await clients.authenticate(_key(headers))


def _valid_request(body: bytes, headers: dict[bytes, bytes]) -> tuple[SendMessageRequest, str | None] | None:
    """The body and Idempotency-Key as the route would take them, or None when the route would refuse them."""
    raw_key = headers.get(b"idempotency-key")
    idempotency_key = raw_key.decode("latin-1") if raw_key is not None else None
    if idempotency_key is not None and len(idempotency_key) > IDEMPOTENCY_KEY_MAX:
        return None
    try:
        data: Any = json.loads(body)
        return SendMessageRequest.model_validate(data), idempotency_key
    except (ValueError, ValidationError):  # json's errors are ValueErrors
        return None


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole request body, and False if the client disconnected first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives `body` once, then whatever the connection says next."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
