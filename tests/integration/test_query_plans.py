"""Cached query plans follow the tables as they grow (issue 13).

Every statement is prepared, and after five runs PostgreSQL keeps a generic plan for it on that connection, made
for the tables as they were then. Made while a client's tables were nearly empty, the plan that records a batch of
sends read every message of the session on each run, and stayed until an ANALYZE (never, with autovacuum off).
A pooled connection now drops its plans once they are `PLANS_KEPT_FOR` seconds old.

PostgreSQL 15 (this machine's server, `ZAPGATE_TEST_DATABASE_URL`) keeps that plan and fails this test without the
refresh; PostgreSQL 18 (the embedded server) planned the empty tables better here, and passes either way.
"""

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import text

from tests.support.databases import plain_url
from tests.support.waiting import eventually
from zapgate.db import manager as manager_module
from zapgate.db import outbound
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.db.outbound import SendOutcome
from zapgate.domain.records import MessageStatus
from zapgate.services.clients import ClientService
from zapgate.services.sessions import SessionService

SESSIONS = 10
MESSAGES = 3_000  # per session
RECORDING = "%UPDATE messages m%SET status = i.status%"


@pytest.fixture
async def one_connection(database_url: str) -> AsyncIterator[ConnectionManager]:
    """A manager whose every transaction runs on the same pooled connection (and so the same cached plans)."""
    async with ConnectionManager(database_url, pool_size=1, health_interval=3600) as manager:
        await manager.migrate_registry()
        yield manager


async def _generic_plans(manager: ConnectionManager) -> int:
    """How often the recording statement ran on a generic plan, on the pooled connection."""

    async def read(tx: Transaction) -> int:
        query = text("SELECT generic_plans FROM pg_prepared_statements WHERE statement LIKE :s")
        return int((await tx.connection.execute(query, {"s": RECORDING})).scalar_one())

    return await manager.execute_transaction("acme", read)


async def test_a_plan_made_on_empty_tables_is_made_again_once_they_have_grown(
    one_connection: ConnectionManager, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = one_connection
    await ClientService(manager).create("acme")
    sessions = SessionService(manager, default_engine="sandbox")
    for n in range(SESSIONS):
        await sessions.create("acme", f"s{n}")
    db = await manager.get_connection("acme")
    session = await db.session.find_unique("s0")
    assert session is not None
    now = datetime.now(UTC)

    async def record(message_id: str) -> None:
        outcome = SendOutcome(
            message_id, f"WA{message_id}", MessageStatus.SENT, "5511990001234@s.whatsapp.net", now, None
        )

        async def run(tx: Transaction) -> None:
            await outbound.record_sends_many(tx.connection, [(session.id, [outcome])])
            await tx.connection.execute(text("SELECT pg_stat_force_next_flush()"))  # its index reads, counted now

        await manager.execute_transaction("acme", run)

    for n in range(8):  # on empty tables: PostgreSQL settles on a generic plan, kept on this connection
        await record(f"nothing{n}")
    assert await _generic_plans(manager) > 0

    async def grow(tx: Transaction) -> None:  # the sessions' table grows: 3,000 messages each, and one to record
        await tx.connection.execute(
            text(
                "INSERT INTO contacts (id, session_id, phone_number) "
                "SELECT 'c' || id, id, '5511990001234' FROM sessions"
            )
        )
        await tx.connection.execute(
            text(
                "INSERT INTO messages (id, session_id, contact_id, message_id, content, direction, status, timestamp) "
                "SELECT 'm' || s.id || g, s.id, 'c' || s.id, 'old' || g, 'x', 'outbound', 'read', now() "
                "FROM sessions s, generate_series(1, :n) g"
            ),
            {"n": MESSAGES},
        )
        await tx.connection.execute(
            text(
                "INSERT INTO messages (id, session_id, contact_id, message_id, content, direction, status, timestamp) "
                "VALUES ('p1', :row, 'c' || :row, 'P1', 'x', 'outbound', 'pending', now())"
            ),
            {"row": session.id},
        )

    await manager.execute_transaction("acme", grow)
    monitor = await asyncpg.connect(plain_url(database_url))
    try:

        async def index_reads() -> int:
            query = (
                "SELECT sum(idx_tup_read) FROM pg_stat_user_indexes "
                "WHERE schemaname = 'client_acme' AND relname = 'messages'"
            )
            return int(await monitor.fetchval(query))

        monkeypatch.setattr(manager_module, "PLANS_KEPT_FOR", 0.0)  # as if PLANS_KEPT_FOR seconds had gone by
        before = await index_reads()
        await record("P1")

        async def counted() -> bool:
            return await index_reads() > before

        await eventually(counted, within=10.0)
        assert await index_reads() - before < 50  # P1's index entries (any index), not the session's 3,000 messages
    finally:
        await monitor.close()
