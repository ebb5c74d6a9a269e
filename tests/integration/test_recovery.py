"""The manager notices a dead server and recovers by itself when it returns; committed rows survive."""

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support import databases
from zapgate.db.embedded import EmbeddedPostgres
from zapgate.db.manager import ConnectionManager
from zapgate.errors import DatabaseUnavailable

INTERVAL = 1.0  # seconds between health checks in this test


@pytest.fixture
def own_server() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own, since the test stops it."""
    with databases.own_server("zapgate-test-recovery-") as server:
        yield server


async def _wait_for(condition: Callable[[], bool], within: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@pytest.mark.timeout(120)
async def test_the_manager_recovers_after_the_server_restarts(own_server: EmbeddedPostgres) -> None:
    async with ConnectionManager(own_server.url(), pool_size=4, health_interval=INTERVAL, connect_timeout=2) as manager:
        db = await manager.get_connection("durable")
        session = await db.session.create(session_id="s", client_id="durable")
        contact = await db.contact.upsert(session_id=session.id, phone_number="5511999990001")
        for i in range(20):
            await db.message.create(
                session_id=session.id, contact_id=contact.id, message_id=f"m{i}", content=str(i), direction="inbound"
            )
        assert manager.healthy

        await asyncio.to_thread(own_server.kill_server)
        await _wait_for(lambda: not manager.healthy, within=INTERVAL * 3)
        with pytest.raises(DatabaseUnavailable):
            await db.session.count()
        assert manager.pool_status().health_check_failures >= 1

        await asyncio.to_thread(own_server.restart_server)
        back_after = await _wait_for(lambda: manager.healthy, within=INTERVAL * 3)
        # within one interval of its return (plus the duration of the check itself on a busy machine)
        assert back_after <= INTERVAL + 1.0, f"recovered {back_after:.2f} s after the server returned"

        # every committed row is there, and the manager works as before
        assert {m.message_id for m in await db.message.find_many()} == {f"m{i}" for i in range(20)}
        await db.message.create(
            session_id=session.id, contact_id=contact.id, message_id="after", content="x", direction="inbound"
        )
        assert await manager.execute_transaction("durable", lambda tx: tx.session.count()) == 1
        assert len(await db.message.find_many()) == 21
