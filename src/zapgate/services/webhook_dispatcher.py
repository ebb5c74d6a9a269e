"""Webhook delivery, in workers: the WebhookDispatcher moves each client's events to its webhooks.

    event log ──(cursor, one transaction)──► webhook_deliveries ──claim (lease)──► WebhookDispatcher ──POST──►
      (client schema)                          pending, in order                     signed, one at a
                                                                                     time per webhook
Delivery is at least once and in order per webhook: a webhook's deliveries are attempted oldest first, one
at a time, by the worker that leased them; an outcome is recorded before the next run is claimed, and a
worker that dies leaves leases that run out, after which another worker delivers again. A slow or dead
endpoint holds one of the worker's `concurrency` slots and its own queue, nothing else; and while several
clients have work, each may hold an equal share of the slots, so one client's many slow webhooks cannot take
every slot from the others (a client alone uses them all). The API side (the client's endpoints and their
delivery history) is `services/webhooks.py`; the rules are `domain/webhooks.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from zapgate import metrics
from zapgate.background import TaskGroup
from zapgate.db import webhooks as store
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.db.notify import EVENTS, WEBHOOKS, Listener
from zapgate.domain.ids import ClientId, client_of_schema
from zapgate.domain.storable import storable_or_none
from zapgate.domain.webhooks import (
    AddressPolicy,
    DeliveryStatus,
    Outcome,
    RetryPolicy,
    Webhook,
    attempt_status,
    delivery_request,
)
from zapgate.errors import UnstorableData
from zapgate.log import get_logger
from zapgate.services.webhook_sender import AttemptResult, WebhookSender
from zapgate.settings import Settings

log = get_logger(__name__)

# the outcome label an attempt counts under, by the status it left its delivery in
_COUNTED = {DeliveryStatus.DELIVERED: "delivered", DeliveryStatus.PENDING: "retried", DeliveryStatus.DEAD: "dead"}

RUN_LENGTH = 50  # deliveries of one webhook leased at once (attempted one after the other)
RECORD_MARGIN = 5.0  # seconds a lease outlives the last attempt a run may start (to record the outcomes)
DEPTH_EVERY = 5.0  # seconds between two refreshes of a client's queue-depth gauges
_UNSTORED = "the answer could not be stored"


def webhook_retry(settings: Settings) -> RetryPolicy:
    """How failed webhook deliveries are retried, as configured."""
    return RetryPolicy(
        max_attempts=settings.webhook_max_attempts,
        base=settings.webhook_backoff_base,
        cap=settings.webhook_backoff_max,
    )


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
        client_labels: bool = False,
    ) -> None:
        self._manager = manager
        self._client_labels = client_labels  # queue depth per (client, webhook) in /metrics, or only the sum
        self._pending: dict[ClientId, int] = {}  # each client's pending deliveries, as last seen
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
                await self._manager.execute_transaction(client, lambda tx: store.release_all(tx.connection, self.token))
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
                    self._pending.pop(gone, None)
                    metrics.WEBHOOK_PENDING.set(sum(self._pending.values()))
                    if state.timer is not None:
                        state.timer.cancel()
                    for hook_id in state.gauged:
                        with contextlib.suppress(KeyError):
                            metrics.WEBHOOK_QUEUE_DEPTH.remove(gone, hook_id)
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

    def _share(self, client: ClientId) -> int:
        """The slots `client` may hold now: all when it is alone, an equal part when others have work too."""
        contending = {known for known, state in self._clients.items() if state.busy} | self._waiting | {client}
        return max(1, self._concurrency // len(contending))

    async def _claim(self, client: ClientId, state: _Client) -> None:
        free = min(self._concurrency - len(self._runs), self._share(client) - len(state.busy))
        if free <= 0:  # no slot, or this client holds its share: a finishing run pokes it
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
            if delay <= 0 and (len(self._runs) >= self._concurrency or len(state.busy) >= self._share(client)):
                self._waiting.add(client)  # due, but no slot is free for it: a finishing run pokes it
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

        async def read(tx: Transaction) -> tuple[dict[str, int], list[Webhook]]:
            return await store.queue_depths(tx.connection), await store.list_webhooks(tx.connection)

        depths, hooks = await self._manager.execute_transaction(client, read)
        current = {hook.id for hook in hooks}
        self._pending[client] = sum(depths.get(hook_id, 0) for hook_id in current)
        metrics.WEBHOOK_PENDING.set(sum(self._pending.values()))
        if not self._client_labels:  # ids of clients and webhooks stay out of the metrics
            return
        for gone in state.gauged - current:
            with contextlib.suppress(KeyError):
                metrics.WEBHOOK_QUEUE_DEPTH.remove(client, gone)
        for hook_id in current:
            metrics.WEBHOOK_QUEUE_DEPTH.labels(client, hook_id).set(depths.get(hook_id, 0))
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
                metrics.WEBHOOK_LATENCY_SECONDS.observe(latency)
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
            body, headers = delivery_request(webhook, delivery.id, delivery.event, now, int(time.time()))
            result = await self._sender.post(webhook.url, body, headers)
        metrics.WEBHOOK_ATTEMPT_SECONDS.observe(result.duration)
        status, next_at = attempt_status(
            result.outcome, attempts, self._retry, now, retry_after=result.retry_after, rng=self._rng
        )
        metrics.WEBHOOK_DELIVERIES.labels(_COUNTED[status]).inc()
        latency = None
        if status is DeliveryStatus.DELIVERED:
            created = None if delivery.event is None else delivery.event.created_at
            if created is not None:
                latency = max(0.0, (datetime.now(UTC) - created).total_seconds())
        elif status is DeliveryStatus.DEAD:
            log.info("webhook.dead", webhook_id=webhook.id, delivery_id=delivery.id, error=result.error)
        record = store.AttemptRecord(
            delivery_id=delivery.id,
            status=status,
            attempts=attempts,
            attempted_at=now,
            next_attempt_at=next_at,
            status_code=result.status_code,
            # a receiver's answer may hold what PostgreSQL refuses (a NUL byte): an outcome that cannot be
            # recorded sends the delivery again at every lease
            error=storable_or_none(result.error),
            response_body=storable_or_none(result.response_body),
            duration_ms=round(result.duration * 1000),
        )
        return record, latency

    async def _record(self, client: ClientId, records: list[store.AttemptRecord], release: list[int]) -> None:
        if not records and not release:
            return

        async def work(tx: Transaction) -> int:
            return await store.record(tx.connection, self.token, records, release)  # the latest `records`

        for attempt in range(3):
            try:
                await asyncio.shield(self._manager.execute_transaction(client, work))
                return
            except asyncio.CancelledError:
                raise
            except UnstorableData as exc:  # what the receiver said cannot be kept: keep the outcome without it
                log.warning("webhooks.record_unstorable", client_id=client, error=repr(exc))
                records = [replace(record, error=_UNSTORED, response_body=None) for record in records]
            except Exception as exc:  # the database is away: the lease runs out and the run is delivered again
                log.warning("webhooks.record_failed", client_id=client, attempt=attempt + 1, error=repr(exc))
                await asyncio.sleep(0.5 * (attempt + 1))
