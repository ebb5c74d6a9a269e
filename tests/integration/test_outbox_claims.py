"""Claims of several sessions in one statement (`outbound.claim_pending_many`) on a real PostgreSQL: each session
gets what a claim of its own would have given it, in order, with its own held-back messages and limit, and
messages another transaction holds are skipped. And the outbox's shared transactions: one session's failing part
fails only its own."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from zapgate.db import outbound
from zapgate.db.driver import driver
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.db.outbound import QueuedText, SendOutcome
from zapgate.domain.records import MessageStatus
from zapgate.errors import UnstorableData
from zapgate.services.outbox import Outbox, OutboxPolicy

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ALICE, BOB, CAROL = "5511988880001", "5511988880002", "5511988880003"


async def _sessions(manager: ConnectionManager, *names: str) -> list[str]:
    db = await manager.get_connection("acme")
    return [(await db.session.create(session_id=name, client_id="acme")).id for name in names]


async def _queue(manager: ConnectionManager, texts: list[QueuedText]) -> None:
    async def queue(tx: Transaction) -> None:
        assert len(await outbound.enqueue_texts(tx.connection, texts)) == len(texts)

    await manager.execute_transaction("acme", queue)


async def _claims(manager: ConnectionManager, asks: list[tuple[str, int]]) -> list[tuple[list[str], float | None]]:
    async def claim(tx: Transaction) -> list[outbound.Claim]:
        return await outbound.claim_pending_many(tx.connection, asks)

    return [([m.message_id for m in c.messages], c.held_for) for c in await manager.execute_transaction("acme", claim)]


async def test_each_session_gets_what_its_own_claim_would_give_it(manager: ConnectionManager) -> None:
    first, second, idle = await _sessions(manager, "s1", "s2", "s3")
    texts = [QueuedText(first, ALICE, False, f"a{n}", f"A{n}", T0 + timedelta(seconds=n)) for n in range(5)]
    texts += [QueuedText(second, BOB, False, f"b{n}", f"B{n}", T0 + timedelta(seconds=n)) for n in range(3)]
    texts.append(QueuedText(second, CAROL, False, "c", "C0", T0 + timedelta(seconds=9)))
    await _queue(manager, texts)
    retry_at = datetime.now(UTC) + timedelta(seconds=120)  # B0 failed and waits: B1, B2 (same chat) wait behind it

    async def hold(tx: Transaction) -> None:
        held = SendOutcome("B0", None, MessageStatus.PENDING, None, None, "try later", "x", retry_at, 1)
        await outbound.record_sends_many(tx.connection, [(second, [held])])

    await manager.execute_transaction("acme", hold)

    together = await _claims(manager, [(first, 3), (second, 10), (idle, 10)])
    alone = [(await _claims(manager, [ask]))[0] for ask in [(first, 3), (second, 10), (idle, 10)]]

    assert [ids for ids, _ in together] == [["A0", "A1", "A2"], ["C0"], []]
    assert [ids for ids, _ in together] == [ids for ids, _ in alone]
    held = together[1][1]
    assert held is not None and 100 < held <= 120  # when B0 falls due
    assert together[2][1] is None and alone[2][1] is None
    reversed_order = await _claims(manager, [(idle, 10), (second, 10), (first, 2)])  # answered in the order asked
    assert [ids for ids, _ in reversed_order] == [[], ["C0"], ["A0", "A1"]]


async def test_messages_another_transaction_holds_are_skipped(manager: ConnectionManager) -> None:
    first, second = await _sessions(manager, "s1", "s2")
    texts = [QueuedText(first, ALICE, False, "a", f"A{n}", T0 + timedelta(seconds=n)) for n in range(4)]
    texts += [QueuedText(second, BOB, False, "b", f"B{n}", T0 + timedelta(seconds=n)) for n in range(2)]
    await _queue(manager, texts)
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold_first_two(tx: Transaction) -> None:
        claim = await outbound.claim_pending_many(tx.connection, [(first, 2)])
        assert [m.message_id for m in claim[0].messages] == ["A0", "A1"]
        holding.set()
        await release.wait()

    holder = asyncio.create_task(manager.execute_transaction("acme", hold_first_two))
    await holding.wait()
    try:
        claimed = await _claims(manager, [(first, 10), (second, 10)])
    finally:
        release.set()
        await holder
    assert [ids for ids, _ in claimed] == [["A2", "A3"], ["B0", "B1"]]


async def test_one_sessions_failing_part_of_a_shared_transaction_fails_only_its_own(
    manager: ConnectionManager,
) -> None:
    """The outbox runs several sessions' claims or records in one transaction; when one part fails (a value the
    database refuses), the others run again, each alone, and keep their work."""
    await manager.get_connection("acme")
    box = Outbox(manager, cast(Any, {}), cast(Any, None), cast(Any, None), OutboxPolicy())
    ran: list[str] = []

    def part(name: str, *, fails: bool = False) -> Any:
        async def step(tx: Transaction) -> str:
            ran.append(name)
            await tx.session.create(session_id=name, client_id="acme")
            if fails:
                await driver(tx.connection).fetch("SELECT 1 / $1::int", 0)  # refused: class 22
            return name

        return step

    async def in_turn(tx: Transaction, steps: list[Any]) -> list[Any]:
        return [await step(tx) for step in steps]

    results = await box._together("acme", [part("s1"), part("s2", fails=True), part("s3")], run=in_turn)
    assert results[0] == "s1" and results[2] == "s3"
    assert isinstance(results[1], UnstorableData)
    assert ran == ["s1", "s2", "s1", "s2", "s3"]  # together (failed at s2), then each alone
    db = await manager.get_connection("acme")
    assert await db.session.find_unique("s1") is not None and await db.session.find_unique("s3") is not None
    assert await db.session.find_unique("s2") is None
