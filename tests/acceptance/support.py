"""Running zapgate for real (the CLI, `serve` and workers as subprocesses, the app under uvicorn in-process) and
talking to it over HTTP as its clients do: the acceptance tests' shared toolkit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
import pytest
import uvicorn

from tests.acceptance.sse import read_sse
from tests.support.waiting import eventually
from zapgate.api.app import create_app
from zapgate.api.protocol import HttpProtocol
from zapgate.settings import Settings

ADMIN_KEY = "test-admin-key-0123456789"
ADMIN = {"X-API-Key": ADMIN_KEY}
CLIENT_ID_RULE = "expected 1-48 characters of a-z, 0-9 and _, starting with a letter or digit"

# each is refused by the one client id validator (and must never reach the database)
BAD_CLIENT_IDS = ["Acme", "a'b", 'a"b', "a;b", "a-b", "..", "a b", "a" * 49, "", "açme"]

SERVE_START_DEADLINE = 60.0  # seconds: the embedded PostgreSQL may need an initdb first
SERVE_STOP_DEADLINE = 30.0  # seconds
LEASE_TTL = 5  # seconds: the leases of the workers WorkerProcesses starts
PROBLEM_JSON = "application/problem+json"


# The ports free_port hands out lie below Linux's ephemeral range (32768-60999), from which the kernel draws every
# outgoing connection's port and every bind to port 0, and each pytest-xdist worker (gw0, gw1, ...) has a block of
# its own: between free_port() and the server's bind, no client socket and no other worker can take the port.
FIRST_PORT = 20_000
PORTS_PER_WORKER = 1_000
WORKER_BLOCKS = 12  # 20000-31999
_port_cursor = random.randrange(PORTS_PER_WORKER)  # another suite run at the same time starts elsewhere in the block


def _worker_block() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # set in each worker; unset when pytest runs without -n
    index = int(worker.removeprefix("gw")) if worker.removeprefix("gw").isdigit() else 0
    return FIRST_PORT + (index % WORKER_BLOCKS) * PORTS_PER_WORKER


def free_port() -> int:
    """Return a loopback TCP port that is free right now and that no other test worker is handed."""
    global _port_cursor
    block = _worker_block()
    for _ in range(PORTS_PER_WORKER):
        port = block + _port_cursor % PORTS_PER_WORKER
        _port_cursor += 1
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # in use, or still in TIME_WAIT: the next one
                continue
        return port
    raise RuntimeError(f"no free port in {block}-{block + PORTS_PER_WORKER - 1}")


def clean_environ(**extra: str) -> dict[str, str]:
    """Return this process's environment without any zapgate setting, plus `extra`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ZAPGATE_", "WHATSAPP_")) and name != "DATABASE_URL"
    }
    env.update(extra)
    return env


@dataclass(frozen=True)
class Result:
    """What a finished CLI run printed and returned."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()


CliRunner = Callable[..., Awaitable[Result]]


async def run_zapgate(*args: str, env: Mapping[str, str], cwd: Path, within: float = 60.0) -> Result:
    """Run `python -m zapgate ARGS` to completion."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "zapgate",
        *args,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def query(database_url: str, sql: str, *params: object) -> list[asyncpg.Record]:
    """Run one query on `database_url` with a connection of its own."""
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(sql, *params))
    finally:
        await conn.close()


async def client_schemas(database_url: str) -> list[str]:
    """Return the names of every client schema in the database."""
    rows = await query(database_url, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'client%' ORDER BY 1")
    return [row["nspname"] for row in rows]


async def registered_clients(database_url: str) -> list[str]:
    """Return the client ids in the registry (empty if the registry does not exist yet)."""
    exists = await query(database_url, "SELECT to_regclass('zapgate.clients') IS NOT NULL AS present")
    if not exists[0]["present"]:
        return []
    rows = await query(database_url, "SELECT client_id FROM zapgate.clients ORDER BY 1")
    return [row["client_id"] for row in rows]


class ServeProcess:
    """`zapgate serve` in a subprocess, its output captured in files."""

    def __init__(
        self, args: list[str], env: Mapping[str, str], cwd: Path, log_dir: Path, base_url: str, command: str = "serve"
    ) -> None:
        self.args, self.env, self.cwd, self.base_url, self.command = args, dict(env), cwd, base_url, command
        self._log_dir = log_dir
        self._proc: asyncio.subprocess.Process | None = None
        self._files: list[IO[bytes]] = []
        self._stderr_path: Path | None = None
        self._runs = 0

    @property
    def pid(self) -> int:
        """The process id of the running server."""
        assert self._proc is not None
        return self._proc.pid

    @property
    def stderr(self) -> str:
        """Everything the current (or last) run wrote on stderr so far."""
        return "" if self._stderr_path is None else self._stderr_path.read_text(errors="replace")

    async def start(self) -> None:
        self._runs += 1
        stdout = (self._log_dir / f"serve-{self._runs}.out").open("wb")
        self._stderr_path = self._log_dir / f"serve-{self._runs}.err"
        stderr = self._stderr_path.open("wb")
        self._files += [stdout, stderr]
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "zapgate",
            self.command,
            *self.args,
            env=self.env,
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )

    async def wait_healthy(self, deadline: float = SERVE_START_DEADLINE) -> None:
        """Poll GET /health until it answers 200; fail with the server's stderr if it exits or takes too long."""
        assert self._proc is not None
        give_up = time.monotonic() + deadline
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as http:
            while True:
                if self._proc.returncode is not None:
                    pytest.fail(f"zapgate serve exited with {self._proc.returncode}:\n{self.stderr}")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/health")).status_code == 200:
                        return
                if time.monotonic() > give_up:
                    pytest.fail(f"zapgate serve did not answer /health within {deadline} s:\n{self.stderr}")
                await asyncio.sleep(0.1)

    async def stop(self, within: float = SERVE_STOP_DEADLINE) -> int:
        """Send SIGTERM and wait for the process to exit; return its exit code."""
        assert self._proc is not None
        if self._proc.returncode is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._proc.wait(), within)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
                pytest.fail(f"zapgate serve did not exit within {within} s of SIGTERM:\n{self.stderr}")
        self._close_files()
        assert self._proc.returncode is not None
        return self._proc.returncode

    async def kill(self) -> None:
        """Make sure nothing is left running (teardown after a failed test)."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._proc.wait(), SERVE_STOP_DEADLINE)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        self._close_files()

    def _close_files(self) -> None:
        for file in self._files:
            file.close()
        self._files.clear()


ServeFactory = Callable[..., ServeProcess]


@contextlib.asynccontextmanager
async def running_app(settings: Settings, database_url: str) -> AsyncIterator[str]:
    """Serve `create_app(settings, database_url)` with uvicorn on a free loopback port; yield its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, database_url), host="127.0.0.1", port=port, log_config=None, http=HttpProtocol
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        give_up = time.monotonic() + 30.0
        while not server.started:
            if task.done():
                task.result()  # raises the startup error
                pytest.fail("uvicorn stopped before it started")
            if time.monotonic() > give_up:
                pytest.fail("uvicorn did not start within 30 s")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30.0)


