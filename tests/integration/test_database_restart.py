"""Nothing the engines report is dropped because the database was briefly away: PostgreSQL restarted (stopped,
then started) under a steady stream of sends between two sandbox sessions, every message arrives once and ends
read. The test runs its own server, since it stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support import databases
from tests.support.waiting import eventually
from zapgate.db.embedded import EmbeddedPostgres
from zapgate.db.manager import ConnectionManager
from zapgate.services.clients import ClientService
from zapgate.services.sessions import SessionService
from zapgate.services.worker import Worker

PHONES = {"alice": "5511999990001", "bob": "5511999990002"}
RESTARTS = 3
DOWN_FOR = 1.5  # seconds the server stays stopped each time
SEND_EVERY = 0.02  # seconds between two sends of the load


@pytest.fixture
def own_server() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own, since the test stops it."""
    with databases.own_server("zapgate-test-restart-") as server:
        yield server


@pytest.fixture
async def manager(own_server: EmbeddedPostgres) -> AsyncIterator[ConnectionManager]:
    async with ConnectionManager(own_server.url(), pool_size=8, health_interval=0.5, connect_timeout=2) as manager:
        await manager.migrate_registry()
        yield manager


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_every_message_arrives_once_and_is_read_across_database_restarts(
    own_server: EmbeddedPostgres, manager: ConnectionManager
) -> None:
    await ClientService(manager).create("acme")
    sessions = SessionService(manager, default_engine="sandbox")
    worker = Worker(manager, own_server.url(), ("sandbox",), qr_timeout=30, poll_interval=0.2)
    await worker.start()
    try:
        for session_id, phone in PHONES.items():
            await sessions.create("acme", session_id)
            await eventually(lambda sid=session_id: _shows_qr(sessions, sid), every=0.1)
            await sessions.sandbox_scan("acme", session_id, phone)
            await eventually(lambda sid=session_id: _status_is(sessions, sid, "connected"), every=0.1)

        accepted: dict[str, list[str]] = {"alice": [], "bob": []}
        stop = asyncio.Event()

        async def load() -> None:
            # alice and bob write to each other without pause; a send the database cannot take is tried again
            n = 0
            while not stop.is_set():
                sender, recipient = ("alice", "bob") if n % 2 == 0 else ("bob", "alice")
                try:
                    sent = await sessions.send_text("acme", sender, PHONES[recipient], f"message {n}")
                except Exception:  # the database is away
                    await asyncio.sleep(0.1)
                    continue
                accepted[sender].append(sent.message_id)
                n += 1
                await asyncio.sleep(SEND_EVERY)

        sending = asyncio.create_task(load())
        try:
            for _ in range(RESTARTS):
                await asyncio.sleep(2.0)
                await asyncio.to_thread(own_server.kill_server)
                await asyncio.sleep(DOWN_FOR)
                await asyncio.to_thread(own_server.restart_server)
            await asyncio.sleep(2.0)
        finally:
            stop.set()
            await sending

        db = await manager.get_connection("acme")
        rows = {sid: (await sessions.get("acme", sid)).session.id for sid in PHONES}

        async def all_read() -> bool:
            for sender in PHONES:
                out = await db.message.find_many(session_id=rows[sender], direction="outbound", limit=100_000)
                if len(out) != len(accepted[sender]) or any(m.status != "read" for m in out):
                    return False
            return True

        try:
            await eventually(all_read, within=40, every=0.5)
        except TimeoutError:
            stuck: Counter[str] = Counter()
            for sender in PHONES:
                out = await db.message.find_many(session_id=rows[sender], direction="outbound", limit=100_000)
                stuck.update(m.status for m in out)
            pytest.fail(f"not every message ended read: {dict(stuck)}")

        for sender, recipient in (("alice", "bob"), ("bob", "alice")):
            out = await db.message.find_many(session_id=rows[sender], direction="outbound", limit=100_000)
            inbound = await db.message.find_many(session_id=rows[recipient], direction="inbound", limit=100_000)
            assert sorted(m.message_id for m in inbound) == sorted(m.wa_message_id for m in out)  # each once
        assert sum(len(ids) for ids in accepted.values()) > 100
    finally:
        with contextlib.suppress(Exception):
            await worker.close()


async def _shows_qr(sessions: SessionService, session_id: str) -> bool:
    return (await sessions.get("acme", session_id)).session.qr_code is not None


async def _status_is(sessions: SessionService, session_id: str, status: str) -> bool:
    return (await sessions.get("acme", session_id)).session.status == status
