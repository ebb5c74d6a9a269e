"""`zapgate serve` run for real: embedded PostgreSQL when DATABASE_URL is unset, the given server otherwise."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.acceptance.support import ADMIN, ADMIN_KEY, ServeFactory, clean_environ, free_port, query
from tests.acceptance.test_socketio import start_peer

NO_CLIENT_HINT = "no client yet"
# a requested stop (SIGTERM) is a clean stop: exit code 0, as service managers expect
CLEAN_EXIT = {0}


def postmasters_for(folder: Path) -> list[psutil.Process]:
    """Return the running `postgres` processes whose command line names `folder` (its data directory)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        if proc.info["name"] != "postgres" or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(str(folder) in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A fresh folder in the system temp dir (the embedded server needs traversable parents); emptied after."""
    folder = Path(tempfile.mkdtemp(prefix="zapgate-test-")).resolve()
    yield folder
    for proc in postmasters_for(folder):  # only left behind if the test failed half-way
        proc.terminate()
    psutil.wait_procs(postmasters_for(folder), timeout=10)
    shutil.rmtree(folder, ignore_errors=True)


async def test_embedded_database_is_started_kept_and_stopped(serve_process: ServeFactory, scratch_dir: Path) -> None:
    data_dir = scratch_dir / "data"
    env = clean_environ(ZAPGATE_DATA_DIR=str(data_dir), ZAPGATE_ADMIN_KEY=ADMIN_KEY)

    first = serve_process(env=env, cwd=scratch_dir)
    await first.start()
    await first.wait_healthy()

    assert NO_CLIENT_HINT in first.stderr
    assert (data_dir / "postgres" / "PG_VERSION").is_file()
    assert postmasters_for(data_dir), "no PostgreSQL runs on the data dir while serving"
    async with httpx.AsyncClient(base_url=first.base_url, timeout=10) as http:
        created = await http.post("/admin/clients", json={"clientId": "acme"}, headers=ADMIN)
        assert created.status_code == 201, created.text
        assert created.json()["apiKey"].startswith("zg_")
        docs = await http.get("/docs")
        assert docs.status_code == 200
        assert docs.headers["content-type"].startswith("text/html")
        assert "swagger-ui" in docs.text
        bundle = await http.get("/docs/static/swagger-ui-bundle.js")  # the docs work offline
        assert bundle.status_code == 200
        spec = await http.get("/openapi.json")
        assert spec.status_code == 200
        assert "/admin/clients" in spec.json()["paths"]

    assert await first.stop() in CLEAN_EXIT
    assert postmasters_for(data_dir) == [], "the embedded PostgreSQL outlived zapgate serve"

    second = serve_process(env=env, cwd=scratch_dir)
    await second.start()
    await second.wait_healthy()

    async with httpx.AsyncClient(base_url=second.base_url, timeout=10) as http:
        listed = await http.get("/admin/clients", headers=ADMIN)
    assert listed.status_code == 200, listed.text
    assert [client["clientId"] for client in listed.json()["clients"]] == ["acme"]
    assert NO_CLIENT_HINT not in second.stderr
    assert await second.stop() in CLEAN_EXIT
    assert postmasters_for(data_dir) == []


async def test_with_database_url_no_postgres_is_started(
    serve_process: ServeFactory, database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    server = serve_process(env=clean_environ(DATABASE_URL=database_url, ZAPGATE_DATA_DIR=str(data_dir)))
    await server.start()
    await server.wait_healthy()

    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        for _ in range(300):  # ready once its worker (a child process) has started
            ready = await http.get("/health/ready")
            if ready.status_code == 200:
                break
            await asyncio.sleep(0.1)
    assert ready.status_code == 200, ready.text
    assert not (data_dir / "postgres").exists()
    assert postmasters_for(data_dir) == []
    # the registry went into the given database
    assert (await query(database_url, "SELECT to_regclass('zapgate.clients') IS NOT NULL AS present"))[0]["present"]
    assert await server.stop() in CLEAN_EXIT


async def test_host_and_port_come_from_the_environment(serve_process: ServeFactory, database_url: str) -> None:
    port = free_port()
    env = clean_environ(DATABASE_URL=database_url, ZAPGATE_HOST="127.0.0.2", ZAPGATE_PORT=str(port))
    server = serve_process(env=env, host="127.0.0.2", port=port)
    await server.start()
    await server.wait_healthy()

    async with httpx.AsyncClient(timeout=5) as http:
        with pytest.raises(httpx.ConnectError):  # bound to ZAPGATE_HOST only
            await http.get(f"http://127.0.0.1:{port}/health")
    assert await server.stop() in CLEAN_EXIT


async def test_command_line_options_win_over_the_environment(serve_process: ServeFactory, database_url: str) -> None:
    ignored_port, port = free_port(), free_port()
    while port == ignored_port:
        port = free_port()
    env = clean_environ(DATABASE_URL=database_url, ZAPGATE_HOST="127.0.0.2", ZAPGATE_PORT=str(ignored_port))
    server = serve_process("--host", "127.0.0.1", "--port", str(port), env=env, port=port)
    await server.start()
    await server.wait_healthy()

    async with httpx.AsyncClient(timeout=5) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.2:{ignored_port}/health")
    assert await server.stop() in CLEAN_EXIT


class Wire:
    """One raw keep-alive HTTP/1.1 connection, so that a test knows which server process holds it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.local_port: int = writer.get_extra_info("sockname")[1]

    @classmethod
    async def open(cls, port: int) -> Wire:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        data = json.dumps(body).encode() if body is not None else b""
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(data)}"]
        lines += [f"{name}: {value}" for name, value in {"Content-Type": "application/json", **headers}.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        answer = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in head[1:] if line)}
        payload = await self.reader.readexactly(int(answer.get("content-length", "0")))
        return int(head[0].split()[1]), answer, json.loads(payload) if payload else None

    def close(self) -> None:
        self.writer.close()


