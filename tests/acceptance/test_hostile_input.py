"""Hostile input over every route of /openapi.json (hypothesis): every answer is below 500, every refusal is
problem+json, and nothing leaves a traceback in the log.

One test gives every parameter and body field of every route every hostile value in turn; another
(hypothesis) mixes them at random. The values are what breaks parsers: NUL bytes, lone surrogates, non-ASCII
digits ("²"), numbers past any integer type, undecodable bytes, huge strings. ZAPGATE_FUZZ_EXAMPLES sets how
many random examples run (default 250).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_from_bytes

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.acceptance.support import ADMIN_KEY, free_port
from zapgate.api.app import create_app
from zapgate.api.problems import PROBLEM_JSON
from zapgate.api.protocol import HttpProtocol
from zapgate.settings import Settings

EXAMPLES = int(os.environ.get("ZAPGATE_FUZZ_EXAMPLES", "250"))

HOSTILE_TEXT = [
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfff",
    "²",
    "1²",
    "\u0661\u0662",
    "9" * 400,
    str(2**63),
    "-1",
    "1e309",
    "NaN",
    "-Infinity",
    "",
    " ",
    "%00",
    "%ff",
    "../../etc/passwd",
    "' OR 1=1 --",
    "\u202e\u0000",
    "😀" * 50,
    "a" * 5000,
    "null",
    "[]",
    "{}",
    "user123",
    "5511999999999",
    "http://127.0.0.1/\x00",
    "https://[::1]:99999/",
]
HOSTILE_NUMBERS: list[Any] = [10**400, -(10**400), 2**63, 2**64, -1, 0, 1.5, -0.0, 1e308, True]
UNDECODABLE = [b"\xff\xfe\xfd", b'{"sessionId": "\xff"}', b"\xc3\x28", b'{"a": "\xed\xa0\x80"}']


def hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=40))


def hostile_value() -> st.SearchStrategy[Any]:
    scalar = st.one_of(
        hostile_text(), st.sampled_from(HOSTILE_NUMBERS), st.integers(), st.none(), st.booleans(), st.floats()
    )
    return st.one_of(scalar, st.lists(scalar, max_size=3), st.dictionaries(hostile_text(), scalar, max_size=3))


def as_url_part(value: str) -> str:
    return quote_from_bytes(value.encode("utf-8", "surrogatepass"), safe="")


def as_header(value: str) -> bytes:
    # h11 (the client) refuses control characters and surrounding blanks in a header: everything else goes
    cleaned = "".join(ch for ch in value if ch == "\t" or (ch >= " " and ch != "\x7f")).strip(" \t")
    return cleaned.encode("utf-8", "surrogatepass")[:4096]


class ServerThread:
    """The app served by uvicorn on a loop of its own (hypothesis drives it from synchronous code)."""

    def __init__(self, settings: Settings, database_url: str) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            create_app(settings, database_url),
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            lifespan="on",
            http=HttpProtocol,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        give_up = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < give_up, "uvicorn did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def base_url(clear_zapgate_env: None, database_url: str) -> Iterator[str]:
    config = Settings(admin_key=ADMIN_KEY, database_url=database_url, default_engine="sandbox", send_rate=0)
    with ServerThread(config, database_url) as url:
        yield url


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if path == "/health/ready":  # answers 503 by design while no worker is alive
                continue
            found.append((method.upper(), path, operation))
    return found


def body_fields(schema: dict[str, Any], operation: dict[str, Any]) -> list[str]:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    ref = content.get("schema", {}).get("$ref")
    if ref is None:
        return []
    model = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return list(model.get("properties", {}))


class Api:
    """The served app, as a client of "acme" (with a session) and the admin sees it; one hostile request at a time."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        created = http.post("/admin/clients", headers={"X-API-Key": ADMIN_KEY}, json={"clientId": "acme"})
        assert created.status_code == 201, created.text
        self.key = created.json()["apiKey"]
        session = http.post("/whatsapp/session", headers={"X-API-Key": self.key}, json={"sessionId": "user123"})
        assert session.is_success, session.text
        self.schema = http.get("/openapi.json").json()
        self.operations = operations(self.schema)
        assert len(self.operations) > 20  # every route, not a few
        self.reached: set[str] = set()

    def send(
        self,
        method: str,
        path: str,
        operation: dict[str, Any],
        values: dict[str, str],
        body: dict[str, Any] | bytes | None = None,
        api_key: str | None = None,
    ) -> None:
        """Send `values` as the operation's parameters (path ones default to "x"), check the answer."""
        url = path
        query: list[str] = []
        headers: dict[str, bytes] = {"X-API-Key": as_header(api_key) if api_key is not None else b""}
        if api_key is None:
            headers["X-API-Key"] = (ADMIN_KEY if path.startswith("/admin") else self.key).encode()
        for parameter in operation.get("parameters", []):
            where, name = parameter["in"], parameter["name"]
            value = values.get(name)
            if where == "path":
                url = url.replace("{" + name + "}", as_url_part(value if value is not None else "x") or "%20")
            elif value is None:
                continue
            elif where == "query":
                query.append(f"{as_url_part(name)}={as_url_part(value)}")
            elif where == "header" and name.lower() not in {"x-api-key", "authorization"}:
                headers[name] = as_header(value)
        content = None
        if method in {"POST", "PUT", "PATCH"}:
            # ASCII escapes: lone surrogates travel as JSON allows them
            content = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
            headers["Content-Type"] = b"application/json"
        if query:
            url += "?" + "&".join(query)
        with self.http.stream(method, url, headers=headers, content=content) as answer:
            status = answer.status_code
            text = answer.read().decode("utf-8", "replace") if status >= 400 else ""
        self.reached.add(path)
        assert status < 500, (method, url, content, status, text)
        if status >= 400 and status != 405:
            assert answer.headers["content-type"].startswith(PROBLEM_JSON), (method, url, status, text)
            assert json.loads(text)["code"], text


