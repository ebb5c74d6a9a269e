"""Rows a test needs in a client's schema: a session, a message."""

from __future__ import annotations

from datetime import UTC, datetime

from zapgate.db.manager import ConnectionManager
from zapgate.domain.records import Direction

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def new_session(manager: ConnectionManager, client: str, name: str = "s") -> str:
    db = await manager.get_connection(client)
    return (await db.session.create(session_id=name, client_id=client)).id


async def new_message(manager: ConnectionManager, client: str, session_row: str, message_id: str) -> str:
    db = await manager.get_connection(client)
    contact = await db.contact.upsert(session_id=session_row, phone_number="5511999990001")
    message = await db.message.create(
        session_id=session_row,
        contact_id=contact.id,
        message_id=message_id,
        content="[image]",
        direction=Direction.INBOUND,
        status="delivered",
        timestamp=T0,
    )
    return message.id
