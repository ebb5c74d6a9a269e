"""A request id for every HTTP request: taken from `X-Request-Id` when the caller sends a usable one, made
otherwise; bound to the log context while the request runs, answered in `X-Request-Id`, and carried by every
problem+json (`requestId`), so that an error a caller reports leads to its log lines.

Pure ASGI and a module of its own: one middleware, one job.
"""

from __future__ import annotations

import re

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zapgate.domain.ids import random_bytes

HEADER = b"x-request-id"
STATE_KEY = "request_id"
_USABLE = re.compile(rb"[A-Za-z0-9._:-]{1,128}")  # what a proxy's id looks like; anything else is replaced


def request_id_of(scope: Scope) -> str | None:
    """The request id of the request `scope` describes (None outside the middleware)."""
    state = scope.get("state")
    found = state.get(STATE_KEY) if isinstance(state, dict) else None
    return found if isinstance(found, str) else None


class RequestIdMiddleware:
    """Gives each HTTP request its id (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope.get("headers", ()) if name == HEADER), None)
        request_id = given.decode() if given is not None and _USABLE.fullmatch(given) else random_bytes(16).hex()
        state = scope.get("state")
        if not isinstance(state, dict):
            state = scope["state"] = {}
        state[STATE_KEY] = request_id  # the scope's state: the error handlers outside this middleware read it
        encoded = request_id.encode()

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(name, value) for name, value in message.get("headers", ()) if name != HEADER]
                message = {**message, "headers": [*headers, (HEADER, encoded)]}
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, answer)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
