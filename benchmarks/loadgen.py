"""An open-loop HTTP/1.1 load generator, run as a process of its own: requests start on a fixed schedule.

wrk (closed loop: each connection sends its next request when the answer came) measures the most a server
can take; latency at a given rate needs an open loop, where a slow answer does not delay the next request
(no coordinated omission: latency counts from the time the request was due, not from when it went out).
wrk2 does that but is not in Debian, and wrk's Lua `delay()` only spaces a connection's requests after each
answer, which is still a closed loop. So this script: asyncio on uvloop with bare protocols (no HTTP library),
in its own process, that reports its own CPU time so a reader can see it was not the bottleneck (at 1,000
requests/s it uses a small fraction of one core).

    python benchmarks/loadgen.py --url http://127.0.0.1:8000/whatsapp/send --rate 800 --duration 10 --key zg_...

Prints one JSON object: requests due and done, statuses, latency percentiles (ms), late starts, CPU seconds.
With --progress, one JSON line per second on stderr (requests done and answered that second).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import resource
import sys
import time
from urllib.parse import urlsplit

MAX_CONNECTIONS = 1024  # more connections are opened while every open one waits for an answer, up to this


class Connection(asyncio.Protocol):
    """One keep-alive connection: one request in flight at a time, its answer parsed by status and length."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport

    def send(self, raw: bytes, due: float) -> None:
        assert self.transport is not None
        self.due, self.busy = due, True
        self.transport.write(raw)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        length = 0
        at = head.find(b"content-length:")
        if at >= 0:
            length = int(head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None])
        if len(self.buffer) < end + 4 + length:
            return
        status = int(self.buffer[9:12])
        del self.buffer[: end + 4 + length]
        self.busy = False
        self.pool.answered(self, status, time.perf_counter() - self.due)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.lost(self)


class Pool:
    """Hands due requests to idle connections, opening more when none is idle."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Connection] = []
        self.waiting: collections.deque[tuple[bytes, float]] = collections.deque()
        self.opening = 0
        self.open = 0
        self.latencies: list[float] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors = 0  # requests whose connection was lost before the answer
        self.connect_errors = 0  # connections that could not be opened (their requests wait for another)
        self.second: list[int] = [0, 0]  # answered, non-2xx this second (for --progress)

    async def connect(self) -> None:
        self.opening += 1
        try:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(lambda: Connection(self), self.host, self.port)
            self.open += 1
            self.release(conn)
        except OSError:
            self.connect_errors += 1
        finally:
            self.opening -= 1

    def submit(self, raw: bytes, due: float) -> None:
        if self.idle:
            self.idle.pop().send(raw, due)
            return
        self.waiting.append((raw, due))
        if self.open + self.opening < MAX_CONNECTIONS and self.opening < len(self.waiting):
            asyncio.get_running_loop().create_task(self.connect())

    def release(self, conn: Connection) -> None:
        if self.waiting:
            raw, due = self.waiting.popleft()
            conn.send(raw, due)
        else:
            self.idle.append(conn)

    def answered(self, conn: Connection, status: int, latency: float) -> None:
        self.latencies.append(latency)
        self.statuses[status] += 1
        self.second[0] += 1
        if not 200 <= status < 300:
            self.second[1] += 1
        self.release(conn)

    def lost(self, conn: Connection) -> None:
        self.open -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.busy:
            self.errors += 1


def request_bytes(host: str, path: str, key: str, n: int, sessions: int) -> bytes:
    """POST a text to one of `sessions` sessions (s0, s1, ...), as ../shared/bench/send.lua does."""
    body = b'{"sessionId":"s%d","to":"5511990001234","message":"bench message %d"}' % (n % sessions, n)
    return (
        b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nX-API-Key: %s\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), host.encode(), key.encode(), len(body), body)
    )


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered), max(1, round(fraction * len(ordered)))) - 1]


async def run(args: argparse.Namespace) -> dict[str, object]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    pool = Pool(host, port)
    for _ in range(args.connections):
        await pool.connect()
    total = int(args.rate * args.duration)
    late = 0
    gc.collect()
    gc.disable()  # a collection here would show up as the server's latency
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    next_report = start + 1.0
    i = 0
    while i < total:
        now = time.perf_counter()
        # every request due by now goes out now; each keeps its own due time for its latency
        while i < total and start + i / args.rate <= now:
            due = start + i / args.rate
            if now - due > 0.005:
                late += 1
            pool.submit(request_bytes(host, url.path, args.key, i, args.sessions), due)
            i += 1
        if args.progress and now >= next_report:
            print(
                json.dumps({"t": round(now - start, 1), "answered": pool.second[0], "refused": pool.second[1]}),
                file=sys.stderr,
                flush=True,
            )
            pool.second = [0, 0]
            next_report += 1.0
        await asyncio.sleep(max(0.0, min(start + i / args.rate - time.perf_counter(), 0.002)))
    give_up = time.perf_counter() + 30.0
    while time.perf_counter() < give_up:
        if len(pool.latencies) + pool.errors >= total:
            break
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    gc.enable()
    ordered = sorted(pool.latencies)
    ms = 1000.0
    return {
        "due": total,
        "done": len(ordered),
        "seconds": round(elapsed, 3),
        "statuses": {str(k): v for k, v in sorted(pool.statuses.items())},
        "errors": pool.errors,
        "connect_errors": pool.connect_errors,
        "connections": pool.open,
        "late_starts": late,
        "p50_ms": round(percentile(ordered, 0.5) * ms, 2),
        "p90_ms": round(percentile(ordered, 0.9) * ms, 2),
        "p99_ms": round(percentile(ordered, 0.99) * ms, 2),
        "max_ms": round(ordered[-1] * ms, 2) if ordered else None,
        "cpu_seconds": round(cpu_after.ru_utime - cpu_before.ru_utime + cpu_after.ru_stime - cpu_before.ru_stime, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--key", default="", help="the API key (X-API-Key)")
    parser.add_argument("--sessions", type=int, default=10, help="spread over sessions s0..s(N-1)")
    parser.add_argument("--connections", type=int, default=32, help="opened before the start")
    parser.add_argument("--progress", action="store_true", help="a line per second on stderr")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # plain asyncio: slower, still its own process
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
