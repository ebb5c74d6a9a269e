"""problem+json (RFC 9457) for every error: the one place HTTP status codes are chosen.

Every problem carries the request's id (`requestId`, as in the `X-Request-Id` header). What the database
said never reaches a caller (it may quote data, name hosts, or show the schema): the problem says the
database failed, and the log line with the same request id says how.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from zapgate.api.request_id import request_id_of
from zapgate.errors import (
    AuthenticationFailed,
    Conflict,
    DatabaseError,
    DatabaseUnavailable,
    EngineCallFailed,
    EngineCallTimedOut,
    InvalidRequest,
    MediaStoreError,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    SessionNotConnected,
    ZapgateError,
)
from zapgate.log import get_logger

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"

_STATUS: list[tuple[type[ZapgateError], int]] = [
    (InvalidRequest, 422),
    (NotFound, 404),
    (Conflict, 409),
    (SessionNotConnected, 409),
    (AuthenticationFailed, 401),
    (PermissionDenied, 403),
    (RateLimited, 429),
    (EngineCallTimedOut, 504),
    (EngineCallFailed, 502),
    (DatabaseUnavailable, 503),
    (DatabaseError, 503),
    (MediaStoreError, 503),
]

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def status_for(exc: ZapgateError) -> int:
    """Return the HTTP status that answers `exc`."""
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def problem(
    status: int,
    detail: str,
    code: str,
    *,
    headers: dict[str, str] | None = None,
    request_id: str | None = None,
    **extra: Any,
) -> JSONResponse:
    """Return a problem+json response (with `requestId` when the request has one)."""
    body = {
        "type": f"https://zapgate.dev/problems/{code}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    if request_id is not None:
        body["requestId"] = request_id
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="zapgate"'
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def field_errors(exc: ZapgateError) -> list[dict[str, str]]:
    """The invalid field an error names (services put it in `details["field"]`), as the `errors` list."""
    field = exc.details.get("field")
    return [{"field": field, "message": exc.message}] if isinstance(field, str) else []


def validation_errors(failures: Sequence[Any]) -> tuple[str, list[dict[str, str]]]:
    """A pydantic validation's failures as (one-line detail, field errors), as every 422 carries them."""
    errors = [
        {"field": _field(tuple(error.get("loc", ()))), "message": str(error.get("msg", "invalid"))}
        for error in failures
    ]
    detail = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
    return detail or "invalid request", errors


def zapgate_problem(exc: ZapgateError, path: str, rid: str | None) -> JSONResponse:
    """Return the problem+json answer to `exc`, raised while serving `path` for the request with id `rid`.

    The database's own words never reach the caller: they go to the log, with the request id the answer carries.
    """
    status = status_for(exc)
    detail = public_detail(exc, status)
    if detail != exc.message:
        log.warning("http.database_error", path=path, code=exc.code, error=exc.message, request_id=rid)
    elif status >= 500:
        log.warning("http.error", path=path, code=exc.code, error=exc.message, request_id=rid)
    if isinstance(exc, RateLimited):
        wait = max(1, math.ceil(exc.retry_after))
        return problem(status, detail, exc.code, headers={"Retry-After": str(wait)}, retryAfter=wait, request_id=rid)
    if isinstance(exc, QuotaExceeded):  # which quota, and how much it is: programs need not parse the detail
        return problem(status, detail, exc.code, quota=exc.quota, limit=exc.limit, request_id=rid)
    if isinstance(exc, EngineCallFailed) and exc.details.get("reason"):  # the engine's own code, for programs
        return problem(status, detail, exc.code, reason=exc.details["reason"], request_id=rid)
    errors = field_errors(exc)
    if errors:
        return problem(status, detail, exc.code, errors=errors, request_id=rid)
    return problem(status, detail, exc.code, request_id=rid)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(part) for part in loc if part not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def public_detail(exc: ZapgateError, status: int) -> str:
    """The `detail` a caller may read for `exc`: its message, except the database's own words (logged instead)."""
    if isinstance(exc, DatabaseError) or "sqlstate" in exc.details:
        return _DATABASE_DETAIL.get(status, "the database refused the request") + "; it has been logged"
    return exc.message


_DATABASE_DETAIL = {
    503: "the database failed; try again",
    422: "the database cannot store this value",
    409: "a record with this key already exists",
}


def install(app: FastAPI) -> None:
    """Answer every error of `app` with problem+json."""

    async def on_zapgate_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ZapgateError)
        return zapgate_problem(exc, request.url.path, request_id_of(request.scope))

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        detail, errors = validation_errors(exc.errors())
        return problem(422, detail, "validation_failed", errors=errors, request_id=request_id_of(request.scope))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return problem(
            exc.status_code, str(exc.detail), f"http_{exc.status_code}", request_id=request_id_of(request.scope)
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id_of(request.scope)
        log.error("http.unhandled", path=request.url.path, error=repr(exc), exc_info=exc, request_id=rid)
        return problem(500, "internal error; it has been logged", "internal_error", request_id=rid)

    app.add_exception_handler(ZapgateError, on_zapgate_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


def document(app: FastAPI) -> None:
    """Describe every error answer in `/openapi.json` as what it is: `application/problem+json`, a Problem."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        problem_ref = {"$ref": "#/components/schemas/Problem"}
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for code, answer in operation.get("responses", {}).items():
                    if not (code.isdigit() and int(code) >= 400):
                        continue
                    content = answer.setdefault("content", {})
                    described = content.pop("application/json", {})
                    entry: dict[str, Any] = {"schema": problem_ref}
                    if "example" in described:
                        entry["example"] = described["example"]
                    content[PROBLEM_JSON] = entry
        components = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
