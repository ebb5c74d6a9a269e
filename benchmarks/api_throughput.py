"""Measure the API: accepted sends per second through POST /whatsapp/send against a floor, and send latency.

The server (`create_app`, uvicorn, one process) runs in a child process, as `zapgate serve` would; the load
comes from this process over loopback, with a minimal HTTP/1.1 keep-alive client (so that the client's own
cost stays small next to the server's). In the same run, alternating rounds measure:

- send:  POST /whatsapp/send with the client's API key (validation, auth, the contact upserted and the pending
         message inserted, in one transaction with the client's sends that arrive meanwhile; audit) on a
         sandbox session (persisted, 202);
- floor: POST /bench/floor, a minimal endpoint added to the same server that does one INSERT in the same
         client schema through the same pool.

Then send latency p50/p99 at half of the measured maximum send rate (open loop: requests start on schedule,
latency counted from the scheduled start). Targets (issue 4): sends >= 60 % of the floor's throughput;
p99 < 50 ms at half of the maximum rate.

    .venv/bin/python benchmarks/api_throughput.py --duration 5
    .venv/bin/python benchmarks/api_throughput.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.support import percentile, run_on, start_server, stop_server, verdict

CLIENT = "bench"
SESSION = "bench"


# -- the server (child process) ---------------------------------------------------------------------------


def serve(url: str, port: int) -> None:
    """Run the app with the floor endpoint on `port` (the child process)."""
    import uvicorn
    from fastapi import FastAPI
    from sqlalchemy import text

    from zapgate.api.app import create_app
    from zapgate.db.manager import Transaction
    from zapgate.log import configure_logging
    from zapgate.settings import Settings

    configure_logging("warning")
    # the per-key request rate off by default (one key makes every request); ZAPGATE_BENCH_REQUEST_RATE turns it
    # on, to measure what metering costs (a rate no run reaches meters every request and refuses none)
    request_rate = float(os.environ.get("ZAPGATE_BENCH_REQUEST_RATE", "0"))
    settings = Settings(
        database_url=url, default_engine="sandbox", send_rate=0, request_rate=request_rate, db_pool_size=20
    )
    app: FastAPI = create_app(settings, url)
    insert = text("INSERT INTO bench_floor (body) VALUES (:body)")

    @app.post("/bench/floor", include_in_schema=False)
    async def floor() -> dict[str, bool]:
        async def work(tx: Transaction) -> None:
            await tx.connection.execute(insert, {"body": "benchmark message"})

        await app.state.manager.execute_transaction(CLIENT, work)
        return {"ok": True}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- a minimal keep-alive HTTP/1.1 client -------------------------------------------------------------------


class Connection:
    """One keep-alive connection that sends a prepared request and reads the status of the answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> int:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def post(path: str, body: dict[str, object], headers: dict[str, str]) -> bytes:
    data = json.dumps(body).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


async def closed_loop(port: int, raw: bytes, concurrency: int, duration: float) -> tuple[int, list[float], int]:
    """`concurrency` connections sending back to back for `duration` s: (done, latencies, errors)."""
    conns = [await Connection.open(port) for _ in range(concurrency)]
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + duration

    async def run(conn: Connection) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            started = time.perf_counter()
            status = await conn.request(raw)
            latencies.append(time.perf_counter() - started)
            if status >= 300:
                errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(run(conn) for conn in conns))
    elapsed = time.perf_counter() - began
    for conn in conns:
        conn.close()
    return round(len(latencies) / elapsed), latencies, errors


async def open_loop(port: int, raw: bytes, rate: float, duration: float) -> tuple[list[float], int]:
    """Requests started on a fixed schedule at `rate`/s; latency from the scheduled start (no omission)."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(64):
        idle.put_nowait(await Connection.open(port))
    latencies: list[float] = []
    errors = 0
    tasks = []

    async def one(due: float) -> None:
        nonlocal errors
        conn = await idle.get()
        try:
            status = await conn.request(raw)
        finally:
            idle.put_nowait(conn)
        latencies.append(time.perf_counter() - due)
        if status >= 300:
            errors += 1

    gc.collect()
    gc.disable()  # the load generator's own collections would show up as the server's latency
    start = time.perf_counter()
    n = int(rate * duration)
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    gc.enable()
    while not idle.empty():
        idle.get_nowait().close()
    return latencies, errors


# -- the benchmark ------------------------------------------------------------------------------------------


async def prepare(url: str) -> str:
    """Create the client, its sandbox session and the floor's table; return the API key."""
    from sqlalchemy import text

    from zapgate.db.manager import ConnectionManager, Transaction
    from zapgate.services.clients import ClientService
    from zapgate.services.sessions import SessionService

    async with ConnectionManager(url, pool_size=2) as manager:
        await manager.migrate_registry()
        issued = await ClientService(manager).create(CLIENT)
        await SessionService(manager, default_engine="sandbox").create(CLIENT, SESSION)

        async def table(tx: Transaction) -> None:
            await tx.connection.execute(
                text("CREATE TABLE bench_floor (id bigserial PRIMARY KEY, body text NOT NULL, at timestamptz)")
            )

        await manager.execute_transaction(CLIENT, table)
        return issued.api_key


def row(name: str, done: int, latencies: Sequence[float], errors: int) -> str:
    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    return f"{name:>6} {done:>8} req/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  errors {errors}"


async def benchmark(url: str, args: argparse.Namespace) -> None:
    key = await prepare(url)
    child, port = await start_server(__file__, url)
    try:
        headers = {"X-API-Key": key}
        send = post("/whatsapp/send", {"sessionId": SESSION, "to": "5511999999999", "message": "hello"}, headers)
        floor = post("/bench/floor", {}, {})
        await closed_loop(port, send, args.concurrency, 2.0)  # warm up both paths
        await closed_loop(port, floor, args.concurrency, 2.0)
        rates: dict[str, list[int]] = {"send": [], "floor": []}
        print(f"closed loop, {args.concurrency} connections, {args.rounds} alternating rounds of {args.duration:g} s")
        for _ in range(args.rounds):
            for name, raw in (("floor", floor), ("send", send)):
                done, latencies, errors = await closed_loop(port, raw, args.concurrency, args.duration)
                rates[name].append(done)
                print(row(name, done, latencies, errors), flush=True)
        send_rate = sum(rates["send"]) / len(rates["send"])
        floor_rate = sum(rates["floor"]) / len(rates["floor"])
        ratio = send_rate / floor_rate
        half = send_rate / 2
        latencies, errors = await open_loop(port, send, half, args.duration)
        p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
        target = verdict(ratio >= 0.6)
        print(f"\nsend {send_rate:.0f}/s vs floor {floor_rate:.0f}/s: {ratio:.1%} (target >= 60 %) -> {target}")
        print(
            f"at half the maximum ({half:.0f}/s, open loop, {len(latencies)} sends, {errors} errors): "
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (target < 50 ms) -> {verdict(p99 < 50)}"
        )
    finally:
        await stop_server(child)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=os.environ.get("ZAPGATE_BENCH_DATABASE_URL"))
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    run_on(args.database_url, lambda url: benchmark(url, args))


if __name__ == "__main__":
    main()
