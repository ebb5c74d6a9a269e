"""Measure the send path from outside: `zapgate serve` against an independent floor, loaded by wrk.

Method of ../shared/bench/README.md. Everything runs as processes of their own on the same PostgreSQL:

- zapgate: `python -m zapgate serve` (its API process(es) and its worker(s), as in production) with 10
  connected sandbox sessions s0..s9 that really send (each text is sent, and its delivered receipt stored);
  `ZAPGATE_SEND_RATE=0` and a huge `ZAPGATE_REQUEST_RATE` so the rate limits refuse nothing (they stay metered).
- floor: `benchmarks/floor.py`, a minimal FastAPI + uvicorn (uvloop, httptools) + asyncpg app doing one
  INSERT per POST /insert, and GET /empty answering {}: nothing a send does can cost less on this stack.
- load: wrk (C, closed loop: -t2 -c32), the same Lua script for both (`wrk/send.lua`, ../shared/bench's).
  Install it with `apt-get install -y wrk`.

Three parts, and a fourth on request:

1. throughput, alternating rounds (floor, zapgate, floor, zapgate ...): POST /insert vs POST /whatsapp/send,
   GET /empty vs GET /health; requests/s, latency, and the ratio of the means.
2. latency at half of zapgate's send rate, open loop (`loadgen.py`, a separate process: requests start on
   schedule and latency counts from the scheduled time), zapgate and then the floor at the same rate.
3. end to end: `loadgen.py` sends --e2e-rate texts/s for --e2e-duration s through POST /whatsapp/send; the
   event log gives, per second, the texts accepted and the delivered receipts stored, so the backlog
   (accepted, no delivered receipt yet) is exact; the outbound queue (pending) is also sampled every 2 s.
   CPU milliseconds per message for the API process(es), the worker(s), the PostgreSQL backends of the
   benchmark's database, and the load generator.

B. bound (`--parts bound`, or `--parts throughput,bound,latency,e2e`): alternating rounds of the floor's POST
   /insert, the send floor's POST /send (`send_floor.py`: the same stack storing each message, and a sender
   process that sends and records it with its three status events, the least any durable outbox does) and
   zapgate's POST /whatsapp/send, each sender's backlog drained before the next round. It tells how much of
   the gap to the floor is sending at all, and how much is zapgate.

Targets (issue 13): send >= 60 % of the floor's requests/s with p99 < 50 ms at half that rate; GET /health
>= 80 % of GET /empty; >= 1,000 messages/s end to end for 60 s with the backlog bounded.

    apt-get install -y wrk
    .venv/bin/python benchmarks/http_send.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python benchmarks/http_send.py --database-url ... --parts throughput --rounds 4 --api-processes 2

With --database-url it creates a fresh database `zg_bench_<random>` on that server (zapgate's schemas and the
floor's table) and drops it at the end; without, a fresh embedded PostgreSQL under /tmp.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from support import MONITOR_APP_NAME, free_port, run_on, verdict  # benchmarks/support.py, beside this script
from zapgate.db.manager import ConnectionManager
from zapgate.services.clients import ClientService

HERE = Path(__file__).resolve().parent
CLIENT = "bench"
SCHEMA = "client_bench"
SESSIONS = [f"s{n}" for n in range(10)]  # as send.lua spreads them
SESSION_PHONE = 5511900000000  # + n: the phones linked to the sessions; send.lua writes to 5511990001234
STARTUP_TIMEOUT = 60.0  # seconds

TARGET_SEND_RATIO = 0.60
TARGET_HEALTH_RATIO = 0.80
TARGET_P99_MS = 50.0
TARGET_E2E = 1000.0  # messages/s


# -- processes ------------------------------------------------------------------------------------------------


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds (user + system) used so far by the processes `pids` that still run."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


@dataclass
class Server:
    """A server process (zapgate serve or the floor) on a loopback port."""

    name: str
    proc: asyncio.subprocess.Process
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def groups(self) -> dict[str, list[int]]:
        """Its processes by role: `api` (the serving process(es)) and `worker` (zapgate's engine workers)."""
        groups: dict[str, list[int]] = {"api": [self.proc.pid], "worker": []}
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    role = "worker" if "worker" in child.cmdline() else "api"
                    groups[role].append(child.pid)
        return groups

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def wait_answering(self, path: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        async with httpx.AsyncClient(base_url=self.base, timeout=2.0) as http:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(path)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not answer {path} in {STARTUP_TIMEOUT:g} s")
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 40)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def start(name: str, argv: Sequence[str], env: dict[str, str], folder: Path, port: int) -> Server:
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=folder, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )
    return Server(name, proc, port, log)


