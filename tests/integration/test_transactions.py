"""execute_transaction commits all or nothing."""

from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from sqlalchemy import text

from zapgate.db import manager as manager_module
from zapgate.db.driver import begin, driver
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.errors import DuplicateRecord, UnstorableData


class Boom(Exception):
    pass


async def test_a_transaction_whose_function_raises_leaves_no_row(manager: ConnectionManager) -> None:
    async def work(tx: Transaction) -> None:
        session = await tx.session.create(session_id="s", client_id="acme")
        contact = await tx.contact.upsert(session_id=session.id, phone_number="5511999990001")
        await tx.message.create(
            session_id=session.id, contact_id=contact.id, message_id="m1", content="x", direction="outbound"
        )
        await tx.event.append(type="status-change", session_id="s", payload={})
        raise Boom

    with pytest.raises(Boom):
        await manager.execute_transaction("acme", work)
    db = await manager.get_connection("acme")
    assert await db.session.find_many() == []
    assert await db.contact.find_many() == []
    assert await db.message.find_many() == []
    assert await db.event.list_after() == []


async def test_a_database_error_midway_rolls_back_the_earlier_writes(manager: ConnectionManager) -> None:
    db = await manager.get_connection("acme")
    await db.session.create(session_id="taken", client_id="acme")

    async def work(tx: Transaction) -> None:
        await tx.session.create(session_id="fresh", client_id="acme")
        await tx.session.create(session_id="taken", client_id="acme")

    with pytest.raises(DuplicateRecord):
        await manager.execute_transaction("acme", work)
    assert [s.session_id for s in await db.session.find_many()] == ["taken"]


async def test_a_transaction_returns_its_result_and_commits(manager: ConnectionManager) -> None:
    async def work(tx: Transaction) -> tuple[str, str]:
        session = await tx.session.create(session_id="s", client_id="acme")
        updated = await tx.session.update("s", status="connected")
        return session.id, updated.status

    session_row_id, status = await manager.execute_transaction("acme", work)
    found = await (await manager.get_connection("acme")).session.find_unique("s")
    assert found is not None and (found.id, found.status) == (session_row_id, status)


async def test_a_deadlock_victim_is_run_again(manager: ConnectionManager) -> None:
    import asyncio

    from sqlalchemy import text

    db = await manager.get_connection("acme")
    await db.session.create(session_id="one", client_id="acme")
    await db.session.create(session_id="two", client_id="acme")
    both_hold_one = asyncio.Barrier(2)
    survivor_holds_both = asyncio.Event()
    runs: list[str] = []

    def crossing(first: str, second: str) -> Callable[[Transaction], Awaitable[str]]:
        async def work(tx: Transaction) -> str:
            runs.append(first)
            if runs.count(first) > 1:
                # the victim's run again starts once the other holds both rows: on a busy machine it could take
                # its first row back before the other (woken by the abort) got it, and deadlock a second time
                await survivor_holds_both.wait()
            lock = text("SELECT id FROM sessions WHERE session_id = :s FOR UPDATE")
            await tx.connection.execute(lock, {"s": first})
            if runs.count(first) == 1:  # only the first run of each waits for the other: a real deadlock
                await both_hold_one.wait()
            await tx.connection.execute(lock, {"s": second})
            survivor_holds_both.set()
            await tx.session.update(first, status="connected")
            return first

        return work

    results = await asyncio.gather(
        manager.execute_transaction("acme", crossing("one", "two")),
        manager.execute_transaction("acme", crossing("two", "one")),
    )
    assert sorted(results) == ["one", "two"]
    assert len(runs) == 3  # PostgreSQL broke the deadlock by failing one of them, which ran again
    assert {s.status for s in await db.session.find_many()} == {"connected"}


async def test_statements_on_the_driver_run_in_the_transaction_and_fail_as_sqlalchemys_do(
    manager: ConnectionManager,
) -> None:
    async def duplicate(tx: Transaction) -> None:
        await tx.session.create(session_id="s", client_id="acme")
        await driver(tx.connection).execute("INSERT INTO sessions SELECT * FROM sessions")

    with pytest.raises(DuplicateRecord):
        await manager.execute_transaction("acme", duplicate)
    db = await manager.get_connection("acme")
    assert await db.session.find_unique("s") is None  # the driver's statement failed the whole transaction

    async def divide(tx: Transaction) -> None:
        await driver(tx.connection).fetch("SELECT 1 / $1::int", 0)

    with pytest.raises(UnstorableData):  # class 22, as through SQLAlchemy
        await manager.execute_transaction("acme", divide)

    runs = 0

    async def deadlocked_once(tx: Transaction) -> int:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")  # as a driver's statement raises it
        return int(await driver(tx.connection).fetchval("SELECT 1"))

    assert await manager.execute_transaction("acme", deadlocked_once) == 1
    assert runs == 2  # run again, as a deadlock's victim is

    async with manager.engine.connect() as conn:  # no transaction begun: the driver would commit on its own
        await conn.exec_driver_sql("SELECT 1")
        await conn.rollback()
        with pytest.raises(RuntimeError):
            driver(conn)


