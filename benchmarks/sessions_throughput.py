"""Measure hosted sessions: sandbox messages per second end to end, RSS per idle session, restore after a kill.

Workers run as separate processes (`python -m zapgate worker`), as in production; this process only accepts
messages through `SessionService.send_text` and watches the database. Four parts:

1. throughput: texts accepted as fast as `--concurrency` coroutines can for `--duration` seconds (or
   `--messages` of them), spread over 1 then 10 connected sandbox sessions, to numbers no sandbox session has
   linked (a simulated phone that acknowledges at once). Reported: the accept rate and send_text latency, the
   end-to-end rate (accepted -> sent -> delivered receipt stored: N / (first accept .. last delivered receipt
   stored)) and the per-message latency accept -> delivered, from the event log; plus CPU used per process.
2. RSS per idle sandbox session: a worker's RSS with no session, with one, and with 1 + `--idle-sessions`.
3. RSS per idle whatsmeow session: offline, whatsmeow cannot connect, so each client is held at the dial
   (a local proxy that accepts and never answers), in a fresh child process, with the keys in PostgreSQL as
   a worker keeps them. Not a linked, connected session: its Go client and goroutines, store and thread.
4. restore: 10 sessions connected on worker A, worker B idle; A is killed (SIGKILL); the time until B has
   claimed every session and every one reported `connected` again (the lease TTL is most of it).

Targets (from the issue): >= 1,000 messages/s end to end for 10 sandbox sessions, <= 5 MiB RSS per idle hosted
session.

    .venv/bin/python benchmarks/sessions_throughput.py --duration 5
    .venv/bin/python benchmarks/sessions_throughput.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

Without --database-url it runs against a fresh embedded PostgreSQL under /tmp; with it, it creates a fresh
database `zg_bench_<random>` on that server and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from support import percentile, run_on, verdict  # benchmarks/support.py, beside this script
from zapgate.db.keystore import drop_keystore, provision_keystore
from zapgate.db.manager import ConnectionManager
from zapgate.engines.sandbox import NOT_ON_WHATSAPP_SUFFIX
from zapgate.errors import DatabaseError
from zapgate.log import configure_logging
from zapgate.services.clients import ClientService
from zapgate.services.sessions import SessionService

CLIENT = "bench"
SCHEMA = "client_bench"
SESSION_PHONE = 5511900000000  # + n: the phones linked to the benchmark's sessions
RECIPIENT_PHONE = 5521988880000  # + n: numbers no sandbox session links (simulated phones that read at once)
POLL_INTERVAL = 0.1  # seconds between two looks at the database while waiting
SETTLE = 3.0  # seconds a worker is left alone before its RSS is read
STARTUP_TIMEOUT = 60.0  # seconds for a worker to announce itself or sessions to connect
MONITOR_APP_NAME = "zapgate-bench-monitor"
KEYSTORE_CLIENT = "benchwm"  # the client whose keystore the whatsmeow probe uses
PROBE_FLAG = "--whatsmeow-probe"  # internal: run the whatsmeow RSS probe (a child process of this script)

TARGET_MESSAGES_PER_SECOND = 1000.0  # end to end, 10 sandbox sessions
TARGET_MIB_PER_SESSION = 5.0  # RSS per idle hosted session

MIB = 2**20


async def eventually(check: Any, within: float, what: str) -> Any:
    """Poll `check()` until it returns something truthy; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL)


# -- worker processes -------------------------------------------------------------------------------------