def zapgate_env(url: str, args: argparse.Namespace, port: int) -> dict[str, str]:
    """Our environment without zapgate's variables, plus the benchmark's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZAPGATE_", "WHATSAPP_")) and k != "DATABASE_URL"}
    env.update(
        DATABASE_URL=url,
        ZAPGATE_PORT=str(port),
        ZAPGATE_LOG_LEVEL="warning",
        ZAPGATE_SEND_RATE="0",  # the rate limit stays on the path (and counted) but refuses nothing
        ZAPGATE_REQUEST_RATE="1000000000",  # likewise the per-key request rate: metered, never refusing
        ZAPGATE_DEFAULT_ENGINE="sandbox",
        ZAPGATE_WORKERS=str(args.workers),
        WHATSAPP_SESSION_TIMEOUT=str(24 * 3600 * 1000),  # the sessions stay hosted while measured
    )
    if args.api_processes is not None:
        env["ZAPGATE_API_PROCESSES"] = str(args.api_processes)
    for item in args.env:
        name, _, value = item.partition("=")
        env[name] = value
    return env


# -- wrk ------------------------------------------------------------------------------------------------------


@dataclass
class Round:
    """One wrk run: its summary (see wrk/send.lua) and the CPU seconds of each process group meanwhile."""

    rate: float
    summary: dict[str, Any]
    cpu: dict[str, float] = field(default_factory=dict)


async def wrk(url: str, script: str, seconds: float, args: argparse.Namespace, key: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds:g}s",
        "-s",
        str(HERE / "wrk" / script),
        url,
        env={**os.environ, "ZGKEY": key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode()}{out.decode()}")
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


async def measured_round(
    server: Server, path: str, script: str, args: argparse.Namespace, key: str, postgres: PostgresPids | None
) -> Round:
    groups = server.groups()
    if postgres is not None:
        groups["postgres"] = await postgres.backends()
    before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    summary = await wrk(server.base + path, script, args.duration, args, key)
    cpu = {name: cpu_seconds(pids) - before[name] for name, pids in groups.items()}
    return Round(summary["requests"] / summary["seconds"], summary, cpu)


# -- PostgreSQL -----------------------------------------------------------------------------------------------


class PostgresPids:
    """The PostgreSQL backends serving the benchmark's database (the monitor's own connection left out)."""

    def __init__(self, monitor: asyncpg.Connection, database: str) -> None:
        self.monitor, self.database = monitor, database

    async def backends(self) -> list[int]:
        rows = await self.monitor.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name <> $2",
            self.database,
            MONITOR_APP_NAME,
        )
        return [int(row["pid"]) for row in rows]


# -- setup ----------------------------------------------------------------------------------------------------


async def create_client(url: str) -> str:
    async with ConnectionManager(url, pool_size=2) as manager:
        await manager.migrate_registry()
        issued = await ClientService(manager).create(CLIENT)
        return issued.api_key


async def connect_sessions(base: str, key: str) -> None:
    """Create the sandbox sessions through the API, let a simulated phone scan each QR code, wait for all."""
    headers = {"X-API-Key": key}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http:
        for sid in SESSIONS:
            made = await http.post("/whatsapp/session", json={"sessionId": sid, "engine": "sandbox"})
            made.raise_for_status()

        async def states() -> dict[str, dict[str, Any]]:
            listed = (await http.get("/whatsapp/sessions")).json()["sessions"]
            return {s["sessionId"]: s for s in listed}

        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not all(state.get("qrCode") for state in (await states()).values()):
            if time.monotonic() > deadline:
                raise RuntimeError("the sessions showed no QR code in time")
            await asyncio.sleep(0.2)
        for n, sid in enumerate(SESSIONS):
            scanned = await http.post(
                f"/whatsapp/sandbox/sessions/{sid}/scan", json={"phoneNumber": str(SESSION_PHONE + n)}
            )
            scanned.raise_for_status()
        while not all(s["status"] == "connected" for s in (await states()).values()):
            if time.monotonic() > deadline:
                raise RuntimeError("the sessions did not connect in time")
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def servers(
    url: str, args: argparse.Namespace, folder: Path
) -> AsyncIterator[tuple[Server, Server, Server | None, str]]:
    """zapgate serve (with its sessions connected), the floor and (for the bound part) the send floor, all
    answering; the client's API key."""
    key = await create_client(url)
    zport, fport, sport = free_port(), free_port(), free_port()
    python = sys.executable
    zapgate = await start("zapgate", [python, "-m", "zapgate", "serve"], zapgate_env(url, args, zport), folder, zport)
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    floor = await start(
        "floor", [python, str(HERE / "floor.py")], {**os.environ, "FLOOR_DSN": dsn, "PORT": str(fport)}, folder, fport
    )
    send_floor = None
    if "bound" in args.parts:
        env = {**os.environ, "FLOOR_DSN": dsn, "PORT": str(sport)}
        send_floor = await start("send-floor", [python, str(HERE / "send_floor.py")], env, folder, sport)
    try:
        await zapgate.wait_answering("/health")
        await floor.wait_answering("/empty")
        if send_floor is not None:
            await send_floor.wait_answering("/pending")
        await connect_sessions(zapgate.base, key)
        yield zapgate, floor, send_floor, key
    finally:
        await zapgate.stop()
        await floor.stop()
        if send_floor is not None:
            await send_floor.stop()


