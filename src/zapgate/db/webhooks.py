"""Webhooks and their deliveries in a client's schema: definitions, the queue filled from the event log, claims.

Statements for the transaction of a `ConnectionManager` (its search_path names the client's schema); the
registry's `webhook_clients` is named with its schema, so it is reachable from the same transaction.

The queue, per webhook: `cursor` is the newest event id already turned into deliveries; turning events into
deliveries and advancing the cursor happen in one transaction, under the webhook's row lock. A webhook's
pending deliveries are attempted oldest first and only its oldest may be attempted, so one webhook sees its
events in order; a claim leases a run of them (`leased_until`, `lease_token`) to one worker, and only the
holder of the lease records their outcome. A lease that runs out (its worker died) frees them again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import RowMapping, delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db.tables import events, webhook_clients, webhook_deliveries, webhooks
from zapgate.domain.ids import ClientId
from zapgate.domain.records import Event
from zapgate.domain.webhooks import Delivery, DeliveryStatus, Webhook

ENQUEUE_BATCH = 1000  # events turned into deliveries per statement


def _webhook(row: RowMapping) -> Webhook:
    return Webhook(
        id=row["id"],
        url=row["url"],
        events=None if row["events"] is None else tuple(row["events"]),
        sessions=None if row["sessions"] is None else tuple(row["sessions"]),
        secret=row["secret"],
        previous_secret=row["previous_secret"],
        previous_secret_expires_at=row["previous_secret_expires_at"],
        enabled=row["enabled"],
        description=row["description"],
        cursor=row["cursor"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _delivery(row: RowMapping) -> Delivery:
    status = DeliveryStatus(row["status"])
    return Delivery(
        id=row["id"],
        webhook_id=row["webhook_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        status=status,
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"] if status is DeliveryStatus.PENDING else None,
        last_attempt_at=row["last_attempt_at"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        response_body=row["response_body"],
        duration_ms=row["duration_ms"],
        delivered_at=row["delivered_at"],
        created_at=row["created_at"],
    )


_HEAD = select(func.coalesce(func.max(events.c.id), 0)).scalar_subquery()


# -- definitions ----------------------------------------------------------------------------------------


async def insert_webhook(
    conn: AsyncConnection,
    *,
    webhook_id: str,
    url: str,
    event_types: Sequence[str] | None,
    sessions: Sequence[str] | None,
    secret: str,
    enabled: bool,
    description: str | None,
) -> Webhook:
    """Insert a webhook that receives the events logged from now on."""
    stmt = (
        insert(webhooks)
        .values(
            id=webhook_id,
            url=url,
            events=None if event_types is None else list(event_types),
            sessions=None if sessions is None else list(sessions),
            secret=secret,
            enabled=enabled,
            description=description,
            cursor=_HEAD,
        )
        .returning(*webhooks.c)
    )
    return _webhook((await conn.execute(stmt)).mappings().one())


async def count_webhooks(conn: AsyncConnection) -> int:
    """Return how many webhooks the client has."""
    return int(await conn.scalar(select(func.count()).select_from(webhooks)) or 0)


async def list_webhooks(conn: AsyncConnection) -> list[Webhook]:
    """Return the client's webhooks, oldest first."""
    rows = (await conn.execute(select(webhooks).order_by(webhooks.c.created_at, webhooks.c.id))).mappings()
    return [_webhook(row) for row in rows]


async def get_webhook(conn: AsyncConnection, webhook_id: str) -> Webhook | None:
    """Return one webhook, or None."""
    row = (await conn.execute(select(webhooks).where(webhooks.c.id == webhook_id))).mappings().one_or_none()
    return None if row is None else _webhook(row)


async def update_webhook(
    conn: AsyncConnection, webhook_id: str, values: Mapping[str, Any], *, from_now_on: bool = False
) -> Webhook | None:
    """Change the given columns of a webhook (with `from_now_on`, it skips the events logged so far); None if absent."""
    changes: dict[str, Any] = {**values, "updated_at": func.now()}
    if from_now_on:
        changes["cursor"] = _HEAD
    stmt = update(webhooks).where(webhooks.c.id == webhook_id).values(**changes).returning(*webhooks.c)
    row = (await conn.execute(stmt)).mappings().one_or_none()
    return None if row is None else _webhook(row)