@contextlib.asynccontextmanager
async def api_client(database_url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app served with the admin key, the sandbox as default engine, and `settings`."""
    config = Settings(admin_key=ADMIN_KEY, database_url=database_url, default_engine="sandbox", **settings)
    async with running_app(config, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        yield http


class WorkerProcesses:
    """`zapgate worker` processes on one database, with short leases; `close` stops them (SIGTERM, then SIGKILL)."""

    def __init__(self, database_url: str, log_dir: Path) -> None:
        self.env = clean_environ(
            DATABASE_URL=database_url,
            ZAPGATE_LEASE_TTL=str(LEASE_TTL),
            ZAPGATE_LOG_LEVEL="info",
            WHATSAPP_QR_TIMEOUT="60000",
        )
        self.log_dir = log_dir
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self) -> asyncio.subprocess.Process:
        with (self.log_dir / f"worker-{len(self.procs)}.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "zapgate",
                "worker",
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=asyncio.subprocess.DEVNULL,
            )
        self.procs.append(proc)
        return proc

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Check that `response` is a problem+json document with `status` (and `code`); return it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail", "code"} <= body.keys(), body
    assert body["status"] == status
    assert body["type"].endswith("/" + body["code"])
    assert body["title"] and body["detail"]
    if code is not None:
        assert body["code"] == code, body
    return body


async def new_client(api: httpx.AsyncClient, client_id: str) -> dict[str, str]:
    """Create the client `client_id` through the admin API; return the headers that authenticate as it."""
    response = await api.post("/admin/clients", headers=ADMIN, json={"clientId": client_id})
    assert response.status_code == 201, response.text
    return {"X-API-Key": response.json()["apiKey"]}


async def linked(api: httpx.AsyncClient, headers: dict[str, str], session: str, phone: str) -> None:
    """Create `session` and link it to the sandbox phone `phone` (scan its QR code); return once connected."""
    assert (await api.post("/whatsapp/session", headers=headers, json={"sessionId": session})).status_code == 201

    async def shows_qr() -> bool:
        return bool((await api.get(f"/whatsapp/sessions/{session}", headers=headers)).json()["qrCode"])

    await eventually(shows_qr, within=20.0)
    scan = await api.post(f"/whatsapp/sandbox/sessions/{session}/scan", headers=headers, json={"phoneNumber": phone})
    assert scan.status_code == 202

    async def connected() -> bool:
        return (await api.get(f"/whatsapp/sessions/{session}", headers=headers)).json()["status"] == "connected"

    await eventually(connected, within=20.0)


# -- messages --------------------------------------------------------------------------------------------


async def send(api: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]) -> str:
    answer = await api.post("/whatsapp/messages", headers=headers, json=body)
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "pending"
    return str(answer.json()["messageId"])


async def message(api: httpx.AsyncClient, headers: dict[str, str], session: str, message_id: str) -> dict[str, Any]:
    answer = await api.get(f"/whatsapp/messages/{message_id}", headers=headers, params={"sessionId": session})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def sent(api: httpx.AsyncClient, headers: dict[str, str], session: str, message_id: str) -> dict[str, Any]:
    """The message once it went out (read by the sandbox's simulated recipient)."""
    found: dict[str, Any] = {}

    async def read() -> bool:
        found.update(await message(api, headers, session, message_id))
        assert found["status"] != "failed", found
        return bool(found["status"] == "read")

    await eventually(read, within=20.0)
    return found


async def received(api: httpx.AsyncClient, headers: dict[str, str], session: str, kind: str) -> list[dict[str, Any]]:
    """The messages of `kind` the session received, newest first."""
    page = await api.get("/whatsapp/messages", headers=headers, params={"sessionId": session, "direction": "inbound"})
    assert page.status_code == 200, page.text
    return [m for m in page.json()["messages"] if m["type"] == kind]


async def events(api: httpx.AsyncClient, headers: dict[str, str], session: str, wanted: str) -> list[dict[str, Any]]:
    """Every event of type `wanted` of the session so far (read from the start of the log over SSE)."""
    found: list[dict[str, Any]] = []
    params = {"sessionId": session, "lastEventId": "0"}
    try:
        async with asyncio.timeout(3.0), api.stream("GET", "/whatsapp/stream", headers=headers, params=params) as r:
            async for item in read_sse(r):
                if item.event == wanted:
                    found.append(item.data)
    except TimeoutError:
        pass
    return found