def worker_environment(
    url: str, lease_ttl: float, capacity: int, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of a worker: ours without zapgate's variables, plus the database, limits and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZAPGATE_", "WHATSAPP_")) and k != "DATABASE_URL"}
    env.update(
        DATABASE_URL=url,
        ZAPGATE_LEASE_TTL=f"{lease_ttl:g}",
        ZAPGATE_LOG_LEVEL="warning",
        WHATSAPP_MAX_SESSIONS=str(capacity),
        WHATSAPP_QR_TIMEOUT="60000",
        WHATSAPP_SESSION_TIMEOUT=str(24 * 3600 * 1000),  # idle sessions must stay hosted while measured
    )
    env.update(extra or {})
    return env


@dataclass
class WorkerProcess:
    """One `python -m zapgate worker` child process."""

    proc: asyncio.subprocess.Process
    log_path: Path
    worker_id: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Workers:
    """Start, stop and kill worker processes; every one is gone when the block ends."""

    def __init__(
        self,
        url: str,
        monitor: asyncpg.Connection,
        folder: Path,
        lease_ttl: float,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self._url, self._monitor, self._folder, self._lease_ttl = url, monitor, folder, lease_ttl
        self._extra_env = extra_env
        self.running: list[WorkerProcess] = []
        self._count = itertools.count()

    async def start(self, capacity: int) -> WorkerProcess:
        """Start a worker hosting up to `capacity` sessions and wait until it has announced itself."""
        log_path = self._folder / f"worker-{next(self._count)}.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "zapgate",
                "worker",
                env=worker_environment(self._url, self._lease_ttl, capacity, self._extra_env),
                cwd=self._folder,  # no stray .env
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        worker = WorkerProcess(proc, log_path)
        self.running.append(worker)

        async def announced() -> str | None:
            if proc.returncode is not None:
                raise RuntimeError(f"worker {proc.pid} exited with {proc.returncode}:\n{worker.log_tail()}")
            query = "SELECT worker_id FROM zapgate.workers WHERE pid = $1 ORDER BY started_at DESC LIMIT 1"
            return await self._monitor.fetchval(query, proc.pid)  # type: ignore[no-any-return]

        worker.worker_id = await eventually(announced, STARTUP_TIMEOUT, f"worker {proc.pid} to announce itself")
        return worker

    async def stop(self, worker: WorkerProcess) -> None:
        """Stop a worker with SIGTERM (it releases its sessions), SIGKILL after 20 s."""
        if worker.proc.returncode is None:
            worker.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(worker.proc.wait(), 20)
            except TimeoutError:
                worker.proc.kill()
                await worker.proc.wait()
        if worker in self.running:
            self.running.remove(worker)

    async def kill(self, worker: WorkerProcess) -> None:
        worker.proc.send_signal(signal.SIGKILL)
        await worker.proc.wait()
        self.running.remove(worker)

    async def close(self) -> None:
        for worker in list(self.running):
            await self.stop(worker)


@contextlib.asynccontextmanager
async def worker_processes(
    url: str, monitor: asyncpg.Connection, folder: Path, lease_ttl: float
) -> AsyncIterator[Workers]:
    workers = Workers(url, monitor, folder, lease_ttl)
    try:
        yield workers
    finally:
        await workers.close()


# -- sessions ------------------------------------------------------------------------------------------


async def session_states(monitor: asyncpg.Connection, ids: Sequence[str]) -> dict[str, tuple[str, bool]]:
    rows = await monitor.fetch(
        f"SELECT session_id, status, qr_code IS NOT NULL AS has_qr FROM {SCHEMA}.sessions "
        "WHERE session_id = ANY($1::text[])",
        list(ids),
    )
    return {r["session_id"]: (r["status"], r["has_qr"]) for r in rows}


async def connect_sessions(
    sessions: SessionService, monitor: asyncpg.Connection, ids: Sequence[str], first_phone: int
) -> None:
    """Create sandbox sessions `ids`, let a simulated phone scan each QR code, wait until all are connected."""
    for sid in ids:
        await sessions.create(CLIENT, sid, engine="sandbox")

    async def all_show_qr() -> bool:
        states = await session_states(monitor, ids)
        return len(states) == len(ids) and all(has_qr for _, has_qr in states.values())

    await eventually(all_show_qr, STARTUP_TIMEOUT, f"{len(ids)} QR codes")
    for offset, sid in enumerate(ids):
        await sessions.sandbox_scan(CLIENT, sid, str(first_phone + offset))

    async def all_connected() -> bool:
        states = await session_states(monitor, ids)
        return all(status == "connected" for status, _ in states.values())

    await eventually(all_connected, STARTUP_TIMEOUT, f"{len(ids)} sessions to connect")


async def delete_sessions(sessions: SessionService, ids: Iterable[str]) -> None:
    """Delete sessions (after their workers stopped: a delete racing a send batch can deadlock, and is retried)."""
    for sid in ids:
        for attempt in range(3):
            try:
                await sessions.delete(CLIENT, sid)
                break
            except DatabaseError:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.5)


# -- 1. throughput -------------------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds used by groups of processes between `start()` and `stop()`."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self._groups = groups
        self._before: dict[str, float] = {}
        self.used: dict[str, float] = {}

    @staticmethod
    def _seconds(pids: Iterable[int]) -> float:
        total = 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
        return total

    @staticmethod
    def postgres_pids() -> list[int]:
        """Every PostgreSQL process on the machine (server and backends; both servers if two run)."""
        return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] in ("postgres", "postmaster")]

    def start(self) -> None:
        self._groups["postgres"] = self.postgres_pids()
        self._before = {name: self._seconds(pids) for name, pids in self._groups.items()}

    def stop(self) -> None:
        self._groups["postgres"] = sorted(set(self._groups["postgres"]) | set(self.postgres_pids()))
        self.used = {name: self._seconds(pids) - self._before[name] for name, pids in self._groups.items()}