async def rotate_secret(conn: AsyncConnection, webhook_id: str, secret: str, overlap: float) -> Webhook | None:
    """Make `secret` the webhook's secret; the old one keeps signing too for `overlap` seconds. None if absent."""
    row = (
        (await conn.execute(_ROTATE, {"id": webhook_id, "secret": secret, "overlap": overlap})).mappings().one_or_none()
    )
    return None if row is None else _webhook(row)


_ROTATE = text(
    """
    UPDATE webhooks SET
        previous_secret = CASE WHEN :overlap > 0 THEN secret END,
        previous_secret_expires_at = CASE WHEN :overlap > 0 THEN now() + make_interval(secs => :overlap) END,
        secret = :secret,
        updated_at = now()
    WHERE id = :id
    RETURNING *
    """
)


async def delete_webhook(conn: AsyncConnection, webhook_id: str) -> bool:
    """Delete a webhook with its deliveries; return whether it existed."""
    result = await conn.execute(delete(webhooks).where(webhooks.c.id == webhook_id).returning(webhooks.c.id))
    return result.one_or_none() is not None


# -- the registry's list of clients with webhooks ------------------------------------------------------


async def mark_client(conn: AsyncConnection, client: ClientId) -> None:
    """Note in the registry that `client` has webhooks."""
    await conn.execute(
        pg_insert(webhook_clients).values(client_id=client).on_conflict_do_nothing(index_elements=["client_id"])
    )


async def unmark_client_if_none(conn: AsyncConnection, client: ClientId) -> None:
    """Remove `client` from the registry's list when its schema holds no webhook any more."""
    await conn.execute(
        delete(webhook_clients).where(webhook_clients.c.client_id == client, ~select(webhooks.c.id).exists())
    )


async def clients_with_webhooks(conn: AsyncConnection) -> list[ClientId]:
    """Return the clients that have webhooks (any connection: the registry names its schema)."""
    rows = await conn.execute(select(webhook_clients.c.client_id).order_by(webhook_clients.c.client_id))
    return [ClientId(row.client_id) for row in rows]


# -- the queue: filled from the event log ---------------------------------------------------------------


async def enqueue(conn: AsyncConnection, limit: int = ENQUEUE_BATCH) -> tuple[int, bool]:
    """Turn the events after each enabled webhook's cursor into its deliveries (up to `limit` events).

    Returns how many deliveries were created and whether more events wait. The webhooks' rows stay locked
    to the end of the transaction, so two workers never enqueue one event twice.
    """
    row = (await conn.execute(_ENQUEUE, {"limit": limit})).one()
    return int(row.created), row.upto is not None and row.upto < row.head


# one statement: lock the enabled webhooks, turn events (cursor, upto] into deliveries, advance the cursors.
# Events commit in id order (EventRepository), so everything up to `upto` that will ever exist is visible.
_ENQUEUE = text(
    """
    WITH locked AS (
        SELECT id, cursor, events, sessions FROM webhooks WHERE enabled ORDER BY id FOR NO KEY UPDATE
    ), head AS (
        SELECT coalesce(max(id), 0) AS head FROM events
    ), bound AS (
        SELECT least(head.head, (SELECT min(cursor) FROM locked) + :limit) AS upto, head.head FROM head
    ), filled AS (
        INSERT INTO webhook_deliveries (webhook_id, event_id, event_type)
        SELECT w.id, e.id, e.type
        FROM locked w JOIN events e ON e.id > w.cursor AND e.id <= (SELECT upto FROM bound)
        WHERE (w.events IS NULL OR e.type = ANY(w.events)) AND (w.sessions IS NULL OR e.session_id = ANY(w.sessions))
        ORDER BY w.id, e.id
        RETURNING 1
    ), advanced AS (
        UPDATE webhooks SET cursor = (SELECT upto FROM bound)
        WHERE id IN (SELECT id FROM locked WHERE cursor < (SELECT upto FROM bound))
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM filled) AS created, (SELECT count(*) FROM advanced) AS advanced,
           (SELECT upto FROM bound) AS upto, (SELECT head FROM bound) AS head
    """
)


# -- the queue: claimed, attempted, recorded ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A leased delivery with its event (None when the event left the log)."""

    id: int
    attempts: int
    event_id: int
    event: Event | None


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    """The oldest pending deliveries of one webhook, leased to the claimer, in order."""

    webhook: Webhook
    deliveries: list[ClaimedDelivery]