# -- 1. throughput --------------------------------------------------------------------------------------------


def describe(name: str, r: Round) -> str:
    s = r.summary
    cpu = "  ".join(f"{k} {v / max(1, s['requests']) * 1000:.2f}" for k, v in r.cpu.items() if v > 0)
    return (
        f"  {name:<22} {r.rate:>7.0f} req/s  mean {s['mean_ms']:6.2f} ms  p99 {s['p99_ms']:6.2f} ms  "
        f"non-2xx {s['non2xx']}  errors {s['socket_errors']}   CPU ms/request: {cpu}"
    )


async def throughput(
    zapgate: Server, floor: Server, key: str, args: argparse.Namespace, postgres: PostgresPids
) -> dict[str, list[Round]]:
    pairs = [
        ("floor POST /insert", floor, "/insert", "send.lua"),
        ("zapgate POST /send", zapgate, "/whatsapp/send", "send.lua"),
        ("floor GET /empty", floor, "/empty", "get.lua"),
        ("zapgate GET /health", zapgate, "/health", "get.lua"),
    ]
    print(f"\n1. throughput: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, alternating rounds")
    for _, server, path, script in pairs:  # warm up every path
        await wrk(server.base + path, script, 2, args, key)
    rounds: dict[str, list[Round]] = {name: [] for name, *_ in pairs}
    for n in range(args.rounds):
        print(f" round {n + 1}", flush=True)
        for name, server, path, script in pairs:
            r = await measured_round(server, path, script, args, key, postgres)
            rounds[name].append(r)
            print(describe(name, r), flush=True)
    return rounds


async def bound(
    zapgate: Server,
    floor: Server,
    send_floor: Server,
    key: str,
    args: argparse.Namespace,
    monitor: asyncpg.Connection,
    postgres: PostgresPids,
) -> dict[str, list[Round]]:
    """Alternating rounds of the floor (accepting), the send floor (accepting and sending) and zapgate; each
    sender's backlog is drained before the next round, so that no round pays for another's sends."""
    pairs = [
        ("floor POST /insert", floor, "/insert"),
        ("send floor POST /send", send_floor, "/send"),
        ("zapgate POST /send", zapgate, "/whatsapp/send"),
    ]
    print(
        f"\nB. bound: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, alternating rounds, "
        "backlogs drained between rounds"
    )
    for _, server, path in pairs:
        await wrk(server.base + path, "send.lua", 2, args, key)
    await drained_all(monitor)
    rounds: dict[str, list[Round]] = {name: [] for name, *_ in pairs}
    for n in range(args.rounds):
        print(f" round {n + 1}", flush=True)
        for name, server, path in pairs:
            r = await measured_round(server, path, "send.lua", args, key, postgres)
            left = await backlog(monitor)
            began = time.perf_counter()
            await drained_all(monitor)
            rounds[name].append(r)
            drain = f"   backlog at the end {left}, drained in {time.perf_counter() - began:.1f} s" if left else ""
            print(describe(name, r) + drain, flush=True)
    return rounds


async def backlog(monitor: asyncpg.Connection) -> int:
    """Messages accepted and not sent yet, by zapgate and by the send floor."""
    ours = f"SELECT count(*) FROM {SCHEMA}.messages WHERE status = 'pending' AND direction = 'outbound'"
    theirs = "SELECT count(*) FROM sf_messages WHERE status = 'pending'"
    has_theirs = await monitor.fetchval("SELECT to_regclass('sf_messages') IS NOT NULL")
    return int(await monitor.fetchval(ours)) + (int(await monitor.fetchval(theirs)) if has_theirs else 0)


