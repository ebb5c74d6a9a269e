"""Retention as a worker applies it, run at once: events made old enough, then pruned."""

from __future__ import annotations

from sqlalchemy import text

from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.services.retention import Pruner, RetentionDefaults


async def prune_events_before(manager: ConnectionManager, client: str, first_kept: int) -> None:
    """Make the client's events before `first_kept` older than retention keeps, and let a worker's pruner run."""

    async def age(tx: Transaction) -> None:
        await tx.connection.execute(
            text("UPDATE events SET created_at = now() - interval '60 days' WHERE id < :id"), {"id": first_kept}
        )

    await manager.execute_transaction(client, age)
    counts = await Pruner(manager, "test", RetentionDefaults()).prune_client(
        client, {"events_days": 30, "audit_days": 0, "deliveries_days": 0, "idempotency_days": 0}
    )
    assert counts["events"] > 0