def api_processes_of(serve_pid: int) -> list[psutil.Process]:
    """The API processes `zapgate serve` started (uvicorn's spawned children; workers and helpers left out)."""
    children = psutil.Process(serve_pid).children()
    return [child for child in children if "--multiprocessing-fork" in child.cmdline()]


def holder_of(wire: Wire, processes: list[psutil.Process]) -> int:
    """The pid of the process at the server end of `wire`."""
    for proc in processes:
        for conn in proc.net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == wire.local_port:
                return int(proc.pid)
    raise AssertionError(f"no API process holds the connection from port {wire.local_port}")


async def test_two_api_processes_on_one_port_keep_limits_idempotency_and_socketio(
    serve_process: ServeFactory, database_url: str
) -> None:
    port = free_port()
    env = clean_environ(
        DATABASE_URL=database_url,
        ZAPGATE_ADMIN_KEY=ADMIN_KEY,
        ZAPGATE_API_PROCESSES="2",
        ZAPGATE_WORKERS="0",  # nothing here needs a message sent
        ZAPGATE_DEFAULT_ENGINE="sandbox",
        ZAPGATE_SEND_RATE="1",
        ZAPGATE_SEND_BURST="5",
    )
    server = serve_process("--port", str(port), env=env, port=port)
    await server.start()
    await server.wait_healthy()
    give_up = time.monotonic() + 30
    while len(processes := api_processes_of(server.pid)) < 2 or not all(
        await asyncio.gather(*(asyncio.to_thread(lambda p=p: bool(p.net_connections())) for p in processes))
    ):
        assert time.monotonic() < give_up, f"expected 2 API processes, found {processes}"
        await asyncio.sleep(0.2)
    assert len(processes) == 2

    # connections until each process holds one: the kernel hands each new connection to one of them
    wires: dict[int, Wire] = {}
    opened: list[Wire] = []
    try:
        while len(wires) < 2:
            assert len(opened) < 500, "every connection went to the same API process"
            wire = await Wire.open(port)
            opened.append(wire)
            status, _, _ = await wire.request("GET", "/health", {})
            assert status == 200
            wires.setdefault(holder_of(wire, processes), wire)
        one, two = wires.values()

        status, _, created = await one.request("POST", "/admin/clients", ADMIN, {"clientId": "acme"})
        assert status == 201, created
        acme = {"X-API-Key": created["apiKey"]}
        status, _, _ = await two.request("POST", "/whatsapp/session", acme, {"sessionId": "s1"})
        assert status == 201
        send = {"sessionId": "s1", "to": "5511999999999", "message": "hello"}

        # an Idempotency-Key used on one process is replayed by the other
        keyed = {**acme, "Idempotency-Key": "order-1"}
        status, _, first = await one.request("POST", "/whatsapp/send", keyed, send)
        assert status == 202, first
        status, headers, again = await two.request("POST", "/whatsapp/send", keyed, send)
        assert status == 202 and headers["idempotent-replayed"] == "true" and again == first

        # the session's rate (burst 5, one used above) is shared: 4 more pass, alternating processes, then 429
        answers = []
        for i in range(6):
            status, headers, body = await (one if i % 2 else two).request("POST", "/whatsapp/send", acme, send)
            answers.append((status, headers.get("retry-after"), body))
        assert [status for status, _, _ in answers] == [202] * 4 + [429] * 2, answers
        assert answers[-1][2]["code"] == "rate_limited" and answers[-1][1] is not None
        rows = await query(database_url, "SELECT count(*) AS n FROM client_acme.messages")
        assert rows[0]["n"] == 5

        # Socket.IO: long-polling is refused (its requests would land on either process), WebSocket works
        status, _, _ = await one.request("GET", "/socket.io/?EIO=4&transport=polling", {})
        assert status == 400
    finally:
        for wire in opened:
            wire.close()
    node = shutil.which("node")
    assert node is not None, "the Socket.IO tests need node"
    peers = [await start_peer(node, server.base_url, acme["X-API-Key"], "websocket") for _ in range(4)]
    try:
        for peer in peers:
            assert (await peer.connected())["kind"] == "connect"
            listed = await peer.call("get-sessions")
            assert listed["ok"] and [s["sessionId"] for s in listed["sessions"]] == ["s1"], listed
    finally:
        await asyncio.gather(*(peer.close() for peer in peers))

    assert await server.stop() in CLEAN_EXIT
    assert not any(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE for proc in processes)


async def test_api_runs_without_workers_and_is_ready_once_a_worker_runs_elsewhere(
    serve_process: ServeFactory, database_url: str, tmp_path: Path
) -> None:
    env = clean_environ(DATABASE_URL=database_url, ZAPGATE_WORKERS="3")  # `api` starts none, whatever it says
    api = serve_process(env=env, command="api")
    await api.start()
    await api.wait_healthy()
    assert psutil.Process(api.pid).children() == [], "zapgate api started processes of its own"

    async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
        ready = await http.get("/health/ready")
        assert ready.status_code == 503, ready.text
        assert "no live worker" in ready.json()["checks"]["workers"]

        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "zapgate", "worker", env=env, cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL
        )
        try:
            for _ in range(300):
                ready = await http.get("/health/ready")
                if ready.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert ready.status_code == 200, ready.text
        finally:
            worker.terminate()
            assert await asyncio.wait_for(worker.wait(), 30) in CLEAN_EXIT
    assert await api.stop() in CLEAN_EXIT
