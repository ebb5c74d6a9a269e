"""Measure the data layer: small-write throughput over 1 to 10,000 client schemas, and new-schema latency.

Every scenario runs twice: "cold", right after the previous one, when each pooled connection still meets
most clients for the first time (PostgreSQL then loads that schema's catalog into the connection), and
"warm", after every (client, connection) pair has been used a few times, as in a gateway that has been up
for a while. The warm scenarios are measured in alternating rounds (1 client, 100, 1,000, then again), so
that the drift of a shared machine over minutes does not favour one of them.

Each transaction is what `POST /whatsapp/send` writes: upsert a contact, insert a message, in one client's
schema. Scenarios spread the transactions over 1, 100 and 1,000 clients (10,000 with --with-10k) and report
transactions per second, latency, and the peak number of server connections the pool used, sampled from a
separate connection. Targets (from the issue): every scenario within the pool (default <= 20 connections),
throughput at 1,000 clients >= 80 % of that at 1 client, a new client schema ready in < 100 ms.

    .venv/bin/python benchmarks/db_throughput.py --duration 5
    .venv/bin/python benchmarks/db_throughput.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

Without --database-url it runs against a fresh embedded PostgreSQL under /tmp; with it, it creates a fresh
database `zg_bench_<random>` on that server and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial

import asyncpg

from support import percentile, run_on, verdict  # benchmarks/support.py, beside this script
from zapgate.db import migrate
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.log import configure_logging

WARMUP = 1.0  # seconds before each scenario's measurement starts
MAX_WARMUP = 180.0  # seconds at most spent warming every connection up on every client
WARM_VISITS = 2  # a warm phase starts after this many transactions per (client, pooled connection) pair
SAMPLE_INTERVAL = 0.05  # seconds between two samples of the server's connection count
IDLE_CREATIONS = 20  # new schemas created one by one on an otherwise idle server
SETUP_CONCURRENCY = 8  # schemas created at once during setup (bounded by the pool size)
PHONES_PER_CLIENT = 10_000  # distinct contacts per client, so concurrent upserts rarely hit the same row
MONITOR_APP_NAME = "zapgate-bench-monitor"  # must differ from the pool's "zapgate"
POOL_APP_NAME = "zapgate"

TARGET_RATIO = 0.80  # throughput(1,000 clients) / throughput(1 client)
TARGET_NEW_SCHEMA_MS = 100.0
RATIO_CLIENTS = (1, 1000)

_COUNT_POOL_CONNECTIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()"
)


@dataclass(frozen=True, slots=True)
class Client:
    """One benchmark client: its id and the row id of its only session."""

    client_id: str
    session_row_id: str


@dataclass(frozen=True, slots=True)
class Creation:
    """Latencies (ms) of schema creations and the peak server connections while they ran."""

    latencies_ms: list[float]
    peak_connections: int
    peak_checked_out: int
    seconds: float


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """What one scenario measured."""

    clients: int
    phase: str  # "cold": connections meet most clients for the first time; "warm": they have met them all
    transactions: int
    seconds: float
    latencies_ms: list[float]
    errors: int
    peak_connections: int
    peak_checked_out: int

    @property
    def tps(self) -> float:
        return self.transactions / self.seconds


class ConnectionMonitor:
    """Sample the pool's server connections (and checked-out count) every SAMPLE_INTERVAL from its own connection."""

    def __init__(self, conn: asyncpg.Connection, manager: ConnectionManager) -> None:
        self._conn, self._manager = conn, manager
        self.peak_connections = 0
        self.peak_checked_out = 0

    @asynccontextmanager
    async def watching(self) -> AsyncIterator[ConnectionMonitor]:
        """Sample while the block runs; the peaks cover only this block."""
        self.peak_connections = self.peak_checked_out = 0
        task = asyncio.create_task(self._sample_forever())
        try:
            yield self
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            await self._sample()  # one last look, so a block shorter than the interval is seen too

    async def _sample_forever(self) -> None:
        while True:
            await self._sample()
            await asyncio.sleep(SAMPLE_INTERVAL)

    async def _sample(self) -> None:
        count = int(await self._conn.fetchval(_COUNT_POOL_CONNECTIONS, POOL_APP_NAME))
        self.peak_connections = max(self.peak_connections, count)
        self.peak_checked_out = max(self.peak_checked_out, self._manager.pool_status().checked_out)


