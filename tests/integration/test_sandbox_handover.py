"""A sandbox number linked by another client starts as a new account; by its own client, as it was (PostgreSQL)."""

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from tests.support.sandbox_handover import PHONE, Handover
from zapgate.db.manager import ConnectionManager
from zapgate.db.tables import sandbox_mail
from zapgate.engines.base import EngineEvent, SessionRef
from zapgate.engines.sandbox import SandboxEngine, phone_address
from zapgate.services.clients import ClientService
from zapgate.services.sandbox import PostgresSandboxNetwork


@pytest.fixture
async def handover(manager: ConnectionManager) -> AsyncIterator[Handover]:
    for client in ("acme", "globex", "initech"):
        await ClientService(manager).create(client)
    seen: list[EngineEvent] = []
    engine = SandboxEngine(seen.append, PostgresSandboxNetwork(manager), reconnect_delay=0.01)
    yield Handover(engine, PostgresSandboxNetwork(manager), seen)
    await engine.close()


async def _waiting_for_phone(manager: ConnectionManager) -> set[int]:
    async with manager.registry_transaction() as conn:
        stmt = select(sandbox_mail.c.id).where(sandbox_mail.c.address == phone_address(PHONE))
        return set((await conn.execute(stmt)).scalars())


async def test_a_number_another_client_links_starts_as_a_new_account(
    manager: ConnectionManager, handover: Handover
) -> None:
    group = await handover.leave_traces()
    waiting = await _waiting_for_phone(manager)  # FOR-ALICE, and what else alice had not collected yet
    assert waiting
    bea = SessionRef("initech", "bea")
    await handover.link(bea, PHONE)
    await handover.assert_a_new_account(bea, group)
    assert not waiting & await _waiting_for_phone(manager)  # dropped, not delivered to anyone


async def test_a_number_its_own_client_links_again_keeps_its_account(handover: Handover) -> None:
    group = await handover.leave_traces()
    again = SessionRef("acme", "alice-again")
    await handover.link(again, PHONE)
    await handover.assert_the_same_account(again, group)


async def test_the_owner_is_remembered_after_its_client_goes(manager: ConnectionManager, handover: Handover) -> None:
    group = await handover.leave_traces()
    await ClientService(manager).delete("acme")  # its links go with it; who owned the number does not
    bea = SessionRef("initech", "bea")
    await handover.link(bea, PHONE)
    await handover.assert_a_new_account(bea, group)
