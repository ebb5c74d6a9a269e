"""Retention statements: the per-client policy and pruning claims (registry), and batched deletes of old rows
(a client's schema, or the registry's sandbox mail).

Each delete walks its table in id order, a batch per call: it looks at the next `batch` rows after `after`,
deletes those old enough (and not kept), and says where it got to and whether it reached rows too young to go.
A call is one short transaction: no lock is held for long, and a walk resumes where the last call ended.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db.tables import retention
from zapgate.domain.ids import REGISTRY_SCHEMA

POLICY_COLUMNS = ("events_days", "audit_days", "deliveries_days", "idempotency_days", "media_days")


@dataclass(frozen=True, slots=True)
class RetentionRow:
    """A client's overrides (None: the default) and the state of its pruning."""

    client_id: str
    overrides: Mapping[str, int | None]
    events_pruned_through: int
    last_pruned_at: datetime | None
    last_pruned: Mapping[str, int] | None


@dataclass(frozen=True, slots=True)
class Step:
    """Where one batch of a walk got to."""

    deleted: int
    last_id: int | None  # the newest id looked at (None: nothing was left to look at)
    done: bool  # it reached rows too young to go (or the end of the table)
    newest_deleted: int | None = None
    floor: int | None = None  # events: the newest id no webhook needed in this batch (all after it were kept)


async def get(conn: AsyncConnection, client_id: str) -> RetentionRow | None:
    """Return the client's retention row, or None if it has none (every default, never pruned)."""
    row = (await conn.execute(select(retention).where(retention.c.client_id == client_id))).mappings().one_or_none()
    return None if row is None else _row(row)


async def set_overrides(conn: AsyncConnection, client_id: str, changes: Mapping[str, int | None]) -> RetentionRow:
    """Set some of the client's overrides (None: back to the default); return its row."""
    values = {name: changes[name] for name in POLICY_COLUMNS if name in changes}
    insert = pg_insert(retention).values(client_id=client_id, **values)
    stmt = insert.on_conflict_do_update(
        index_elements=[retention.c.client_id], set_={**values, "updated_at": text("now()")}
    ).returning(*retention.c)
    return _row((await conn.execute(stmt)).mappings().one())


async def pruned_through(conn: AsyncConnection, client_id: str) -> int:
    """Return the newest event id of the client that pruning deleted (0: none)."""
    stmt = select(retention.c.events_pruned_through).where(retention.c.client_id == client_id)
    return int((await conn.execute(stmt)).scalar_one_or_none() or 0)


_MISSING = text(
    """
    INSERT INTO retention (client_id)
    SELECT c.client_id FROM clients c WHERE NOT EXISTS (SELECT 1 FROM retention r WHERE r.client_id = c.client_id)
    ON CONFLICT DO NOTHING
    """
)

_CLAIM = text(
    """
    WITH due AS (
        SELECT client_id FROM retention
        WHERE due_at <= now() AND (claimed_until IS NULL OR claimed_until < now())
        ORDER BY due_at LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE retention r SET claimed_until = now() + make_interval(secs => :lease), claimed_by = :worker
    FROM due WHERE r.client_id = due.client_id
    RETURNING r.*
    """
)


async def claim_due(conn: AsyncConnection, worker_id: str, limit: int, lease: float) -> list[RetentionRow]:
    """Claim up to `limit` clients due for pruning for `lease` seconds (no other worker prunes them meanwhile).

    Clients new since the last call get their row first (due at once).
    """
    await conn.execute(_MISSING)
    rows = await conn.execute(_CLAIM, {"limit": limit, "lease": lease, "worker": worker_id})
    return [_row(row) for row in rows.mappings()]


async def finish(
    conn: AsyncConnection,
    client_id: str,
    worker_id: str,
    counts: Mapping[str, int],
    interval: float,
) -> None:
    """Record a pruning of the client by `worker_id` and make it due again in `interval` seconds."""
    values: dict[str, Any] = {
        "claimed_until": None,
        "claimed_by": None,
        "last_pruned_at": text("now()"),
        "last_pruned": dict(counts),
        "due_at": text(f"now() + make_interval(secs => {float(interval)!r})"),
    }
    await conn.execute(
        update(retention)
        .where(retention.c.client_id == client_id, retention.c.claimed_by == worker_id)
        .values(**values)
    )


# -- the walks (a client's schema, or the registry for sandbox mail) ----------------------------------------

