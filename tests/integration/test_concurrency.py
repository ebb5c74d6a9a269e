"""One bounded pool serves any number of clients; first uses of a schema never race."""

import asyncio
import contextlib

import asyncpg
import pytest

from tests.support.databases import plain_url
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.db.tables import tenant_metadata

POOL_MAX = 8


async def _watch_connections(url: str, peak: list[int], stop: asyncio.Event) -> None:
    monitor = await asyncpg.connect(plain_url(url), server_settings={"application_name": "zapgate-test-monitor"})
    try:
        while not stop.is_set():
            count = await monitor.fetchval(
                # client connections only: autovacuum workers also connect to the database now and then
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            peak.append(int(count))
            await asyncio.sleep(0.005)
    finally:
        await monitor.close()


@pytest.mark.timeout(180)
async def test_200_clients_by_5_concurrent_transactions_stay_within_the_pool(database_url: str) -> None:
    samples: list[int] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_connections(database_url, samples, stop))
    clients = [f"tenant_{i:03d}" for i in range(200)]
    try:
        async with ConnectionManager(database_url, pool_size=POOL_MAX, pool_timeout=120) as manager:

            async def write(client: str, n: int) -> str:
                async def work(tx: Transaction) -> str:
                    session = await tx.session.find_unique("main") or await tx.session.create(
                        session_id=f"main_{n}", client_id=client
                    )
                    contact = await tx.contact.upsert(session_id=session.id, phone_number=f"55119999900{n:02d}")
                    message = await tx.message.create(
                        session_id=session.id,
                        contact_id=contact.id,
                        message_id=f"{client}-{n}",
                        content=f"hello {n}",
                        direction="outbound",
                    )
                    return message.message_id

                return await manager.execute_transaction(client, work)

            results = await asyncio.gather(*(write(client, n) for client in clients for n in range(5)))
            assert sorted(results) == sorted(f"{client}-{n}" for client in clients for n in range(5))
            assert manager.pool_status().size == POOL_MAX

            for client in (clients[0], clients[77], clients[199]):
                db = await manager.get_connection(client)
                assert {m.message_id for m in await db.message.find_many()} == {f"{client}-{n}" for n in range(5)}
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await watcher

    assert samples, "the monitor took no sample"
    assert max(samples) <= POOL_MAX, f"peak of {max(samples)} server connections for a pool of {POOL_MAX}"
    assert max(samples) >= 2  # the monitor saw the pool at work

    admin = await asyncpg.connect(plain_url(database_url))
    try:
        schemas = await admin.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'client\\_tenant\\_%'")
    finally:
        await admin.close()
    assert schemas == 200


async def test_ten_simultaneous_first_uses_create_one_schema_without_error(manager: ConnectionManager) -> None:
    handles = await asyncio.gather(*(manager.get_connection("brand_new") for _ in range(10)))
    assert len({id(h) for h in handles}) == 1
    await handles[0].session.create(session_id="s", client_id="brand_new")
    assert len(await handles[9].session.find_many()) == 1


async def test_first_uses_from_several_processes_do_not_race(database_url: str) -> None:
    # separate managers stand for separate processes: only the advisory lock keeps them apart
    managers = [ConnectionManager(database_url, pool_size=3) for _ in range(5)]
    try:
        results = await asyncio.gather(
            *(m.execute_transaction("race", lambda tx: tx.session.count()) for m in managers for _ in range(2))
        )
        assert results == [0] * 10
    finally:
        for m in managers:
            await m.close()
    admin = await asyncpg.connect(plain_url(database_url))
    try:
        tables = await admin.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'client_race' ORDER BY tablename"
        )
    finally:
        await admin.close()
    assert [t["tablename"] for t in tables] == sorted(["alembic_version", *tenant_metadata.tables])
