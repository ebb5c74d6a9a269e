"""Webhooks: the client's endpoints (WebhookService, for the API) and their delivery (WebhookDispatcher, in workers).

    event log ──(cursor, one transaction)──► webhook_deliveries ──claim (lease)──► WebhookDispatcher ──POST──►
      (client schema)                          pending, in order                     signed, one at a
                                                                                     time per webhook
Delivery is at least once and in order per webhook: a webhook's deliveries are attempted oldest first, one
at a time, by the worker that leased them; an outcome is recorded before the next run is claimed, and a
worker that dies leaves leases that run out, after which another worker delivers again. A slow or dead
endpoint holds one of the worker's `concurrency` slots and its own queue, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate import metrics
from zapgate.background import TaskGroup
from zapgate.db import notify
from zapgate.db import webhooks as store
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.db.notify import EVENTS, WEBHOOKS, Listener
from zapgate.domain.events import event_body
from zapgate.domain.ids import ClientId, client_of_schema, new_id, schema_for
from zapgate.domain.ids import client_id as valid_client_id
from zapgate.domain.ids import session_id as valid_session_id
from zapgate.domain.webhooks import (
    DELIVERY_ID_HEADER,
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_ID_HEADER,
    AddressPolicy,
    Delivery,
    DeliveryStatus,
    Outcome,
    RetryPolicy,
    Webhook,
    classify_address,
    event_names,
    literal_address,
    parse_url,
    signature_header,
)
from zapgate.errors import DeliveryNotFound, InvalidRequest, InvalidWebhook, WebhookNotFound
from zapgate.log import get_logger
from zapgate.services.messages import MAX_PAGE, Page
from zapgate.services.webhook_sender import AttemptResult, WebhookSender
from zapgate.settings import Settings

log = get_logger(__name__)
T = TypeVar("T")

MAX_WEBHOOKS = 100  # per client
SECRET_PREFIX = "whsec_"
SECRET_DISPLAY = 10  # characters of a secret shown in listings
DEFAULT_OVERLAP = 86_400.0  # seconds the previous secret keeps signing after a rotation
MAX_OVERLAP = 7 * 86_400.0
RESOLVE_TIMEOUT = 5.0  # seconds to resolve a webhook's host when it is created or changed
RUN_LENGTH = 50  # deliveries of one webhook leased at once (attempted one after the other)
RECORD_MARGIN = 5.0  # seconds a lease outlives the last attempt a run may start (to record the outcomes)
DEPTH_EVERY = 5.0  # seconds between two refreshes of a client's queue-depth gauges

# -- metrics (in the process's registry: workers publish them with their heartbeat, /metrics merges them) --------

METRICS = metrics.REGISTRY
DELIVERIES = Counter(
    "zapgate_webhook_deliveries",
    "Delivery attempts by outcome: delivered (2xx), retried (to be tried again), dead (given up).",
    ["outcome"],
    registry=METRICS,
)
ATTEMPT_SECONDS = Histogram(
    "zapgate_webhook_attempt_seconds",
    "Duration of one delivery attempt (the HTTP request), whatever its outcome.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=METRICS,
)
LATENCY_SECONDS = Histogram(
    "zapgate_webhook_delivery_latency_seconds",
    "From an event's creation to its successful delivery.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
    registry=METRICS,
)
QUEUE_DEPTH = Gauge(
    "zapgate_webhook_queue_depth",
    "Pending deliveries per webhook (as last seen by this worker).",
    ["client", "webhook"],
    registry=METRICS,
)


def metrics_registry() -> CollectorRegistry:
    """The registry holding the webhook metrics (include it in /metrics or a worker's metrics)."""
    return METRICS


def webhook_policy(settings: Settings) -> AddressPolicy:
    """The destinations webhooks may reach besides the public internet, as configured."""
    return AddressPolicy(allow_loopback=settings.webhook_allow_loopback, allow_private=settings.webhook_allow_private)


def webhook_retry(settings: Settings) -> RetryPolicy:
    """How failed webhook deliveries are retried, as configured."""
    return RetryPolicy(
        max_attempts=settings.webhook_max_attempts,
        base=settings.webhook_backoff_base,
        cap=settings.webhook_backoff_max,
    )


# -- the client's webhooks (API side) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewWebhook:
    """A webhook to create."""

    url: str
    events: Sequence[str] | None = None  # None: every event
    sessions: Sequence[str] | None = None  # None: every session
    secret: str | None = None  # None: generated
    enabled: bool = True
    description: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookChanges:
    """The fields of a webhook to change (`fields` names those given; a given None means "every")."""

    fields: frozenset[str]
    url: str | None = None
    events: Sequence[str] | None = None
    sessions: Sequence[str] | None = None
    enabled: bool | None = None
    description: str | None = None


def new_secret() -> str:
    """Return a new random signing secret (256 bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_hint(secret: str) -> str:
    """The first characters of a secret, to tell secrets apart without showing them."""
    return secret[:SECRET_DISPLAY] + "…"


def _check_secret(secret: str) -> str:
    if not 16 <= len(secret) <= 256 or not secret.isprintable() or secret.strip() != secret:
        raise InvalidWebhook("secret: 16 to 256 printable characters without surrounding spaces", field="secret")
    return secret


def _check_sessions(sessions: Sequence[str] | None) -> list[str] | None:
    if sessions is None:
        return None
    if not sessions:
        raise InvalidWebhook("sessions: name at least one session, or leave it out for all", field="sessions")
    return sorted({valid_session_id(session) for session in sessions})


class WebhookService:
    """Create, list, change and delete a client's webhooks; list and redeliver their deliveries."""

    def __init__(self, manager: ConnectionManager, *, policy: AddressPolicy, resolve: bool = True) -> None:
        self._manager = manager
        self._policy = policy
        self._resolve = resolve

    async def _check_url(self, url: str) -> str:
        parsed = parse_url(url, self._policy)
        if self._resolve and literal_address(parsed.host) is None:
            # refused now if it points somewhere forbidden; checked again at every delivery (DNS changes)
            try:
                async with asyncio.timeout(RESOLVE_TIMEOUT):
                    found = await asyncio.get_running_loop().getaddrinfo(
                        parsed.host, parsed.port, type=socket.SOCK_STREAM
                    )
            except (OSError, TimeoutError):
                found = []  # not resolvable (yet): deliveries will retry and say why
            for info in found:
                address = literal_address(str(info[4][0]))
                reason = None if address is None else classify_address(address, self._policy)
                if reason is not None:
                    raise InvalidWebhook(f"url: refused destination: {parsed.host} resolves to {reason}", field="url")
        return parsed.url

    async def _run(self, client: str, fn: Any) -> Any:
        cid = valid_client_id(client)

        async def work(tx: Transaction) -> Any:
            result = await fn(tx.connection, cid)
            await notify.notify(tx.connection, WEBHOOKS, schema_for(cid))  # workers look again
            return result

        return await self._manager.execute_transaction(cid, work)

    async def create(self, client: str, new: NewWebhook) -> Webhook:
        """Create a webhook receiving the client's events from now on; its secret is in the result, this once."""
        url = await self._check_url(new.url)
        events = event_names(new.events)
        sessions = _check_sessions(new.sessions)
        secret = new_secret() if new.secret is None else _check_secret(new.secret)

        async def work(conn: Any, cid: ClientId) -> Webhook:
            if await store.count_webhooks(conn) >= MAX_WEBHOOKS:
                raise InvalidWebhook(f"a client has at most {MAX_WEBHOOKS} webhooks", field="url")
            created = await store.insert_webhook(
                conn,
                webhook_id=new_id(),
                url=url,
                event_types=events,
                sessions=sessions,
                secret=secret,
                enabled=new.enabled,
                description=new.description,
            )
            await store.mark_client(conn, cid)
            return created

        created: Webhook = await self._run(client, work)
        log.info("webhook.created", client_id=client, webhook_id=created.id)
        return created

    async def list(self, client: str) -> list[Webhook]:
        """Return the client's webhooks, oldest first."""
        return await _read(self._manager, client, store.list_webhooks)

    async def get(self, client: str, webhook_id: str) -> Webhook:
        """Return one webhook; WebhookNotFound if the client has none with this id."""
        found = await _read(self._manager, client, lambda conn: store.get_webhook(conn, webhook_id))
        if found is None:
            raise _not_found(webhook_id)
        return found

    async def update(self, client: str, webhook_id: str, changes: WebhookChanges) -> Webhook:
        """Change a webhook; re-enabled, it receives the events logged from then on."""
        values: dict[str, Any] = {}
        if "url" in changes.fields:
            if changes.url is None:
                raise InvalidWebhook("url: a URL is expected", field="url")
            values["url"] = await self._check_url(changes.url)
        if "events" in changes.fields:
            values["events"] = event_names(changes.events)
        if "sessions" in changes.fields:
            values["sessions"] = _check_sessions(changes.sessions)
        if "description" in changes.fields:
            values["description"] = changes.description
        if "enabled" in changes.fields:
            if changes.enabled is None:
                raise InvalidWebhook("enabled: true or false expected", field="enabled")
            values["enabled"] = changes.enabled

        async def work(conn: Any, cid: ClientId) -> Webhook:
            current = await store.get_webhook(conn, webhook_id)
            if current is None:
                raise _not_found(webhook_id)
            if not values:
                return current
            reenabled = values.get("enabled") is True and not current.enabled
            updated = await store.update_webhook(conn, webhook_id, values, from_now_on=reenabled)
            assert updated is not None
            return updated

        updated: Webhook = await self._run(client, work)
        log.info("webhook.updated", client_id=client, webhook_id=webhook_id, fields=sorted(values))
        return updated

    async def delete(self, client: str, webhook_id: str) -> None:
        """Delete a webhook and its deliveries (those pending are not sent)."""

        async def work(conn: Any, cid: ClientId) -> None:
            if not await store.delete_webhook(conn, webhook_id):
                raise _not_found(webhook_id)
            await store.unmark_client_if_none(conn, cid)

        await self._run(client, work)
        log.info("webhook.deleted", client_id=client, webhook_id=webhook_id)

    async def rotate_secret(
        self, client: str, webhook_id: str, *, secret: str | None = None, overlap: float = DEFAULT_OVERLAP
    ) -> Webhook:
        """Give a webhook a new secret; the old one keeps signing too (a second signature) for `overlap` seconds."""
        if not 0 <= overlap <= MAX_OVERLAP:
            raise InvalidWebhook(f"overlapSeconds: 0 to {int(MAX_OVERLAP)} expected", field="overlapSeconds")
        fresh = new_secret() if secret is None else _check_secret(secret)

        async def work(conn: Any, cid: ClientId) -> Webhook:
            rotated = await store.rotate_secret(conn, webhook_id, fresh, overlap)
            if rotated is None:
                raise _not_found(webhook_id)
            return rotated

        rotated: Webhook = await self._run(client, work)
        log.info("webhook.secret_rotated", client_id=client, webhook_id=webhook_id, overlap_s=overlap)
        return rotated

    async def deliveries(
        self,
        client: str,
        webhook_id: str,
        *,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Delivery]:
        """A webhook's deliveries, newest first, a page at a time (`status`: only those)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit: 1 to {MAX_PAGE} expected")
        wanted = None
        if status is not None:
            try:
                wanted = DeliveryStatus(status)
            except ValueError as exc:
                raise InvalidRequest(f"status: one of {', '.join(DeliveryStatus)} expected") from exc
        before = None
        if cursor is not None:
            if not cursor.isdigit() or len(cursor) > 19:
                raise InvalidRequest("cursor: not a cursor this listing returned (use nextCursor as given)")
            before = int(cursor)

        async def read(conn: AsyncConnection) -> list[Delivery]:
            if await store.get_webhook(conn, webhook_id) is None:
                raise _not_found(webhook_id)
            return await store.list_deliveries(conn, webhook_id, status=wanted, before_id=before, limit=limit + 1)

        found = await _read(self._manager, client, read)
        items = found[:limit]
        return Page(items, str(items[-1].id) if len(found) > limit else None)

    async def redeliver(self, client: str, webhook_id: str, delivery_id: int) -> Delivery:
        """Queue a delivery's event again, as a new delivery at the end of the webhook's queue."""

        async def work(conn: Any, cid: ClientId) -> Delivery:
            if await store.get_webhook(conn, webhook_id) is None:
                raise _not_found(webhook_id)
            queued = await store.redeliver(conn, webhook_id, delivery_id)
            if queued is None:
                raise DeliveryNotFound(
                    f"delivery {delivery_id} of webhook {webhook_id!r} not found", delivery_id=delivery_id
                )
            return queued

        queued: Delivery = await self._run(client, work)
        log.info("webhook.redelivery", client_id=client, webhook_id=webhook_id, delivery_id=delivery_id)
        return queued


async def _read(manager: ConnectionManager, client: str, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    async def work(tx: Transaction) -> T:
        return await fn(tx.connection)

    return await manager.execute_transaction(valid_client_id(client), work)


def _not_found(webhook_id: str) -> WebhookNotFound:
    shown = webhook_id if len(webhook_id) <= 64 else webhook_id[:61] + "..."
    return WebhookNotFound(f"webhook {shown!r} not found", webhook_id=shown)


# -- delivery (worker side) -------------------------------------------------------------------------------------


@dataclass
class _Client:
    """What the dispatcher knows of one client."""

    pumping: bool = False
    dirty: bool = False
    new_events: bool = False  # the log may have grown since the last look
    timer: asyncio.TimerHandle | None = None
    timer_at: float = 0.0
    busy: set[str] = field(default_factory=set)  # webhooks with a run in flight here
    depth_at: float = 0.0
    gauged: set[str] = field(default_factory=set)  # webhooks with a queue-depth gauge


class WebhookDispatcher:
    """Deliver the events of every client with webhooks; many dispatchers (workers) share the work."""

    def __init__(
        self,
        manager: ConnectionManager,
        database_url: str,
        *,
        policy: AddressPolicy | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        concurrency: int = 64,
        sweep_interval: float = 30.0,
        run_length: int = RUN_LENGTH,
        worker_id: str | None = None,
    ) -> None:
        self._manager = manager
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._concurrency = concurrency
        self._sweep_interval = sweep_interval
        self._run_length = run_length
        # a run starts attempts during the first `timeout` seconds of its lease, each lasting at most `timeout`;
        # a worker that dies mid-run leaves the run to others after this long
        self._lease = 2 * timeout + RECORD_MARGIN
        self.token = f"{worker_id or socket.gethostname() + '-' + str(os.getpid())}-{uuid.uuid4().hex[:8]}"
        self._sender = WebhookSender(policy or AddressPolicy(), timeout=timeout, max_connections=concurrency)
        self._listener = Listener(database_url, (EVENTS, WEBHOOKS), on_notify=self._notified)
        self._clients: dict[ClientId, _Client] = {}
        self._tasks = TaskGroup("webhooks")
        self._runs: set[asyncio.Task[None]] = set()
        self._waiting: set[ClientId] = set()  # clients with due work and no free slot
        self._rng = random.Random()
        self._stopping = False
        self._claimed: set[ClientId] = set()  # clients this dispatcher leased deliveries of

    @property
    def in_flight(self) -> int:
        """Runs of deliveries being attempted now."""
        return len(self._runs)

    async def start(self) -> None:
        """Listen for new events and start delivering (a first sweep catches up with what is waiting)."""
        await self._listener.start()
        self._tasks.spawn(self._sweep_loop(), name="sweep")
        log.info("webhooks.started", token=self.token, concurrency=self._concurrency)

    async def close(self, grace: float = 5.0) -> None:
        """Stop claiming, let the attempts in flight end (up to `grace` seconds), free what is left."""
        self._stopping = True
        await self._tasks.close()
        await self._listener.close()
        for state in self._clients.values():
            if state.timer is not None:
                state.timer.cancel()
        if self._runs:
            await asyncio.wait(set(self._runs), timeout=grace)
        for task in list(self._runs):
            task.cancel()
        if self._runs:
            await asyncio.wait(set(self._runs), timeout=1.0)
        for client in self._claimed:  # what was leased and not attempted goes to another worker at once
            with contextlib.suppress(Exception):
                await _read(self._manager, client, lambda conn: store.release_all(conn, self.token))
        await self._sender.close()
        log.info("webhooks.stopped", token=self.token)

    # -- who has work ---------------------------------------------------------------------------------

    def _notified(self, channel: str, payload: str | None) -> None:
        if payload is None:  # (re)connected: notifications may have been missed
            for known in list(self._clients):
                self.poke(known)
            return
        client = client_of_schema(payload)
        if client is None:
            return
        if channel == WEBHOOKS:
            self._clients.setdefault(client, _Client())
        if client in self._clients:
            self.poke(client)

    async def _sweep_loop(self) -> None:
        while True:
            try:
                async with self._manager.registry_transaction() as conn:
                    found = set(await store.clients_with_webhooks(conn))
                for gone in set(self._clients) - found:
                    state = self._clients.pop(gone)
                    if state.timer is not None:
                        state.timer.cancel()
                    for hook_id in state.gauged:
                        with contextlib.suppress(KeyError):
                            QUEUE_DEPTH.remove(gone, hook_id)
                for client in found:
                    self._clients.setdefault(client, _Client())
                    self.poke(client)
            except Exception as exc:
                log.warning("webhooks.sweep_failed", error=repr(exc))
            await asyncio.sleep(self._sweep_interval)

    def poke(self, client: ClientId, *, new_events: bool = True) -> None:
        """Look at `client`'s queue now: new events (`new_events`), or a freed slot, a retry that is due."""
        state = self._clients.get(client)
        if state is None or self._stopping:
            return
        state.dirty = True
        state.new_events = state.new_events or new_events
        if not state.pumping:
            state.pumping = True
            self._tasks.spawn(self._pump(client, state), name=f"pump.{client}")

    def _wake_at(self, client: ClientId, state: _Client, delay: float) -> None:
        when = time.monotonic() + max(0.0, delay)
        if state.timer is not None and state.timer_at <= when:
            return
        if state.timer is not None:
            state.timer.cancel()
        state.timer_at = when
        state.timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._timer_fired, client, state)

    def _timer_fired(self, client: ClientId, state: _Client) -> None:
        state.timer = None
        self.poke(client, new_events=False)

    # -- one client: fill its queue from the log, claim what is due -------------------------------------------

    async def _pump(self, client: ClientId, state: _Client) -> None:
        try:
            while state.dirty and not self._stopping:
                state.dirty = False
                if state.new_events:  # a finished run or a due retry needs no look at the log
                    state.new_events = False
                    await self._enqueue(client)
                await self._claim(client, state)
                await self._refresh_depth(client, state)
        except Exception as exc:
            log.warning("webhooks.pump_failed", client_id=client, error=repr(exc))
            state.new_events = True
            self._wake_at(client, state, 1.0)
        finally:
            state.pumping = False

    async def _enqueue(self, client: ClientId) -> None:
        more = True
        while more:

            async def work(tx: Transaction) -> tuple[int, bool]:
                return await store.enqueue(tx.connection)

            _, more = await self._manager.execute_transaction(client, work)

    async def _claim(self, client: ClientId, state: _Client) -> None:
        free = self._concurrency - len(self._runs)
        if free <= 0:
            self._waiting.add(client)
            return

        async def work(tx: Transaction) -> store.Claim:
            return await store.claim(
                tx.connection,
                token=self.token,
                busy=sorted(state.busy),
                max_runs=free,
                run_length=self._run_length,
                lease=self._lease,
            )

        claim = await self._manager.execute_transaction(client, work)
        started = time.monotonic()
        if claim.runs:
            self._claimed.add(client)
        for run in claim.runs:
            state.busy.add(run.webhook.id)
            task = asyncio.create_task(self._deliver(client, state, run, started), name=f"webhooks.run.{client}")
            self._runs.add(task)
            task.add_done_callback(self._run_done)
        if claim.next_due is not None:
            delay = (claim.next_due - claim.now).total_seconds()
            if delay <= 0 and len(self._runs) >= self._concurrency:
                self._waiting.add(client)  # due, but every slot is taken: a finishing run pokes it
            else:
                self._wake_at(client, state, delay)

    def _run_done(self, task: asyncio.Task[None]) -> None:
        self._runs.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("webhooks.run_failed", error=repr(exc), exc_info=exc)
        waiting, self._waiting = self._waiting, set()
        for client in waiting:
            self.poke(client, new_events=False)

    async def _refresh_depth(self, client: ClientId, state: _Client) -> None:
        now = time.monotonic()
        if now - state.depth_at < DEPTH_EVERY:
            return
        state.depth_at = now

        async def read(conn: AsyncConnection) -> tuple[dict[str, int], list[Webhook]]:
            return await store.queue_depths(conn), await store.list_webhooks(conn)

        depths, hooks = await _read(self._manager, client, read)
        current = {hook.id for hook in hooks}
        for gone in state.gauged - current:
            with contextlib.suppress(KeyError):
                QUEUE_DEPTH.remove(client, gone)
        for hook_id in current:
            QUEUE_DEPTH.labels(client, hook_id).set(depths.get(hook_id, 0))
        state.gauged = current

    # -- one run: a webhook's oldest pending deliveries, attempted in order -------------------------------------

    async def _deliver(self, client: ClientId, state: _Client, run: store.ClaimedRun, claimed: float) -> None:
        deadline = claimed + self._timeout  # an attempt begun by then ends (and is recorded) within the lease
        records: list[store.AttemptRecord] = []
        release: list[int] = []
        latencies: list[float] = []
        try:
            for index, delivery in enumerate(run.deliveries):
                if self._stopping or time.monotonic() > deadline:
                    release = [d.id for d in run.deliveries[index:]]
                    break
                record, latency = await self._attempt(run.webhook, delivery)
                records.append(record)
                if latency is not None:
                    latencies.append(latency)
                if record.status is not DeliveryStatus.DELIVERED:
                    release = [d.id for d in run.deliveries[index + 1 :]]  # order: nothing overtakes a failure
                    break
        finally:
            await self._record(client, records, release)
            for latency in latencies:
                LATENCY_SECONDS.observe(latency)
            state.busy.discard(run.webhook.id)
            self.poke(client, new_events=False)  # the next run of this webhook, if any is due

    async def _attempt(
        self, webhook: Webhook, delivery: store.ClaimedDelivery
    ) -> tuple[store.AttemptRecord, float | None]:
        now = datetime.now(UTC)
        attempts = delivery.attempts + 1
        if delivery.event is None:  # the event left the log: nothing to send
            result = AttemptResult(Outcome.FAILED, None, "the event is no longer in the log", None, 0.0)
        else:
            body = json.dumps(event_body(delivery.event), separators=(",", ":"), ensure_ascii=False).encode()
            stamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                EVENT_ID_HEADER: str(delivery.event.id),
                EVENT_TYPE_HEADER: delivery.event.type,
                DELIVERY_ID_HEADER: str(delivery.id),
                WEBHOOK_ID_HEADER: webhook.id,
                TIMESTAMP_HEADER: str(stamp),
                SIGNATURE_HEADER: signature_header(webhook.signing_secrets(now), stamp, body),
            }
            result = await self._sender.post(webhook.url, body, headers)
        ATTEMPT_SECONDS.observe(result.duration)
        latency = None
        if result.outcome is Outcome.DELIVERED:
            status = DeliveryStatus.DELIVERED
            next_at = now
            DELIVERIES.labels("delivered").inc()
            created = None if delivery.event is None else delivery.event.created_at
            if created is not None:
                latency = max(0.0, (datetime.now(UTC) - created).total_seconds())
        elif result.outcome is Outcome.RETRY and not self._retry.gives_up(attempts):
            status = DeliveryStatus.PENDING
            next_at = now + timedelta(seconds=self._retry.delay(attempts, result.retry_after, self._rng))
            DELIVERIES.labels("retried").inc()
        else:
            status = DeliveryStatus.DEAD
            next_at = now
            DELIVERIES.labels("dead").inc()
            log.info("webhook.dead", webhook_id=webhook.id, delivery_id=delivery.id, error=result.error)
        record = store.AttemptRecord(
            delivery_id=delivery.id,
            status=status,
            attempts=attempts,
            attempted_at=now,
            next_attempt_at=next_at,
            status_code=result.status_code,
            error=result.error,
            response_body=result.response_body,
            duration_ms=round(result.duration * 1000),
        )
        return record, latency

    async def _record(self, client: ClientId, records: list[store.AttemptRecord], release: list[int]) -> None:
        if not records and not release:
            return

        async def work(tx: Transaction) -> int:
            return await store.record(tx.connection, self.token, records, release)

        for attempt in range(3):
            try:
                await asyncio.shield(self._manager.execute_transaction(client, work))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: the lease runs out and the run is delivered again
                log.warning("webhooks.record_failed", client_id=client, attempt=attempt + 1, error=repr(exc))
                await asyncio.sleep(0.5 * (attempt + 1))
