"""Measure the media stores: write and read MB/s and peak memory for 1, 16 and 100 MB files, per chunk size.

Each measurement runs in a process of its own (peak RSS is a process's lifetime high-water mark): it connects,
prepares a media record, then writes one file through the store from a source that makes its bytes as it goes
(64 KiB pieces of random data, so the source itself holds nothing), reads it back to the end, and prints
its figures. "RSS +MiB" is the peak RSS minus the RSS just before the write: what the put and the read cost.

    .venv/bin/python benchmarks/media_store.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python benchmarks/media_store.py --chunk-kib 256,1024 --sizes-mb 1,16 --s3

Without --database-url it runs against a fresh embedded PostgreSQL under /tmp. With --s3 it also measures
the S3 store (8 MiB parts) against moto's server started as a separate process on loopback: moto keeps objects
in Python memory and is no S3, so only the store's own memory means something there, not its speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import psutil

from support import free_port, run_on  # benchmarks/support.py, beside this script

PIECE = 64 << 10  # bytes a source hands over at a time
MiB = 1 << 20
MB = 1_000_000


async def source(size: int) -> AsyncIterator[bytes]:
    """Yield `size` bytes of random data in PIECE-sized pieces, made as they go."""
    block = os.urandom(PIECE)
    left = size
    while left > 0:
        piece = block if left >= PIECE else block[:left]
        left -= len(piece)
        yield piece


async def measure(args: argparse.Namespace) -> dict[str, float]:
    """In this process: write one file of `args.size_mb` MB through the store, read it back, return the figures."""
    from sqlalchemy import text

    from zapgate.db import media as media_records
    from zapgate.db.manager import ConnectionManager
    from zapgate.log import configure_logging
    from zapgate.media.postgres import PostgresMediaStore
    from zapgate.media.s3 import S3MediaStore
    from zapgate.media.store import MediaStore

    configure_logging("warning", cache_loggers=False)
    size = int(args.size_mb * MB)
    async with ConnectionManager(args.url, pool_size=4, health_interval=3600) as manager:
        await manager.migrate_registry()
        store: MediaStore
        if args.store == "postgres":
            store = PostgresMediaStore(manager, chunk_size=args.chunk_kib << 10)
        else:
            store = S3MediaStore(
                "bench", endpoint_url=args.s3_url, region="us-east-1", access_key_id="k", secret_access_key="s"
            )

        async def prepare(tx: object) -> str:
            conn = tx.connection  # type: ignore[attr-defined]
            await conn.execute(text("INSERT INTO sessions (id, session_id, client_id) VALUES ('s', 's', 'bench')"))
            record = await media_records.insert_pending(
                conn, session_row_id="s", kind="document", mime_type="application/octet-stream", store=store.name
            )
            return record.store_key

        key = await manager.execute_transaction("bench", prepare)
        if args.store == "s3":
            await store.put("bench", "warm/up", source(1))  # the client's connections, made before the baseline
        rss_before = psutil.Process().memory_info().rss
        started = time.perf_counter()
        stored = await store.put("bench", key, source(size))
        wrote = time.perf_counter() - started
        assert stored.size == size
        started = time.perf_counter()
        read = 0
        async for chunk in await store.open("bench", key):
            read += len(chunk)
        reread = time.perf_counter() - started
        assert read == size
        await store.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {
        "write_mbps": size / MB / wrote,
        "read_mbps": size / MB / reread,
        "rss_growth_mib": max(0, peak - rss_before) / MiB,
    }


def run_one(url: str, store: str, chunk_kib: int, size_mb: float, s3_url: str | None) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", "--url", url, "--store", store]
    command += ["--chunk-kib", str(chunk_kib), "--sizes-mb", str(size_mb)]
    if s3_url:
        command += ["--s3-url", s3_url]
    answer = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(answer.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def drop_client(url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    conn = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        await conn.execute("DROP SCHEMA IF EXISTS client_bench CASCADE")
        await conn.execute("CHECKPOINT")  # each run starts with the WAL of the last one written out
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="a PostgreSQL server (a fresh database is made on it)")
    parser.add_argument("--chunk-kib", default="64,256,1024,4096", help="chunk sizes of the PostgreSQL store (KiB)")
    parser.add_argument("--sizes-mb", default="1,16,100", help="file sizes (MB)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (the median is shown)")
    parser.add_argument("--s3", action="store_true", help="measure the S3 store too (moto's server on loopback)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--store", default="postgres", help=argparse.SUPPRESS)
    parser.add_argument("--s3-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.chunk_kib, args.size_mb = int(args.chunk_kib), float(args.sizes_mb)
        print(json.dumps(asyncio.run(measure(args))))
        return

    chunks = [int(value) for value in args.chunk_kib.split(",")]
    sizes = [float(value) for value in args.sizes_mb.split(",")]

    moto, s3_url = None, None
    if args.s3:
        port = free_port()
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        s3_url = f"http://127.0.0.1:{port}"

    async def benchmark(url: str) -> None:
        configurations: list[tuple[str, int, str | None]] = [("postgres", chunk, None) for chunk in chunks]
        if s3_url is not None:
            await create_bucket(s3_url)
            configurations.append(("s3", 8192, s3_url))
        try:
            print(f"{'store':<9} {'chunk':>9} {'file':>7} {'write MB/s':>11} {'read MB/s':>10} {'RSS +MiB':>9}")
            for store, chunk, server in configurations:
                for size in sizes:
                    runs = []
                    for _ in range(args.repeat):
                        await drop_client(url)
                        runs.append(await asyncio.to_thread(run_one, url, store, chunk, size, server))
                    write = statistics.median(r["write_mbps"] for r in runs)
                    read = statistics.median(r["read_mbps"] for r in runs)
                    growth = statistics.median(r["rss_growth_mib"] for r in runs)
                    label = f"{chunk} KiB" if store == "postgres" else "8 MiB pt"
                    print(f"{store:<9} {label:>9} {size:>5g}MB {write:>11.1f} {read:>10.1f} {growth:>9.1f}", flush=True)
        finally:
            await drop_client(url)

    try:
        run_on(args.database_url, benchmark)
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait()


async def create_bucket(s3_url: str) -> None:
    from aiobotocore.session import get_session

    options = {"endpoint_url": s3_url, "region_name": "us-east-1", "aws_access_key_id": "k"}
    for _ in range(100):  # the server takes a moment to listen
        try:
            async with get_session().create_client("s3", aws_secret_access_key="s", **options) as s3:
                await s3.create_bucket(Bucket="bench")
                return
        except Exception:
            await asyncio.sleep(0.1)
    raise RuntimeError("moto's server did not start")


if __name__ == "__main__":
    main()
