"""Placement is fair across clients: one client's queue of waiting sessions never starves another's new one."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.waiting import eventually
from zapgate.db import placements
from zapgate.db.manager import ConnectionManager
from zapgate.engines.base import SessionRef
from zapgate.services.clients import ClientService
from zapgate.services.sessions import SessionService
from zapgate.services.worker import Worker


async def _place(manager: ConnectionManager, client: str, *sessions: str) -> None:
    for session in sessions:  # one transaction each: each gets its own (later) created_at
        async with manager.registry_transaction() as conn:
            await placements.insert(conn, client, session, "sandbox", "qr", None, "created")


async def test_claims_take_turns_across_clients(manager: ConnectionManager) -> None:
    for client in ("big", "small"):
        await ClientService(manager).create(client)
    await _place(manager, "big", "b1", "b2", "b3", "b4")
    await _place(manager, "small", "s1")

    async with manager.registry_transaction() as conn:
        first = await placements.claim(conn, "w1", ["sandbox"], 2, 10.0)
    assert [(p.client_id, p.session_id) for p in first] == [("big", "b1"), ("small", "s1")]  # in turn order

    # big holds one session, small one: small's new session goes before big's older waiting ones
    await _place(manager, "small", "s2")
    async with manager.registry_transaction() as conn:
        second = await placements.claim(conn, "w2", ["sandbox"], 1, 10.0)
    assert [(p.client_id, p.session_id) for p in second] == [("big", "b2")]
    async with manager.registry_transaction() as conn:
        third = await placements.claim(conn, "w2", ["sandbox"], 1, 10.0)
    assert [(p.client_id, p.session_id) for p in third] == [("small", "s2")]


async def test_a_claim_answers_in_turn_order_so_the_worker_starts_them_so(manager: ConnectionManager) -> None:
    """An UPDATE returns its rows in no particular order: a worker that took 43 sessions of a dead one started
    them in that order, several of one client before the first of another."""
    for client in ("a", "b", "c"):
        await ClientService(manager).create(client)
        await _place(manager, client, *(f"{client}{n}" for n in range(1, 4)))
    async with manager.registry_transaction() as conn:
        taken = await placements.claim(conn, "w1", ["sandbox"], 9, 10.0)
    assert [p.session_id for p in taken] == ["a1", "b1", "c1", "a2", "b2", "c2", "a3", "b3", "c3"]


@pytest.fixture
async def sessions(manager: ConnectionManager) -> SessionService:
    for client in ("big", "small"):
        await ClientService(manager).create(client)
    return SessionService(manager, default_engine="sandbox")


@pytest.fixture
async def worker(manager: ConnectionManager, database_url: str) -> AsyncIterator[Worker]:
    worker = Worker(manager, database_url, ("sandbox",), capacity=2, lease_ttl=3, qr_timeout=30, poll_interval=0.2)
    await worker.start()
    yield worker
    await worker.close()


async def test_a_freed_slot_goes_to_the_client_with_fewer_sessions_running(
    manager: ConnectionManager, sessions: SessionService, worker: Worker
) -> None:
    for name in ("b1", "b2"):
        await sessions.create("big", name)

    async def hosted(client: str, session: str) -> bool:
        return (await sessions.get(client, session)).worker_id == worker.worker_id

    await eventually(lambda: hosted("big", "b1"), within=10.0)
    await eventually(lambda: hosted("big", "b2"), within=10.0)
    for name in ("b3", "b4", "b5"):  # the worker is full: these wait
        await sessions.create("big", name)
    await sessions.create("small", "s1")

    await sessions.stop("big", "b1")  # a slot frees
    await eventually(lambda: hosted("small", "s1"), within=10.0)
    for name in ("b3", "b4", "b5"):
        assert (await sessions.get("big", name)).worker_id is None


async def _alive_elsewhere(manager: ConnectionManager, worker_id: str) -> None:
    """A live worker that never claims (its heartbeat stays fresh for the whole test)."""
    async with manager.registry_transaction() as conn:
        await placements.heartbeat(conn, worker_id, "elsewhere", 1, 50)
        await conn.execute(
            text("UPDATE workers SET heartbeat_at = now() + interval '1 hour' WHERE worker_id = :w"), {"w": worker_id}
        )


async def test_the_fair_share_is_the_wanted_sessions_over_the_live_workers_less_those_held(
    manager: ConnectionManager, sessions: SessionService
) -> None:
    for n in range(10):
        await sessions.create("big", f"b{n}")
    async with manager.registry_transaction() as conn:
        assert await placements.fair_share(conn, "w1", ["sandbox"], 10.0) == 10  # no live worker yet: all of them
    for worker_id in ("w1", "idle-1", "idle-2"):
        await _alive_elsewhere(manager, worker_id)
    async with manager.registry_transaction() as conn:
        assert await placements.fair_share(conn, "w1", ["sandbox"], 10.0) == 4  # 10 over 3 live, rounded up
        assert await placements.fair_share(conn, "w1", ["whatsmeow"], 10.0) == 0  # none of that engine
        assert len(await placements.claim(conn, "w1", ["sandbox"], 3, 10.0)) == 3
        assert await placements.fair_share(conn, "w1", ["sandbox"], 10.0) == 1  # it holds 3 of its 4
        # just created: none has waited 60 s for a worker, so a claim past the share takes none
        assert await placements.claim(conn, "w1", ["sandbox"], 5, 10.0, waited=60.0) == []
        await conn.execute(text("UPDATE placements SET updated_at = now() - interval '2 minutes'"))
        assert len(await placements.claim(conn, "w1", ["sandbox"], 5, 10.0, waited=60.0)) == 5
        # a lease let go of waits from then on, however old the session
        released = (await placements.claim(conn, "w2", ["sandbox"], 1, 10.0))[0]
        await placements.release(conn, "w2", released.client_id, released.session_id)
        taken = await placements.claim(conn, "w1", ["sandbox"], 5, 10.0, waited=60.0)
        assert [p.session_id for p in taken] != [released.session_id] and len(taken) == 1  # the other one left


async def test_a_burst_of_sessions_is_shared_evenly_between_the_workers_claiming_it(
    manager: ConnectionManager, sessions: SessionService, database_url: str
) -> None:
    """Issue 16: the first worker to wake took every waiting session it had room for (86-135 of 1,000 per worker in
    the fleet benchmark). Each now claims at once only up to its share, here 10 over 2: 5 each."""
    workers = [
        Worker(manager, database_url, ("sandbox",), capacity=20, lease_ttl=10, qr_timeout=30, poll_interval=0.2)
        for _ in range(2)
    ]
    for worker in workers:
        await worker.start()
    try:
        for n in range(10):
            await sessions.create("big", f"b{n}")

        async def all_hosted() -> bool:
            return sum(len(worker.hosted) for worker in workers) == 10

        await eventually(all_hosted, within=20.0)
        assert [len(worker.hosted) for worker in workers] == [5, 5]
    finally:
        for worker in workers:
            await worker.close()


async def test_past_its_share_a_worker_takes_only_the_sessions_the_others_left_waiting(
    manager: ConnectionManager, sessions: SessionService, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live worker that never claims (stalled, full, of another engine) keeps no session waiting for long: the
    worker that claims takes its share at once (4 over 2 live workers: 2), and the rest once they have waited half
    a lease for the other."""
    await _alive_elsewhere(manager, "stalled")
    for n in range(4):
        await sessions.create("big", f"b{n}")
    claims: list[tuple[int, float | None]] = []  # (sessions taken, waited) of each claim that took any
    claim = placements.claim

    async def counted(*args: Any, waited: float | None = None) -> list[placements.Placement]:
        taken = await claim(*args, waited=waited)
        if taken:
            claims.append((len(taken), waited))
        return taken

    monkeypatch.setattr(placements, "claim", counted)
    worker = Worker(manager, database_url, ("sandbox",), capacity=20, lease_ttl=10, qr_timeout=30, poll_interval=0.2)
    await worker.start()
    try:

        async def all_hosted() -> bool:
            return len(worker.hosted) == 4

        await eventually(all_hosted, within=20.0)
    finally:
        await worker.close()
    assert claims[0] == (2, None)  # its share, at once
    assert {waited for _, waited in claims[1:]} == {5.0} and sum(n for n, _ in claims[1:]) == 2  # the rest, late


