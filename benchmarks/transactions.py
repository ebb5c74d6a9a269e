"""Measure what a transaction of the ConnectionManager costs on top of asyncpg alone (CPU of this process).

Every send is a transaction in the API and two more (a claim, a record) in the worker, so what the manager adds
per transaction is paid thousands of times a second under load (issue 13). Each round runs N transactions that
each do one `SELECT 1`, one after the other, three ways, and reports the CPU time of this process (user +
system: Python, the driver and the kernel's socket work) and the wall time per transaction:

- *manager*: `ConnectionManager.execute_transaction(client, fn)`, `fn` running its statement on the driver, as
  the send path's statements do (the pool, SQLAlchemy's transaction, `driver.begin`'s BEGIN and search_path);
- *asyncpg*: one asyncpg connection, `async with conn.transaction()`, the same `set_config('search_path', $1,
  true)`, the statement: the floor for the same round trips;
- *asyncpg, no transaction*: the statement alone, one round trip.

Rounds alternate the three, so that the drift of a shared machine does not favour one.

    .venv/bin/python benchmarks/transactions.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

Without --database-url it runs against a fresh embedded PostgreSQL under /tmp; with it, it creates a fresh
database `zg_bench_<random>` on that server and drops it at the end.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Awaitable, Callable

import asyncpg

from support import run_on  # benchmarks/support.py, beside this script
from zapgate.db.driver import driver
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.log import configure_logging

CLIENT = "txbench"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _timed(count: int, one: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """CPU and wall microseconds per call of `one`, over `count` calls."""
    cpu, wall = _cpu(), time.perf_counter()
    for _ in range(count):
        await one()
    return 1e6 * (_cpu() - cpu) / count, 1e6 * (time.perf_counter() - wall) / count


async def benchmark(url: str, args: argparse.Namespace) -> None:
    configure_logging("info")
    results: dict[str, list[tuple[float, float]]] = {"manager": [], "asyncpg": [], "asyncpg, no transaction": []}
    async with ConnectionManager(url, pool_size=2, health_interval=3600) as manager:
        await manager.migrate_registry()

        async def statement(tx: Transaction) -> object:
            return await driver(tx.connection).fetchval("SELECT 1")

        await manager.execute_transaction(CLIENT, statement)  # the client's schema, made once
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:

            async def in_manager() -> object:
                return await manager.execute_transaction(CLIENT, statement)

            async def in_asyncpg() -> object:
                async with conn.transaction():
                    await conn.execute("SELECT set_config('search_path', $1, true)", f"client_{CLIENT}")
                    return await conn.fetchval("SELECT 1")

            async def alone() -> object:
                return await conn.fetchval("SELECT 1")

            ways = {"manager": in_manager, "asyncpg": in_asyncpg, "asyncpg, no transaction": alone}
            for one in ways.values():  # warm up: prepared statements, the pool's connections
                await _timed(200, one)
            for number in range(1, args.rounds + 1):
                print(f" round {number}", flush=True)
                for name, one in ways.items():
                    cpu, wall = await _timed(args.transactions, one)
                    results[name].append((cpu, wall))
                    print(f"  {name:<24} {cpu:6.0f} us CPU  {wall:6.0f} us wall per transaction", flush=True)
        finally:
            await conn.close()
    floor = statistics.mean(cpu for cpu, _ in results["asyncpg"])
    ours = statistics.mean(cpu for cpu, _ in results["manager"])
    extra = f"{ours - floor:+.0f} us ({ours / floor:.2f}x)"
    print(f"manager {ours:.0f} us CPU per transaction, asyncpg {floor:.0f} us: {extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--transactions", type=int, default=3000, help="per way and round")
    args = parser.parse_args()
    run_on(args.database_url, lambda url: benchmark(url, args))


if __name__ == "__main__":
    main()