async def drained_all(monitor: asyncpg.Connection, within: float = 600.0) -> None:
    """Wait until neither sender has anything left to send (for at most `within` seconds)."""
    deadline = time.perf_counter() + within
    while time.perf_counter() < deadline:
        if not await backlog(monitor):
            return
        await asyncio.sleep(0.2)


def mean_rate(rounds: Sequence[Round]) -> float:
    return statistics.fmean(r.rate for r in rounds)


def ratios(ours: Sequence[Round], floor: Sequence[Round]) -> str:
    each = [o.rate / f.rate for o, f in zip(ours, floor, strict=True)]
    return f"rounds {min(each):.0%}-{max(each):.0%}"


async def drained(monitor: asyncpg.Connection, within: float = 600.0) -> None:
    """Wait until the worker has sent every queued text: the closed-loop rounds accept faster than it sends,
    and what they left behind would otherwise be measured as the next part's load."""
    began = time.perf_counter()
    pending_sql = f"SELECT count(*) FROM {SCHEMA}.messages WHERE status = 'pending' AND direction = 'outbound'"
    first = int(await monitor.fetchval(pending_sql))
    while time.perf_counter() - began < within:
        if int(await monitor.fetchval(pending_sql)) == 0:
            break
        await asyncio.sleep(0.5)
    if first:
        print(f"  (the worker sent the {first} texts left queued in {time.perf_counter() - began:.1f} s)", flush=True)


# -- 2. latency at half rate ----------------------------------------------------------------------------------


async def loadgen(url: str, rate: float, seconds: float, key: str, *, progress: bool = False) -> dict[str, Any]:
    argv = [sys.executable, str(HERE / "loadgen.py"), "--url", url, "--rate", f"{rate:.0f}"]
    argv += ["--duration", f"{seconds:g}", "--key", key]
    if progress:
        argv.append("--progress")
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def describe_open(name: str, rate: float, r: dict[str, Any]) -> str:
    return (
        f"  {name:<22} {rate:>5.0f}/s  {r['done']}/{r['due']} answered {r['statuses']}  p50 {r['p50_ms']:.2f} ms  "
        f"p90 {r['p90_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  max {r['max_ms']:.1f} ms  "
        f"(loadgen CPU {r['cpu_seconds'] / max(1, r['done']) * 1000:.3f} ms/request, late starts {r['late_starts']})"
    )


async def latency(zapgate: Server, floor: Server, key: str, rate: float, args: argparse.Namespace) -> float:
    seconds = max(10.0, args.duration)
    print(f"\n2. open loop at {rate:.0f}/s (half of zapgate's send rate) for {seconds:g} s, loadgen.py")
    ours = await loadgen(zapgate.base + "/whatsapp/send", rate, seconds, key)
    print(describe_open("zapgate POST /send", rate, ours), flush=True)
    theirs = await loadgen(floor.base + "/insert", rate, seconds, key)
    print(describe_open("floor POST /insert", rate, theirs), flush=True)
    return float(ours["p99_ms"])


# -- 3. end to end --------------------------------------------------------------------------------------------


