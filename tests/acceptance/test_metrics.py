"""GET /metrics: one valid Prometheus exposition of the API process, every live worker and the registry."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.support import ADMIN_KEY, linked, new_client, running_app
from tests.support.waiting import eventually
from zapgate.db.manager import ConnectionManager
from zapgate.services.worker import Worker
from zapgate.settings import Settings


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        admin_key=ADMIN_KEY, database_url=database_url, default_engine="sandbox", send_rate=0, lease_ttl=1.5
    )
    async with running_app(settings, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        yield http


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    names = set()
    for family in text_string_to_metric_families(text):
        assert family.name not in names, f"family {family.name} twice"
        names.add(family.name)
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def total(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (sample, have), value in found.items() if sample == name and wanted <= have)


async def test_metrics_cover_the_gateway(api: httpx.AsyncClient, database_url: str) -> None:
    acme = await new_client(api, "acme")
    async with ConnectionManager(database_url, pool_size=3) as manager:
        worker = Worker(manager, database_url, ("sandbox",), qr_timeout=30, poll_interval=0.2, lease_ttl=1.5)
        await worker.start()
        try:
            await linked(api, acme, "alice", "5511988880001")
            assert (await api.post("/whatsapp/session", headers=acme, json={"sessionId": "idle"})).status_code == 201
            for i in range(3):
                send = {"sessionId": "alice", "to": "5511988880002", "message": f"m{i}"}
                assert (await api.post("/whatsapp/send", headers=acme, json=send)).status_code == 202

            async def sent_and_published() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
                response = await api.get("/metrics")
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/plain")
                found = samples(response.text)
                by_worker = total(found, "zapgate_messages_total", process=worker.worker_id, status="sent")
                # counters are the process's, and earlier tests of this process sent too: a heartbeat taken before
                # alice was hosted could already count 3 sends
                hosted = total(found, "zapgate_hosted_sessions", process=worker.worker_id)
                return found if by_worker >= 3 and hosted >= 1 else {}

            found = await eventually(sent_and_published, within=30)
        finally:
            await worker.close()
    api_process = next(
        dict(labels)["process"]
        for (name, labels), _ in found.items()
        if dict(labels).get("process", "").startswith("api-")
    )
    assert total(found, "zapgate_messages_total", process=api_process, status="accepted") >= 3
    assert total(found, "zapgate_sessions", status="connected") == 1
    assert total(found, "zapgate_sessions") == 2
    assert total(found, "zapgate_workers_alive") == 1
    assert total(found, "zapgate_send_latency_seconds_count", process=worker.worker_id) >= 3
    assert total(found, "zapgate_send_accept_seconds_count", process=api_process) >= 3
    assert total(found, "zapgate_events_published_total", type="status-change") >= 1
    assert total(found, "zapgate_hosted_sessions", process=worker.worker_id) >= 1  # as of its last heartbeat
    assert total(found, "zapgate_db_pool_size", process=api_process) > 0
    assert ("zapgate_outbound_queue_depth", frozenset({("process", worker.worker_id)})) in found
    assert ("zapgate_db_health_check_failures_total", frozenset({("process", api_process)})) in found
    # no client's data in the metrics
    assert "acme" not in (await api.get("/metrics")).text


async def test_a_metrics_key_guards_the_metrics(clear_zapgate_env: None, database_url: str) -> None:
    key = "metrics-key-0123456789"
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url, metrics_key=key)
    async with running_app(settings, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"X-API-Key": ADMIN_KEY}):
            refused = await http.get("/metrics", headers=headers)
            assert refused.status_code == 401 and "zapgate_" not in refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
        for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
            scraped = await http.get("/metrics", headers=headers)
            assert scraped.status_code == 200 and "zapgate_" in scraped.text
