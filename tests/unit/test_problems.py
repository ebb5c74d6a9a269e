"""problem+json answers: a request id in and out, and never the database's words."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import FastAPI

from zapgate.api import problems
from zapgate.api.request_id import RequestIdMiddleware
from zapgate.errors import (
    DatabaseError,
    DatabaseUnavailable,
    InvalidRequest,
    MediaNotFound,
    MediaStoreError,
    UnstorableData,
    ZapgateError,
)
from zapgate.log import configure_logging

LEAK = 'relation "client_acme.secret_table" does not exist; host db-internal.corp:5432'


def app_raising(error: Exception) -> FastAPI:
    app = FastAPI()
    problems.install(app)
    app.add_middleware(RequestIdMiddleware)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return app


async def call(app: FastAPI, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return await http.get("/boom", headers=headers)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (DatabaseError(f"database error: {LEAK}", sqlstate="42P01"), 503),
        (DatabaseUnavailable(f"database unavailable: {LEAK}"), 503),
        (InvalidRequest(f"rejected by the database: {LEAK}", sqlstate="23514"), 422),
        (UnstorableData("the database cannot store this value", sqlstate="22021"), 422),
    ],
)
async def test_the_database_words_go_to_the_log_with_the_request_id_never_to_the_caller(
    error: ZapgateError, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("info", "json", cache_loggers=False)
    try:
        answer = await call(app_raising(error), **{"X-Request-Id": "req-123"})
    finally:
        configure_logging("warning", cache_loggers=False)
    assert answer.status_code == status
    body = answer.json()
    assert answer.headers["x-request-id"] == "req-123" and body["requestId"] == "req-123"
    assert "secret_table" not in answer.text and "db-internal" not in answer.text
    assert "logged" in body["detail"]
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    [line] = [entry for entry in logged if entry.get("event") == "http.database_error"]
    assert line["request_id"] == "req-123" and line["error"] == error.args[0]


async def test_a_request_without_a_usable_id_gets_one() -> None:
    app = app_raising(InvalidRequest("nope"))
    made = await call(app)
    assert len(made.headers["x-request-id"]) == 32 and made.json()["requestId"] == made.headers["x-request-id"]
    replaced = await call(app, **{"X-Request-Id": "a b\tc" + "x" * 200})
    assert replaced.headers["x-request-id"] != "a b\tc" + "x" * 200
    assert replaced.json()["requestId"] == replaced.headers["x-request-id"]


async def test_an_unexpected_error_carries_the_request_id_too() -> None:
    answer = await call(app_raising(RuntimeError("internal detail")), **{"X-Request-Id": "req-9"})
    assert answer.status_code == 500 and answer.json()["requestId"] == "req-9"
    assert "internal detail" not in answer.text


def test_media_errors_answer_404_and_503() -> None:
    assert problems.status_for(MediaNotFound("nothing is stored under this key")) == 404
    assert problems.status_for(MediaStoreError("the S3 media store failed: SlowDown", code="SlowDown")) == 503


@pytest.mark.parametrize(
    "error",
    [
        DatabaseError(f"database error: {LEAK}", sqlstate="42P01"),
        DatabaseUnavailable(f"database unavailable: {LEAK}"),
        InvalidRequest(f"rejected by the database: {LEAK}", sqlstate="23514"),
    ],
)
def test_a_socketio_error_never_carries_the_database_words(error: ZapgateError) -> None:
    from zapgate.api.realtime import _error

    body = _error(error)
    assert body["status"] == problems.status_for(error) and body["code"] == error.code
    assert "secret_table" not in json.dumps(body) and "logged" in body["detail"]


def test_a_socketio_error_keeps_a_service_message() -> None:
    from zapgate.api.realtime import _error

    body = _error(InvalidRequest("to: a phone number is expected", field="to"))
    assert body["detail"] == "to: a phone number is expected" and body["status"] == 422