@dataclass
class ThroughputResult:
    sessions: int
    accepted: int
    accept_seconds: float
    accept_latencies_ms: list[float]
    errors: int
    delivered: int
    e2e_seconds: float  # first accept .. last delivered receipt stored
    delivery_latencies_ms: list[float]
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def accept_rate(self) -> float:
        return self.accepted / self.accept_seconds if self.accept_seconds else 0.0

    @property
    def e2e_rate(self) -> float:
        return self.delivered / self.e2e_seconds if self.e2e_seconds and self.delivered == self.accepted else 0.0


async def status_counts(monitor: asyncpg.Connection, since: Any) -> dict[str, int]:
    rows = await monitor.fetch(
        f"SELECT status, count(*) AS n FROM {SCHEMA}.messages "
        "WHERE direction = 'outbound' AND timestamp >= $1 GROUP BY status",
        since,
    )
    return {r["status"]: int(r["n"]) for r in rows}


async def wait_for_receipts(
    monitor: asyncpg.Connection, since: Any, accepted: int, patience: float, workers: Sequence[WorkerProcess]
) -> None:
    """Return once `accepted` messages have a delivered (or read) receipt, or after `patience` s without progress."""
    last_progress, last_done = time.perf_counter(), -1
    while True:
        counts = await status_counts(monitor, since)
        done = counts.get("delivered", 0) + counts.get("read", 0) + counts.get("played", 0)
        if done >= accepted:
            return
        if done != last_done:
            last_progress, last_done = time.perf_counter(), done
        elif time.perf_counter() - last_progress > patience:
            print(f"  no progress for {patience:g} s, giving up: {counts}", flush=True)
            for worker in workers:
                print(f"  --- worker {worker.pid} log tail:\n{worker.log_tail(6)}", flush=True)
            return
        await asyncio.sleep(POLL_INTERVAL)


