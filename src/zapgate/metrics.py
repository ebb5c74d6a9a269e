"""Prometheus metrics. Each process counts what happens in it; workers publish theirs with their heartbeat
(`zapgate.workers.metrics`), and the API's `GET /metrics` merges its own, every live worker's (each series
labelled with its `process`) and the registry's view (sessions by status, workers alive).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
"""This process's metrics."""

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

MESSAGES = Counter(
    "zapgate_messages",
    "Messages by direction and the status they reached (outbound: accepted, sent, failed, delivered, read, "
    "played; inbound: received), counted by the process where it happened.",
    ["direction", "status"],
    registry=REGISTRY,
)
SEND_LATENCY = Histogram(
    "zapgate_send_latency_seconds",
    "From a message's acceptance (POST /whatsapp/send) to WhatsApp taking it (sent).",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ACCEPT_LATENCY = Histogram(
    "zapgate_send_accept_seconds",
    "Time to validate, store and answer a send (REST and Socket.IO).",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
EVENTS_PUBLISHED = Counter(
    "zapgate_events_published", "Events written to the clients' event logs, by type.", ["type"], registry=REGISTRY
)
EVENTS_STREAMED = Counter(
    "zapgate_events_streamed", "Events sent to realtime subscribers, by transport.", ["transport"], registry=REGISTRY
)
OUTBOUND_QUEUE = Gauge(
    "zapgate_outbound_queue_depth",
    "Outbound messages waiting to be sent by the sessions a worker hosts.",
    registry=REGISTRY,
)
OUTBOX_CLAIMS = Counter(
    "zapgate_outbox_claims",
    "Looks at a hosted session's queue of pending sends (each a transaction): on a notification, a connection, "
    "or an idle session's back-off.",
    registry=REGISTRY,
)
PRESENCE_REPEATS = Counter(
    "zapgate_presence_repeats",
    "Presences dropped for repeating, within seconds, the one last told of that contact in that chat.",
    registry=REGISTRY,
)
HOSTED_SESSIONS = Gauge("zapgate_hosted_sessions", "Sessions a worker hosts.", registry=REGISTRY)
KEEPALIVE = Counter(
    "zapgate_keepalive",
    "WhatsApp keep-alives that timed out, and recoveries after them (real engine).",
    ["outcome"],
    registry=REGISTRY,
)
ABANDONED_CLIENTS = Gauge(
    "zapgate_abandoned_clients",
    "Engine clients a worker gave up on because their stop did not return in time (it exits past a bound).",
    registry=REGISTRY,
)
ORPHANED_LEASES = Counter(
    "zapgate_orphaned_leases",
    "Leases a worker held on sessions it did not host (a start and its release that both failed), released.",
    registry=REGISTRY,
)
STUCK_MAIL = Counter(
    "zapgate_sandbox_stuck_mail",
    "Sandbox sessions leased to a worker found with mail left uncollected past the bound (once per look).",
    registry=REGISTRY,
)
SANDBOX_MAIL_PAUSES = Counter(
    "zapgate_sandbox_mail_pauses",
    "Times a worker's sandbox mail pump waited for its recorder (too much mail held, not stored yet).",
    registry=REGISTRY,
)
SANDBOX_MAIL_REHANDED = Counter(
    "zapgate_sandbox_mail_rehanded",
    "Sandbox mail handed out again while the worker's recorder still held its event (skipped, not reported twice).",
    registry=REGISTRY,
)
PRUNED_ROWS = Counter(
    "zapgate_pruned_rows",
    "Rows deleted by retention, per table "
    "(events, audit, webhook_deliveries, idempotency_keys, sandbox_mail, sandbox_media).",
    ["table"],
    registry=REGISTRY,
)
ENGINE_CALL_TIMEOUTS = Counter(
    "zapgate_engine_call_timeouts",
    "Engine calls a worker stopped waiting for, by call.",
    ["call"],
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "zapgate_webhook_deliveries",
    "Delivery attempts by outcome: delivered (2xx), retried (to be tried again), dead (given up).",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "zapgate_webhook_attempt_seconds",
    "Duration of one delivery attempt (the HTTP request), whatever its outcome.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
WEBHOOK_LATENCY_SECONDS = Histogram(
    "zapgate_webhook_delivery_latency_seconds",
    "From an event's creation to its successful delivery.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
    registry=REGISTRY,
)
WEBHOOK_QUEUE_DEPTH = Gauge(
    "zapgate_webhook_queue_depth",
    "Pending deliveries per webhook (as last seen by this worker); only with ZAPGATE_METRICS_CLIENT_LABELS=true.",
    ["client", "webhook"],
    registry=REGISTRY,
)
WEBHOOK_PENDING = Gauge(
    "zapgate_webhook_pending_deliveries",
    "Pending deliveries of every webhook this worker delivers for (as last seen), summed.",
    registry=REGISTRY,
)


class _Pool(Protocol):
    def pool_status(self) -> Any: ...


class _PoolCollector(Collector):
    """The connection pools of this process's ConnectionManagers, summed."""

    def __init__(self) -> None:
        self.managers: weakref.WeakSet[Any] = weakref.WeakSet()

    def collect(self) -> Iterable[Metric]:
        statuses = [manager.pool_status() for manager in list(self.managers)]
        size = Metric("zapgate_db_pool_size", "Connections the pool may hold.", "gauge")
        size.add_sample("zapgate_db_pool_size", {}, sum(s.size for s in statuses))
        used = Metric("zapgate_db_pool_checked_out", "Connections in use.", "gauge")
        used.add_sample("zapgate_db_pool_checked_out", {}, sum(s.checked_out for s in statuses))
        failures = Metric("zapgate_db_health_check_failures", "Failed database health checks.", "counter")
        failures.add_sample(
            "zapgate_db_health_check_failures_total", {}, sum(s.health_check_failures for s in statuses)
        )
        handles = Metric("zapgate_db_client_handles", "Client handles open (evicted after idling).", "gauge")
        handles.add_sample("zapgate_db_client_handles", {}, sum(s.handles for s in statuses))
        return [size, used, failures, handles]


_POOLS = _PoolCollector()
REGISTRY.register(_POOLS)


def track_pool(manager: _Pool) -> None:
    """Report `manager`'s pool in this process's metrics (for as long as it exists)."""
    _POOLS.managers.add(manager)


def process_text() -> str:
    """This process's metrics in Prometheus' text format."""
    return generate_latest(REGISTRY).decode()


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def merged_text(
    own: str, own_label: str, workers: Iterable[tuple[str, str | None]], sessions_by_status: dict[str, int]
) -> bytes:
    """One exposition of this process's metrics, the workers' and the registry's, series labelled by process."""
    families: dict[str, Metric] = {}

    def add(metric: Metric, process: str) -> None:
        family = families.get(metric.name)
        if family is None:
            family = families[metric.name] = Metric(metric.name, metric.documentation, metric.type)
        for sample in metric.samples:
            family.add_sample(sample.name, {**sample.labels, "process": process}, sample.value, sample.timestamp)

    for metric in text_string_to_metric_families(own):
        add(metric, own_label)
    alive = 0
    for worker_id, text in workers:
        alive += 1
        if text:
            for metric in text_string_to_metric_families(text):
                add(metric, worker_id)
    sessions = Metric("zapgate_sessions", "Sessions by status, over every client.", "gauge")
    for status, count in sorted(sessions_by_status.items()):
        sessions.add_sample("zapgate_sessions", {"status": status}, count)
    workers_alive = Metric("zapgate_workers_alive", "Workers with a recent heartbeat.", "gauge")
    workers_alive.add_sample("zapgate_workers_alive", {}, alive)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*families.values(), sessions, workers_alive]))
    return generate_latest(registry)
