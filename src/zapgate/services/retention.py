"""Retention: how long each client's rows are kept, and the workers' pruning of what is older.

Defaults come from the ZAPGATE_RETAIN_* settings; the admin API overrides them per client (0 keeps for ever).
Each worker runs a `Pruner`: it claims clients due for pruning (a registry row each, claimed with FOR UPDATE
SKIP LOCKED and a lease, so one worker at a time prunes a client), deletes their old rows in batches of
short transactions, counts them (`zapgate_pruned_rows_total{table}`) and makes the client due again after
ZAPGATE_PRUNE_INTERVAL. The sandbox's undelivered mail is the network's, not a client's: it follows the
setting alone, pruned by whichever worker takes its advisory lock; so do the sandbox's media files, counted
from when they expired (until then and that long after, a simulated phone can upload them again).

What is never pruned, whatever its age: events a webhook has not delivered yet (after the cursor of an
enabled webhook, or named by a pending delivery, which reads its event at each attempt); pending webhook
deliveries. A disabled webhook holds nothing back: re-enabled, it goes on from what is left.

A reader resuming (SSE, Socket.IO) from an event id that pruning went past is told so: `gap` says which id
it asked for and the oldest event kept, and it goes on from there. The mark of how far pruning went commits
with each deletion, so no resume misses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate import metrics
from zapgate.background import TaskGroup
from zapgate.db import retention as store
from zapgate.db import sandbox as sandbox_store
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.db.registry import ClientRegistry
from zapgate.domain.ids import client_id
from zapgate.errors import ClientNotFound
from zapgate.log import get_logger
from zapgate.services.media import MediaFiles
from zapgate.settings import Settings

log = get_logger(__name__)

PRUNE_BATCH = 1000  # rows looked at per transaction: short transactions, short locks
CLAIM_LIMIT = 10  # clients a worker claims at once
CLAIM_LEASE = 600.0  # seconds a claim lasts (a worker that died mid-pruning frees the client then)
NETWORK = "*sandbox*"  # what `prune_due` reports the sandbox mail under (no client id looks like it)
MEDIA_PRUNE_BATCH = 64  # parts of sandbox media (up to 1 MiB each) deleted per transaction
CHECK_EVERY = 60.0  # seconds between looks for due clients, at most (less with a shorter interval)

# the tables of a client's schema, as named in metrics, and the policy field of each
CLIENT_TABLES = {
    "events": "events_days",
    "audit": "audit_days",
    "webhook_deliveries": "deliveries_days",
    "idempotency_keys": "idempotency_days",
}


@dataclass(frozen=True, slots=True)
class RetentionDefaults:
    """Days each kind of row is kept (0: for ever), and how often a client is pruned."""

    events_days: int = 30
    audit_days: int = 90
    deliveries_days: int = 30
    idempotency_days: int = 1
    media_days: int = 0  # for ever: as long as their messages
    sandbox_mail_days: int = 7
    interval: float = 3600.0  # seconds

    def days(self, field: str) -> int:
        """The default of a policy field (`events_days` ...)."""
        value: int = getattr(self, field)
        return value


def retention_defaults(settings: Settings) -> RetentionDefaults:
    """Return the retention defaults the settings ask for."""
    return RetentionDefaults(
        events_days=settings.retain_events_days,
        audit_days=settings.retain_audit_days,
        deliveries_days=settings.retain_deliveries_days,
        idempotency_days=settings.retain_idempotency_days,
        media_days=settings.retain_media_days,
        sandbox_mail_days=settings.retain_sandbox_mail_days,
        interval=settings.prune_interval,
    )


@dataclass(frozen=True, slots=True)
class Policy:
    """A client's retention: the days in force per field, which of them are its own, and its last pruning."""

    client_id: str
    days: Mapping[str, int]  # field → days in force (0: for ever)
    overridden: frozenset[str]
    last_pruned_at: datetime | None
    last_pruned: Mapping[str, int] | None


@dataclass(frozen=True, slots=True)
class Gap:
    """A resume from `requested` missed pruned events: it goes on from `oldest`, the oldest event kept."""

    requested: int
    oldest: int

    def payload(self) -> dict[str, int]:
        """The `gap` event's data."""
        return {"requestedLastEventId": self.requested, "oldestEventId": self.oldest}