async def run_throughput(
    sessions: SessionService,
    monitor: asyncpg.Connection,
    session_ids: Sequence[str],
    args: argparse.Namespace,
    cpu: CpuMeter,
    workers: Sequence[WorkerProcess],
) -> ThroughputResult:
    """Accept texts over `session_ids` from many coroutines; wait until every one has a delivered receipt."""
    numbers = itertools.count()
    latencies_ms: list[float] = []
    errors = 0
    stop_at = float("inf")
    since = await monitor.fetchval("SELECT clock_timestamp()")

    # numbers whose digits end in the sandbox's not-on-WhatsApp suffix would fail for good, not be delivered
    recipients = [str(RECIPIENT_PHONE + i) for i in range(args.recipients * 2)]
    recipients = [r for r in recipients if not r.endswith(NOT_ON_WHATSAPP_SUFFIX)][: args.recipients]

    async def accept() -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            n = next(numbers)
            if args.messages and n >= args.messages:
                return
            sid = session_ids[n % len(session_ids)]
            to = recipients[n % len(recipients)]
            started = time.perf_counter()
            try:
                await sessions.send_text(CLIENT, sid, to, f"benchmark message {n}")
            except Exception as exc:
                errors += 1
                if errors <= 3:
                    print(f"  send_text failed: {exc!r}", flush=True)
                continue
            latencies_ms.append((time.perf_counter() - started) * 1000)

    cpu.start()
    started = time.perf_counter()
    if not args.messages:
        stop_at = started + args.duration
    await asyncio.gather(*(accept() for _ in range(args.concurrency)))
    accept_seconds = time.perf_counter() - started
    accepted = len(latencies_ms)
    print(f"  accepted {accepted} in {accept_seconds:.1f} s; waiting for the delivered receipts ...", flush=True)

    await wait_for_receipts(monitor, since, accepted, args.drain_timeout, workers)
    cpu.stop()

    # exact figures from the event log: accepted = messages.timestamp, delivered = the receipt's event row
    rows = await monitor.fetch(
        f"""
        SELECT extract(epoch FROM min(e.created_at) - m.timestamp) * 1000 AS ms,
               extract(epoch FROM m.timestamp) AS accepted_at,
               extract(epoch FROM min(e.created_at)) AS delivered_at
        FROM {SCHEMA}.messages m
        JOIN {SCHEMA}.events e
          ON e.type = 'message-status' AND e.payload->>'messageId' = m.message_id
         AND e.payload->>'status' IN ('delivered', 'read', 'played')
        WHERE m.direction = 'outbound' AND m.timestamp >= $1
        GROUP BY m.message_id, m.timestamp
        """,
        since,
    )
    delivery_ms = [float(r["ms"]) for r in rows]
    e2e = 0.0
    if rows:
        e2e = float(max(r["delivered_at"] for r in rows) - min(r["accepted_at"] for r in rows))
    return ThroughputResult(
        sessions=len(session_ids),
        accepted=accepted,
        accept_seconds=accept_seconds,
        accept_latencies_ms=latencies_ms,
        errors=errors,
        delivered=len(rows),
        e2e_seconds=e2e,
        delivery_latencies_ms=delivery_ms,
        cpu=dict(cpu.used),
    )


async def throughput_part(
    sessions: SessionService, monitor: asyncpg.Connection, workers: Workers, args: argparse.Namespace
) -> list[ThroughputResult]:
    most = max(args.sessions)
    started = [await workers.start(capacity=max(10, most)) for _ in range(args.workers)]
    ids = [f"t{n:03d}" for n in range(most)]
    print(f"throughput: connecting {most} sandbox sessions on {args.workers} worker(s) ...", flush=True)
    await connect_sessions(sessions, monitor, ids, SESSION_PHONE)
    cpu = CpuMeter({"workers": [w.pid for w in started], "benchmark": [os.getpid()]})
    results = []
    for count in args.sessions:
        print(f"throughput: {count} session(s) ...", flush=True)
        results.append(await run_throughput(sessions, monitor, ids[:count], args, cpu, started))
    for worker in started:
        await workers.stop(worker)
    await delete_sessions(sessions, ids)
    return results


# -- 2. RSS per idle sandbox session ---------------------------------------------------------------------


@dataclass
class RssResult:
    engine: str
    sessions: int  # measured beyond the first
    rss0: int  # no session
    rss1: int  # one session (engine warmed up)
    rssk: int  # 1 + sessions
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def marginal(self) -> float:
        """Bytes per session beyond the first."""
        return (self.rssk - self.rss1) / self.sessions if self.sessions else float("nan")

    @property
    def overall(self) -> float:
        """Bytes per session including what the first one brought."""
        return (self.rssk - self.rss0) / (self.sessions + 1)


