"""Fixtures of the acceptance tests: a clean environment, `zapgate serve` processes that never outlive a test,
and an in-process sandbox worker."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from tests.acceptance.support import ServeFactory, ServeProcess, free_port
from zapgate.db.manager import ConnectionManager
from zapgate.services.worker import Worker


@pytest.fixture
def clear_zapgate_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Remove every zapgate variable from the environment and run in an empty folder (no stray .env)."""
    for name in list(os.environ):
        if name.startswith(("ZAPGATE_", "WHATSAPP_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def serve_process(tmp_path: Path) -> AsyncIterator[ServeFactory]:
    """Build `zapgate serve` processes (started by the test); any left running are stopped afterwards."""
    made: list[ServeProcess] = []

    def factory(
        *args: str,
        env: Mapping[str, str],
        cwd: Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        command: str = "serve",
    ) -> ServeProcess:
        """`zapgate COMMAND ARGS` answering on http://HOST:PORT (a free port, passed as --port, unless given)."""
        if port is None:
            port = free_port()
            args = (*args, "--port", str(port))
        log_dir = tmp_path / f"serve-logs-{len(made)}"
        log_dir.mkdir()
        process = ServeProcess(list(args), env, cwd or tmp_path, log_dir, f"http://{host}:{port}", command)
        made.append(process)
        return process

    yield factory
    for process in made:
        await process.kill()


@pytest.fixture
async def worker(database_url: str) -> AsyncIterator[Worker]:
    """A sandbox worker in the test's process, hosting the sessions the test creates."""
    async with ConnectionManager(database_url, pool_size=4, health_interval=3600) as manager:
        worker = Worker(manager, database_url, ("sandbox",), qr_timeout=30, poll_interval=0.2)
        await worker.start()
        try:
            yield worker
        finally:
            await worker.close()
