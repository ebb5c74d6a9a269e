"""Measure webhook delivery: deliveries per second to a fast local receiver, and event-to-receipt latency.

Everything is real: events are appended to a client's log the way workers append them, a `zapgate worker`
process delivers them (signed, recorded, one request at a time per webhook), and a receiver process on
loopback answers 200 at once and notes when each request arrived.

- throughput: a backlog of events is appended as fast as the database takes it, for 1 webhook and then for
  several; deliveries per second from the first append to the last receipt.
- latency: events appended one per transaction at a steady rate; receipt time minus the event's
  `createdAt` (the time its transaction started), p50 / p99 over every delivery.

Targets (issue 5): >= 500 deliveries/s, latency p99 < 200 ms with a healthy receiver.

    .venv/bin/python benchmarks/webhooks_throughput.py
    .venv/bin/python benchmarks/webhooks_throughput.py --events 5000 --webhooks 4 --rate 100 --duration 10
    .venv/bin/python benchmarks/webhooks_throughput.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

Without --database-url it runs against a fresh embedded PostgreSQL under /tmp; with it, it creates a fresh
database `zg_bench_<random>` on that server and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from functools import partial
from pathlib import Path

import httpx

from support import percentile, run_on, verdict  # benchmarks/support.py, beside this script
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.domain.webhooks import AddressPolicy
from zapgate.log import configure_logging
from zapgate.services.clients import ClientService
from zapgate.services.webhooks import NewWebhook, WebhookService

TARGET_RATE = 500.0  # deliveries per second
TARGET_P99_MS = 200.0
CLIENT = "bench"
APPEND_BATCH = 250  # events per transaction while building a backlog


# -- the receiver (its own process): answers 200 at once, keeps (path, event id, createdAt, arrival) ---------


async def _serve_receiver(port: int) -> None:
    seen: list[tuple[str, int, str, float]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                target = line.split(b" ", 2)[1].decode()
                length = 0
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                arrived = time.time()
                if target == "/stats":
                    payload = json.dumps({"count": len(seen)}).encode()
                elif target == "/dump":
                    payload = json.dumps(seen).encode()
                    seen.clear()
                else:
                    event = json.loads(body)
                    seen.append((target, event["eventId"], event["createdAt"], arrived))
                    payload = b"ok"
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def receiver_process() -> AsyncIterator[str]:
    """Start the receiver in a process of its own; yield its base URL."""
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--receiver", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    await http.get("/stats")
                    break
                await asyncio.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        await proc.wait()


@contextlib.asynccontextmanager
async def worker_process(database_url: str, log_dir: Path) -> AsyncIterator[None]:
    """Run `zapgate worker` (it delivers webhooks) against the benchmark database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZAPGATE_", "WHATSAPP_"))}
    env.update(
        DATABASE_URL=database_url,
        ZAPGATE_WEBHOOK_ALLOW_LOOPBACK="true",
        ZAPGATE_LOG_LEVEL="warning",
        ZAPGATE_WEBHOOK_SWEEP_INTERVAL="5",
    )
    with (log_dir / "worker.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "zapgate", "worker", env=env, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL
        )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# -- the scenarios ----------------------------------------------------------------------------------------------


async def _append(manager: ConnectionManager, count: int, start: int) -> None:
    async def work(tx: Transaction) -> None:
        await tx.event.append_many([("message-received", "s1", {"n": start + i}) for i in range(count)])

    await manager.execute_transaction(CLIENT, work)


async def _wait_count(http: httpx.AsyncClient, count: int, within: float) -> float:
    give_up = time.monotonic() + within
    while True:
        seen = (await http.get("/stats")).json()["count"]
        if seen >= count:
            return time.monotonic()
        if time.monotonic() > give_up:
            raise TimeoutError(f"only {seen} of {count} deliveries arrived within {within} s")
        await asyncio.sleep(0.02)


async def _dump(http: httpx.AsyncClient) -> list[tuple[str, int, str, float]]:
    return [tuple(row) for row in (await http.get("/dump")).json()]  # type: ignore[misc]


async def _webhooks(service: WebhookService, base: str, count: int) -> list[str]:
    existing = await service.list(CLIENT)
    for hook in existing:
        await service.delete(CLIENT, hook.id)
    made = []
    for i in range(count):
        made.append((await service.create(CLIENT, NewWebhook(url=f"{base}/hook{i}"))).id)
    return made


