"""A fleet of workers on one PostgreSQL: 1,000 sandbox sessions over 100 clients on 10 worker processes, then
3 workers killed (SIGKILL) under a steady send load.

Each worker is a separate `python -m zapgate worker` process, as a separate machine would run it; this process
plays the API (it creates clients and sessions, scans QR codes with simulated phones and accepts sends through
the same services the API calls) and watches the registry. Reported:

1. the time until all sessions are connected (created, QR shown, scanned, connected);
2. sessions per worker (min / max / spread) against the bounds: a worker never hosts more than
   WHATSAPP_MAX_SESSIONS (`--capacity`), and claims at once only up to its share (the sessions that want to run over
   the live workers, rounded up; past it, only sessions that waited half a lease for the others);
3. PostgreSQL connections: per worker process (its sockets to the server) and in total (pg_stat_activity),
   against the bound the pools set (a worker's pool is min(ZAPGATE_DB_POOL_SIZE, 10), plus its lease connection and
   its listeners);
4. RSS per worker;
5. with a steady send load running (`--rate` texts a second, each from one session of a client to another of the
   same client, both ours), 3 workers killed with SIGKILL: the time until every session is hosted again (claimed
   by a live worker) and connected again; then, once the load has stopped and the queues drained, that every
   accepted text reached its recipient exactly once (none lost, none duplicated);
6. idle and under load: PostgreSQL's transactions a second, the outbox's claims among them
   (`zapgate_outbox_claims_total` from the workers' heartbeats), and the sessions that changed worker while every
   worker lived (a lease that ran out).

    .venv/bin/python benchmarks/fleet.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

Without --database-url it runs against a fresh embedded PostgreSQL under /tmp; with it, it creates a fresh
database `zg_bench_<random>` on that server and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

import asyncpg
import psutil
from sqlalchemy.engine import make_url

from sessions_throughput import MONITOR_APP_NAME, CpuMeter, WorkerProcess, Workers  # benchmarks/, beside this script
from support import percentile, run_on
from zapgate.db.manager import ConnectionManager
from zapgate.errors import ZapgateError
from zapgate.log import configure_logging
from zapgate.services.clients import ClientService
from zapgate.services.sessions import SessionService

PHONE_BASE = 5511970000000  # + client * 100 + session: the phone linked to each session
POLL = 0.2  # seconds between two looks at the registry
MAX_OUTSTANDING = 200  # sends of the load waiting for their answer at once
RESCAN_AFTER = 10.0  # seconds a session may show a QR code after its scan before it is scanned again
MIB = 2**20
TEXT_PREFIX = "fleet"


def client_id(c: int) -> str:
    return f"fleet{c:03d}"


def session_id(s: int) -> str:
    return f"s{s:02d}"


def phone(c: int, s: int) -> str:
    return str(PHONE_BASE + c * 100 + s)


# -- the registry, as the benchmark sees it -------------------------------------------------------------------


async def placements(monitor: asyncpg.Pool) -> list[asyncpg.Record]:
    return await monitor.fetch(  # type: ignore[no-any-return]
        "SELECT client_id, session_id, status, worker_id, lease_expires_at > clock_timestamp() AS leased "
        "FROM zapgate.placements"
    )


async def wait_until(check: object, within: float, what: str) -> float:
    """Poll `check()` until true; return the seconds it took; raise TimeoutError naming `what`."""
    started = time.perf_counter()
    while not await check():  # type: ignore[operator]
        if time.perf_counter() - started > within:
            raise TimeoutError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(POLL)
    return time.perf_counter() - started


def per_worker(rows: Sequence[asyncpg.Record], workers: Sequence[WorkerProcess]) -> list[int]:
    counts = Counter(r["worker_id"] for r in rows if r["worker_id"])
    return [counts.get(w.worker_id, 0) for w in workers]


def pg_sockets(pid: int, port: int) -> int:
    """TCP connections process `pid` holds to the PostgreSQL server on `port`."""
    with contextlib.suppress(psutil.Error):
        return sum(
            1
            for conn in psutil.Process(pid).net_connections(kind="tcp")
            if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
        )
    return 0


@dataclass
class Snapshot:
    """What the fleet looks like at one moment."""

    sessions: list[int]  # per worker
    sockets: list[int]  # PostgreSQL connections per worker
    rss: list[int]  # bytes per worker
    backends: dict[str, int]  # pg_stat_activity of the database, by application_name


async def snapshot(monitor: asyncpg.Pool, workers: Sequence[WorkerProcess], port: int | None) -> Snapshot:
    rows = await placements(monitor)
    backends = {
        str(r["application_name"] or "?"): int(r["n"])
        for r in await monitor.fetch(
            "SELECT application_name, count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
            "GROUP BY application_name"
        )
    }
    return Snapshot(
        sessions=per_worker(rows, workers),
        sockets=[pg_sockets(w.pid, port) if port else 0 for w in workers],
        rss=[w.rss() for w in workers],
        backends=backends,
    )


async def outbox_claims(monitor: asyncpg.Pool) -> float:
    """The outbox claims (looks at a session's queue) of every worker, as of their last heartbeats."""
    total = 0.0
    for row in await monitor.fetch("SELECT metrics FROM zapgate.workers WHERE metrics IS NOT NULL"):
        for line in row["metrics"].splitlines():
            if line.startswith("zapgate_outbox_claims_total "):
                total += float(line.split()[1])
    return total


@dataclass(frozen=True)
class Activity:
    """What the fleet did over a while, a second."""

    transactions: float  # committed and rolled back in the database
    claims: float  # outbox claims of the workers (part of the transactions)
    cores: float  # the workers' CPU, summed


async def activity(monitor: asyncpg.Pool, workers: Sequence[WorkerProcess], seconds: float) -> Activity:
    """Over `seconds`: the database's transactions, the outbox claims and the workers' CPU (cores busy, summed)."""
    query = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
    cpu = CpuMeter({"workers": [w.pid for w in workers]})
    before, claims_before = await monitor.fetchval(query), await outbox_claims(monitor)
    cpu.start()
    await asyncio.sleep(seconds)
    cpu.stop()
    after, claims_after = await monitor.fetchval(query), await outbox_claims(monitor)
    return Activity((after - before) / seconds, (claims_after - claims_before) / seconds, cpu.used["workers"] / seconds)


# -- the load --------------------------------------------------------------------------------------------


@dataclass
class Load:
    """A steady send load: `rate` texts a second, each from a random session to the next one of its client."""

    sessions: SessionService
    clients: int
    per_client: int
    rate: float
    accepted: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # text -> (client, sender, message id)
    refused: Counter[str] = field(default_factory=Counter)
    accept_ms: list[float] = field(default_factory=list)
    skipped: int = 0  # sends not made because MAX_OUTSTANDING were still waiting
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _numbers: itertools.count[int] = field(default_factory=itertools.count)

    async def run(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        sent = 0
        while not self._stop.is_set():
            due = int((time.perf_counter() - started) * self.rate)
            while sent < due:
                sent += 1
                if len(tasks) >= MAX_OUTSTANDING:  # accepting is slower than the rate: skip, do not pile up
                    self.skipped += 1
                    continue
                task = asyncio.create_task(self._one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 0.02)
        if tasks:
            await asyncio.gather(*tasks)

    async def _one(self) -> None:
        n = next(self._numbers)
        c = random.randrange(self.clients)
        s = random.randrange(self.per_client)
        text = f"{TEXT_PREFIX} {n}"
        began = time.perf_counter()
        try:
            accepted = await self.sessions.send_text(
                client_id(c), session_id(s), phone(c, (s + 1) % self.per_client), text
            )
        except ZapgateError as exc:
            self.refused[type(exc).__name__] += 1
            return
        self.accept_ms.append((time.perf_counter() - began) * 1000)
        self.accepted[text] = (c, session_id(s), accepted.message_id)

    def stop(self) -> None:
        self._stop.set()


async def received(monitor: asyncpg.Pool | asyncpg.Connection, clients: int) -> Counter[str]:
    """How many inbound rows each load text has, over every client."""
    counts: Counter[str] = Counter()
    for c in range(clients):
        rows = await monitor.fetch(
            f"SELECT content, count(*) AS n FROM client_{client_id(c)}.messages "  # our own schema names
            "WHERE direction = 'inbound' AND content LIKE $1 GROUP BY content",
            f"{TEXT_PREFIX} %",
        )
        counts.update({r["content"]: int(r["n"]) for r in rows})
    return counts


async def final_count(monitor: asyncpg.Pool, clients: int) -> tuple[Counter[str], dict[str, bool]]:
    """The load texts received (per text) and those still in the network's mailboxes (text → whether a worker
    has collected it and not stored it yet), in one snapshot: counted apart, the recorders storing in between
    made texts seem missing."""
    async with monitor.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        counts = await received(conn, clients)
        rows = await conn.fetch(
            "SELECT envelope->>'text' AS text, taken_until > clock_timestamp() AS taken FROM zapgate.sandbox_mail "
            "WHERE envelope->>'kind' = 'message' AND envelope->>'text' LIKE $1",
            f"{TEXT_PREFIX} %",
        )
    return counts, {r["text"]: bool(r["taken"]) for r in rows}


async def restarts_since(
    monitor: asyncpg.Pool, clients: int, since: datetime, sessions: set[tuple[str, str]]
) -> tuple[list[float], list[float]]:
    """Seconds from `since` to each of `sessions`' first `connecting` and first `connected` status-change written
    after it (when the new host began the start, when it was recorded connected)."""
    connecting: list[float] = []
    connected: list[float] = []
    for c in range(clients):
        rows = await monitor.fetch(
            "SELECT session_id, "
            "EXTRACT(EPOCH FROM min(created_at) FILTER (WHERE payload->>'status' = 'connecting') - $1) AS began, "
            "EXTRACT(EPOCH FROM min(created_at) FILTER (WHERE payload->>'status' = 'connected') - $1) AS done "
            f"FROM client_{client_id(c)}.events "  # our own schema names
            "WHERE type = 'status-change' AND created_at > $1 GROUP BY session_id",
            since,
        )
        for row in rows:
            if (client_id(c), row["session_id"]) in sessions:
                if row["began"] is not None:
                    connecting.append(float(row["began"]))
                if row["done"] is not None:
                    connected.append(float(row["done"]))
    return sorted(connecting), sorted(connected)


async def connected_since(monitor: asyncpg.Pool, clients: int, since: datetime) -> set[tuple[str, str]]:
    """The sessions whose log has a `status-change` to connected written after `since` (the database's clock)."""
    found: set[tuple[str, str]] = set()
    for c in range(clients):
        rows = await monitor.fetch(
            f"SELECT DISTINCT session_id FROM client_{client_id(c)}.events "  # our own schema names
            "WHERE type = 'status-change' AND payload ->> 'status' = 'connected' AND created_at > $1",
            since,
        )
        found.update((client_id(c), r["session_id"]) for r in rows)
    return found


async def outbound_states(monitor: asyncpg.Pool, clients: int) -> Counter[str]:
    counts: Counter[str] = Counter()
    for c in range(clients):
        rows = await monitor.fetch(
            f"SELECT status, count(*) AS n FROM client_{client_id(c)}.messages "
            "WHERE direction = 'outbound' AND content LIKE $1 GROUP BY status",
            f"{TEXT_PREFIX} %",
        )
        counts.update({r["status"]: int(r["n"]) for r in rows})
    return counts


# -- the benchmark ----------------------------------------------------------------------------------------


class Users:
    """The users of the fleet's sessions, pairing them: each scans its session's QR code when it shows (again after
    RESCAN_AFTER if it still shows one, one scan at a time: on a loaded machine rescans queued behind scans still
    waiting would pile up, and the first scans of other sessions would wait behind them), and starts it again
    after a QR timeout."""

    def __init__(self, sessions: SessionService, concurrency: int) -> None:
        self.sessions = sessions
        self.gate = asyncio.Semaphore(concurrency)
        self.scanned: dict[tuple[str, str], float] = {}  # when each session's last scan was posted
        self.scanning: set[tuple[str, str]] = set()  # sessions whose scan waits to be posted
        self.restarting: set[tuple[str, str]] = set()  # sessions being started again after a QR timeout
        self.hosts: dict[tuple[str, str], set[str]] = {}  # every worker seen hosting each session
        self.rescans = self.restarts = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def create(self, c: int, s: int) -> None:
        async with self.gate:
            await self.sessions.create(client_id(c), session_id(s), engine="sandbox")

    def look(self, r: asyncpg.Record, now: float) -> None:
        """Act on one session's placement row."""
        key = (r["client_id"], r["session_id"])
        if r["worker_id"]:
            self.hosts.setdefault(key, set()).add(r["worker_id"])
        if (
            r["status"] == "qr"
            and key not in self.scanning
            and now - self.scanned.get(key, -RESCAN_AFTER) >= RESCAN_AFTER
        ):
            self.rescans += key in self.scanned
            self.scanning.add(key)
            self.tasks.append(asyncio.create_task(self._scan(*key)))
        if r["status"] == "qr_timeout" and key not in self.restarting:
            self.restarts += 1
            self.restarting.add(key)
            self.tasks.append(asyncio.create_task(self._restart(*key)))

    def all_scanned(self, total: int) -> bool:
        return len(self.scanned.keys() | self.scanning) == total

    async def _scan(self, cid: str, sid: str) -> None:
        try:
            async with self.gate:
                await self.sessions.sandbox_scan(cid, sid, str(PHONE_BASE + int(cid[5:]) * 100 + int(sid[1:])))
        finally:
            self.scanned[(cid, sid)] = time.perf_counter()  # a rescan waits RESCAN_AFTER from the scan's post
            self.scanning.discard((cid, sid))

    async def _restart(self, cid: str, sid: str) -> None:
        try:
            async with self.gate:
                await self.sessions.restart(cid, sid)
        finally:
            self.restarting.discard((cid, sid))


async def connect_all(sessions: SessionService, monitor: asyncpg.Pool, args: argparse.Namespace) -> dict[str, float]:
    """Create every session, scan each QR code as it appears (`Users`), wait until all are connected; return
    figures.

    A session still showing a QR code RESCAN_AFTER seconds after its scan is scanned again, as a user would scan
    the code the phone shows now: a session that moved to another worker before its scan was taken starts
    pairing anew there. How many moved, and how many scans it took, are reported.
    """
    total = args.clients * args.sessions_per_client
    users = Users(sessions, args.concurrency)
    started = time.perf_counter()
    creating = asyncio.gather(
        *(users.create(c, s) for c in range(args.clients) for s in range(args.sessions_per_client))
    )
    created_at = all_qr_at = float("nan")
    while True:
        if creating.done() and created_at != created_at:
            creating.result()
            created_at = time.perf_counter() - started
        rows = await placements(monitor)
        now = time.perf_counter()
        for r in rows:
            users.look(r, now)
        if users.all_scanned(total) and all_qr_at != all_qr_at:
            all_qr_at = now - started
        connected = sum(1 for r in rows if r["status"] == "connected")
        if connected == total:
            break
        if now - started > args.connect_timeout:
            raise TimeoutError(f"only {connected} of {total} sessions connected after {args.connect_timeout:g} s")
        await asyncio.sleep(POLL)
    await asyncio.gather(*users.tasks)
    return {
        "created": created_at,
        "scanned": all_qr_at,
        "connected": time.perf_counter() - started,
        "rescans": users.rescans,
        "restarts": users.restarts,
        "moved": sum(1 for seen in users.hosts.values() if len(seen) > 1),
    }


def spread(values: Sequence[int]) -> str:
    return (
        f"min {min(values)}, max {max(values)}, mean {statistics.fmean(values):.0f}, "
        f"stdev {statistics.pstdev(values):.1f}"
    )


def print_snapshot(title: str, snap: Snapshot, pool: int) -> None:
    print(f"\n{title}")
    total, live = sum(snap.sessions), len(snap.sessions)
    share = -(-total // live)  # a worker claims at once up to this (placements.fair_share)
    over = sum(max(0, n - share) for n in snap.sessions)
    print(
        f"  sessions per worker: {snap.sessions}  ({spread(snap.sessions)}; its share {total}/{live} rounded up = "
        f"{share}: {'every worker within it' if not over else f'{over} over it, taken after waiting'})"
    )
    bound = min(pool, 10)
    print(
        f"  PostgreSQL connections per worker: {snap.sockets}  (max {max(snap.sockets)}; its pool holds at most "
        f"{bound} + 1 for leases + 2 LISTEN connections)"
    )
    print(f"  PostgreSQL backends of the database by application: {dict(sorted(snap.backends.items()))}")
    rss = [r / MIB for r in snap.rss]
    print(f"  RSS per worker (MiB): {[round(r) for r in rss]}  (mean {statistics.fmean(rss):.0f}, max {max(rss):.0f})")


async def benchmark(url: str, *, args: argparse.Namespace) -> None:
    load_before = os.getloadavg()[0]
    total = args.clients * args.sessions_per_client
    folder = Path(tempfile.mkdtemp(prefix="zg-bench-fleet-", dir="/tmp"))
    # a small pool: the workers starting at once are watched at once
    monitor = await asyncpg.create_pool(
        url, min_size=1, max_size=4, server_settings={"application_name": MONITOR_APP_NAME}
    )
    parsed = make_url(url)
    port = None if (parsed.host or "/").startswith("/") else parsed.port or 5432  # TCP: sockets map to processes
    worker_env = {"ZAPGATE_DB_POOL_SIZE": str(args.worker_pool_size)}
    try:
        version = await monitor.fetchval("SHOW server_version")
        max_connections = await monitor.fetchval("SHOW max_connections")
        async with ConnectionManager(url, pool_size=args.pool_size) as manager:
            await manager.migrate_registry()
            began = time.perf_counter()
            clients = ClientService(manager)
            for c in range(args.clients):
                await clients.create(client_id(c))
            print(f"{args.clients} clients created in {time.perf_counter() - began:.1f} s", flush=True)
            sessions = SessionService(manager, default_engine="sandbox", coalesce_wakeups=True)
            workers = Workers(url, monitor, folder, args.lease_ttl, extra_env=worker_env)
            try:
                began = time.perf_counter()
                fleet = list(await asyncio.gather(*(workers.start(args.capacity) for _ in range(args.workers))))
                print(f"{args.workers} workers up in {time.perf_counter() - began:.1f} s", flush=True)

                print(f"connecting {total} sessions ...", flush=True)
                cpu = CpuMeter({"workers": [w.pid for w in fleet], "benchmark": [os.getpid()]})
                cpu.start()
                timings = await connect_all(sessions, monitor, args)
                cpu.stop()
                connect_cpu = dict(cpu.used)
                print(
                    f"all {total} connected after {timings['connected']:.1f} s (created by {timings['created']:.1f} s, "
                    f"every QR code scanned by {timings['scanned']:.1f} s)",
                    flush=True,
                )
                await asyncio.sleep(3)  # let the pools settle after the start-up burst
                before = await snapshot(monitor, fleet, port)
                hosts_before = {(r["client_id"], r["session_id"]): r["worker_id"] for r in await placements(monitor)}
                idle = await activity(monitor, fleet, 10)

                load = Load(sessions, args.clients, args.sessions_per_client, args.rate)
                running = asyncio.create_task(load.run())
                loaded = await activity(monitor, fleet, args.steady)
                under_load = await snapshot(monitor, fleet, port)

                victims = fleet[: args.kill]
                survivors = fleet[args.kill :]
                victim_ids = {w.worker_id for w in victims}
                rows = await placements(monitor)
                moved = {(r["client_id"], r["session_id"]) for r in rows if r["worker_id"] in victim_ids}
                moving = len(moved)
                # a lease that ran out while all workers lived: the session moved (a new QR code, in real life)
                bounced = sum(1 for r in rows if hosts_before.get((r["client_id"], r["session_id"])) != r["worker_id"])
                killed, killed_at = time.perf_counter(), await monitor.fetchval("SELECT clock_timestamp()")
                for victim in victims:
                    await workers.kill(victim)
                print(f"killed {args.kill} workers (SIGKILL) hosting {moving} sessions", flush=True)
                survivor_ids = {w.worker_id for w in survivors}

                async def all_claimed() -> bool:
                    rows = await placements(monitor)
                    return all(r["worker_id"] in survivor_ids and r["leased"] for r in rows)

                async def all_connected() -> bool:
                    # a claim leaves the status the dead worker stored (connected): each session that moved must
                    # have said connected again since the kill, on a live worker
                    rows = await placements(monitor)
                    if not all(r["worker_id"] in survivor_ids and r["status"] == "connected" for r in rows):
                        return False
                    return moved <= await connected_since(monitor, args.clients, killed_at)

                claimed_after = connected_after = float("nan")  # nan: not within the time given
                with contextlib.suppress(TimeoutError):
                    await wait_until(all_claimed, args.failover_timeout, "every session to be claimed again")
                    claimed_after = time.perf_counter() - killed
                    await wait_until(all_connected, args.failover_timeout, "every session to be connected again")
                    connected_after = time.perf_counter() - killed
                print(
                    f"every session hosted again {claimed_after:.1f} s after the kill, "
                    f"connected {connected_after:.1f} s",
                    flush=True,
                )
                began, done = await restarts_since(monitor, args.clients, killed_at, moved)
                await asyncio.sleep(args.after)
                load.stop()
                await running
                accepted = len(load.accepted)
                print(f"load stopped: {accepted} accepted; waiting for every text to arrive ...", flush=True)

                async def all_arrived() -> bool:
                    counts = await received(monitor, args.clients)
                    return all(counts.get(text, 0) >= 1 for text in load.accepted)

                with contextlib.suppress(TimeoutError):
                    await wait_until(all_arrived, args.drain_timeout, "every text to arrive")
                counts, waiting = await final_count(monitor, args.clients)
                states = await outbound_states(monitor, args.clients)
                # whose mailboxes still hold texts, and how their sessions stand: who should be collecting them
                uncollected = await monitor.fetch(
                    "SELECT m.address, count(*) AS n, p.client_id, p.session_id, p.status, p.worker_id, "
                    "p.lease_expires_at > clock_timestamp() AS leased "
                    "FROM zapgate.sandbox_mail m "
                    "LEFT JOIN zapgate.sandbox_phones ph ON m.address = 'phone:' || ph.phone "
                    "LEFT JOIN zapgate.placements p ON p.client_id = ph.client_id AND p.session_id = ph.session_id "
                    "WHERE m.envelope->>'kind' = 'message' "
                    "GROUP BY m.address, p.client_id, p.session_id, p.status, p.worker_id, p.lease_expires_at"
                )
                after = await snapshot(monitor, survivors, port)
            finally:
                await sessions.close()
                await workers.close()
    finally:
        await monitor.close()
        shutil.rmtree(folder, ignore_errors=True)

    late = [text for text in load.accepted if counts.get(text, 0) == 0]  # not received (yet)
    held = [text for text in late if waiting.get(text) is True]
    in_mailboxes = [text for text in late if waiting.get(text) is False]
    lost = [text for text in late if text not in waiting]
    duplicated = [text for text in load.accepted if counts.get(text, 0) > 1]
    unexpected = [text for text in counts if text not in load.accepted]
    balance_floor = max(0, total - (args.workers - 1) * args.capacity)

    print()
    print(
        f"server: PostgreSQL {version} (max_connections {max_connections}); {os.cpu_count()} CPUs, load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print(
        f"fleet: {args.workers} worker processes, WHATSAPP_MAX_SESSIONS={args.capacity}, worker pool "
        f"{args.worker_pool_size}, lease TTL {args.lease_ttl:g} s; {args.clients} clients x "
        f"{args.sessions_per_client} sandbox sessions = {total}; this process's pool {args.pool_size}"
    )
    print(
        f"\nconnect: all {total} sessions connected {timings['connected']:.1f} s after the first was created "
        f"(all created by {timings['created']:.1f} s, all QR codes scanned by {timings['scanned']:.1f} s); "
        f"{timings['moved']:.0f} moved to another worker while starting (a lease that ran out), "
        f"{timings['rescans']:.0f} scanned again, {timings['restarts']:.0f} started again after a QR timeout; "
        f"CPU seconds: workers {connect_cpu.get('workers', 0):.0f}, "
        f"PostgreSQL {connect_cpu.get('postgres', 0):.0f}, this process {connect_cpu.get('benchmark', 0):.0f}"
    )
    print(
        f"balance bound: each worker hosts at most {args.capacity} (WHATSAPP_MAX_SESSIONS), so at least "
        f"{balance_floor} with {args.workers} workers; it claims at once up to its share (the sessions that want to "
        f"run over the live workers, rounded up), past it only sessions left waiting {args.lease_ttl / 2:g} s"
    )
    print_snapshot("idle, all connected:", before, args.worker_pool_size)
    print(
        f"  {idle.transactions:.0f} transactions/s in PostgreSQL, of which {idle.claims:.0f} outbox claims; "
        f"workers busy {idle.cores:.2f} cores (10 s)"
    )
    print_snapshot(f"under load ({args.rate:g} texts/s):", under_load, args.worker_pool_size)
    print(
        f"  {loaded.transactions:.0f} transactions/s in PostgreSQL, of which {loaded.claims:.0f} outbox claims; "
        f"workers busy {loaded.cores:.2f} cores ({args.steady:g} s)"
    )
    print(f"  sessions that changed worker between the idle snapshot and the kill (no worker had died): {bounced}")
    print_snapshot(f"after the kill ({len(survivors)} workers left):", after, args.worker_pool_size)
    print(
        f"\nfailover: {args.kill} of {args.workers} workers killed (SIGKILL) hosting {moving} sessions: every session "
        f"claimed by a live worker after {claimed_after:.1f} s, connected again after {connected_after:.1f} s "
        f"(lease TTL {args.lease_ttl:g} s)"
    )
    print(
        f"  the moved sessions' own logs, seconds after the kill: `connecting` recorded p50 "
        f"{percentile(began, 0.5):.1f}, p90 {percentile(began, 0.9):.1f}, last {max(began, default=0):.1f} "
        f"({len(began)}); `connected` recorded p50 {percentile(done, 0.5):.1f}, p90 {percentile(done, 0.9):.1f}, "
        f"last {max(done, default=0):.1f} ({len(done)})"
    )
    print(
        f"load: {accepted} texts accepted over {args.steady + connected_after + args.after:.0f} s "
        f"(accept p50 {percentile(load.accept_ms, 0.5):.1f} ms, p99 {percentile(load.accept_ms, 0.99):.1f} ms), "
        f"refused {dict(load.refused) or 0}, not made (over {MAX_OUTSTANDING} waiting) {load.skipped}; "
        f"outbound states {dict(states)}"
    )
    print(
        f"messages: {accepted - len(late)} of {accepted} accepted texts received, {len(late)} not received "
        f"{args.drain_timeout:g} s after the load stopped: {len(in_mailboxes)} still waiting in the sandbox "
        f"network's mailboxes for their recipient, {len(held)} collected by the recipient's worker and not stored "
        f"yet, {len(lost)} nowhere (lost); {len(duplicated)} received more than once, {len(unexpected)} unexpected "
        "(one snapshot)"
    )
    for row in uncollected:
        print(
            f"  mailbox {row['address']}: {row['n']} texts; its session {row['client_id']}/{row['session_id']} "
            f"{row['status']} on {row['worker_id']} (lease alive: {row['leased']})"
        )
    for text in (lost + duplicated + in_mailboxes)[:5]:
        c, sender, message_id = load.accepted[text]
        got = counts.get(text, 0)
        print(f"  {text!r}: client {client_id(c)} session {sender} message {message_id}, received {got}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=10, help="worker processes (default 10)")
    parser.add_argument("--clients", type=int, default=100, help="clients (default 100)")
    parser.add_argument("--sessions-per-client", type=int, default=10, help="sessions per client (default 10)")
    parser.add_argument("--kill", type=int, default=3, help="workers killed with SIGKILL (default 3)")
    parser.add_argument(
        "--capacity",
        type=int,
        default=0,
        help="WHATSAPP_MAX_SESSIONS per worker (default: room for every session on the workers left after the kill)",
    )
    parser.add_argument("--worker-pool-size", type=int, default=4, help="ZAPGATE_DB_POOL_SIZE of each worker (4)")
    parser.add_argument("--pool-size", type=int, default=10, help="this process's pool (default 10)")
    parser.add_argument("--rate", type=float, default=100.0, help="texts accepted per second (default 100)")
    parser.add_argument("--steady", type=float, default=15.0, help="seconds of load before the kill (default 15)")
    parser.add_argument("--after", type=float, default=15.0, help="seconds of load after the failover (default 15)")
    parser.add_argument("--lease-ttl", type=float, default=10.0, help="ZAPGATE_LEASE_TTL (default 10)")
    parser.add_argument("--concurrency", type=int, default=16, help="creates and scans at once (default 16)")
    parser.add_argument("--connect-timeout", type=float, default=600.0, help="seconds for all to connect")
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="seconds for every text to arrive")
    parser.add_argument(
        "--failover-timeout", type=float, default=300.0, help="seconds for the sessions to be hosted again (300)"
    )
    parser.add_argument(
        "--database-url",
        help="PostgreSQL server to use (a fresh database is created and dropped); default: embedded server",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.kill < args.workers:
        parser.error("--kill must leave at least one worker")
    if not args.capacity:
        args.capacity = math.ceil(args.clients * args.sessions_per_client / (args.workers - args.kill))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging("warning")
    run_on(args.database_url, partial(benchmark, args=args))


if __name__ == "__main__":
    main()