# the newest event every enabled webhook has turned into deliveries, below the oldest event a pending delivery
# still has to send (it reads the event at each attempt): events up to here are no webhook's concern
_EVENTS_FLOOR = text(
    """
    SELECT least(
        coalesce((SELECT min(cursor) FROM webhooks WHERE enabled), 9223372036854775807),
        coalesce((SELECT min(event_id) - 1 FROM webhook_deliveries WHERE status = 'pending'), 9223372036854775807)
    )
    """
)


async def events_floor(conn: AsyncConnection) -> int:
    """Return the newest event id that no webhook still needs (pruning keeps every event after it)."""
    return int((await conn.execute(_EVENTS_FLOOR)).scalar_one())


def _walk(table: str, time_column: str, keep: str = "false", also: str = "") -> Any:
    # table and column names are ours, never input
    return text(
        f"""
        WITH scanned AS (
            SELECT id, {time_column} AS t, ({keep}) AS kept FROM {table}
            WHERE id > :after ORDER BY id LIMIT :batch
        ), gone AS (
            DELETE FROM {table} WHERE id IN (SELECT id FROM scanned WHERE t < :cutoff AND NOT kept) RETURNING id
        ){also}
        SELECT (SELECT count(*) FROM gone) AS deleted, (SELECT max(id) FROM gone) AS newest_deleted,
               (SELECT max(id) FROM scanned) AS last_id,
               coalesce((SELECT bool_or(t >= :cutoff) FROM scanned), true) AS done
        """
    )


_WALKS = {
    # the mark of how far events went commits with their deletion: a resume never misses a gap
    "events": _walk(
        "events",
        "created_at",
        "id > :floor",
        f""", marked AS (
            INSERT INTO {REGISTRY_SCHEMA}.retention AS r (client_id, events_pruned_through)
            SELECT :client, newest FROM (SELECT max(id) AS newest FROM gone) g WHERE newest IS NOT NULL
            ON CONFLICT (client_id) DO UPDATE
            SET events_pruned_through = greatest(r.events_pruned_through, excluded.events_pruned_through)
        )""",
    ),
    "audit": _walk("audit_log", "at"),
    "webhook_deliveries": _walk("webhook_deliveries", "created_at", "status = 'pending'"),
    "sandbox_mail": _walk("sandbox_mail", "created_at"),
}


async def prune_step(
    conn: AsyncConnection,
    table: str,
    cutoff: datetime,
    after: int,
    batch: int,
    *,
    floor: int = 0,
    client_id: str | None = None,
) -> Step:
    """Delete the rows of `table` older than `cutoff` among the `batch` after id `after`; say where it got to.

    For events: only up to `floor` (what webhooks still need stays), and `client_id`'s mark moves with them.
    """
    params: dict[str, Any] = {"cutoff": cutoff, "after": after, "batch": batch}
    if table == "events":
        params.update(floor=floor, client=client_id)
    row = (await conn.execute(_WALKS[table], params)).mappings().one()
    return Step(
        int(row["deleted"]),
        row["last_id"],
        bool(row["done"]),
        row["newest_deleted"],
        floor if table == "events" else None,
    )


_IDEMPOTENCY = text(
    """
    WITH gone AS (
        DELETE FROM idempotency_keys WHERE key IN (
            SELECT key FROM idempotency_keys WHERE created_at < :cutoff LIMIT :batch
        ) RETURNING 1
    )
    SELECT count(*) FROM gone
    """
)


async def prune_idempotency_keys(conn: AsyncConnection, cutoff: datetime, batch: int) -> int:
    """Delete up to `batch` idempotency keys older than `cutoff` (a small table: no walk needed)."""
    return int((await conn.execute(_IDEMPOTENCY, {"cutoff": cutoff, "batch": batch})).scalar_one())


async def try_lock_mail(conn: AsyncConnection) -> bool:
    """Take the transaction's lock on pruning sandbox mail, unless another worker holds it."""
    return bool((await conn.execute(text("SELECT pg_try_advisory_xact_lock(31338, 1)"))).scalar_one())


def _row(row: RowMapping) -> RetentionRow:
    last = row["last_pruned"]
    if isinstance(last, str):
        last = json.loads(last)
    return RetentionRow(
        client_id=row["client_id"],
        overrides={name: row[name] for name in POLICY_COLUMNS},
        events_pruned_through=int(row["events_pruned_through"]),
        last_pruned_at=row["last_pruned_at"],
        last_pruned=last,
    )