@dataclass(frozen=True, slots=True)
class Claim:
    """What a claim took, and when the earliest delivery it could not take may be tried (None: none waits)."""

    runs: list[ClaimedRun]
    next_due: datetime | None
    now: datetime


async def claim(
    conn: AsyncConnection,
    *,
    token: str,
    busy: Sequence[str],
    max_runs: int,
    run_length: int,
    lease: float,
) -> Claim:
    """Lease runs of due deliveries of up to `max_runs` webhooks (not those in `busy`), `run_length` each.

    A webhook's row is locked while its run is chosen (other claimers skip it), so one run per webhook is
    out at a time, and a run always starts at the webhook's oldest pending delivery.
    """
    rows = (await conn.execute(_LOCK_WITH_HEADS, {"busy": list(busy)})).mappings().all()
    if not rows:
        return Claim([], None, datetime.now(UTC))
    now = rows[0]["now"]
    hooks = {row["id"]: _webhook(row) for row in rows}
    ready: list[str] = []
    next_due: datetime | None = None
    for row in rows:
        head_next, head_lease = row["head_next_attempt_at"], row["head_leased_until"]
        due = head_next if head_lease is None else max(head_next, head_lease)
        if due <= now and len(ready) < max_runs:
            ready.append(row["id"])
        elif next_due is None or due < next_due:
            next_due = max(due, now)
    if not ready:
        return Claim([], next_due, now)
    rows = (await conn.execute(_RUNS, {"ids": ready, "length": run_length})).mappings().all()
    by_hook: dict[str, list[ClaimedDelivery]] = {hook: [] for hook in ready}
    stopped: set[str] = set()
    for row in rows:
        hook = row["webhook_id"]
        leased = row["leased_until"] is not None and row["leased_until"] > now
        if hook in stopped or leased or row["next_attempt_at"] > now:
            stopped.add(hook)  # a run is a prefix of the queue: it ends at the first delivery not free now
            continue
        event = None
        if row["type"] is not None:
            event = Event(row["event_id"], row["session_id"], row["type"], dict(row["payload"]), row["created_at"])
        by_hook[hook].append(ClaimedDelivery(row["id"], row["attempts"], row["event_id"], event))
    taken = [d.id for run in by_hook.values() for d in run]
    if taken:
        await conn.execute(_LEASE, {"ids": taken, "token": token, "lease": lease})
    runs = [ClaimedRun(hooks[hook], run) for hook, run in by_hook.items() if run]
    return Claim(runs, next_due, now)


# the enabled webhooks not busy here that have pending deliveries, each with its oldest one (locked: other
# claimers skip them until this transaction ends)
_LOCK_WITH_HEADS = text(
    """
    SELECT w.*, h.next_attempt_at AS head_next_attempt_at, h.leased_until AS head_leased_until, now() AS now
    FROM webhooks w
    CROSS JOIN LATERAL (
        SELECT d.next_attempt_at, d.leased_until FROM webhook_deliveries d
        WHERE d.webhook_id = w.id AND d.status = 'pending' ORDER BY d.id LIMIT 1
    ) h
    WHERE w.enabled AND NOT (w.id = ANY(CAST(:busy AS text[])))
    ORDER BY w.id
    FOR NO KEY UPDATE OF w SKIP LOCKED
    """
)

_RUNS = text(
    """
    SELECT d.id, d.webhook_id, d.attempts, d.next_attempt_at, d.leased_until, d.event_id,
           e.type, e.session_id, e.payload, e.created_at
    FROM unnest(CAST(:ids AS text[])) AS w(id)
    CROSS JOIN LATERAL (
        SELECT * FROM webhook_deliveries d
        WHERE d.webhook_id = w.id AND d.status = 'pending' ORDER BY d.id LIMIT :length
    ) d
    LEFT JOIN events e ON e.id = d.event_id
    ORDER BY d.webhook_id, d.id
    """
)

_LEASE = text(
    """
    UPDATE webhook_deliveries SET leased_until = now() + make_interval(secs => :lease), lease_token = :token
    WHERE id = ANY(CAST(:ids AS bigint[]))
    """
)


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """The outcome of one attempt, as stored."""

    delivery_id: int
    status: DeliveryStatus
    attempts: int
    attempted_at: datetime
    next_attempt_at: datetime
    status_code: int | None
    error: str | None
    response_body: str | None
    duration_ms: int


