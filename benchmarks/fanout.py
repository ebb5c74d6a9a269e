"""Measure realtime fan-out: events from the log to SSE and Socket.IO subscribers, with delivery latency.

The server (`create_app`, uvicorn, one process) runs in a child process. This process writes events into the
client's event log the way workers do (batches of rows, committed), each stamped with its write time, at a
fixed rate, and runs the subscribers: half read `GET /whatsapp/stream`, half are Socket.IO clients of
namespace /whatsapp. Latency is from the commit of an event's row to its arrival at a subscriber.

Two scenarios, in the same run:
- per session: 200 subscribers, each following its own session (?sessionId= / join-session), 1,000 events/s
  spread over the 200 sessions (each subscriber receives 5/s): the issue's target, p99 < 100 ms;
- broadcast: every subscriber follows the whole client stream; reported as deliveries per second.

    .venv/bin/python benchmarks/fanout.py --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.support import percentile, run_on, start_server, stop_server, verdict

CLIENT = "fanout"


def serve(url: str, port: int) -> None:
    import uvicorn

    from zapgate.api.app import create_app
    from zapgate.log import configure_logging
    from zapgate.settings import Settings

    configure_logging("warning")
    # 200 subscribers of one key: above the per-key connection cap (ZAPGATE_MAX_STREAMS_PER_KEY) on purpose
    settings = Settings(
        database_url=url, default_engine="sandbox", db_pool_size=10, max_streams_per_key=10_000, request_rate=0
    )
    uvicorn.run(create_app(settings, url), host="127.0.0.1", port=port, log_level="warning", access_log=False)


class Arrivals:
    """Latencies of every delivery, and the count per subscriber."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.count = 0
        self.recording = False

    def arrived(self, body: dict[str, Any]) -> None:
        if self.recording and "writtenAt" in body:
            self.latencies.append(time.time() - float(body["writtenAt"]))
            self.count += 1


async def sse_subscriber(port: int, key: str, session: str | None, arrivals: Arrivals, ready: asyncio.Event) -> None:
    """A raw SSE reader over one keep-alive connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    query = f"?sessionId={session}" if session else ""
    head = f"GET /whatsapp/stream{query} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nAccept: text/event-stream\r\n\r\n"
    writer.write(head.encode())
    await reader.readuntil(b"\r\n\r\n")
    ready.set()
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            # chunked transfer: data lines are inside chunks; pick them out as they come
            text = line.decode(errors="replace").strip()
            if text.startswith("data: "):
                arrivals.arrived(json.loads(text[6:]))
    finally:
        writer.close()


async def sio_subscriber(port: int, key: str, session: str | None, arrivals: Arrivals, ready: asyncio.Event) -> None:
    """A python-socketio client of /whatsapp that joins one session (or every one of the client's)."""
    import socketio

    client = socketio.AsyncClient(reconnection=False)

    async def on_event(data: dict[str, Any]) -> None:
        arrivals.arrived(data)

    client.on("message-received", on_event, namespace="/whatsapp")
    await client.connect(
        f"http://127.0.0.1:{port}", namespaces=["/whatsapp"], auth={"apiKey": key}, transports=["websocket"]
    )
    sessions = [session] if session else ALL_SESSIONS
    for sid in sessions:
        await client.call("join-session", {"sessionId": sid}, namespace="/whatsapp", timeout=30)
    ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await client.disconnect()


ALL_SESSIONS: list[str] = []


async def write_events(url: str, rate: float, duration: float, sessions: list[str]) -> int:
    """Append message-received events at `rate`/s, in batches every 10 ms, each stamped at commit."""
    from zapgate.db.manager import ConnectionManager, Transaction

    written = 0
    async with ConnectionManager(url, pool_size=4) as manager:
        start = time.perf_counter()
        tick = 0.01
        n = 0
        while time.perf_counter() - start < duration:
            due = int((time.perf_counter() - start) * rate) - n
            if due > 0:
                batch = [sessions[(n + i) % len(sessions)] for i in range(due)]
                stamp = time.time()

                async def work(tx: Transaction, batch: list[str] = batch, stamp: float = stamp) -> None:
                    await tx.event.append_many(
                        [("message-received", sid, {"writtenAt": stamp, "text": "x" * 64}) for sid in batch]
                    )

                await manager.execute_transaction(CLIENT, work)
                n += due
                written += due
            await asyncio.sleep(tick)
    return written


async def scenario(
    name: str,
    url: str,
    port: int,
    key: str,
    subscribers: int,
    rate: float,
    duration: float,
    follow: Callable[[int], str | None],
    sessions: list[str],
) -> tuple[Arrivals, int]:
    arrivals = Arrivals()
    tasks = []
    readies = []
    for i in range(subscribers):
        ready = asyncio.Event()
        readies.append(ready)
        make: Callable[..., Awaitable[None]] = sse_subscriber if i % 2 == 0 else sio_subscriber
        tasks.append(asyncio.create_task(make(port, key, follow(i), arrivals, ready)))
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
    await asyncio.sleep(1.0)
    arrivals.recording = True
    written = await write_events(url, rate, duration, sessions)
    await asyncio.sleep(2.0)  # the last deliveries
    arrivals.recording = False
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    return arrivals, written


async def benchmark(url: str, args: argparse.Namespace) -> None:
    from zapgate.db.manager import ConnectionManager
    from zapgate.services.clients import ClientService
    from zapgate.services.sessions import SessionService

    sessions = [f"s{i:03d}" for i in range(args.subscribers)]
    ALL_SESSIONS[:] = sessions
    async with ConnectionManager(url, pool_size=2) as manager:
        await manager.migrate_registry()
        key = (await ClientService(manager).create(CLIENT)).api_key
        service = SessionService(manager, default_engine="sandbox")
        for sid in sessions:
            await service.create(CLIENT, sid)
    child, port = await start_server(__file__, url)
    try:
        arrivals, written = await scenario(
            "per session", url, port, key, args.subscribers, args.rate, args.duration, lambda i: sessions[i], sessions
        )
        expected = written
        p50, p99 = percentile(arrivals.latencies, 0.5) * 1000, percentile(arrivals.latencies, 0.99) * 1000
        print(
            f"per session: {args.subscribers} subscribers (half SSE, half Socket.IO), {written} events written at "
            f"{args.rate:g}/s, {arrivals.count} delivered of {expected}: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
            f"(target < 100 ms) -> {verdict(p99 < 100 and arrivals.count == expected)}",
            flush=True,
        )
        broadcast_rate = args.broadcast_rate
        arrivals, written = await scenario(
            "broadcast",
            url,
            port,
            key,
            args.broadcast_subscribers,
            broadcast_rate,
            args.duration,
            lambda i: None,
            sessions,
        )
        expected = written * args.broadcast_subscribers
        p50, p99 = percentile(arrivals.latencies, 0.5) * 1000, percentile(arrivals.latencies, 0.99) * 1000
        print(
            f"broadcast: {args.broadcast_subscribers} subscribers of the whole client stream, {written} events at "
            f"{broadcast_rate:g}/s: {arrivals.count} of {expected} delivered "
            f"({arrivals.count / args.duration:.0f} deliveries/s), p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
    finally:
        await stop_server(child)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("ZAPGATE_BENCH_DATABASE_URL"))
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--broadcast-subscribers", type=int, default=20)
    parser.add_argument("--broadcast-rate", type=float, default=100.0)
    args = parser.parse_args()
    run_on(args.database_url, lambda url: benchmark(url, args))


if __name__ == "__main__":
    main()