async def test_a_transaction_begins_with_its_schema_in_one_round_trip_and_sqlalchemy_ends_it(
    manager: ConnectionManager,
) -> None:
    """`driver.begin`: BEGIN and the search_path go in one statement; SQLAlchemy's statements run in that
    transaction and SQLAlchemy commits it, or rolls it back, as one it began."""
    await (await manager.get_connection("acme")).session.create(session_id="s", client_id="acme")
    await (await manager.get_connection("other")).session.create(session_id="o", client_id="other")

    async def look(tx: Transaction) -> tuple[str, int, bool]:
        raw = driver(tx.connection)  # the transaction is open before any statement of the function's
        path = str(await raw.fetchval("SELECT current_setting('search_path')"))
        sessions = int((await tx.connection.execute(text("SELECT count(*) FROM sessions"))).scalar_one())
        return path, sessions, raw.is_in_transaction()

    assert await manager.execute_transaction("acme", look) == ("client_acme", 1, True)
    assert await manager.execute_transaction("other", look) == ("client_other", 1, True)

    async def write_then_fail(tx: Transaction) -> None:
        await tx.connection.execute(text("UPDATE sessions SET status = 'connected'"))  # SQLAlchemy's statement
        await driver(tx.connection).execute("UPDATE sessions SET phone_number = '5511999990001'")
        raise Boom

    with pytest.raises(Boom):
        await manager.execute_transaction("acme", write_then_fail)
    found = await (await manager.get_connection("acme")).session.find_unique("s")
    assert found is not None and (found.status, found.phone_number) != ("connected", "5511999990001")

    async with manager.engine.connect() as conn:  # the pool's connection after those: no transaction left open
        raw = conn.sync_connection.connection.driver_connection if conn.sync_connection else None
        assert isinstance(raw, asyncpg.Connection) and not raw.is_in_transaction()
        assert await raw.fetchval("SELECT current_setting('search_path')") != "client_acme"  # local to it
        await conn.rollback()


async def test_a_transaction_that_drops_its_cached_plans_begins_as_any_other(
    manager: ConnectionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager_module, "PLANS_KEPT_FOR", 0.0)  # every transaction drops the plans first

    async def look(tx: Transaction) -> tuple[str, bool]:
        raw = driver(tx.connection)
        return str(await raw.fetchval("SELECT current_setting('search_path')")), raw.is_in_transaction()

    assert await manager.execute_transaction("acme", look) == ("client_acme", True)
    assert await manager.execute_transaction("acme", look) == ("client_acme", True)


async def test_begin_takes_the_schema_as_a_value_and_refuses_a_begun_transaction(manager: ConnectionManager) -> None:
    await (await manager.get_connection("acme")).session.create(session_id="s", client_id="acme")
    async with manager.engine.connect() as conn:
        with pytest.raises(asyncpg.exceptions.InvalidParameterValueError):  # a value PostgreSQL refuses, not SQL
            await begin(conn, "client_acme'; DROP TABLE sessions; --")
        await conn.rollback()
    assert await (await manager.get_connection("acme")).session.find_unique("s") is not None
    async with manager.engine.connect() as conn:
        await begin(conn, "client_acme")
        with pytest.raises(RuntimeError):  # SQLAlchemy's adapter has a transaction: BEGIN again would nest nothing
            await begin(conn, "client_acme")
        await conn.rollback()


async def test_a_transaction_on_generic_plans_runs_on_them_alone_and_in_its_schema(manager: ConnectionManager) -> None:
    """`generic_plans`: PostgreSQL's plan_cache_mode is set for that transaction only (the outbox's claims), so its
    prepared statements are not planned again for their values at every run; the next transaction is as before."""
    await (await manager.get_connection("acme")).session.create(session_id="s", client_id="acme")

    async def look(tx: Transaction) -> tuple[str, str, int]:
        raw = driver(tx.connection)
        mode = str(await raw.fetchval("SELECT current_setting('plan_cache_mode')"))
        path = str(await raw.fetchval("SELECT current_setting('search_path')"))
        return mode, path, int(await raw.fetchval("SELECT count(*) FROM sessions WHERE session_id = $1", "s"))

    assert await manager.execute_transaction("acme", look, generic_plans=True) == (
        "force_generic_plan",
        "client_acme",
        1,
    )
    assert await manager.execute_transaction("acme", look) == ("auto", "client_acme", 1)

    async def generic_runs(tx: Transaction) -> int:  # a statement run on the generic plan from its first run
        raw = driver(tx.connection)
        statement = "SELECT count(*) FROM sessions WHERE status = $1"
        await raw.fetchval(statement, "connected")
        return int(
            await raw.fetchval("SELECT generic_plans FROM pg_prepared_statements WHERE statement = $1", statement)
        )

    assert await manager.execute_transaction("acme", generic_runs, generic_plans=True) == 1
