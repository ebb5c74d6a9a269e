"""Client quotas in the registry (`client_quotas`), and the lock that makes counting against them exact.

Statements for a transaction of the caller's: a client schema's transaction reaches these registry tables
too, since they are named with their schema.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db.tables import client_quotas, clients
from zapgate.domain.quotas import QuotaOverrides


async def overrides(conn: AsyncConnection, client_id: str) -> QuotaOverrides | None:
    """Return the client's own quotas, or None when it has none."""
    row = (await conn.execute(select(client_quotas).where(client_quotas.c.client_id == client_id))).one_or_none()
    if row is None:
        return None
    return QuotaOverrides(
        max_sessions=row.max_sessions,
        max_webhooks=row.max_webhooks,
        engines=None if row.engines is None else tuple(row.engines),
    )


async def store(conn: AsyncConnection, client_id: str, values: dict[str, Any]) -> None:
    """Set some of the client's own quotas (`max_sessions`, `max_webhooks`, `engines`; None: the default)."""
    stmt = pg_insert(client_quotas).values(client_id=client_id, **values)
    changed = {**values, "updated_at": func.now()}
    await conn.execute(stmt.on_conflict_do_update(index_elements=[client_quotas.c.client_id], set_=changed))


async def lock_client(conn: AsyncConnection, client_id: str) -> bool:
    """Hold the client's registry row until the transaction ends; return whether the client exists.

    Creations that count against a quota take it first, so two at once cannot both see room for one.
    FOR NO KEY UPDATE: rows that merely reference the client (FOR KEY SHARE) are not held up.
    """
    stmt = select(clients.c.client_id).where(clients.c.client_id == client_id).with_for_update(key_share=True)
    return (await conn.execute(stmt)).one_or_none() is not None
