"""Idempotency-Key locks: a request waits for another with the same key of the same client, never of another."""

from __future__ import annotations

import asyncio

from zapgate.db import outbound
from zapgate.db.manager import ConnectionManager, Transaction


async def holding(manager: ConnectionManager, client: str, key: str, held: asyncio.Event, done: asyncio.Event) -> None:
    async def work(tx: Transaction) -> None:
        await outbound.recall_idempotent(tx.connection, key, "fp")
        held.set()
        await done.wait()  # the transaction, and its lock on the key, stay open until then

    await manager.execute_transaction(client, work)


async def recall(manager: ConnectionManager, client: str, key: str) -> None:
    async def work(tx: Transaction) -> None:
        await outbound.recall_idempotent(tx.connection, key, "fp")

    await manager.execute_transaction(client, work)


async def test_the_same_key_of_two_clients_does_not_wait(manager: ConnectionManager) -> None:
    for client in ("acme", "globex"):
        await recall(manager, client, "warm-up")  # both schemas exist before the race
    held, done = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(holding(manager, "acme", "order-1", held, done))
    await held.wait()
    try:
        await asyncio.wait_for(recall(manager, "globex", "order-1"), 3.0)  # another client: no wait
        same = asyncio.create_task(recall(manager, "acme", "order-1"))
        await asyncio.sleep(0.5)
        assert not same.done()  # the same client's request with the key waits for the first to commit
    finally:
        done.set()
        await holder
    await asyncio.wait_for(same, 5.0)
