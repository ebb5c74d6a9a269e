"""What the benchmark scripts share: a database to run on, percentiles, verdicts."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from zapgate.db.embedded import EmbeddedPostgres

MONITOR_APP_NAME = "zapgate-bench-monitor"  # connections of the benchmark itself, told apart from the pool's

Benchmark = Callable[[str], Awaitable[None]]


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of `values` (`fraction` in 0..1), or NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def verdict(met: bool) -> str:
    """Print a target's outcome."""
    return "met" if met else "NOT MET"


def run_on(database_url: str | None, benchmark: Benchmark) -> None:
    """Run `benchmark(url)` on a fresh database of `database_url`'s server, or on a fresh embedded server."""
    if database_url:
        asyncio.run(_on_fresh_database(database_url, benchmark))
    else:
        _on_embedded_server(benchmark)


async def _on_fresh_database(server_url: str, benchmark: Benchmark) -> None:
    """Create a database `zg_bench_<random>` on `server_url`, benchmark it, and drop it."""
    admin = make_url(server_url).set(drivername="postgresql")
    name = f"zg_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(
        admin.render_as_string(hide_password=False), server_settings={"application_name": MONITOR_APP_NAME}
    )
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')  # name is ours: zg_bench_ + hex
        print(f"database {name} created on {admin.host}:{admin.port or 5432}", flush=True)
        try:
            await benchmark(admin.set(database=name).render_as_string(hide_password=False))
        finally:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            print(f"database {name} dropped")
    finally:
        await conn.close()


def _on_embedded_server(benchmark: Benchmark) -> None:
    """Benchmark a fresh embedded PostgreSQL in a temporary folder under /tmp, removed at the end."""
    folder = Path(tempfile.mkdtemp(prefix="zg-bench-", dir="/tmp"))
    server = EmbeddedPostgres(folder)
    try:
        url = server.start()
        print(f"embedded PostgreSQL in {folder}", flush=True)
        asyncio.run(benchmark(url))
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_server(script: str, url: str) -> tuple[asyncio.subprocess.Process, int]:
    """Start `script --serve URL PORT` (a benchmark's server half) and wait until it accepts connections."""
    port = free_port()
    child = await asyncio.create_subprocess_exec(sys.executable, script, "--serve", url, str(port))
    for _ in range(600):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return child, port
    child.terminate()
    raise RuntimeError(f"the server of {script} did not start within 60 s")


async def stop_server(child: asyncio.subprocess.Process) -> None:
    """Stop a server started by `start_server`."""
    child.terminate()
    await asyncio.wait_for(child.wait(), 30)
