"""Choose the HTTP server by the numbers: zapgate's app under each candidate, side by side, loaded by wrk.

Each candidate serves `create_app` in a process of its own (all running at once, idle but for the one
loaded), on the same fresh database, with 10 sandbox sessions that accept sends: with no worker (the
server's share alone), or with --worker a `zapgate worker` that really sends them while measured, as in
production. Each candidate's pool holds 10 connections, as the floor's. Rounds rotate over the candidates and
the floor (`floor.py`): POST /whatsapp/send (POST /insert for the floor) and GET /health (GET /empty), wrk -t2
-c32. CPU ms/request is the serving process's own; a candidate with refused requests is marked INVALID.

- uvicorn-h11:       uvicorn with h11 and the default asyncio loop (what `zapgate serve` ran before issue 13)
- uvicorn-httptools: uvicorn with httptools and uvloop
- uvicorn-joined:    the same, with zapgate's protocol (a response's head and body in one write: api/protocol.py),
                     what `zapgate serve` runs
- granian:           granian (Rust HTTP server), ASGI interface, uvloop

    apt-get install -y wrk
    .venv/bin/python benchmarks/http_servers.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python benchmarks/http_servers.py --database-url ... --worker --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from http_send import (
    HERE,
    SESSIONS,
    Round,
    Server,
    connect_sessions,
    create_client,
    measured_round,
    start,
    wrk,
    zapgate_env,
)
from support import free_port, run_on
from zapgate.db.manager import ConnectionManager
from zapgate.services.sessions import SessionService

CANDIDATES = ("uvicorn-h11", "uvicorn-httptools", "uvicorn-joined", "granian")


def app_from_environment() -> object:
    """The app for granian, which imports its target in a worker process of its own."""
    from zapgate.api.app import create_app
    from zapgate.log import configure_logging
    from zapgate.settings import Settings

    url = os.environ["BENCH_DATABASE_URL"]
    configure_logging("warning")
    # as http_send.py: both rate limits on the path (and counted), refusing nothing. A pool of 10 (the floor's):
    # four candidates of 20 with a worker and the floor went past PostgreSQL's default 100 connections
    settings = Settings(
        database_url=url, default_engine="sandbox", send_rate=0, request_rate=1_000_000_000, db_pool_size=10
    )
    return create_app(settings, url)


def serve(candidate: str, url: str, port: int) -> None:
    """Run the app under `candidate` on `port` (the child process)."""
    os.environ["BENCH_DATABASE_URL"] = url
    if candidate == "granian":
        from granian import Granian
        from granian.constants import Interfaces, Loops

        Granian(
            "http_servers:app_from_environment",
            port=port,
            interface=Interfaces.ASGI,
            loop=Loops.uvloop,
            factory=True,
            log_enabled=False,
            working_dir=HERE,
        ).serve()
        return
    import uvicorn

    from zapgate.api.protocol import HttpProtocol

    loop, http = {
        "uvicorn-h11": ("asyncio", "h11"),
        "uvicorn-httptools": ("uvloop", "httptools"),
        "uvicorn-joined": ("uvloop", HttpProtocol),
    }[candidate]
    app = app_from_environment()
    uvicorn.run(app, host="127.0.0.1", port=port, loop=loop, http=http, log_config=None, access_log=False)  # type: ignore[arg-type]


async def benchmark(url: str, args: argparse.Namespace) -> None:
    key = await create_client(url)
    folder = Path(tempfile.mkdtemp(prefix="zg-http-servers-", dir="/tmp"))
    servers = await start_servers(url, args, folder)
    worker = servers.pop("worker", None)
    try:
        for name, server in servers.items():
            await server.wait_answering("/empty" if name == "floor" else "/health")
        if worker is not None:
            await connect_sessions(servers["uvicorn-httptools"].base, key)
        await rotate(servers, args, key)
    finally:
        for server in [*servers.values(), *([worker] if worker else [])]:
            await server.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def start_servers(url: str, args: argparse.Namespace, folder: Path) -> dict[str, Server]:
    """The candidates, the floor and (with --worker) a worker, started; sessions created when no worker runs."""
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    servers: dict[str, Server] = {}
    if args.worker:  # as in production: the texts are sent, and the worker and PostgreSQL share the cores
        worker_env = zapgate_env(url, argparse.Namespace(workers=0, api_processes=None, env=[]), 8000)
        worker_argv = [sys.executable, "-m", "zapgate", "worker"]
        servers["worker"] = await start("worker", worker_argv, worker_env, folder, 0)
    else:
        async with ConnectionManager(url, pool_size=2) as manager:
            sessions = SessionService(manager, default_engine="sandbox")
            for sid in SESSIONS:
                await sessions.create("bench", sid)  # created sessions accept sends (nobody sends them)
    for candidate in CANDIDATES:
        port = free_port()
        argv = [sys.executable, str(HERE / "http_servers.py"), "--serve", candidate, url, str(port)]
        servers[candidate] = await start(candidate, argv, env, folder, port)
    fport = free_port()
    floor_env = {**os.environ, "FLOOR_DSN": url, "PORT": str(fport)}
    servers["floor"] = await start("floor", [sys.executable, str(HERE / "floor.py")], floor_env, folder, fport)
    return servers


async def rotate(servers: dict[str, Server], args: argparse.Namespace, key: str) -> None:
    """Rounds over every server and path; the mean of each and its ratio to the floor."""
    paths = {"send": ("/whatsapp/send", "/insert", "send.lua"), "health": ("/health", "/empty", "get.lua")}
    for name, server in servers.items():  # warm up
        for ours, floors, script in paths.values():
            await wrk(server.base + (floors if name == "floor" else ours), script, 2, args, key)
    rates: dict[tuple[str, str], list[Round]] = {}
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, {args.rounds} rotating rounds")
    for n in range(args.rounds):
        for kind, (ours, floors, script) in paths.items():
            for name, server in servers.items():
                r = await measured_round(server, floors if name == "floor" else ours, script, args, key, None)
                rates.setdefault((kind, name), []).append(r)
                cpu_ms = r.cpu["api"] / r.summary["requests"] * 1000
                print(
                    f" {n + 1} {kind:<6} {name:<18} {r.rate:>7.0f} req/s  p99 {r.summary['p99_ms']:6.2f} ms  "
                    f"non-2xx {r.summary['non2xx']}  CPU ms/request {cpu_ms:.3f}",
                    flush=True,
                )
    print("\nmean req/s and ratio to the floor (POST /insert, GET /empty) in the same rounds")
    for kind in paths:
        floor = statistics.fmean(r.rate for r in rates[(kind, "floor")])
        for name in CANDIDATES:
            ours = statistics.fmean(r.rate for r in rates[(kind, name)])
            refused = sum(r.summary["non2xx"] + r.summary["socket_errors"] for r in rates[(kind, name)])
            verdict = f"  INVALID: {refused} requests refused or failed" if refused else ""
            print(f"  {kind:<6} {name:<18} {ours:>7.0f} req/s  {ours / floor:5.0%} of the floor's {floor:.0f}{verdict}")


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("ZAPGATE_BENCH_DATABASE_URL"))
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help="a worker sends the texts (connected sessions)")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c")
    args = parser.parse_args()
    run_on(args.database_url, lambda url: benchmark(url, args))


if __name__ == "__main__":
    main()
