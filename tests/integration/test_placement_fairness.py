"""Placement is fair across clients: one client's queue of waiting sessions never starves another's new one."""

from collections.abc import AsyncIterator

import pytest

from tests.support.waiting import eventually
from zapgate.db import placements
from zapgate.db.manager import ConnectionManager
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
    assert {(p.client_id, p.session_id) for p in first} == {("big", "b1"), ("small", "s1")}

    # big holds one session, small one: small's new session goes before big's older waiting ones
    await _place(manager, "small", "s2")
    async with manager.registry_transaction() as conn:
        second = await placements.claim(conn, "w2", ["sandbox"], 1, 10.0)
    assert [(p.client_id, p.session_id) for p in second] == [("big", "b2")]
    async with manager.registry_transaction() as conn:
        third = await placements.claim(conn, "w2", ["sandbox"], 1, 10.0)
    assert [(p.client_id, p.session_id) for p in third] == [("small", "s2")]


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