def _policy(client: str, row: store.RetentionRow | None, defaults: RetentionDefaults) -> Policy:
    overrides = row.overrides if row is not None else {}
    days = {}
    for field in store.POLICY_COLUMNS:
        own = overrides.get(field)
        days[field] = own if own is not None else defaults.days(field)
    return Policy(
        client_id=client,
        days=days,
        overridden=frozenset(field for field, value in overrides.items() if value is not None),
        last_pruned_at=row.last_pruned_at if row is not None else None,
        last_pruned=row.last_pruned if row is not None else None,
    )


class RetentionService:
    """Read and change clients' retention (the admin API)."""

    def __init__(self, manager: ConnectionManager, defaults: RetentionDefaults) -> None:
        self._manager = manager
        self._defaults = defaults

    async def get(self, client: str) -> Policy:
        """Return the client's retention; ClientNotFound if there is no such client."""
        async with self._manager.registry_transaction() as conn:
            await _existing(conn, client)
            row = await store.get(conn, client)
        return _policy(client, row, self._defaults)

    async def update(self, client: str, changes: Mapping[str, int | None]) -> Policy:
        """Override some of the client's retention (None: back to the default); return it."""
        async with self._manager.registry_transaction() as conn:
            await _existing(conn, client)
            row = await store.set_overrides(conn, client, changes)
        log.info("retention.changed", client_id=client, changes=dict(changes))
        return _policy(client, row, self._defaults)


async def _existing(conn: AsyncConnection, client: str) -> None:
    if await ClientRegistry(conn).get_client(client_id(client)) is None:
        raise ClientNotFound(f"client {client!r} not found")


async def gap_after(manager: ConnectionManager, client: str, after: int) -> Gap | None:
    """Return the gap a resume after event `after` of `client` would have, or None when it misses nothing."""
    async with manager.registry_transaction() as conn:
        through = await store.pruned_through(conn, client)
    if after >= through:
        return None

    async def oldest(tx: Transaction) -> int:
        found = (await tx.connection.execute(text("SELECT min(id) FROM events"))).scalar_one()
        return int(found) if found is not None else through + 1

    return Gap(requested=after, oldest=await manager.execute_transaction(client, oldest))


