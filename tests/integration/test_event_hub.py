"""The event hub against a real PostgreSQL: commit order, no gap, no duplicate, isolation, slow readers."""

from __future__ import annotations

import asyncio
import time

from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.domain.records import Event
from zapgate.services.events import EventHub


async def append(manager: ConnectionManager, client: str, session: str, n: int, *, hold: float = 0.0) -> None:
    """Append `n` events in one transaction, holding it open `hold` seconds after the first one."""

    async def work(tx: Transaction) -> None:
        await tx.event.append(type="status-change", session_id=session, payload={"n": 0})
        if hold:
            await asyncio.sleep(hold)
        await tx.event.append_many([("status-change", session, {"n": i}) for i in range(1, n)])

    await manager.execute_transaction(client, work)


async def collect(events: list[Event], sub: object, count: int, within: float = 20.0) -> None:
    from zapgate.services.events import Subscription

    assert isinstance(sub, Subscription)
    give_up = time.monotonic() + within
    while len(events) < count:
        batch = await asyncio.wait_for(sub.next_batch(), max(0.01, give_up - time.monotonic()))
        events.extend(batch)


async def test_concurrent_writers_are_read_in_order_without_gaps(manager: ConnectionManager, database_url: str) -> None:
    hub = EventHub(manager, database_url, buffer=64)
    await hub.start()
    try:
        sub = await hub.subscribe("acme")
        seen: list[Event] = []
        # 40 concurrent transactions, some held open while later ones try to commit
        writers = [append(manager, "acme", f"s{i % 4}", 5, hold=0.05 if i % 3 == 0 else 0.0) for i in range(40)]
        reader = asyncio.create_task(collect(seen, sub, 200))
        await asyncio.gather(*writers)
        await reader
        ids = [event.id for event in seen]
        assert ids == sorted(ids) and len(set(ids)) == 200
        conn = await manager.get_connection("acme")
        assert ids == [event.id for event in await conn.event.list_after(0, limit=1000)]
        sub.close()
    finally:
        await hub.close()


async def test_resume_from_a_cursor_and_filter_by_session(manager: ConnectionManager, database_url: str) -> None:
    hub = EventHub(manager, database_url, buffer=8)
    await hub.start()
    try:
        await append(manager, "acme", "a", 30)
        await append(manager, "acme", "b", 30)
        conn = await manager.get_connection("acme")
        log = await conn.event.list_after(0, limit=100)
        # resume after the 10th event: older than the (small) buffer, read from the database
        async with hub.subscription("acme", after=log[9].id, sessions=["b"]) as sub:
            got: list[Event] = []
            await collect(got, sub, 30)
            assert [e.id for e in got] == [e.id for e in log if e.session_id == "b"]
            await append(manager, "acme", "a", 3)
            await append(manager, "acme", "b", 2)
            more: list[Event] = []
            await collect(more, sub, 2)
            assert [e.session_id for e in more] == ["b", "b"] and more[0].id > got[-1].id
    finally:
        await hub.close()


async def test_clients_never_see_each_others_events(manager: ConnectionManager, database_url: str) -> None:
    hub = EventHub(manager, database_url)
    await hub.start()
    try:
        acme = await hub.subscribe("acme")
        globex = await hub.subscribe("globex")
        await append(manager, "acme", "shared", 3)
        await append(manager, "globex", "shared", 2)
        got_acme: list[Event] = []
        got_globex: list[Event] = []
        await collect(got_acme, acme, 3)
        await collect(got_globex, globex, 2)
        assert [e.payload["n"] for e in got_acme] == [0, 1, 2]
        assert [e.payload["n"] for e in got_globex] == [0, 1]
        await asyncio.sleep(0.3)  # nothing else arrives for either
        for sub in (acme, globex):
            try:
                extra = await asyncio.wait_for(sub.next_batch(), 0.3)
            except TimeoutError:
                extra = []
            assert extra == []
    finally:
        await hub.close()


async def test_a_stalled_subscriber_holds_up_nobody(manager: ConnectionManager, database_url: str) -> None:
    hub = EventHub(manager, database_url, buffer=16)
    await hub.start()
    try:
        stalled = await hub.subscribe("acme")  # never reads until the end
        fast = await hub.subscribe("acme")
        got: list[Event] = []
        reader = asyncio.create_task(collect(got, fast, 500))
        for _ in range(10):
            await append(manager, "acme", "s", 50)
        await reader
        assert len(got) == 500
        # the stalled one fell far behind the buffer; it still gets all 500, from the database
        late: list[Event] = []
        await collect(late, stalled, 500)
        assert [e.id for e in late] == [e.id for e in got]
        assert hub.subscriber_count() == 2
        stalled.close()
        fast.close()
        assert hub.subscriber_count() == 0
    finally:
        await hub.close()


async def test_close_ends_waiting_subscribers(manager: ConnectionManager, database_url: str) -> None:
    hub = EventHub(manager, database_url)
    await hub.start()
    sub = await hub.subscribe("acme")
    waiting = asyncio.create_task(sub.next_batch())
    await asyncio.sleep(0.1)
    await hub.close()
    assert await asyncio.wait_for(waiting, 5) == []


async def test_a_batch_is_appended_in_its_order_with_its_sessions_and_payloads(manager: ConnectionManager) -> None:
    # one statement for the batch: ids must still follow the order given, each row keeping its own fields
    entries = [("message-status", None if n % 7 == 0 else f"s{n % 3}", {"n": n, "text": 'é"\\'}) for n in range(500)]

    async def work(tx: Transaction) -> None:
        await tx.event.append_many(entries)

    await manager.execute_transaction("acme", work)
    conn = await manager.get_connection("acme")
    log = await conn.event.list_after(0, limit=1000)
    assert [(e.type, e.session_id, e.payload) for e in log] == entries
    assert [e.id for e in log] == sorted(e.id for e in log)
