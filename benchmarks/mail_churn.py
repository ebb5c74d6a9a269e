"""Sandbox mail under worker churn: a few sessions on a few worker processes, texts sent steadily, a worker
SIGKILLed (and a new one started) every few seconds; then every accepted text must reach its recipient once.

A small, targeted stress of the sandbox network's mailboxes (issue 16's fleet run left texts in a mailbox):
sessions are restored on another worker while mail keeps arriving, leases run out and are claimed again, on
small pools. Reports the texts not received, the mailboxes still holding mail (with who holds the session's
lease and whether the mail is handed out) and the worker log lines that say why.

    .venv/bin/python benchmarks/mail_churn.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import asyncpg

from fleet import Load, client_id, connect_all, outbound_states, placements, received  # benchmarks/, beside
from sessions_throughput import MONITOR_APP_NAME, Workers
from support import run_on
from zapgate.db.manager import ConnectionManager
from zapgate.log import configure_logging
from zapgate.services.clients import ClientService
from zapgate.services.sessions import SessionService


async def churn(url: str, *, args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="zg-bench-churn-", dir="/tmp"))
    monitor = await asyncpg.create_pool(
        url, min_size=1, max_size=2, server_settings={"application_name": MONITOR_APP_NAME}
    )
    total = args.clients * args.sessions_per_client
    env = {"ZAPGATE_DB_POOL_SIZE": str(args.worker_pool_size)}
    try:
        async with ConnectionManager(url, pool_size=4) as manager:
            await manager.migrate_registry()
            for c in range(args.clients):
                await ClientService(manager).create(client_id(c))
            sessions = SessionService(manager, default_engine="sandbox", coalesce_wakeups=True)
            workers = Workers(url, monitor, folder, args.lease_ttl, extra_env=env)
            try:
                for _ in range(args.workers):
                    await workers.start(total)
                args.connect_timeout, args.concurrency = 300.0, 4
                timings = await connect_all(sessions, monitor, args)
                print(f"{total} sessions connected in {timings['connected']:.1f} s", flush=True)
                load = Load(sessions, args.clients, args.sessions_per_client, args.rate)
                running = asyncio.create_task(load.run())
                began = time.perf_counter()
                kills = 0
                while time.perf_counter() - began < args.duration:
                    await asyncio.sleep(args.kill_every * random.uniform(0.5, 1.5))
                    victim = random.choice(workers.running)
                    await workers.kill(victim)
                    kills += 1
                    await workers.start(total)
                    print(f"killed {victim.worker_id}; {len(load.accepted)} accepted so far", flush=True)
                load.stop()
                await running
                print(f"load stopped after {kills} kills: {len(load.accepted)} accepted; draining ...", flush=True)
                deadline = time.perf_counter() + args.drain
                counts = await received(monitor, args.clients)
                while time.perf_counter() < deadline:
                    counts = await received(monitor, args.clients)
                    if all(counts.get(text, 0) >= 1 for text in load.accepted):
                        break
                    await asyncio.sleep(1)
                states = await outbound_states(monitor, args.clients)
                mail = await monitor.fetch(
                    "SELECT m.address, m.envelope->>'kind' AS kind, count(*) AS n, "
                    "count(*) FILTER (WHERE m.taken_until > clock_timestamp()) AS taken, "
                    "round(extract(epoch FROM clock_timestamp() - min(m.created_at))) AS oldest_s, "
                    "ph.client_id, ph.session_id "
                    "FROM zapgate.sandbox_mail m "
                    "LEFT JOIN zapgate.sandbox_phones ph ON m.address = 'phone:' || ph.phone "
                    "GROUP BY m.address, kind, ph.client_id, ph.session_id ORDER BY m.address"
                )
                rows = {(r["client_id"], r["session_id"]): r for r in await placements(monitor)}
                alive = {w.worker_id for w in workers.running}
            finally:
                await sessions.close()
                logs = {w.log_path for w in workers.running}
                await workers.close()
                logs |= set(await asyncio.to_thread(lambda: list(folder.glob("worker-*.log"))))
        lost = [t for t in load.accepted if counts.get(t, 0) == 0]
        twice = [t for t in load.accepted if counts.get(t, 0) > 1]
        print(
            f"\n{len(load.accepted)} accepted, {len(lost)} not received, {len(twice)} received twice; "
            f"outbound states {dict(states)}"
        )
        for r in mail:
            p = rows.get((r["client_id"], r["session_id"]))
            where = (
                "no placement"
                if p is None
                else (
                    f"{p['status']} on {p['worker_id']} ({'alive' if p['worker_id'] in alive else 'dead'}, "
                    f"leased {p['leased']})"
                )
            )
            print(
                f"  mailbox {r['address']} {r['kind']}: {r['n']} (taken {r['taken']}, oldest {r['oldest_s']} s); "
                f"session {r['client_id']}/{r['session_id']}: {where}"
            )
        for text in lost[:10]:
            c, sender, message_id = load.accepted[text]
            print(f"  lost {text!r}: {client_id(c)}/{sender} {message_id}")
        for path in sorted(logs):
            for line in await asyncio.to_thread(_telling_lines, path):
                print(f"  {path.name}: {line[:300]}")
    finally:
        await monitor.close()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"logs kept in {folder}")


def _telling_lines(path: Path) -> list[str]:
    """The lines of a worker's log that say why mail could wait: failures, stuck mail, orphaned leases."""
    interesting = ("failed", "error", "not_stored", "abandoned", "stuck", "timeout", "released", "orphan")
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").splitlines()
        return [line for line in lines if any(w in line for w in interesting) and "db.operation" not in line]
    return []


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--sessions-per-client", type=int, default=4)
    parser.add_argument("--rate", type=float, default=10.0, help="texts accepted per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load and kills")
    parser.add_argument("--kill-every", type=float, default=8.0, help="seconds between kills (on average)")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds for every text to arrive")
    parser.add_argument("--lease-ttl", type=float, default=3.0)
    parser.add_argument("--worker-pool-size", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the worker logs")
    parser.add_argument("--database-url")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    configure_logging("warning")
    run_on(arguments.database_url, partial(churn, args=arguments))
