"""A property-based run over /openapi.json (schemathesis): no 5xx, and no answer that breaks its own schema."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.support import ADMIN_KEY, new_client, running_app
from zapgate.db.manager import ConnectionManager
from zapgate.services.worker import Worker
from zapgate.settings import Settings

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url, default_engine="sandbox", send_rate=0)
    async with running_app(settings, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        yield base_url, http


async def schemathesis(base_url: str, key: str, report_dir: Path, *only: str) -> tuple[int, str]:
    examples = os.environ.get("ZAPGATE_FUZZ_EXAMPLES", "25")
    proc = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance,content_type_conformance",
        "--header",
        f"X-API-Key: {key}",
        "--exclude-path",
        "/whatsapp/stream",  # an endless stream: tested by its own suite
        *only,
        "--max-examples",
        examples,
        "--seed",
        "20261129",
        "--request-timeout",
        "20",
        "--phases",
        "examples,coverage,fuzzing",
        cwd=report_dir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 540)
    return int(proc.returncode or 0), out.decode(errors="replace")


@pytest.mark.timeout(900)
async def test_no_answer_is_a_server_error_or_breaks_its_schema(
    api: tuple[str, httpx.AsyncClient], database_url: str, tmp_path: Path
) -> None:
    base_url, http = api
    acme = await new_client(http, "acme")
    for sid in ("user123", "s1"):
        assert (await http.post("/whatsapp/session", headers=acme, json={"sessionId": sid})).status_code == 201
    async with ConnectionManager(database_url, pool_size=3) as manager:
        worker = Worker(manager, database_url, ("sandbox",), qr_timeout=30, poll_interval=0.5)
        await worker.start()
        try:
            # the client's API with its key (the admin routes then only answer 401), then the admin API
            code, out = await schemathesis(base_url, acme["X-API-Key"], tmp_path, "--exclude-path-regex", "^/admin")
            assert code == 0, out[-20000:]
            code, out = await schemathesis(base_url, ADMIN_KEY, tmp_path, "--include-path-regex", "^/admin")
            assert code == 0, out[-20000:]
        finally:
            await worker.close()
