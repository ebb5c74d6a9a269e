"""The ConnectionManager's promises: validation before SQL, eviction, logging, health of one client."""

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text
from structlog.testing import capture_logs

from tests.support.databases import plain_url
from tests.unit.test_ids import BAD_CLIENT_IDS
from zapgate.db import migrate, notify
from zapgate.db.manager import ConnectionManager
from zapgate.domain.ids import SchemaName
from zapgate.errors import InvalidClientId


@pytest.fixture
def statements(manager: ConnectionManager) -> list[str]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(manager.engine.sync_engine, "before_cursor_execute", record)
    return seen


@pytest.mark.parametrize("bad", BAD_CLIENT_IDS)
async def test_bad_client_ids_are_refused_before_any_sql(
    manager: ConnectionManager, statements: list[str], bad: str
) -> None:
    with pytest.raises(InvalidClientId):
        await manager.get_connection(bad)
    with pytest.raises(InvalidClientId):
        await manager.execute_transaction(bad, lambda tx: tx.session.count())
    with pytest.raises(InvalidClientId):
        await manager.check_single_connection(bad)
    with pytest.raises(InvalidClientId):
        await manager.drop_client_schema(bad)
    assert statements == []


async def test_a_schema_name_travels_only_as_a_parameter(manager: ConnectionManager, statements: list[str]) -> None:
    db = await manager.get_connection("zz_marker_client")
    await db.session.create(session_id="s", client_id="zz_marker_client")
    await manager.check_single_connection("zz_marker_client")
    assert statements
    ddl = [s for s in statements if "zz_marker_client" in s]
    # only in CREATE SCHEMA, where SQLAlchemy renders it as an identifier (quoted when it must be)
    assert ddl and all(
        s
        in (
            "CREATE SCHEMA IF NOT EXISTS client_zz_marker_client",
            'CREATE SCHEMA IF NOT EXISTS "client_zz_marker_client"',
        )
        for s in ddl
    ), ddl


async def test_idle_handles_are_evicted(database_url: str) -> None:
    async with ConnectionManager(database_url, pool_size=2, idle_timeout=1.0) as manager:
        first = await manager.get_connection("idle_one")
        assert manager.pool_status().handles == 1
        for _ in range(3):  # used every 0.5 s: kept for 1.5 s, longer than the idle timeout
            await asyncio.sleep(0.5)
            await first.session.count()
            assert manager.pool_status().handles == 1
        for _ in range(100):  # unused: gone after the idle timeout (checked every 0.2 s)
            if not manager.pool_status().handles:
                break
            await asyncio.sleep(0.05)
        assert manager.pool_status().handles == 0
        # an evicted client comes back on its next use, with its data
        again = await manager.get_connection("idle_one")
        assert again is not first
        assert await again.session.count() == 0


async def test_evict_idle_by_clock(manager: ConnectionManager) -> None:
    await manager.get_connection("a")
    await manager.get_connection("b")
    assert manager.evict_idle() == []
    later = asyncio.get_running_loop().time() + manager.idle_timeout + 1
    assert sorted(manager.evict_idle(now=later)) == ["a", "b"]
    assert manager.pool_status().handles == 0


async def test_every_operation_is_logged_with_duration_schema_outcome_and_time(manager: ConnectionManager) -> None:
    from zapgate.log import configure_logging

    configure_logging("debug", "json", cache_loggers=False)
    try:
        db = await manager.get_connection("logged")
        with capture_logs() as logs:
            await db.session.create(session_id="s", client_id="logged")
            with pytest.raises(Exception, match="already exists"):
                await db.session.create(session_id="s", client_id="logged")
            await manager.execute_transaction("logged", lambda tx: tx.session.find_many())
    finally:
        configure_logging("warning", cache_loggers=False)
    operations = [entry for entry in logs if entry["event"] == "db.operation"]
    assert [(e["op"], e["outcome"]) for e in operations] == [
        ("sessions.create", "ok"),
        ("sessions.create", "error"),
        ("sessions.find_many", "ok"),
        ("transaction", "ok"),
    ]
    for entry in operations:
        assert entry["schema"] == "client_logged"
        assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] >= 0
    assert "uq_sessions_session_id" in operations[1]["error"]


async def test_log_lines_carry_a_timestamp(manager: ConnectionManager, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from zapgate.log import configure_logging

    configure_logging("debug", "json", cache_loggers=False)
    try:
        db = await manager.get_connection("stamped")
        await db.session.count()
    finally:
        configure_logging("warning", cache_loggers=False)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    counted = [line for line in lines if line.get("op") == "sessions.count"]
    assert counted, lines
    assert counted[0]["timestamp"].endswith("Z")
    assert {"duration_ms", "schema", "outcome", "level"} <= counted[0].keys()


async def test_check_single_connection(manager: ConnectionManager) -> None:
    missing = await manager.check_single_connection("never_used")
    assert not missing and missing.error == "schema not created yet"
    await manager.get_connection("used")
    healthy = await manager.check_single_connection("used")
    assert healthy and healthy.schema == "client_used" and healthy.error is None
    assert healthy.latency_ms > 0

    async with manager.engine.begin() as conn:
        await migrate.upgrade_schema(conn, SchemaName("client_stale"), migrate.TENANT, target="0001")
    stale = await manager.check_single_connection("stale")
    assert not stale and stale.revision == "0001" and "expected" in (stale.error or "")
    # the health check never creates or migrates anything
    assert (await manager.check_single_connection("never_used")).error == "schema not created yet"


async def test_check_single_connection_reports_a_dead_server() -> None:
    manager = ConnectionManager("postgresql://nobody@127.0.0.1:1/none", connect_timeout=2)
    try:
        result = await manager.check_single_connection("acme")
        assert not result and result.error
        assert not await manager.check_health()
        assert not manager.healthy
    finally:
        await manager.close()


async def test_pool_status(manager: ConnectionManager) -> None:
    await manager.get_connection("a")
    status = manager.pool_status()
    assert status.size == 5 and status.checked_out == 0 and status.healthy
    async with manager.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        assert manager.pool_status().checked_out == 1


async def test_notify_sends_each_payload_once_in_a_statement_of_its_own(
    manager: ConnectionManager, database_url: str
) -> None:
    listener = await asyncpg.connect(plain_url(database_url))
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(notify.OUTBOUND, lambda *args: heard.put_nowait(args[3]))
    try:
        await manager.notify(notify.OUTBOUND, ["acme/s2", "acme/s1", "acme/s1"])
        got = [await asyncio.wait_for(heard.get(), 5), await asyncio.wait_for(heard.get(), 5)]
        assert sorted(got) == ["acme/s1", "acme/s2"]
        await asyncio.sleep(0.2)
        assert heard.empty()  # each once
        async with manager.engine.connect() as conn:  # no transaction was left open on the pooled connection
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
        with pytest.raises(ValueError, match="unknown channel"):
            await manager.notify("anything", ["x"])
    finally:
        await listener.close()
