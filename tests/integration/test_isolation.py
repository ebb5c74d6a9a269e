"""Rows written for one client are invisible to another, through every repository method."""

import pytest

from zapgate.db.manager import ConnectionManager
from zapgate.errors import ContactNotFound, MessageNotFound, SessionNotFound


async def test_client_b_sees_nothing_of_client_a(manager: ConnectionManager) -> None:
    a = await manager.get_connection("a")
    b = await manager.get_connection("b")
    session = await a.session.create(session_id="shared_name", client_id="a", status="connected")
    contact = await a.contact.upsert(session_id=session.id, phone_number="5511999990001", name="A's contact")
    await a.message.create(
        session_id=session.id, contact_id=contact.id, message_id="wa_1", content="secret", direction="inbound"
    )
    await a.event.append(type="message-received", session_id="shared_name", payload={"content": "secret"})

    # sessions
    assert await b.session.find_unique("shared_name") is None
    assert await b.session.find_many() == []
    assert await b.session.find_many(status="connected") == []
    assert await b.session.count() == 0
    with pytest.raises(SessionNotFound):
        await b.session.update("shared_name", status="logged_out")
    with pytest.raises(SessionNotFound):
        await b.session.delete("shared_name")
    # contacts
    assert await b.contact.find_unique(contact.id) is None
    assert await b.contact.find_many() == []
    assert await b.contact.find_many(session_id=session.id) == []
    with pytest.raises(ContactNotFound):
        await b.contact.update(contact.id, name="stolen")
    with pytest.raises(ContactNotFound):
        await b.contact.delete(contact.id)
    # messages
    assert await b.message.find_unique("wa_1") is None
    assert await b.message.find_many() == []
    assert await b.message.find_many(session_id=session.id, include_contact=True) == []
    with pytest.raises(MessageNotFound):
        await b.message.update("wa_1", status="read")
    with pytest.raises(MessageNotFound):
        await b.message.delete("wa_1")
    # events
    assert await b.event.list_after() == []
    assert await b.event.last_id() == 0

    # the same names in b are b's own and do not collide with a's unique keys
    own = await b.session.create(session_id="shared_name", client_id="b")
    own_contact = await b.contact.upsert(session_id=own.id, phone_number="5511999990001")
    await b.message.create(
        session_id=own.id, contact_id=own_contact.id, message_id="wa_1", content="b's", direction="outbound"
    )

    # and nothing of a changed
    kept = await a.message.find_unique("wa_1", include_contact=True)
    assert kept is not None and kept.content == "secret" and kept.status == "pending"
    assert kept.contact is not None and kept.contact.name == "A's contact"
    assert (await a.session.find_unique("shared_name")) == session
    assert len(await a.event.list_after()) == 1


async def test_transactions_are_bound_to_their_own_client(manager: ConnectionManager) -> None:
    await manager.execute_transaction("a", lambda tx: tx.session.create(session_id="only_a", client_id="a"))
    assert await manager.execute_transaction("b", lambda tx: tx.session.find_many()) == []
    found = await manager.execute_transaction("a", lambda tx: tx.session.find_many())
    assert [s.session_id for s in found] == ["only_a"]


async def test_a_pooled_connection_never_carries_a_schema_to_its_next_user(manager: ConnectionManager) -> None:
    from sqlalchemy import text

    await manager.execute_transaction("a", lambda tx: tx.session.create(session_id="x", client_id="a"))
    # every pooled connection has served client a; outside a client transaction no client table resolves
    for _ in range(manager.pool_size):
        async with manager.engine.connect() as conn:
            assert await conn.scalar(text("SELECT current_setting('search_path')")) == '"$user", public'
            assert await conn.scalar(text("SELECT to_regclass('sessions')")) is None