async def write_message(client: Client, phone: str, message_id: str, tx: Transaction) -> None:
    """The transaction measured: upsert the contact, insert an outbound message to it."""
    contact = await tx.contact.upsert(session_id=client.session_row_id, phone_number=phone)
    await tx.message.create(
        session_id=client.session_row_id,
        contact_id=contact.id,
        message_id=message_id,
        content="hi",
        direction="outbound",
    )


async def create_client(manager: ConnectionManager, client_id: str) -> tuple[Client, float]:
    """Create and migrate `client_id`'s schema (timed, in ms), then give it one session."""
    started = time.perf_counter()
    handle = await manager.get_connection(client_id)
    elapsed_ms = (time.perf_counter() - started) * 1000
    session = await handle.session.create(session_id="s1", client_id=client_id)
    return Client(client_id, session.id), elapsed_ms


async def create_clients(
    manager: ConnectionManager, monitor: ConnectionMonitor, client_ids: Sequence[str], concurrency: int
) -> tuple[list[Client], Creation]:
    """Create the schemas of `client_ids`, `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def bounded(client_id: str) -> tuple[Client, float]:
        async with gate:
            return await create_client(manager, client_id)

    started = time.perf_counter()
    async with monitor.watching():
        created = await asyncio.gather(*(bounded(client_id) for client_id in client_ids))
    creation = Creation(
        latencies_ms=[ms for _, ms in created],
        peak_connections=monitor.peak_connections,
        peak_checked_out=monitor.peak_checked_out,
        seconds=time.perf_counter() - started,
    )
    return [client for client, _ in created], creation


async def create_alone(manager: ConnectionManager, count: int) -> list[float]:
    """Create `count` new schemas one after another with nothing else running; return their latencies (ms)."""
    return [(await create_client(manager, f"idle{index:03d}"))[1] for index in range(count)]


async def run_scenario(
    manager: ConnectionManager,
    monitor: ConnectionMonitor,
    clients: Sequence[Client],
    duration: float,
    concurrency: int,
    phase: str = "cold",
    warm_transactions: int = 0,
) -> ScenarioResult:
    """Run the write transaction from `concurrency` coroutines over `clients`: warm up, then `duration` seconds.

    The warm-up lasts WARMUP seconds, or for a warm phase until `warm_transactions` ran (at most MAX_WARMUP s).
    """
    message_numbers = itertools.count()
    run_tag = secrets.token_hex(4)  # message ids stay unique across scenarios sharing a schema
    latencies_ms: list[float] = []
    errors = 0
    measuring = False
    warmed = 0
    stop, warm_enough = asyncio.Event(), asyncio.Event()

    async def worker() -> None:
        nonlocal errors, warmed
        rng = random.Random()
        while not stop.is_set():
            client = clients[rng.randrange(len(clients))]
            phone = str(5511900000000 + rng.randrange(PHONES_PER_CLIENT))
            message_id = f"bench-{run_tag}-{next(message_numbers)}"

            started = time.perf_counter()
            try:
                await manager.execute_transaction(client.client_id, partial(write_message, client, phone, message_id))
            except Exception:
                if measuring:
                    errors += 1
                continue
            if measuring:
                latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                warmed += 1
                if warmed >= warm_transactions:
                    warm_enough.set()

    async with monitor.watching():
        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(WARMUP)
        with suppress(TimeoutError):
            await asyncio.wait_for(warm_enough.wait(), MAX_WARMUP)
        measuring, started = True, time.perf_counter()
        await asyncio.sleep(duration)
        measuring, seconds = False, time.perf_counter() - started
        stop.set()
        await asyncio.gather(*workers)
    return ScenarioResult(
        clients=len(clients),
        phase=phase,
        transactions=len(latencies_ms),
        seconds=seconds,
        latencies_ms=latencies_ms,
        errors=errors,
        peak_connections=monitor.peak_connections,
        peak_checked_out=monitor.peak_checked_out,
    )


def report(
    args: argparse.Namespace,
    setup: Creation,
    alone_ms: list[float],
    results: list[ScenarioResult],
    server_version: str,
    load_before: float,
) -> None:
    """Print the figures and whether each target is met."""
    print()
    load = f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    print(f"server: PostgreSQL {server_version}; {os.cpu_count()} CPUs, {load}")
    print(f"pool size {args.pool_size}, {args.concurrency} coroutines, {args.duration:g} s per scenario")
    print()
    lat = setup.latencies_ms
    print(
        f"new client schema (create + migrate), {len(lat)} created {min(SETUP_CONCURRENCY, args.pool_size)} at a time "
        f"in {setup.seconds:.1f} s: p50 {percentile(lat, 0.5):.1f} ms, p95 {percentile(lat, 0.95):.1f} ms, "
        f"max {max(lat):.1f} ms (peak server connections {setup.peak_connections}, "
        f"peak checked out {setup.peak_checked_out})"
    )
    print(
        f"new client schema alone on an idle server ({len(alone_ms)} sequential, {len(lat)} schemas present): "
        f"p50 {statistics.median(alone_ms):.1f} ms, max {max(alone_ms):.1f} ms"
    )
    print()
    header = (
        f"{'clients':>8} {'phase':>6} {'tx':>8} {'tx/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'pool':>5} {'peak conn':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.clients:>8} {r.phase:>6} {r.transactions:>8} {r.tps:>9.1f} {percentile(r.latencies_ms, 0.5):>8.2f} "
            f"{percentile(r.latencies_ms, 0.99):>8.2f} {r.errors:>7} {args.pool_size:>5} {r.peak_connections:>10}"
        )
    print()

    peak = max([setup.peak_connections, *(r.peak_connections for r in results)])
    within = verdict(peak <= args.pool_size)
    print(f"target: within the pool (<= {args.pool_size} server connections): peak {peak} -> {within}")
    few, many = RATIO_CLIENTS
    for phase in ("cold", "warm"):
        by_clients = {r.clients: r for r in results if r.phase == phase}
        if few in by_clients and many in by_clients and by_clients[few].tps > 0:
            ratio = by_clients[many].tps / by_clients[few].tps
            print(
                f"target: throughput({many} clients) / throughput({few} client) >= {TARGET_RATIO:.0%}, {phase}: "
                f"{ratio:.1%} -> {verdict(ratio >= TARGET_RATIO)}"
            )
        elif phase == "cold":
            print(f"target: throughput ratio: n/a (needs --clients with {few} and {many})")
    alone_p50 = statistics.median(alone_ms)
    print(
        f"target: new client schema < {TARGET_NEW_SCHEMA_MS:.0f} ms (alone, p50): {alone_p50:.1f} ms -> "
        f"{verdict(alone_p50 < TARGET_NEW_SCHEMA_MS)}"
    )


async def warm_rounds(
    manager: ConnectionManager,
    monitor: ConnectionMonitor,
    clients: Sequence[Client],
    counts: Sequence[int],
    args: argparse.Namespace,
) -> list[ScenarioResult]:
    """Warm every scenario up, then measure them in alternating rounds, so that the machine's drift over
    minutes (it is shared) weighs on each scenario alike; return one result per scenario."""
    for count in counts:
        warm = WARM_VISITS * count * args.pool_size
        print(f"warming {count} clients up ({warm} transactions) ...", flush=True)
        await run_scenario(manager, monitor, clients[:count], 0.0, args.concurrency, "warm", warm_transactions=warm)
    rounds: dict[int, list[ScenarioResult]] = {count: [] for count in counts}
    print(f"warm: {args.rounds} alternating rounds of {args.duration / args.rounds:g} s per scenario ...", flush=True)
    for _ in range(args.rounds):
        for count in counts:
            measured = await run_scenario(
                manager, monitor, clients[:count], args.duration / args.rounds, args.concurrency, "warm"
            )
            rounds[count].append(measured)
    return [
        ScenarioResult(
            clients=count,
            phase="warm",
            transactions=sum(r.transactions for r in parts),
            seconds=sum(r.seconds for r in parts),
            latencies_ms=[ms for r in parts for ms in r.latencies_ms],
            errors=sum(r.errors for r in parts),
            peak_connections=max(r.peak_connections for r in parts),
            peak_checked_out=max(r.peak_checked_out for r in parts),
        )
        for count, parts in rounds.items()
    ]


async def benchmark(url: str, *, args: argparse.Namespace) -> None:
    """Set the clients up, run every scenario, print the report."""
    load_before = os.getloadavg()[0]  # other work on the machine skews every figure below
    counts = sorted(set(args.clients) | ({10_000} if args.with_10k else set()))
    migrate.head_revision(migrate.TENANT)  # load the revision scripts now, not inside the first timed creation
    monitor_conn = await asyncpg.connect(url, server_settings={"application_name": MONITOR_APP_NAME})
    try:
        server_version = str(await monitor_conn.fetchval("SHOW server_version"))
        async with ConnectionManager(url, pool_size=args.pool_size, health_interval=3600, idle_timeout=3600) as manager:
            await manager.migrate_registry()
            monitor = ConnectionMonitor(monitor_conn, manager)
            print(f"creating {counts[-1]} client schemas ...", flush=True)
            ids = [f"bench{index:05d}" for index in range(counts[-1])]
            clients, setup = await create_clients(manager, monitor, ids, min(SETUP_CONCURRENCY, args.pool_size))
            print(f"creating {IDLE_CREATIONS} schemas one at a time ...", flush=True)
            alone_ms = await create_alone(manager, IDLE_CREATIONS)
            results = []
            for count in counts:
                print(f"scenario: {count} clients ...", flush=True)
                results.append(await run_scenario(manager, monitor, clients[:count], args.duration, args.concurrency))
            if not args.cold_only:
                results += await warm_rounds(manager, monitor, clients, [c for c in counts if c <= 1000], args)
    finally:
        await monitor_conn.close()
    report(args, setup, alone_ms, results, server_version, load_before)


def client_counts(value: str) -> list[int]:
    """Parse "1,100,1000" into [1, 100, 1000]."""
    try:
        counts = [int(part) for part in value.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from exc
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("client counts must be positive")
    return counts


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario (default 10)")
    parser.add_argument("--concurrency", type=int, default=64, help="coroutines issuing transactions (default 64)")
    parser.add_argument("--pool-size", type=int, default=20, help="ConnectionManager pool size (default 20)")
    parser.add_argument(
        "--clients", type=client_counts, default=[1, 100, 1000], help="client counts (default 1,100,1000)"
    )
    parser.add_argument("--with-10k", action="store_true", help="add a scenario with 10,000 clients")
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating measurement rounds of the warm phase (default 5)"
    )
    parser.add_argument(
        "--cold-only",
        action="store_true",
        help="skip the warm phases (each warms every pooled connection up on every client first)",
    )
    parser.add_argument(
        "--database-url",
        help="PostgreSQL server to use (a fresh database is created and dropped); default: embedded server",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging("warning")  # the manager logs every operation at debug and every migration at info
    run_on(args.database_url, partial(benchmark, args=args))


if __name__ == "__main__":
    main()
