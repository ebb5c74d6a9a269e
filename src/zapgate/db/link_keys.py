"""The client's keys for signed links, in its schema: made on first use, replaced on rotation."""

from __future__ import annotations

import secrets

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db.tables import link_keys

MEDIA = "media"  # the key of media links


async def key(conn: AsyncConnection, name: str = MEDIA) -> bytes:
    """The client's key `name`, made now if it has none (concurrent first uses agree on one)."""
    await conn.execute(pg_insert(link_keys).values(name=name, key=secrets.token_bytes(32)).on_conflict_do_nothing())
    found: bytes = (await conn.execute(select(link_keys.c.key).where(link_keys.c.name == name))).scalar_one()
    return found


async def rotate(conn: AsyncConnection, name: str = MEDIA) -> None:
    """Forget the key `name`: every link signed with it stops working, the next use makes a new one."""
    await conn.execute(delete(link_keys).where(link_keys.c.name == name))