class Pruner:
    """Prune the clients due for it, one worker at a time per client, for ever (a worker runs one)."""

    def __init__(
        self,
        manager: ConnectionManager,
        worker_id: str,
        defaults: RetentionDefaults,
        *,
        media: MediaFiles | None = None,
    ) -> None:
        self._media = media
        self._manager = manager
        self._worker_id = worker_id
        self._defaults = defaults
        self._tasks = TaskGroup("pruner")
        self._mail_due = 0.0  # monotonic time the sandbox mail is next pruned

    async def start(self) -> None:
        """Start pruning in the background."""
        self._tasks.spawn(self._run(), name="loop")

    async def close(self) -> None:
        """Stop pruning (a claim left unfinished is freed when its lease ends)."""
        await self._tasks.close()

    async def _run(self) -> None:
        every = min(CHECK_EVERY, self._defaults.interval)
        while True:
            try:
                await self.prune_due()
            except Exception as exc:  # the database away: next round
                log.warning("retention.prune_failed", error=repr(exc))
            await asyncio.sleep(every)

    async def prune_due(self) -> dict[str, dict[str, int]]:
        """Prune every client due now (and the sandbox mail when due, under NETWORK); return the rows deleted per
        client."""
        done: dict[str, dict[str, int]] = {}
        loop = asyncio.get_running_loop()
        if loop.time() >= self._mail_due:
            self._mail_due = loop.time() + self._defaults.interval
            done[NETWORK] = {
                "sandbox_mail": await self.prune_sandbox_mail(),
                "sandbox_media": await self.prune_sandbox_media(),
            }
        while True:
            async with self._manager.registry_transaction() as conn:
                claimed = await store.claim_due(conn, self._worker_id, CLAIM_LIMIT, CLAIM_LEASE)
            for row in claimed:
                policy = _policy(row.client_id, row, self._defaults)
                try:
                    counts = await self.prune_client(row.client_id, policy.days)
                except Exception as exc:  # deleted meanwhile, or the database away: its claim lapses
                    log.warning("retention.client_failed", client_id=row.client_id, error=repr(exc))
                    continue
                async with self._manager.registry_transaction() as conn:
                    await store.finish(conn, row.client_id, self._worker_id, counts, self._defaults.interval)
                done[row.client_id] = counts
                if any(counts.values()):
                    log.info("retention.pruned", client_id=row.client_id, **counts)
            if len(claimed) < CLAIM_LIMIT:
                return done

    async def prune_client(self, client: str, days: Mapping[str, int]) -> dict[str, int]:
        """Delete the client's rows older than `days` allows, table by table; return how many went of each."""
        counts = {}
        now = datetime.now(UTC)
        for table, field in CLIENT_TABLES.items():
            if days[field] <= 0:
                continue  # kept for ever
            cutoff = now - timedelta(days=days[field])
            if table == "idempotency_keys":
                counts[table] = await self._prune_keys(client, cutoff)
            else:
                counts[table] = await self._walk(table, cutoff, client)
        if self._media is not None:  # files past the client's days, of messages gone, or uploads never sent in time
            older = None if days["media_days"] <= 0 else now - timedelta(days=days["media_days"])
            counts["media"] = await self._media.prune(client, now, stored_before=older)
        return counts

    async def prune_sandbox_mail(self) -> int:
        """Delete sandbox mail nobody collected within ZAPGATE_RETAIN_SANDBOX_MAIL_DAYS (one worker at a time)."""
        if self._defaults.sandbox_mail_days <= 0:
            return 0
        cutoff = datetime.now(UTC) - timedelta(days=self._defaults.sandbox_mail_days)
        return await self._walk("sandbox_mail", cutoff, None)

    async def prune_sandbox_media(self) -> int:
        """Delete the sandbox's media files (their parts) that expired ZAPGATE_RETAIN_SANDBOX_MAIL_DAYS ago or more:
        until then the simulated phone keeps its copy, for reuploads."""
        if self._defaults.sandbox_mail_days <= 0:
            return 0
        cutoff = datetime.now(UTC) - timedelta(days=self._defaults.sandbox_mail_days)
        total = 0
        while True:
            async with self._manager.registry_transaction() as conn:
                if not await store.try_lock_mail(conn):
                    return total  # another worker prunes the network right now
                gone = await sandbox_store.purge_media(conn, cutoff, MEDIA_PRUNE_BATCH)
            if gone:
                metrics.PRUNED_ROWS.labels("sandbox_media").inc(gone)
            total += gone
            if gone < MEDIA_PRUNE_BATCH:
                return total

    async def _walk(self, table: str, cutoff: datetime, client: str | None) -> int:
        total, after = 0, 0
        floor: int | None = None
        while True:

            async def step(conn: AsyncConnection, after: int = after, floor: int | None = floor) -> store.Step | None:
                if client is None:
                    if not await store.try_lock_mail(conn):
                        return None  # another worker prunes the mail right now
                    return await store.prune_step(conn, table, cutoff, after, PRUNE_BATCH)
                if table == "events":
                    floor = await store.events_floor(conn)  # read anew each batch: webhooks move on
                return await store.prune_step(
                    conn, table, cutoff, after, PRUNE_BATCH, floor=floor or 0, client_id=client
                )

            result = await self._step(client, step)
            if result is None:
                return total
            if result.deleted:
                metrics.PRUNED_ROWS.labels(table).inc(result.deleted)
            total += result.deleted
            if result.done or result.last_id is None or (result.floor is not None and result.last_id >= result.floor):
                return total  # younger rows from here on, or (events) only what webhooks still need
            after = result.last_id

    async def _step(self, client: str | None, step: Any) -> store.Step | None:
        if client is None:
            async with self._manager.registry_transaction() as conn:
                result: store.Step | None = await step(conn)
                return result

        async def work(tx: Transaction) -> store.Step | None:
            found: store.Step | None = await step(tx.connection)
            return found

        return await self._manager.execute_transaction(client, work)

    async def _prune_keys(self, client: str, cutoff: datetime) -> int:
        total = 0
        while True:

            async def work(tx: Transaction) -> int:
                return await store.prune_idempotency_keys(tx.connection, cutoff, PRUNE_BATCH)

            deleted = await self._manager.execute_transaction(client, work)
            if deleted:
                metrics.PRUNED_ROWS.labels("idempotency_keys").inc(deleted)
            total += deleted
            if deleted < PRUNE_BATCH:
                return total