async def sandbox_rss_part(
    sessions: SessionService, monitor: asyncpg.Connection, workers: Workers, args: argparse.Namespace
) -> RssResult:
    count = args.idle_sessions
    print(f"rss (sandbox): one worker, 1 then 1 + {count} idle sessions ...", flush=True)
    worker = await workers.start(capacity=count + 10)
    await asyncio.sleep(SETTLE)
    rss0 = worker.rss()
    await connect_sessions(sessions, monitor, ["i000"], SESSION_PHONE + 1000)
    await asyncio.sleep(SETTLE)
    rss1 = worker.rss()
    ids = [f"i{n:03d}" for n in range(1, count + 1)]
    await connect_sessions(sessions, monitor, ids, SESSION_PHONE + 1001)
    await asyncio.sleep(SETTLE)
    rssk = worker.rss()
    await workers.stop(worker)
    await delete_sessions(sessions, ["i000", *ids])
    return RssResult("sandbox", count, rss0, rss1, rssk, note="worker process, sessions paired and idle")


# -- 3. RSS per idle whatsmeow session (child process) ------------------------------------------------------


async def whatsmeow_rss_part(manager: ConnectionManager, url: str, args: argparse.Namespace) -> RssResult | str:
    """Run the whatsmeow probe in a fresh child process with a keystore in PostgreSQL; return its figures."""
    count = args.whatsmeow_sessions
    print(f"rss (whatsmeow): 1 then 1 + {count} clients held at the dial, in a child process ...", flush=True)
    await ClientService(manager).create(KEYSTORE_CLIENT)
    async with manager.registry_transaction() as conn:
        dsn = await provision_keystore(conn, KEYSTORE_CLIENT, url)
    env = {**os.environ, "ZG_BENCH_KEYSTORE_DSN": dsn}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        PROBE_FLAG,
        str(count),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 120 + 5 * count)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return "the whatsmeow probe timed out"
    finally:
        async with manager.registry_transaction() as conn:
            await drop_keystore(conn, KEYSTORE_CLIENT)  # its role is cluster-wide: it would outlive the database
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(err.decode(errors="replace").splitlines()[-10:])
        return f"the whatsmeow probe failed (exit {proc.returncode}):\n{tail}"
    figures = json.loads(lines[-1])
    return RssResult(
        "whatsmeow",
        count,
        figures["rss0"],
        figures["rss1"],
        figures["rssk"],
        note="child process; each Go client held at the dial (never connected), keys in PostgreSQL",
        extra=figures,
    )


def whatsmeow_probe(count: int) -> None:
    """The child process: host 1 then 1 + `count` whatsmeow clients held at the dial; print RSS as JSON."""
    held: list[socket.socket] = []
    dials = threading.Semaphore(0)  # one release per dial that reached the proxy
    proxy = socket.create_server(("127.0.0.1", 0), backlog=1024)
    port = proxy.getsockname()[1]

    def accept_and_hold() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(proxy.accept()[0])  # never answers: the dial through it hangs
                dials.release()

    threading.Thread(target=accept_and_hold, daemon=True).start()

    from neonize._binder import ProxySettings
    from neonize.client import NewClient

    from zapgate.engines import whatsmeow
    from zapgate.engines.base import SessionRef, StartMode, StartRequest

    connect = NewClient.connect
    NewClient.connect = lambda self, proxy_settings=None: connect(  # type: ignore[method-assign]
        self, ProxySettings(proxy_address=f"http://127.0.0.1:{port}")
    )
    # a start holds the process-wide gate until its first QR code, or 20 s: with every dial hanging that
    # would take 20 s per session; the probe's starts are sequential, so a short hold is enough
    whatsmeow.START_GATE_TIMEOUT = 0.5
    dsn = os.environ["ZG_BENCH_KEYSTORE_DSN"]
    me = psutil.Process()

    async def main() -> dict[str, Any]:
        engine = whatsmeow.WhatsmeowEngine(lambda event: None, lambda client: dsn, reconnect_attempts=0)

        async def hold(first: int, n: int) -> None:
            for index in range(first, first + n):
                await engine.start(StartRequest(SessionRef(KEYSTORE_CLIENT, f"w{index:03d}"), StartMode.QR))
            for _ in range(n):  # each dial reaches the proxy (or not, within the time given)
                await asyncio.to_thread(dials.acquire, True, 30)
            await asyncio.sleep(SETTLE)

        rss0, threads0 = me.memory_info().rss, me.num_threads()
        await hold(0, 1)
        rss1 = me.memory_info().rss
        await hold(1, count)
        rssk, threadsk = me.memory_info().rss, me.num_threads()
        dialling = sum(engine.hosts(SessionRef(KEYSTORE_CLIENT, f"w{i:03d}")) for i in range(count + 1))
        figures = {
            "rss0": rss0,
            "rss1": rss1,
            "rssk": rssk,
            "held_at_dial": len(held),
            "hosted": dialling,
            "threads0": threads0,
            "threadsk": threadsk,
        }
        for conn in held:  # the dials fail now, so the clients stop at once
            conn.close()
        proxy.close()
        await engine.close()
        return figures

    configure_logging("error")  # the probe's own gate warnings are expected
    print(json.dumps(asyncio.run(main())), flush=True)