@pytest.fixture
def api(base_url: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> Iterator[Api]:
    """The app; afterwards, the log must hold no traceback and no failed audit write."""
    caplog.set_level(logging.WARNING)
    with httpx.Client(base_url=base_url, timeout=30) as http:
        yield Api(http)
    logged = capsys.readouterr().err
    assert "Traceback" not in logged, logged[-4000:]
    assert "audit.write_failed" not in logged, logged[-4000:]  # no hostile request poisons the audit log
    with_traceback = [record for record in caplog.records if record.exc_info]
    assert not with_traceback, [record.getMessage() for record in with_traceback]


HOSTILE_SCALARS: list[Any] = [*HOSTILE_TEXT, *HOSTILE_NUMBERS]


def test_every_parameter_and_field_of_every_route_takes_every_hostile_value(api: Api) -> None:
    for method, path, operation in api.operations:
        names = [parameter["name"] for parameter in operation.get("parameters", [])]
        for name in names:
            for value in HOSTILE_SCALARS:
                api.send(method, path, operation, {name: str(value)})
        fields = body_fields(api.schema, operation)
        for field in fields:
            for value in HOSTILE_SCALARS:
                api.send(method, path, operation, {}, {field: value})
        if method in {"POST", "PUT", "PATCH"}:
            for raw in UNDECODABLE:
                api.send(method, path, operation, {}, raw)
        for key in ("\x00", "²", "zg_" + "\u00ff" * 10, "a" * 5000):
            api.send(method, path, operation, {}, api_key=key)
    assert len(api.reached) == len({path for _, path, _ in api.operations})


def test_random_hostile_requests_never_reach_a_server_error(api: Api) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(data=st.data())
    def hostile_request(data: st.DataObject) -> None:
        method, path, operation = data.draw(st.sampled_from(api.operations), label="operation")
        values = {
            parameter["name"]: data.draw(
                st.one_of(hostile_text(), st.sampled_from(HOSTILE_NUMBERS).map(str)), label=parameter["name"]
            )
            for parameter in operation.get("parameters", [])
            if data.draw(st.booleans(), label=f"send {parameter['name']}")
        }
        body: dict[str, Any] | bytes = {
            field: data.draw(hostile_value(), label=field)
            for field in body_fields(api.schema, operation)
            if data.draw(st.booleans(), label=f"send {field}")
        }
        if data.draw(st.integers(0, 9), label="undecodable") == 9:
            body = data.draw(st.sampled_from(UNDECODABLE), label="bytes")
        hostile_key = data.draw(st.integers(0, 9), label="key") == 9  # mostly a good key: reach the routes
        api_key = data.draw(hostile_text(), label="api key") if hostile_key else None
        api.send(method, path, operation, values, body, api_key)

    hostile_request()
