"""The seed's Prisma snippets, in Python, against a real PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest

from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.domain.records import Direction, MessageStatus
from zapgate.errors import (
    ContactNotFound,
    DuplicateRecord,
    InvalidRequest,
    MessageNotFound,
    SessionNotFound,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_seed_guide_add_client_create_session(manager: ConnectionManager) -> None:
    client_id = "novo_cliente_123"
    await manager.get_connection(client_id)
    session = await manager.execute_transaction(
        client_id,
        lambda tx: tx.session.create(session_id="session_1", client_id=client_id, status="disconnected"),
    )
    assert session.session_id == "session_1"
    assert session.status == "disconnected"
    assert len(session.id) == 25
    assert session.created_at.tzinfo is not None


async def test_sessions_create_find_update_delete(manager: ConnectionManager) -> None:
    db = await manager.get_connection("acme")
    created = await db.session.create(session_id="user123", client_id="acme")
    assert created.status == "disconnected"  # the seed's default
    assert created.qr_code is None
    with pytest.raises(DuplicateRecord):
        await db.session.create(session_id="user123", client_id="acme")

    await db.session.create(session_id="other", client_id="acme", status="connected")
    assert await db.session.find_unique("user123") == created
    assert await db.session.find_unique("missing") is None
    assert [s.session_id for s in await db.session.find_many()] == ["user123", "other"]
    assert [s.session_id for s in await db.session.find_many(descending=True)] == ["other", "user123"]
    assert [s.session_id for s in await db.session.find_many(status="connected")] == ["other"]
    assert len(await db.session.find_many(status=["connected", "disconnected"])) == 2
    assert [s.session_id for s in await db.session.find_many(order_by="session_id", limit=1)] == ["other"]
    assert await db.session.count() == 2
    assert await db.session.count(status="connected") == 1

    updated = await manager.execute_transaction(
        "acme", lambda tx: tx.session.update("user123", status="connected", qr_code="2@abc")
    )
    assert (updated.status, updated.qr_code) == ("connected", "2@abc")
    assert updated.updated_at >= created.updated_at
    cleared = await db.session.update("user123", qr_code=None)
    assert (cleared.status, cleared.qr_code) == ("connected", None)  # untouched field kept
    with pytest.raises(SessionNotFound):
        await db.session.update("missing", status="connected")

    deleted = await db.session.delete("user123")
    assert deleted.id == created.id
    assert await db.session.find_unique("user123") is None
    with pytest.raises(SessionNotFound):
        await db.session.delete("user123")


async def test_contacts_create_upsert_find_update_delete(manager: ConnectionManager) -> None:
    db = await manager.get_connection("acme")
    session = await db.session.create(session_id="s", client_id="acme")
    other = await db.session.create(session_id="t", client_id="acme")

    alice = await db.contact.create(session_id=session.id, phone_number="5511999990001", name="Alice")
    assert not alice.is_group  # the seed's default
    with pytest.raises(DuplicateRecord):
        await db.contact.create(session_id=session.id, phone_number="5511999990001")
    # the same number under another session is another contact
    await db.contact.create(session_id=other.id, phone_number="5511999990001")

    again = await db.contact.upsert(session_id=session.id, phone_number="5511999990001")
    assert again.id == alice.id and again.name == "Alice"  # a missing name never erases a known one
    renamed = await db.contact.upsert(session_id=session.id, phone_number="5511999990001", name="Alice B")
    assert renamed.id == alice.id and renamed.name == "Alice B"
    group = await db.contact.upsert(session_id=session.id, phone_number="120363000000000001@g.us", is_group=True)
    assert group.is_group

    assert [c.phone_number for c in await db.contact.find_many(session_id=session.id)] == [
        "120363000000000001@g.us",
        "5511999990001",
    ]
    assert [c.id for c in await db.contact.find_many(session_id=session.id, is_group=True)] == [group.id]
    assert len(await db.contact.find_many(phone_number="5511999990001")) == 2
    assert await db.contact.find_unique(alice.id) == renamed
    assert await db.contact.find_unique("nope") is None

    pic = await db.contact.update(alice.id, profile_pic="https://example.invalid/a.jpg")
    assert pic.profile_pic == "https://example.invalid/a.jpg" and pic.name == "Alice B"
    with pytest.raises(InvalidRequest):
        await db.contact.update(alice.id)
    with pytest.raises(ContactNotFound):
        await db.contact.update("nope", name="x")
    await db.contact.delete(group.id)
    with pytest.raises(ContactNotFound):
        await db.contact.delete(group.id)
    with pytest.raises(InvalidRequest):  # a contact of a session that does not exist
        await db.contact.create(session_id="no-such-session-row", phone_number="1")


async def test_messages_find_many_with_filters_ordering_and_contact(manager: ConnectionManager) -> None:
    db = await manager.get_connection("acme")
    session = await db.session.create(session_id="s", client_id="acme")
    other_session = await db.session.create(session_id="t", client_id="acme")
    alice = await db.contact.upsert(session_id=session.id, phone_number="5511999990001", name="Alice")
    bob = await db.contact.upsert(session_id=session.id, phone_number="5511999990002", name="Bob")
    stranger = await db.contact.upsert(session_id=other_session.id, phone_number="5511999990003")

    async def write(tx: Transaction) -> None:
        for i in range(6):
            await tx.message.create(
                session_id=session.id,
                contact_id=(alice if i % 2 == 0 else bob).id,
                message_id=f"msg_{i}",
                content=f"text {i}",
                direction=Direction.OUTBOUND if i < 4 else Direction.INBOUND,
                status=MessageStatus.SENT if i in (1, 2) else MessageStatus.PENDING,
                timestamp=T0 + timedelta(minutes=i),
            )
        await tx.message.create(
            session_id=other_session.id,
            contact_id=stranger.id,
            message_id="elsewhere",
            content="x",
            direction="inbound",
            timestamp=T0,
        )

    await manager.execute_transaction("acme", write)

    # the seed: findMany({ where: { sessionId }, include: { contact: true }, orderBy: { timestamp: 'desc' } })
    newest_first = await db.message.find_many(session_id=session.id, include_contact=True)
    assert [m.message_id for m in newest_first] == [f"msg_{i}" for i in range(5, -1, -1)]
    assert newest_first[0].contact is not None and newest_first[0].contact.name == "Bob"
    assert newest_first[1].contact is not None and newest_first[1].contact.phone_number == "5511999990001"
    assert all(m.contact is None for m in await db.message.find_many(session_id=session.id))

    oldest_first = await db.message.find_many(session_id=session.id, newest_first=False, limit=2)
    assert [m.message_id for m in oldest_first] == ["msg_0", "msg_1"]
    assert [m.message_id for m in await db.message.find_many(session_id=session.id, limit=2, offset=1)] == [
        "msg_4",
        "msg_3",
    ]
    assert {m.message_id for m in await db.message.find_many(contact_id=alice.id)} == {"msg_0", "msg_2", "msg_4"}
    assert {m.message_id for m in await db.message.find_many(direction="inbound")} == {"msg_4", "msg_5", "elsewhere"}
    assert {m.message_id for m in await db.message.find_many(status=MessageStatus.SENT)} == {"msg_1", "msg_2"}
    window = await db.message.find_many(
        session_id=session.id, since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4)
    )
    assert [m.message_id for m in window] == ["msg_3", "msg_2"]
    assert len(await db.message.find_many()) == 7


async def test_messages_create_update_delete(manager: ConnectionManager) -> None:
    db = await manager.get_connection("acme")
    session = await db.session.create(session_id="s", client_id="acme")
    contact = await db.contact.upsert(session_id=session.id, phone_number="5511999990001")
    # the seed's "Criar Mensagem"
    message = await manager.execute_transaction(
        "acme",
        lambda tx: tx.message.create(
            session_id=session.id,
            contact_id=contact.id,
            message_id="msg_1",
            content="Olá!",
            direction="outbound",
            timestamp=T0,
        ),
    )
    assert (message.type, message.status, message.direction) == ("text", "pending", "outbound")
    assert message.content == "Olá!"
    with pytest.raises(DuplicateRecord):
        await db.message.create(
            session_id=session.id, contact_id=contact.id, message_id="msg_1", content="x", direction="outbound"
        )
    with pytest.raises(InvalidRequest):
        await db.message.create(
            session_id=session.id, contact_id=contact.id, message_id="msg_2", content="x", direction="sideways"
        )
    with pytest.raises(InvalidRequest):
        await db.message.update("msg_1", status="lost")

    sent = await db.message.update("msg_1", status="sent")
    assert sent.status is MessageStatus.SENT and sent.content == "Olá!"
    found = await db.message.find_unique("msg_1", include_contact=True)
    assert found is not None and found.status == "sent"
    assert found.contact is not None and found.contact.id == contact.id
    with pytest.raises(MessageNotFound):
        await db.message.update("msg_x", status="sent")
    await db.message.delete("msg_1")
    assert await db.message.find_unique("msg_1") is None
    with pytest.raises(MessageNotFound):
        await db.message.delete("msg_1")


async def test_deleting_a_session_deletes_its_contacts_and_messages(manager: ConnectionManager) -> None:
    db = await manager.get_connection("acme")
    session = await db.session.create(session_id="s", client_id="acme")
    contact = await db.contact.upsert(session_id=session.id, phone_number="5511999990001")
    await db.message.create(
        session_id=session.id, contact_id=contact.id, message_id="m", content="x", direction="inbound"
    )
    await db.session.delete("s")
    assert await db.contact.find_many() == []
    assert await db.message.find_many() == []


async def test_event_log_ids_only_increase_and_read_from_a_cursor(manager: ConnectionManager) -> None:
    db = await manager.get_connection("acme")
    assert await db.event.last_id() == 0
    first = await db.event.append(type="status-change", session_id="s1", payload={"status": "qr"})
    second = await db.event.append(type="qr-code", session_id="s1", payload={"qr": "2@x"})
    third = await db.event.append(type="status-change", session_id="s2", payload={"status": "connected"})
    assert first.id < second.id < third.id
    assert await db.event.last_id() == third.id
    assert [e.id for e in await db.event.list_after(first.id)] == [second.id, third.id]
    assert [e.id for e in await db.event.list_after(session_id="s1")] == [first.id, second.id]
    assert [e.id for e in await db.event.list_after(types=["qr-code"])] == [second.id]
    assert [e.id for e in await db.event.list_after(limit=1)] == [first.id]
    assert (await db.event.list_after(second.id))[0].payload == {"status": "connected"}
    with pytest.raises(InvalidRequest):
        await db.event.list_after(limit=-1)