# -- 4. restore after a worker is killed ---------------------------------------------------------------------


@dataclass
class RestoreResult:
    sessions: int
    lease_ttl: float
    lease_left: float  # seconds the victim's leases still had when it was killed
    first_claim: float
    all_claimed: float
    all_connected: float


async def restore_part(
    sessions: SessionService, monitor: asyncpg.Connection, workers: Workers, args: argparse.Namespace
) -> RestoreResult:
    count = args.restore_sessions
    print(f"restore: {count} sessions on worker A, worker B idle, A killed ...", flush=True)
    victim = await workers.start(capacity=count)
    ids = [f"r{n:03d}" for n in range(count)]
    await connect_sessions(sessions, monitor, ids, SESSION_PHONE + 2000)
    survivor = await workers.start(capacity=count)
    hosts = await monitor.fetch(
        "SELECT DISTINCT worker_id FROM zapgate.placements WHERE client_id = $1 AND session_id = ANY($2::text[])",
        CLIENT,
        ids,
    )
    assert [r["worker_id"] for r in hosts] == [victim.worker_id], "every session should be on worker A"
    # let a renewal pass, so that the leases are as fresh as they usually are: kill at a random point instead
    last_event = await monitor.fetchval(f"SELECT coalesce(max(id), 0) FROM {SCHEMA}.events")
    lease_left = float(
        await monitor.fetchval(
            "SELECT extract(epoch FROM max(lease_expires_at) - clock_timestamp()) FROM zapgate.placements "
            "WHERE worker_id = $1",
            victim.worker_id,
        )
    )
    killed = time.perf_counter()
    await workers.kill(victim)
    first_claim = all_claimed = all_connected = float("nan")
    deadline = killed + 10 * args.lease_ttl + STARTUP_TIMEOUT
    while time.perf_counter() < deadline:
        claimed = await monitor.fetchval(
            "SELECT count(*) FROM zapgate.placements WHERE client_id = $1 AND session_id = ANY($2::text[]) "
            "AND worker_id = $3",
            CLIENT,
            ids,
            survivor.worker_id,
        )
        connected = await monitor.fetchval(
            f"SELECT count(DISTINCT session_id) FROM {SCHEMA}.events WHERE id > $1 AND type = 'status-change' "
            "AND payload->>'status' = 'connected' AND session_id = ANY($2::text[])",
            last_event,
            ids,
        )
        now = time.perf_counter() - killed
        if claimed and first_claim != first_claim:
            first_claim = now
        if claimed == count and all_claimed != all_claimed:
            all_claimed = now
        if connected == count:
            all_connected = now
            break
        await asyncio.sleep(POLL_INTERVAL / 2)
    await workers.stop(survivor)
    await delete_sessions(sessions, ids)
    return RestoreResult(count, args.lease_ttl, lease_left, first_claim, all_claimed, all_connected)


# -- report ----------------------------------------------------------------------------------------------