async def end_to_end(
    zapgate: Server, key: str, args: argparse.Namespace, monitor: asyncpg.Connection, postgres: PostgresPids
) -> dict[str, Any]:
    rate, seconds = args.e2e_rate, args.e2e_duration
    print(f"\n3. end to end: {rate:.0f} texts/s for {seconds:g} s through POST /whatsapp/send (loadgen.py)")
    pending_sql = f"SELECT count(*) FROM {SCHEMA}.messages WHERE status = 'pending' AND direction = 'outbound'"
    since = await monitor.fetchval("SELECT clock_timestamp()")
    groups = zapgate.groups()
    groups["postgres"] = await postgres.backends()
    before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    load = asyncio.create_task(loadgen(zapgate.base + "/whatsapp/send", rate, seconds, key))
    pending: list[tuple[float, int]] = []
    began = time.perf_counter()
    while not load.done():
        pending.append((time.perf_counter() - began, int(await monitor.fetchval(pending_sql))))
        await asyncio.sleep(2.0)
    sent = load.result()
    # the texts still queued when the load stopped: wait for their receipts (the drain is part of the figure)
    drain_deadline = time.monotonic() + 120
    expected = sent["statuses"].get("202", 0)
    delivered_sql = (
        f"SELECT count(*) FROM {SCHEMA}.messages WHERE direction = 'outbound' AND timestamp >= $1"
        " AND status IN ('delivered', 'read', 'played')"
    )
    while time.monotonic() < drain_deadline:
        if int(await monitor.fetchval(delivered_sql, since)) >= expected:
            break
        await asyncio.sleep(0.5)
    cpu = {name: cpu_seconds(pids) - before[name] for name, pids in groups.items()}
    cpu["loadgen"] = sent["cpu_seconds"]
    # exact, from the event log: when each text was accepted and when its delivered receipt was stored
    rows = await monitor.fetch(
        f"""
        SELECT extract(epoch FROM m.timestamp - $1) AS accepted, extract(epoch FROM min(e.created_at) - $1) AS done
        FROM {SCHEMA}.messages m
        LEFT JOIN {SCHEMA}.events e
          ON e.type = 'message-status' AND e.payload->>'messageId' = m.message_id
         AND e.payload->>'status' IN ('delivered', 'read', 'played')
        WHERE m.direction = 'outbound' AND m.timestamp >= $1
        GROUP BY m.message_id, m.timestamp
        """,
        since,
    )
    accepted = sorted(float(r["accepted"]) for r in rows)
    done = sorted(float(r["done"]) for r in rows if r["done"] is not None)
    return report_e2e(args, sent, accepted, done, pending, cpu)


def count_until(ordered: Sequence[float], t: float) -> int:
    import bisect

    return bisect.bisect_right(ordered, t)