async def record(conn: AsyncConnection, token: str, attempts: Sequence[AttemptRecord], release: Sequence[int]) -> int:
    """Store the outcome of attempts and free the unattempted deliveries of a claim; return how many were stored.

    Only deliveries still leased under `token` change: a lease that ran out belongs to someone else now.
    """
    stored = 0
    if attempts:
        result = await conn.execute(
            _RECORD,
            {
                "token": token,
                "ids": [a.delivery_id for a in attempts],
                "statuses": [a.status.value for a in attempts],
                "attempts": [a.attempts for a in attempts],
                "at": [a.attempted_at for a in attempts],
                "next_at": [a.next_attempt_at for a in attempts],
                "codes": [a.status_code for a in attempts],
                "errors": [a.error for a in attempts],
                "bodies": [a.response_body for a in attempts],
                "ms": [a.duration_ms for a in attempts],
            },
        )
        stored = int(result.rowcount)
    if release:
        await conn.execute(_RELEASE, {"token": token, "ids": list(release)})
    return stored


_RECORD = text(
    """
    UPDATE webhook_deliveries d SET
        status = i.status, attempts = i.attempts, last_attempt_at = i.at, next_attempt_at = i.next_at,
        last_status_code = i.code, last_error = i.error, response_body = i.body, duration_ms = i.ms,
        delivered_at = CASE WHEN i.status = 'delivered' THEN i.at END,
        leased_until = NULL, lease_token = NULL
    FROM unnest(
        CAST(:ids AS bigint[]), CAST(:statuses AS text[]), CAST(:attempts AS integer[]),
        CAST(:at AS timestamptz[]), CAST(:next_at AS timestamptz[]), CAST(:codes AS integer[]),
        CAST(:errors AS text[]), CAST(:bodies AS text[]), CAST(:ms AS integer[])
    ) AS i(id, status, attempts, at, next_at, code, error, body, ms)
    WHERE d.id = ANY(CAST(:ids AS bigint[])) AND d.id = i.id AND d.lease_token = :token  -- index lookups
    """
)

_RELEASE = text(
    """
    UPDATE webhook_deliveries SET leased_until = NULL, lease_token = NULL
    WHERE id = ANY(CAST(:ids AS bigint[])) AND lease_token = :token
    """
)


async def release_all(conn: AsyncConnection, token: str) -> int:
    """Free every delivery leased under `token` (a worker that stops); return how many."""
    result = await conn.execute(
        text("UPDATE webhook_deliveries SET leased_until = NULL, lease_token = NULL WHERE lease_token = :token"),
        {"token": token},
    )
    return int(result.rowcount)


# -- listing and redelivery -------------------------------------------------------------------------------


async def list_deliveries(
    conn: AsyncConnection,
    webhook_id: str,
    *,
    status: DeliveryStatus | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[Delivery]:
    """Return a webhook's deliveries, newest first (`before_id`: older than it only)."""
    stmt = select(webhook_deliveries).where(webhook_deliveries.c.webhook_id == webhook_id)
    if status is not None:
        stmt = stmt.where(webhook_deliveries.c.status == status.value)
    if before_id is not None:
        stmt = stmt.where(webhook_deliveries.c.id < before_id)
    stmt = stmt.order_by(webhook_deliveries.c.id.desc()).limit(limit)
    return [_delivery(row) for row in (await conn.execute(stmt)).mappings()]


async def redeliver(conn: AsyncConnection, webhook_id: str, delivery_id: int) -> Delivery | None:
    """Queue the event of a delivery again, as a new delivery at the end of the webhook's queue; None if absent."""
    row = (
        (await conn.execute(_REDELIVER, {"webhook_id": webhook_id, "delivery_id": delivery_id}))
        .mappings()
        .one_or_none()
    )
    return None if row is None else _delivery(row)


_REDELIVER = text(
    """
    INSERT INTO webhook_deliveries (webhook_id, event_id, event_type)
    SELECT webhook_id, event_id, event_type FROM webhook_deliveries WHERE webhook_id = :webhook_id AND id = :delivery_id
    RETURNING *
    """
)


async def queue_depths(conn: AsyncConnection) -> dict[str, int]:
    """Return the number of pending deliveries per webhook (webhooks with none are left out)."""
    stmt = (
        select(webhook_deliveries.c.webhook_id, func.count())
        .where(webhook_deliveries.c.status == DeliveryStatus.PENDING.value)
        .group_by(webhook_deliveries.c.webhook_id)
    )
    return {row[0]: int(row[1]) for row in await conn.execute(stmt)}
