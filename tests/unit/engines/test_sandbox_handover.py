"""A sandbox number linked by another client starts as a new account; by its own client, as it was (in memory)."""

from collections.abc import AsyncIterator

import pytest

from tests.support.sandbox_handover import CONTACT, PHONE, SPAMMER, Handover, jid
from zapgate.domain.chats import ChatState
from zapgate.engines.base import EngineEvent, SessionRef
from zapgate.engines.sandbox import LocalSandboxNetwork, SandboxEngine


@pytest.fixture
async def handover() -> AsyncIterator[Handover]:
    seen: list[EngineEvent] = []
    network = LocalSandboxNetwork()
    engine = SandboxEngine(seen.append, network, reconnect_delay=0.01)
    yield Handover(engine, network, seen)
    await engine.close()


async def test_a_number_another_client_links_starts_as_a_new_account(handover: Handover) -> None:
    group = await handover.leave_traces()
    bea = SessionRef("initech", "bea")
    await handover.link(bea, PHONE)
    await handover.assert_a_new_account(bea, group)


@pytest.mark.parametrize("session", ["alice", "alice-again"])
async def test_a_number_its_own_client_links_again_keeps_its_account(handover: Handover, session: str) -> None:
    group = await handover.leave_traces()
    again = SessionRef("acme", session)
    await handover.link(again, PHONE)
    await handover.assert_the_same_account(again, group)


async def test_a_number_handed_back_does_not_bring_the_other_clients_account_back(handover: Handover) -> None:
    group = await handover.leave_traces()
    bea = SessionRef("initech", "bea")
    await handover.link(bea, PHONE)
    await handover.engine.change_chat(bea, jid(CONTACT), ChatState(pinned=True))
    await handover.engine.set_blocked(bea, jid(SPAMMER), True)
    await handover.engine.logout(bea)
    alice = SessionRef("acme", "alice-again")
    await handover.link(alice, PHONE)  # initech owned it last: acme finds a new account, without bea's traces
    await handover.assert_a_new_account(alice, group)