def report_e2e(
    args: argparse.Namespace,
    sent: dict[str, Any],
    accepted: Sequence[float],
    done: Sequence[float],
    pending: Sequence[tuple[float, int]],
    cpu: dict[str, float],
) -> dict[str, Any]:
    seconds = args.e2e_duration
    print(
        f"  HTTP: {sent['done']}/{sent['due']} answered {sent['statuses']}, p50 {sent['p50_ms']:.1f} ms, "
        f"p99 {sent['p99_ms']:.1f} ms, lost {sent['errors']}, connections not opened {sent['connect_errors']}"
    )
    print("  second  accepted/s  delivered/s  backlog (accepted, no delivered receipt yet)")
    step = max(1, int(seconds // 12))
    backlog = []
    for t in range(1, int(seconds) + 1):
        backlog.append(count_until(accepted, t) - count_until(done, t))
        if t % step == 0 or t == int(seconds):
            a = count_until(accepted, t) - count_until(accepted, t - step)
            d = count_until(done, t) - count_until(done, t - step)
            print(f"  {t:>6}  {a / step:>10.0f}  {d / step:>11.0f}  {backlog[-1]:>8}")
    in_window = count_until(done, seconds)
    rate = in_window / seconds
    drained = (done[-1] - seconds) if done and len(done) == len(accepted) else float("nan")
    half = len(backlog) // 2
    first, second = max(backlog[:half] or [0]), max(backlog[half:] or [0])
    bounded = second <= max(first, 1.0 * args.e2e_rate) * 1.2  # no higher late in the run than early on
    print(
        f"  delivered within the {seconds:g} s: {in_window} = {rate:.0f} messages/s; all {len(done)} of "
        f"{len(accepted)} delivered {drained:.2f} s after the load stopped"
    )
    print(
        f"  backlog: max {max(backlog or [0])} (first half max {first}, second half max {second}); "
        f"outbound queue (pending) sampled every 2 s: max {max((p for _, p in pending), default=0)}, "
        f"last {pending[-1][1] if pending else 0}"
    )
    per = {name: used / max(1, len(done)) * 1000 for name, used in cpu.items()}
    print("  CPU ms per message: " + ", ".join(f"{name} {ms:.3f}" for name, ms in per.items()))
    return {"rate": rate, "bounded": bounded, "all_delivered": len(done) == len(accepted) > 0}


# -- the benchmark --------------------------------------------------------------------------------------------


async def benchmark(url: str, args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    database = url.rsplit("/", 1)[1].split("?", 1)[0]
    folder = Path(tempfile.mkdtemp(prefix="zg-http-send-", dir="/tmp"))
    monitor = await asyncpg.connect(
        url.replace("postgresql+asyncpg://", "postgresql://"), server_settings={"application_name": MONITOR_APP_NAME}
    )
    postgres = PostgresPids(monitor, database)
    try:
        async with servers(url, args, folder) as (zapgate, floor, send_floor, key):
            groups = zapgate.groups()
            serving = sum(1 for pid in groups["api"] if "--multiprocessing-fork" in psutil.Process(pid).cmdline())
            print(
                f"zapgate serve: {serving or 1} API process(es), {len(groups['worker'])} worker(s), "
                f"{len(SESSIONS)} sandbox sessions connected; logs in {folder}",
                flush=True,
            )
            verdicts: list[str] = []
            if "throughput" in args.parts:
                rounds = await throughput(zapgate, floor, key, args, postgres)
                send, insert = rounds["zapgate POST /send"], rounds["floor POST /insert"]
                health, empty = rounds["zapgate GET /health"], rounds["floor GET /empty"]
                send_ratio = mean_rate(send) / mean_rate(insert)
                health_ratio = mean_rate(health) / mean_rate(empty)
                verdicts.append(
                    f"POST /whatsapp/send {mean_rate(send):.0f}/s vs floor POST /insert {mean_rate(insert):.0f}/s: "
                    f"{send_ratio:.0%} ({ratios(send, insert)}; target >= 60 %) -> {verdict(send_ratio >= 0.6)}"
                )
                verdicts.append(
                    f"GET /health {mean_rate(health):.0f}/s vs floor GET /empty {mean_rate(empty):.0f}/s: "
                    f"{health_ratio:.0%} ({ratios(health, empty)}; target >= 80 %) -> {verdict(health_ratio >= 0.8)}"
                )
                half = mean_rate(send) / 2
            else:
                half = args.half_rate
            if "bound" in args.parts:
                assert send_floor is not None
                rounds = await bound(zapgate, floor, send_floor, key, args, monitor, postgres)
                insert, floor_send = rounds["floor POST /insert"], rounds["send floor POST /send"]
                send = rounds["zapgate POST /send"]
                for name, ours, theirs in (
                    ("send floor POST /send vs floor POST /insert", floor_send, insert),
                    ("zapgate POST /whatsapp/send vs floor POST /insert", send, insert),
                    ("zapgate POST /whatsapp/send vs send floor POST /send", send, floor_send),
                ):
                    ratio = mean_rate(ours) / mean_rate(theirs)
                    rates = f"{mean_rate(ours):.0f}/s vs {mean_rate(theirs):.0f}/s"
                    verdicts.append(f"{name}: {rates} = {ratio:.0%} ({ratios(ours, theirs)})")
            if "latency" in args.parts:
                await drained(monitor)
                p99 = await latency(zapgate, floor, key, half, args)
                verdicts.append(f"p99 at {half:.0f}/s: {p99:.1f} ms (target < 50 ms) -> {verdict(p99 < TARGET_P99_MS)}")
            if "hold" in args.parts:  # for a profiler: the servers stay up, loaded by whoever wants to
                print(f"holding for {args.hold:g} s: zapgate {zapgate.base} {groups}, floor {floor.base}")
                print(f"ZGKEY={key}", flush=True)
                await asyncio.sleep(args.hold)
            if "e2e" in args.parts:
                await drained(monitor)
                e2e = await end_to_end(zapgate, key, args, monitor, postgres)
                met = e2e["rate"] >= TARGET_E2E and e2e["bounded"] and e2e["all_delivered"]
                verdicts.append(
                    f"end to end {e2e['rate']:.0f} messages/s for {args.e2e_duration:g} s, backlog "
                    f"{'bounded' if e2e['bounded'] else 'GROWING'} (target >= 1,000/s, bounded) -> {verdict(met)}"
                )
            print("\n" + "\n".join(verdicts))
    finally:
        await monitor.close()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("ZAPGATE_BENCH_DATABASE_URL"))
    parser.add_argument("--parts", default="throughput,latency,e2e", type=lambda v: v.split(","))
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each (floor and zapgate alternate)")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c")
    parser.add_argument("--workers", type=int, default=1, help="ZAPGATE_WORKERS")
    parser.add_argument("--api-processes", type=int, default=None, help="ZAPGATE_API_PROCESSES (default: its own)")
    parser.add_argument("--half-rate", type=float, default=500.0, help="open-loop rate when throughput is skipped")
    parser.add_argument("--e2e-rate", type=float, default=1000.0, help="texts per second, end to end part")
    parser.add_argument("--e2e-duration", type=float, default=60.0, help="seconds, end to end part")
    parser.add_argument("--hold", type=float, default=600.0, help="seconds, hold part (for profiling)")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for zapgate serve (repeatable)")
    args = parser.parse_args()
    run_on(args.database_url, lambda url: benchmark(url, args))


if __name__ == "__main__":
    main()
