"""SendHotPath: answers the sends FastAPI would accept, hands every other request to the route unchanged."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from zapgate.api.hotpath import HealthHotPath, SendHotPath
from zapgate.api.limits import ApiLimits
from zapgate.errors import AuthenticationFailed, RateLimited, ZapgateError
from zapgate.services.sessions import SendAccepted
from zapgate.settings import Settings

KEY = "zg_test-key-0123456789"
BODY = {"sessionId": "s1", "to": "5511999999999", "message": "hello"}
WHEN = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class Clients:
    async def authenticate(self, key: str | None) -> str:
        if key != KEY:
            raise AuthenticationFailed("missing or invalid API key")
        return "acme"


@dataclass
class Sessions:
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    refusal: ZapgateError | None = None
    replayed: bool = False

    async def send_text(
        self, client: str, session: str, to: str, text: str, *, idempotency_key: str | None = None
    ) -> SendAccepted:
        self.calls.append((client, session, to, text, idempotency_key))
        if self.refusal is not None:
            raise self.refusal
        return SendAccepted("3EB0ABC", session, "pending", WHEN, replayed=self.replayed)


@dataclass
class Route:
    """The app behind the hot path: records what reached it, with the body it could read."""

    bodies: list[bytes] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        self.bodies.append(message["body"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"route"})


async def call(
    hot: SendHotPath, body: bytes, headers: list[tuple[bytes, bytes]], sessions: Sessions, path: str = "/whatsapp/send"
) -> tuple[int, dict[bytes, bytes], bytes, Scope]:
    limits = ApiLimits.from_settings(Settings(request_rate=0))  # metering is tested over HTTP (test_limits.py)
    app = SimpleNamespace(state=SimpleNamespace(clients=Clients(), sessions=sessions, limits=limits))
    scope: Scope = {"type": "http", "method": "POST", "path": path, "headers": headers, "app": app, "state": {}}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await hot(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:]), scope


JSON_HEADERS = [(b"content-type", b"application/json"), (b"x-api-key", KEY.encode())]


async def test_a_well_formed_send_is_answered_here_as_the_route_answers_it() -> None:
    route, sessions = Route(), Sessions()
    status, headers, body, scope = await call(SendHotPath(route), json.dumps(BODY).encode(), JSON_HEADERS, sessions)
    assert route.bodies == []
    assert status == 202
    assert headers[b"content-type"] == b"application/json" and int(headers[b"content-length"]) == len(body)
    assert json.loads(body) == {
        "messageId": "3EB0ABC",
        "sessionId": "s1",
        "status": "pending",
        "timestamp": "2026-11-30T12:00:00Z",
    }
    assert sessions.calls == [("acme", "s1", "5511999999999", "hello", None)]
    # what the audit log needs, as the route's dependency and name would give it
    assert scope["state"]["client_id"] == "acme" and scope["state"]["action"] == "message.send"
    assert scope["state"]["session_id"] == "s1" and scope["state"]["actor"]


async def test_bearer_key_and_idempotency_key_are_read_and_a_replay_says_so() -> None:
    sessions = Sessions(replayed=True)
    headers = [
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {KEY}".encode()),
        (b"idempotency-key", b"order-1"),
    ]
    status, answer, _, _ = await call(SendHotPath(Route()), json.dumps(BODY).encode(), headers, sessions)
    assert status == 202 and answer[b"idempotent-replayed"] == b"true"
    assert sessions.calls[0][-1] == "order-1"


async def test_a_refusal_of_the_service_is_its_problem_answer() -> None:
    sessions = Sessions(refusal=RateLimited("slow down", retry_after=1.2, session_id="s1"))
    status, headers, body, _ = await call(SendHotPath(Route()), json.dumps(BODY).encode(), JSON_HEADERS, sessions)
    assert status == 429 and headers[b"retry-after"] == b"2"
    assert headers[b"content-type"] == b"application/problem+json"
    assert json.loads(body)["code"] == "rate_limited"


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param({**BODY, "to": ""}, JSON_HEADERS, id="invalid body"),
        pytest.param({**BODY, "extra": 1}, JSON_HEADERS, id="unknown field"),
        pytest.param(None, JSON_HEADERS, id="not json"),
        pytest.param(BODY, [(b"content-type", b"text/plain"), (b"x-api-key", KEY.encode())], id="not json type"),
        pytest.param(BODY, [(b"content-type", b"application/json")], id="no key"),
        pytest.param(BODY, [(b"content-type", b"application/json"), (b"x-api-key", b"zg_wrong")], id="wrong key"),
        pytest.param(BODY, [*JSON_HEADERS, (b"x-api-key", KEY.encode())], id="repeated key"),
        pytest.param(BODY, [*JSON_HEADERS, (b"idempotency-key", b"k" * 256)], id="idempotency key too long"),
    ],
)
async def test_what_the_route_would_refuse_goes_to_the_route_with_its_body(
    body: dict[str, Any] | None, headers: list[tuple[bytes, bytes]]
) -> None:
    raw = b"{not json" if body is None else json.dumps(body).encode()
    route, sessions = Route(), Sessions()
    status, _, answer, _ = await call(SendHotPath(route), raw, headers, sessions)
    assert (status, answer) == (299, b"route")
    assert route.bodies == [raw]
    assert sessions.calls == []


async def test_other_paths_go_to_the_app() -> None:
    route = Route()
    status, *_ = await call(SendHotPath(route), json.dumps(BODY).encode(), JSON_HEADERS, Sessions(), path="/whatsapp/x")
    assert status == 299


async def test_get_health_is_answered_as_the_route_answers_it_and_everything_else_goes_on() -> None:
    route = Route()
    app = HealthHotPath(route)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    await app({"type": "http", "method": "GET", "path": "/health", "headers": []}, receive, send)
    start, body = sent
    assert start["status"] == 200 and dict(start["headers"])[b"content-type"] == b"application/json"
    assert json.loads(body["body"]) == {"status": "ok"}
    assert int(dict(start["headers"])[b"content-length"]) == len(body["body"])
    assert route.bodies == []
    for method, path in (("PUT", "/health"), ("HEAD", "/health"), ("GET", "/health/ready"), ("GET", "/healthz")):
        await app({"type": "http", "method": method, "path": path, "headers": []}, receive, send)
    assert len(route.bodies) == 4  # FastAPI answers those (405, its own HEAD rules, readiness, 404)
