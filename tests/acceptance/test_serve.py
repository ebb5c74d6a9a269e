"""`zapgate serve` run for real: embedded PostgreSQL when DATABASE_URL is unset, the given server otherwise."""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.acceptance.support import ADMIN, ADMIN_KEY, ServeFactory, clean_environ, free_port, query

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