async def throughput(
    manager: ConnectionManager, service: WebhookService, http: httpx.AsyncClient, base: str, events: int, hooks: int
) -> float:
    """Deliveries per second for a backlog of `events` events to `hooks` webhooks."""
    await _webhooks(service, base, hooks)
    await asyncio.sleep(0.5)  # the worker hears of the webhooks
    await _dump(http)
    started = time.monotonic()
    for start in range(0, events, APPEND_BATCH):
        await _append(manager, min(APPEND_BATCH, events - start), start)
    appended = time.monotonic()
    finished = await _wait_count(http, events * hooks, within=600)
    rows = await _dump(http)
    per_hook: dict[str, list[int]] = {}
    for path, event_id, _, _ in rows:
        per_hook.setdefault(path, []).append(event_id)
    in_order = all(ids == sorted(ids) for ids in per_hook.values())
    seconds = finished - started
    rate = events * hooks / seconds
    print(
        f"throughput  {hooks} webhook(s) x {events} events: {events * hooks} deliveries in {seconds:.2f} s "
        f"= {rate:,.0f} deliveries/s (appending took {appended - started:.2f} s; in order per webhook: {in_order})",
        flush=True,
    )
    return rate


async def latency(
    manager: ConnectionManager,
    service: WebhookService,
    http: httpx.AsyncClient,
    base: str,
    rate: float,
    duration: float,
    hooks: int,
) -> tuple[float, float]:
    """p50 and p99 (ms) from an event's creation to its receipt, events appended one by one at `rate`/s."""
    await _webhooks(service, base, hooks)
    await asyncio.sleep(2.0)  # the backlog runs' leftovers (deleted deliveries, autovacuum) settle
    await _dump(http)
    count = int(rate * duration)
    started = time.monotonic()
    for i in range(count):
        await _append(manager, 1, i)
        delay = started + (i + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    await _wait_count(http, count * hooks, within=120)
    rows = await _dump(http)
    latencies = [(arrived - _epoch(created)) * 1000 for _, _, created, arrived in rows]
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    print(
        f"latency     {hooks} webhook(s), {rate:g} events/s for {duration:g} s: {len(latencies)} deliveries, "
        f"event-to-receipt p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(latencies):.1f} ms",
        flush=True,
    )
    return p50, p99


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


async def benchmark(url: str, *, args: argparse.Namespace) -> None:
    async with ConnectionManager(url, pool_size=4, health_interval=3600) as manager:
        await manager.migrate_registry()
        await ClientService(manager).create(CLIENT)
        service = WebhookService(manager, policy=AddressPolicy(allow_loopback=True))
        with tempfile.TemporaryDirectory(prefix="zg-bench-webhooks-") as logs:
            async with (
                receiver_process() as base,
                httpx.AsyncClient(base_url=base) as http,
                worker_process(url, Path(logs)),
            ):
                await asyncio.sleep(2.0)  # the worker starts and migrates
                await throughput(manager, service, http, base, min(1000, args.events), 1)  # warm-up
                one = await throughput(manager, service, http, base, args.events, 1)
                many = await throughput(manager, service, http, base, args.events, args.webhooks)
                _, p99 = await latency(manager, service, http, base, args.rate, args.duration, args.webhooks)
    best = max(one, many)
    print(f"target >= {TARGET_RATE:g} deliveries/s: {verdict(best >= TARGET_RATE)} ({best:,.0f}/s)")
    print(f"target p99 < {TARGET_P99_MS:g} ms: {verdict(p99 < TARGET_P99_MS)} ({p99:.1f} ms)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=5000, help="events per throughput run (default 5000)")
    parser.add_argument("--webhooks", type=int, default=4, help="webhooks of the multi-webhook runs (default 4)")
    parser.add_argument("--rate", type=float, default=100.0, help="events/s of the latency run (default 100)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of the latency run (default 10)")
    parser.add_argument("--database-url", help="a PostgreSQL server to create the benchmark database on")
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)  # internal: run the receiver on PORT
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.receiver is not None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve_receiver(args.receiver))
        return
    configure_logging("warning")
    run_on(args.database_url, partial(benchmark, args=args))


if __name__ == "__main__":
    main()