async def test_a_session_claimed_while_a_renewal_runs_is_not_taken_for_gone(
    manager: ConnectionManager, sessions: SessionService, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16 (a fleet run): lease renewals run on a connection of their own. One that read the leases before a
    claim committed answered without the new session, and the worker took it for gone: it stopped it and let go of
    its lease while its start went on, another worker claimed it, and the two hosted it at once (the stale one's
    QR timeout then stopped the other's sending: 23 texts stayed pending). Here a renewal of the lease loop reads,
    then answers only once the worker has claimed and hosted a new session."""
    holding, claimed = asyncio.Event(), asyncio.Event()
    stale: list[bool] = []  # a held renewal answered what it read before the claim
    released: list[str] = []
    claim, renew, release = placements.claim, placements.renew, placements.release

    async def claiming(*args: Any, **kwargs: Any) -> list[placements.Placement]:
        taken = await claim(*args, **kwargs)
        if taken:
            claimed.set()
        return taken

    async def slow_renew(*args: Any, **kwargs: Any) -> list[placements.Placement]:
        current = await renew(*args, **kwargs)
        task = asyncio.current_task()
        if not stale and not claimed.is_set() and task is not None and task.get_name() == "worker.leases":
            holding.set()
            await claimed.wait()
            await asyncio.sleep(0.3)  # the claimed session is hosted meanwhile
            stale.append(True)
        return current

    async def counted_release(conn: Any, worker_id: str, client_id: str, session_id: str) -> None:
        released.append(session_id)
        await release(conn, worker_id, client_id, session_id)

    monkeypatch.setattr(placements, "claim", claiming)
    monkeypatch.setattr(placements, "renew", slow_renew)
    monkeypatch.setattr(placements, "release", counted_release)
    worker = Worker(manager, database_url, ("sandbox",), capacity=5, lease_ttl=3, qr_timeout=30, poll_interval=0.2)
    await worker.start()
    try:
        await asyncio.wait_for(holding.wait(), 5.0)  # a renewal has read the leases: none yet
        await sessions.create("big", "b1")
        await asyncio.wait_for(claimed.wait(), 5.0)
        await asyncio.sleep(1.5)  # the held renewal answered, and fresh ones after it
        assert stale == [True]
        assert released == []
        assert SessionRef("big", "b1") in worker.hosted
        assert (await sessions.get("big", "b1")).worker_id == worker.worker_id
    finally:
        await worker.close()