def report_throughput(throughput: list[ThroughputResult]) -> None:
    """Print one row per throughput scenario."""
    print()
    header = (
        f"{'sessions':>8} {'accepted':>9} {'accept/s':>9} {'acc p50':>8} {'acc p99':>8} {'errors':>6} "
        f"{'delivered':>9} {'e2e s':>7} {'e2e msg/s':>9} {'e2e p50':>8} {'e2e p99':>8}  cpu s (worker/bench/pg)"
    )
    print(header)
    print("-" * len(header))
    for r in throughput:
        cpu = r.cpu
        print(
            f"{r.sessions:>8} {r.accepted:>9} {r.accept_rate:>9.1f} {percentile(r.accept_latencies_ms, 0.5):>8.1f} "
            f"{percentile(r.accept_latencies_ms, 0.99):>8.1f} {r.errors:>6} {r.delivered:>9} {r.e2e_seconds:>7.1f} "
            f"{r.e2e_rate:>9.1f} {percentile(r.delivery_latencies_ms, 0.5):>8.0f} "
            f"{percentile(r.delivery_latencies_ms, 0.99):>8.0f}  "
            f"{cpu.get('workers', 0):.1f}/{cpu.get('benchmark', 0):.1f}/{cpu.get('postgres', 0):.1f}"
        )
    print("(latencies in ms: acc = send_text; e2e = accepted -> delivered receipt stored)")
    for r in throughput:
        if r.delivered < r.accepted:
            print(f"{r.sessions} session(s): only {r.delivered} of {r.accepted} delivered: the workers stalled")


def report(
    args: argparse.Namespace,
    server_version: str,
    load_before: float,
    throughput: list[ThroughputResult],
    rss: list[RssResult | str],
    restore: RestoreResult | None,
) -> None:
    print()
    load = f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    print(f"server: PostgreSQL {server_version}; {os.cpu_count()} CPUs, {load}")
    print(
        f"{args.workers} worker process(es) for throughput, {args.concurrency} accepting coroutines, "
        f"pool size {args.pool_size}, {args.recipients} recipients, "
        + (f"{args.messages} messages per scenario" if args.messages else f"accepting for {args.duration:g} s")
    )
    if throughput:
        report_throughput(throughput)
    if rss:
        print()
        for item in rss:
            if isinstance(item, str):
                print(f"rss: {item}")
                continue
            print(
                f"rss {item.engine} ({item.note}): {item.rss0 / MIB:.1f} MiB with none, {item.rss1 / MIB:.1f} MiB "
                f"with 1, {item.rssk / MIB:.1f} MiB with {item.sessions + 1}: {item.marginal / MIB:.2f} MiB per "
                f"session beyond the first, {item.overall / MIB:.2f} MiB per session counting the first"
            )
            if item.extra:
                extra = item.extra
                print(
                    f"  {extra['held_at_dial']} dials held, {extra['hosted']} hosted; threads "
                    f"{extra['threads0']} -> {extra['threadsk']}"
                )
    if restore:
        print()
        print(
            f"restore of {restore.sessions} sessions after SIGKILL (lease TTL {restore.lease_ttl:g} s, the killed "
            f"worker's leases had {restore.lease_left:.1f} s left): first claimed after {restore.first_claim:.1f} s, "
            f"all claimed after {restore.all_claimed:.1f} s, all connected after {restore.all_connected:.1f} s"
        )
    print()
    ten = next((r for r in throughput if r.sessions == 10), None)
    if ten is not None:
        met = ten.e2e_rate >= TARGET_MESSAGES_PER_SECOND
        print(
            f"target: >= {TARGET_MESSAGES_PER_SECOND:,.0f} messages/s end to end, 10 sandbox sessions: "
            f"{ten.e2e_rate:,.1f} -> {verdict(met)}"
        )
    for item in rss:
        if isinstance(item, RssResult):
            per = max(item.marginal, item.overall) / MIB
            print(
                f"target: <= {TARGET_MIB_PER_SESSION:g} MiB RSS per idle hosted session, {item.engine}: "
                f"{per:.2f} MiB -> {verdict(per <= TARGET_MIB_PER_SESSION)}"
            )
        else:
            print("target: <= 5 MiB RSS per idle hosted session, whatsmeow: not measured")


