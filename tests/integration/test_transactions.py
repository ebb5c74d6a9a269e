"""execute_transaction commits all or nothing."""

import pytest

from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.errors import DuplicateRecord


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