# -- running --------------------------------------------------------------------------------------------


async def benchmark(url: str, *, args: argparse.Namespace) -> None:
    load_before = os.getloadavg()[0]
    folder = Path(tempfile.mkdtemp(prefix="zg-bench-workers-", dir="/tmp"))
    monitor = await asyncpg.connect(url, server_settings={"application_name": MONITOR_APP_NAME})
    throughput: list[ThroughputResult] = []
    rss: list[RssResult | str] = []
    restore: RestoreResult | None = None
    try:
        server_version = str(await monitor.fetchval("SHOW server_version"))
        async with ConnectionManager(url, pool_size=args.pool_size) as manager:
            await manager.migrate_registry()
            await ClientService(manager).create(CLIENT)
            # as the API process builds it: workers are woken after commit, many sends per NOTIFY
            sessions = SessionService(manager, default_engine="sandbox", coalesce_wakeups=True)
            async with worker_processes(url, monitor, folder, args.lease_ttl) as workers:
                try:
                    if "throughput" in args.parts:
                        throughput = await throughput_part(sessions, monitor, workers, args)
                    if "rss" in args.parts:
                        rss.append(await sandbox_rss_part(sessions, monitor, workers, args))
                        rss.append(await whatsmeow_rss_part(manager, url, args))
                    if "restore" in args.parts:
                        restore = await restore_part(sessions, monitor, workers, args)
                except Exception:
                    for worker in workers.running:
                        print(f"--- worker {worker.pid} log tail:\n{worker.log_tail()}", file=sys.stderr)
                    raise
    finally:
        await monitor.close()
        shutil.rmtree(folder, ignore_errors=True)
    report(args, server_version, load_before, throughput, rss, restore)


def session_counts(value: str) -> list[int]:
    """Parse "1,10" into [1, 10]."""
    try:
        counts = [int(part) for part in value.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from exc
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("session counts must be positive")
    return counts


def parts(value: str) -> list[str]:
    chosen = [part.strip() for part in value.split(",") if part.strip()]
    unknown = set(chosen) - {"throughput", "rss", "restore"}
    if unknown or not chosen:
        raise argparse.ArgumentTypeError("expected a comma-separated subset of throughput,rss,restore")
    return chosen


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of accepting per scenario (default 10)")
    parser.add_argument("--messages", type=int, default=0, help="accept exactly this many per scenario instead")
    parser.add_argument("--sessions", type=session_counts, default=[1, 10], help="session counts (default 1,10)")
    parser.add_argument("--concurrency", type=int, default=32, help="coroutines calling send_text (default 32)")
    parser.add_argument("--pool-size", type=int, default=20, help="this process's pool size (default 20)")
    parser.add_argument("--recipients", type=int, default=1000, help="distinct recipient numbers (default 1000)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes for the throughput part (default 1)")
    parser.add_argument("--drain-timeout", type=float, default=60.0, help="give up after this long without progress")
    parser.add_argument("--idle-sessions", type=int, default=50, help="idle sandbox sessions for RSS (default 50)")
    parser.add_argument("--whatsmeow-sessions", type=int, default=20, help="whatsmeow clients for RSS (default 20)")
    parser.add_argument("--restore-sessions", type=int, default=10, help="sessions restored after a kill (default 10)")
    parser.add_argument("--lease-ttl", type=float, default=10.0, help="ZAPGATE_LEASE_TTL of the workers (default 10)")
    parser.add_argument("--parts", type=parts, default=["throughput", "rss", "restore"], help="what to run")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL server to use (a fresh database is created and dropped); default: embedded server",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [PROBE_FLAG]:
        whatsmeow_probe(int(argv[1]))
        return
    args = parse_args(argv)
    configure_logging("warning")  # the manager logs every operation at debug and every migration at info
    run_on(args.database_url, partial(benchmark, args=args))


if __name__ == "__main__":
    main()
