"""Webhooks over real HTTP: the API, and delivery to a real receiver on loopback (signed, retried, in order)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import signal
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.receiver import Received, Receiver, Reply, receiving
from tests.acceptance.support import (
    ADMIN_KEY,
    WorkerProcesses,
    api_client,
    assert_problem,
    free_port,
    new_client,
    running_app,
)
from tests.support.waiting import eventually
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.domain.events import EventType
from zapgate.domain.webhooks import AddressPolicy, RetryPolicy
from zapgate.services.webhook_dispatcher import WebhookDispatcher
from zapgate.settings import Settings

FAST_RETRY = RetryPolicy(max_attempts=5, base=0.05, cap=0.2)


# -- the README's verification snippet, as published ------------------------------------------------------------


def verify(secret: str, headers: Mapping[str, str], body: bytes, tolerance: int = 300) -> bool:
    """True when `body` was signed with `secret` less than `tolerance` seconds ago."""
    timestamp = headers.get("X-Zapgate-Timestamp", "")
    if not (timestamp.isascii() and timestamp.isdigit()) or abs(time.time() - int(timestamp)) > tolerance:
        return False  # unsigned, or too old: a replay ("²" is a digit to isdigit(), not to int())
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest().encode()
    signatures = [part.strip()[3:].encode() for part in headers.get("X-Zapgate-Signature", "").split(",")]
    return any(hmac.compare_digest(expected, signature) for signature in signatures)  # bytes: any text compares


def readme_verify() -> Any:
    """The `verify` of the README's Webhooks section, run as published."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = next(part for part in readme.split("```python\n")[1:] if "def verify(" in part).split("```")[0]
    namespace: dict[str, Any] = {}
    exec(block, namespace)
    return namespace["verify"]


@pytest.mark.parametrize(
    ("timestamp", "signature"),
    [("²", "v1=00"), ("1²", "v1=00"), ("\u0661\u0667" + "\u0660" * 8, "v1=00"), (None, "v1=ü"), (None, "v1=é, v1=😀")],
)
def test_the_readme_snippet_says_false_to_non_ascii_timestamps_and_signatures(
    timestamp: str | None, signature: str
) -> None:
    published = readme_verify()
    stamp = str(int(time.time())) if timestamp is None else timestamp
    headers = {"X-Zapgate-Timestamp": stamp, "X-Zapgate-Signature": signature}
    assert published("whsec_test_0123456789abcdef", headers, b"{}") is False


# -- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(database_url, webhook_allow_loopback=True) as http:
        yield http


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as started:
        yield started


@contextlib.asynccontextmanager
async def dispatching(database_url: str, **options: Any) -> AsyncIterator[WebhookDispatcher]:
    """An in-process dispatcher (as a worker runs it), allowed to reach loopback, with fast retries."""
    options = {"retry": FAST_RETRY, "timeout": 5.0, "sweep_interval": 1.0, **options}
    async with ConnectionManager(database_url, pool_size=4, health_interval=3600) as manager:
        dispatcher = WebhookDispatcher(manager, database_url, policy=AddressPolicy(allow_loopback=True), **options)
        await dispatcher.start()
        try:
            yield dispatcher
        finally:
            await dispatcher.close()


@pytest.fixture
async def dispatcher(database_url: str) -> AsyncIterator[WebhookDispatcher]:
    async with dispatching(database_url) as started:
        yield started


async def append(manager: ConnectionManager, client: str, events: list[tuple[str, str | None, dict[str, Any]]]) -> None:
    async def work(tx: Transaction) -> None:
        await tx.event.append_many(events)

    await manager.execute_transaction(client, work)


def received(n: int, session: str = "s1") -> list[tuple[str, str | None, dict[str, Any]]]:
    return [("message-received", session, {"n": i}) for i in range(n)]


async def create(api: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await api.post("/whatsapp/webhooks", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def deliveries(api: httpx.AsyncClient, headers: dict[str, str], hook: str, **params: Any) -> list[dict[str, Any]]:
    response = await api.get(f"/whatsapp/webhooks/{hook}/deliveries", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["deliveries"])


async def webhook_metrics(api: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await api.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        if family.name.startswith("zapgate_webhook")
        for sample in family.samples
    }


def failing(times: int, status: int = 503, **headers: str) -> Any:
    async def behaviour(request: Received, nth: int) -> Reply | None:
        return (status, headers, b"not now") if nth <= times else (200, {}, b"ok")

    return behaviour


# -- delivery -----------------------------------------------------------------------------------------------------


async def test_requests_are_signed_and_verify_with_the_readme_snippet(
    api: httpx.AsyncClient, manager: ConnectionManager, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    acme = await new_client(api, "acme")
    secret = "whsec_test_0123456789abcdef"
    hook = await create(api, acme, url=receiver.url("/hook"), secret=secret)
    assert hook["secret"] == secret and hook["secretHint"] == "…" + secret[-4:]
    await append(manager, "acme", [("status-change", "user123", {"status": "connected", "phoneNumber": "5511"})])
    [request] = await receiver.wait_for("/hook", 1)
    body = request.json
    assert body["type"] == "status-change" and body["sessionId"] == "user123" and body["status"] == "connected"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-zapgate-event-id"] == str(body["eventId"])
    assert request.headers["x-zapgate-event-type"] == "status-change"
    assert request.headers["x-zapgate-webhook-id"] == hook["id"]
    assert verify(secret, request.headers, request.body)
    published = readme_verify()
    assert published(secret, request.headers, request.body)
    assert not published(secret, request.headers, request.body + b" ")
    assert not verify("whsec_some_other_secret_000", request.headers, request.body)
    assert not verify(secret, request.headers, request.body + b" ")  # a changed body fails
    stale = httpx.Headers({**request.headers, "X-Zapgate-Timestamp": str(int(time.time()) - 3600)})
    assert not verify(secret, stale, request.body)  # an old (replayed) request fails

    # a rotation: both secrets sign during the overlap, each verifies
    rotated = await api.post(f"/whatsapp/webhooks/{hook['id']}/rotate-secret", headers=acme, json={})
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != secret and rotated.json()["previousSecretExpiresAt"]
    await append(manager, "acme", received(1))
    second = (await receiver.wait_for("/hook", 2))[1]
    assert second.headers["x-zapgate-signature"].count("v1=") == 2
    assert verify(new_secret, second.headers, second.body) and verify(secret, second.headers, second.body)
    # without overlap, the old secret stops signing at once
    await api.post(f"/whatsapp/webhooks/{hook['id']}/rotate-secret", headers=acme, json={"overlapSeconds": 0})
    await append(manager, "acme", received(1))
    third = (await receiver.wait_for("/hook", 3))[2]
    assert third.headers["x-zapgate-signature"].count("v1=") == 1
    assert not verify(new_secret, third.headers, third.body)


async def test_a_receiver_that_fails_twice_gets_the_event_after_retries(
    api: httpx.AsyncClient, manager: ConnectionManager, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    acme = await new_client(api, "acme")
    before = await webhook_metrics(api)
    hook = await create(api, acme, url=receiver.url("/flaky", failing(2, 503)))
    await append(manager, "acme", received(1))
    await receiver.wait_for("/flaky", 1)
    attempts = receiver.at("/flaky")
    assert [r.status for r in attempts] == [503, 503, 200]
    assert len({r.event_id for r in attempts}) == 1

    async def recorded() -> list[dict[str, Any]] | None:
        found = await deliveries(api, acme, hook["id"])
        return found if found and found[0]["status"] == "delivered" else None

    [delivery] = await eventually(recorded)
    assert delivery["attempts"] == 3 and delivery["lastStatusCode"] == 200 and delivery["responseBody"] == "ok"
    assert delivery["nextAttemptAt"] is None and delivery["deliveredAt"]

    # and /metrics counts them: outcomes, latency, and the pending deliveries (no client or webhook named)
    async def measured() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
        now = await webhook_metrics(api)
        return now if any(name == "zapgate_webhook_pending_deliveries" for name, _ in now) else None

    after = await eventually(measured)
    # by this webhook's id: a test of the labelled mode in the same process (its own "acme") leaves its series
    assert not [labels for (_, labels) in after if ("webhook", hook["id"]) in labels]

    def grown(name: str, **labels: str) -> float:
        def total(found: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
            return sum(v for (n, have), v in found.items() if n == name and set(labels.items()) <= have)

        return total(after) - total(before)

    assert grown("zapgate_webhook_deliveries_total", outcome="delivered") >= 1
    assert grown("zapgate_webhook_deliveries_total", outcome="retried") >= 2
    assert grown("zapgate_webhook_delivery_latency_seconds_count") >= 1


async def test_queue_depth_names_clients_and_webhooks_only_when_told(
    api: httpx.AsyncClient, manager: ConnectionManager, receiver: Receiver, database_url: str
) -> None:
    acme = await new_client(api, "acme")
    hook = await create(api, acme, url=receiver.url("/labelled"))
    async with dispatching(database_url, client_labels=True):
        await append(manager, "acme", received(1))
        await receiver.wait_for("/labelled", 1)

        async def labelled() -> bool:
            now = await webhook_metrics(api)
            wanted = {("client", "acme"), ("webhook", hook["id"])}
            return any(name == "zapgate_webhook_queue_depth" and wanted <= labels for name, labels in now)

        assert await eventually(labelled)


async def test_retry_after_and_connection_errors_are_retried(
    api: httpx.AsyncClient, manager: ConnectionManager, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    acme = await new_client(api, "acme")
    await create(api, acme, url=receiver.url("/busy", failing(1, 429, **{"Retry-After": "1"})))
    await append(manager, "acme", received(1))
    attempts = await receiver.wait_for("/busy", 1)
    first, second = receiver.at("/busy")
    assert first.status == 429 and second.status == 200 and attempts == [second]
    assert second.at - first.at >= 0.9  # Retry-After: 1 was honoured over the 0.05 s backoff


async def test_unreachable_endpoints_are_retried_then_dead_lettered(
    api: httpx.AsyncClient, manager: ConnectionManager, dispatcher: WebhookDispatcher
) -> None:
    acme = await new_client(api, "acme")
    hook = await create(api, acme, url=f"http://127.0.0.1:{free_port()}/nobody-listens")
    await append(manager, "acme", received(1))

    async def dead() -> list[dict[str, Any]]:
        return await deliveries(api, acme, hook["id"], status="dead")

    [given_up] = await eventually(dead)
    assert given_up["attempts"] == FAST_RETRY.max_attempts and given_up["lastStatusCode"] is None
    assert "ConnectError" in given_up["lastError"]


async def test_timeouts_are_retried(
    api: httpx.AsyncClient, manager: ConnectionManager, receiver: Receiver, database_url: str
) -> None:
    acme = await new_client(api, "acme")

    async def silent_once(request: Received, nth: int) -> Reply | None:
        return None if nth == 1 else (200, {}, b"ok")

    hook = await create(api, acme, url=receiver.url("/sleepy", silent_once))
    await append(manager, "acme", received(1))
    async with dispatching(database_url, timeout=1.0):
        await receiver.wait_for("/sleepy", 1)

        async def delivered() -> list[dict[str, Any]]:
            return await deliveries(api, acme, hook["id"], status="delivered")

        [done] = await eventually(delivered)
    assert done["attempts"] == 2 and [r.status for r in receiver.at("/sleepy")] == [None, 200]


async def test_a_4xx_dead_letters_at_once_and_can_be_redelivered(
    api: httpx.AsyncClient, manager: ConnectionManager, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    acme = await new_client(api, "acme")
    hook = await create(api, acme, url=receiver.url("/gone", failing(1, 400)))
    await append(manager, "acme", received(2))
    got = await receiver.wait_for("/gone", 1)  # the second event went on: a dead delivery blocks nothing
    assert [r.json["n"] for r in got] == [1]

    async def dead() -> list[dict[str, Any]]:
        return await deliveries(api, acme, hook["id"], status="dead")

    [failed] = await eventually(dead)
    assert failed["attempts"] == 1 and failed["lastStatusCode"] == 400 and failed["lastError"] == "HTTP 400"
    assert failed["responseBody"] == "not now" and failed["nextAttemptAt"] is None
    assert len(receiver.at("/gone")) == 2  # never retried
    again = await api.post(f"/whatsapp/webhooks/{hook['id']}/deliveries/{failed['id']}/redeliver", headers=acme)
    assert again.status_code == 202, again.text
    assert again.json()["status"] == "pending" and again.json()["eventId"] == failed["eventId"]
    got = await receiver.wait_for("/gone", 2)
    assert [r.json["n"] for r in got] == [1, 0]
    assert got[0].event_id == got[1].event_id + 1  # the same event as the dead delivery, sent again

    async def all_recorded() -> list[dict[str, Any]]:
        found = await deliveries(api, acme, hook["id"])
        return found if [d["status"] for d in found] == ["delivered", "delivered", "dead"] else []  # newest first

    await eventually(all_recorded)
    page = await api.get(f"/whatsapp/webhooks/{hook['id']}/deliveries", headers=acme, params={"limit": 2})
    assert len(page.json()["deliveries"]) == 2 and page.json()["nextCursor"]
    rest = await api.get(
        f"/whatsapp/webhooks/{hook['id']}/deliveries",
        headers=acme,
        params={"limit": 2, "cursor": page.json()["nextCursor"]},
    )
    assert [d["id"] for d in rest.json()["deliveries"]] == [failed["id"]] and rest.json()["nextCursor"] is None


async def test_an_answer_with_a_nul_byte_is_recorded_once_not_resent_every_lease(
    api: httpx.AsyncClient, manager: ConnectionManager, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    acme = await new_client(api, "acme")

    async def nul(request: Received, nth: int) -> Reply | None:
        return 400, {}, b"bad\x00request \xed\xa0\x80"  # a NUL byte, and a lone surrogate's UTF-8 bytes

    hook = await create(api, acme, url=receiver.url("/nul", nul))
    await append(manager, "acme", received(2))

    async def dead() -> list[dict[str, Any]]:
        return await deliveries(api, acme, hook["id"], status="dead")

    found = await eventually(lambda: _two(dead))
    assert {d["lastStatusCode"] for d in found} == {400} and all("\x00" not in d["responseBody"] for d in found)
    assert all(d["responseBody"].startswith("badrequest") and d["attempts"] == 1 for d in found)
    assert len(receiver.at("/nul")) == 2  # one request per event: the final 400 is not sent again


async def _two(listing: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await listing()
    return found if len(found) == 2 else []


async def test_order_per_webhook_holds_through_failures(
    api: httpx.AsyncClient, manager: ConnectionManager, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    acme = await new_client(api, "acme")

    async def moody(request: Received, nth: int) -> Reply | None:
        if nth % 7 == 3:
            return 500, {}, b"oops"
        if nth % 5 == 0:
            await asyncio.sleep(0.02)
        return 200, {}, b"ok"

    await create(api, acme, url=receiver.url("/ordered", moody))
    await create(api, acme, url=receiver.url("/plain"))
    for batch in range(6):
        await append(manager, "acme", [("message-received", "s1", {"n": batch * 50 + i}) for i in range(50)])
    for path in ("/ordered", "/plain"):
        acked = await receiver.wait_for(path, 300, within=120)
        assert [r.json["n"] for r in acked] == list(range(300)), path
        ids = [r.event_id for r in acked]
        assert ids == sorted(ids)


async def test_filters_deliver_only_what_they_name(
    api: httpx.AsyncClient, manager: ConnectionManager, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    acme = await new_client(api, "acme")
    await create(api, acme, url=receiver.url("/messages"), events=["message-received", "message-status"])
    await create(api, acme, url=receiver.url("/two"), sessions=["two"])
    await create(api, acme, url=receiver.url("/qr-of-one"), events=["qr-code"], sessions=["one"])
    await create(api, acme, url=receiver.url("/all"), events=["*"])
    off = await create(api, acme, url=receiver.url("/off"), enabled=False)
    assert off["enabled"] is False
    events: list[tuple[str, str | None, dict[str, Any]]] = [
        ("qr-code", "one", {"k": "qr1"}),
        ("message-received", "one", {"k": "m1"}),
        ("status-change", "two", {"k": "s2"}),
        ("message-status", "two", {"k": "ms2"}),
        ("qr-code", "two", {"k": "qr2"}),
        ("error", None, {"k": "e"}),
        ("pairing-code", "one", {"k": "p1"}),
    ]
    await append(manager, "acme", events)
    everything = await receiver.wait_for("/all", 7)
    assert [r.json["k"] for r in everything] == ["qr1", "m1", "s2", "ms2", "qr2", "e", "p1"]
    assert [r.json["k"] for r in await receiver.wait_for("/messages", 2)] == ["m1", "ms2"]
    assert [r.json["k"] for r in await receiver.wait_for("/two", 3)] == ["s2", "ms2", "qr2"]
    assert [r.json["k"] for r in await receiver.wait_for("/qr-of-one", 1)] == ["qr1"]
    # nothing more comes: a marker event that every enabled webhook without a filter would get, then a look
    await append(manager, "acme", [("error", "three", {"k": "marker"})])
    await receiver.wait_for("/all", 8)
    await asyncio.sleep(0.5)
    assert len(receiver.at("/messages")) == 2 and len(receiver.at("/two")) == 3
    assert len(receiver.at("/qr-of-one")) == 1 and receiver.at("/off") == []
    # enabled again, it receives what happens from then on (not what happened while it was off)
    enabled = await api.patch(f"/whatsapp/webhooks/{off['id']}", headers=acme, json={"enabled": True})
    assert enabled.status_code == 200 and enabled.json()["enabled"] is True
    await append(manager, "acme", [("error", None, {"k": "after"})])
    assert [r.json["k"] for r in await receiver.wait_for("/off", 1)] == ["after"]


async def test_a_blackholed_receiver_does_not_slow_a_healthy_one(
    api: httpx.AsyncClient, manager: ConnectionManager, receiver: Receiver, database_url: str
) -> None:
    acme = await new_client(api, "acme")
    globex = await new_client(api, "globex")

    async def black_hole(request: Received, nth: int) -> Reply | None:
        return None

    stuck = await create(api, acme, url=receiver.url("/void", black_hole))
    await create(api, acme, url=receiver.url("/healthy"))
    await create(api, globex, url=receiver.url("/other-client"))
    timeout = 30.0  # each attempt on the black hole takes this long
    async with dispatching(database_url, timeout=timeout, concurrency=4):
        started = time.monotonic()
        for _ in range(5):
            await append(manager, "acme", received(20))
            await append(manager, "globex", received(20))
        await receiver.wait_for("/healthy", 100, within=timeout / 2)
        await receiver.wait_for("/other-client", 100, within=timeout / 2)
        assert time.monotonic() - started < timeout / 2  # while the black hole still holds its first request
        assert len(receiver.at("/void")) == 1  # one request at a time per webhook
        # the API answers meanwhile too
        listed = await deliveries(api, acme, stuck["id"], status="pending", limit=500)
        assert len(listed) == 100 and all(d["attempts"] == 0 for d in listed)


async def test_a_worker_that_stops_hands_its_leases_back(
    api: httpx.AsyncClient, manager: ConnectionManager, receiver: Receiver, database_url: str
) -> None:
    acme = await new_client(api, "acme")

    async def slow(request: Received, nth: int) -> Reply | None:
        await asyncio.sleep(0.1)
        return 200, {}, b"ok"

    await create(api, acme, url=receiver.url("/slow", slow))
    await append(manager, "acme", received(40))
    async with dispatching(database_url, timeout=30.0):
        await receiver.wait_for("/slow", 3)
    taken = len(receiver.at("/slow"))
    async with dispatching(database_url, timeout=30.0):  # picks up at once, not after the 65 s lease
        got = await receiver.wait_for("/slow", 40, within=30)
    assert [r.json["n"] for r in got] == list(range(40)) and taken < 40


# -- the API ---------------------------------------------------------------------------------------------------


async def test_webhook_lifecycle(api: httpx.AsyncClient) -> None:
    acme = await new_client(api, "acme")
    created = await create(
        api, acme, url="http://127.0.0.1:9/hook", events=["message-received"], sessions=["b", "a"], description="bot"
    )
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40
    assert created["events"] == ["message-received"] and created["sessions"] == ["a", "b"]
    assert created["enabled"] is True and created["description"] == "bot"
    hook = created["id"]
    shown = (await api.get(f"/whatsapp/webhooks/{hook}", headers=acme)).json()
    assert "secret" not in shown and shown["secretHint"] == "…" + created["secret"][-4:]
    listed = (await api.get("/whatsapp/webhooks", headers=acme)).json()["webhooks"]
    assert [w["id"] for w in listed] == [hook] and "secret" not in listed[0]
    patched = await api.patch(
        f"/whatsapp/webhooks/{hook}", headers=acme, json={"events": None, "url": "https://127.0.0.1/x"}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["events"] is None and patched.json()["sessions"] == ["a", "b"]
    assert patched.json()["url"] == "https://127.0.0.1/x"
    assert (await api.delete(f"/whatsapp/webhooks/{hook}", headers=acme)).status_code == 204
    assert_problem(await api.get(f"/whatsapp/webhooks/{hook}", headers=acme), 404, "webhook_not_found")
    assert (await api.get("/whatsapp/webhooks", headers=acme)).json()["webhooks"] == []
    spec = (await api.get("/openapi.json")).json()
    assert "/whatsapp/webhooks/{webhookId}/deliveries/{deliveryId}/redeliver" in spec["paths"]
    assert "CreateWebhookRequest" in spec["components"]["schemas"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"url": "ftp://example.com/x"}, "only http and https"),
        ({"url": "not a url"}, "only http and https"),
        ({"url": "http://"}, "a host is expected"),
        ({"url": "https://user:pw@example.com/x"}, "credentials"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "metadata"),
        ({"url": "http://[fd00:ec2::254]/"}, "metadata"),
        ({"url": "http://metadata.google.internal/computeMetadata/v1/"}, "metadata"),
        ({"url": "http://10.1.2.3/hook"}, "private"),
        ({"url": "http://192.168.0.10/hook"}, "private"),
        ({"url": "http://[fe80::1]/hook"}, "link-local"),
        ({"url": "http://0.0.0.0/hook"}, "not a unicast"),
        ({"url": "http://127.0.0.1:9/hook", "events": ["message-sent"]}, "events.0"),
        ({"url": "http://127.0.0.1:9/hook", "events": []}, "events"),
        ({"url": "http://127.0.0.1:9/hook", "sessions": ["a b"]}, "invalid session id"),
        ({"url": "http://127.0.0.1:9/hook", "secret": "short"}, "secret"),
        ({"url": "http://127.0.0.1:9/hook", "colour": "blue"}, "colour"),
        ({}, "url"),
    ],
)
async def test_bad_webhook_input_is_422_with_a_reason(
    api: httpx.AsyncClient, body: dict[str, Any], reason: str
) -> None:
    acme = await new_client(api, "acme")
    problem = assert_problem(await api.post("/whatsapp/webhooks", headers=acme, json=body), 422)
    assert reason in problem["detail"], problem


async def test_a_nul_byte_in_a_webhook_is_stored_without_it_or_refused(api: httpx.AsyncClient) -> None:
    acme = await new_client(api, "acme")
    created = await api.post(
        "/whatsapp/webhooks", headers=acme, json={"url": "https://example.com/hook", "description": "a\u0000b"}
    )
    assert created.status_code == 201, created.text
    assert created.json()["description"] == "ab"
    hook = created.json()["id"]
    patched = await api.patch(f"/whatsapp/webhooks/{hook}", headers=acme, json={"description": "\u0000c"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["description"] == "c"
    escaped = json.dumps({"description": "c\ud800"})  # a lone surrogate, as JSON may carry it
    surrogate = await api.patch(
        f"/whatsapp/webhooks/{hook}", headers={**acme, "Content-Type": "application/json"}, content=escaped
    )
    assert_problem(surrogate, 422, "validation_failed")
    refused = await api.post("/whatsapp/webhooks", headers=acme, json={"url": "https://example.com/a\u0000b"})
    problem = assert_problem(refused, 422)
    assert "database" not in problem["detail"].lower() and "0x00" not in problem["detail"]


async def test_loopback_is_refused_unless_allowed(clear_zapgate_env: None, database_url: str) -> None:
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url)
    async with running_app(settings, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as api:
        acme = await new_client(api, "acme")
        for url in (
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://[::1]/hook",
            "http://[::ffff:127.0.0.1]/",
        ):
            problem = assert_problem(await api.post("/whatsapp/webhooks", headers=acme, json={"url": url}), 422)
            assert "loopback" in problem["detail"] and "ZAPGATE_WEBHOOK_ALLOW_LOOPBACK" in problem["detail"]
        created = await api.post("/whatsapp/webhooks", headers=acme, json={"url": "https://93.184.215.14/hook"})
        assert created.status_code == 201, created.text
        hook = created.json()["id"]
        patched = await api.patch(f"/whatsapp/webhooks/{hook}", headers=acme, json={"url": "http://127.0.0.1/x"})
        assert "loopback" in assert_problem(patched, 422)["detail"]


async def test_delivery_rechecks_the_address_at_connect_time(
    api: httpx.AsyncClient, manager: ConnectionManager, receiver: Receiver, database_url: str
) -> None:
    acme = await new_client(api, "acme")
    hook = await create(api, acme, url=receiver.url("/rebound").replace("127.0.0.1", "localhost"))
    await append(manager, "acme", received(1))
    async with ConnectionManager(database_url, pool_size=2, health_interval=3600) as own:
        strict = WebhookDispatcher(own, database_url, policy=AddressPolicy(), retry=FAST_RETRY, sweep_interval=1.0)
        await strict.start()
        try:

            async def refused() -> list[dict[str, Any]]:
                found = await deliveries(api, acme, hook["id"])
                return found if found and found[0]["attempts"] >= 1 else []

            [attempted] = await eventually(refused)
        finally:
            await strict.close()
    assert "refused destination" in attempted["lastError"] and "loopback" in attempted["lastError"]
    assert attempted["lastStatusCode"] is None and receiver.at("/rebound") == []


async def test_two_clients_are_isolated(
    api: httpx.AsyncClient, manager: ConnectionManager, receiver: Receiver, dispatcher: WebhookDispatcher
) -> None:
    acme, globex = await new_client(api, "acme"), await new_client(api, "globex")
    mine = await create(api, acme, url=receiver.url("/acme"))
    await create(api, globex, url=receiver.url("/globex"))
    await append(manager, "acme", [("error", None, {"who": "acme"})])
    await append(manager, "globex", [("error", None, {"who": "globex"})])
    assert [r.json["who"] for r in await receiver.wait_for("/acme", 1)] == ["acme"]
    assert [r.json["who"] for r in await receiver.wait_for("/globex", 1)] == ["globex"]
    [delivery] = await eventually(lambda: deliveries(api, acme, mine["id"], status="delivered"))
    hook = mine["id"]
    for method, path, body in [
        ("GET", f"/whatsapp/webhooks/{hook}", None),
        ("PATCH", f"/whatsapp/webhooks/{hook}", {"enabled": False}),
        ("DELETE", f"/whatsapp/webhooks/{hook}", None),
        ("POST", f"/whatsapp/webhooks/{hook}/rotate-secret", {}),
        ("GET", f"/whatsapp/webhooks/{hook}/deliveries", None),
        ("POST", f"/whatsapp/webhooks/{hook}/deliveries/{delivery['id']}/redeliver", None),
    ]:
        response = await api.request(method, path, headers=globex, json=body)
        assert_problem(response, 404, "webhook_not_found")
    assert [w["url"] for w in (await api.get("/whatsapp/webhooks", headers=globex)).json()["webhooks"]] == [
        receiver.url("/globex")
    ]
    assert_problem(await api.get("/whatsapp/webhooks"), 401)
    await asyncio.sleep(0.3)
    assert len(receiver.at("/acme")) == 1 and len(receiver.at("/globex")) == 1
    unknown = await api.post(f"/whatsapp/webhooks/{hook}/deliveries/999999/redeliver", headers=acme)
    assert_problem(unknown, 404, "delivery_not_found")
    assert json.loads((await api.get(f"/whatsapp/webhooks/{hook}", headers=acme)).text)["enabled"] is True


# -- worker processes ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_sigkill_mid_delivery_loses_nothing(
    api: httpx.AsyncClient, manager: ConnectionManager, receiver: Receiver, database_url: str, tmp_path: Path
) -> None:
    acme = await new_client(api, "acme")
    workers = WorkerProcesses(database_url, tmp_path)
    try:
        await _kill_mid_delivery(api, acme, manager, receiver, workers)
    finally:
        await workers.close()


async def _kill_mid_delivery(
    api: httpx.AsyncClient,
    acme: dict[str, str],
    manager: ConnectionManager,
    receiver: Receiver,
    workers: WorkerProcesses,
) -> None:
    async def slowish(request: Received, nth: int) -> Reply | None:
        await asyncio.sleep(0.01)
        return 200, {}, b"ok"

    hooks = [await create(api, acme, url=receiver.url(f"/w{i}", slowish)) for i in range(3)]
    workers.env.update(
        ZAPGATE_WEBHOOK_ALLOW_LOOPBACK="true",
        ZAPGATE_WEBHOOK_TIMEOUT="2",  # a dead worker's leases run out after 2 * 2 + 5 s
        ZAPGATE_WEBHOOK_BACKOFF_BASE="0.1",
        ZAPGATE_WEBHOOK_BACKOFF_MAX="0.5",
    )
    victim = await workers.start()
    for batch in range(10):
        await append(manager, "acme", [("message-received", "s1", {"n": batch * 30 + i}) for i in range(30)])
    await receiver.wait_for("/w0", 20, within=60)
    victim.kill()  # SIGKILL mid-delivery: requests in flight, outcomes unrecorded, runs leased
    assert await victim.wait() == -signal.SIGKILL
    assert len(receiver.at("/w0")) < 300
    await workers.start()
    for path in ("/w0", "/w1", "/w2"):
        await receiver.wait_until(
            lambda p=path: len({r.json["n"] for r in receiver.at(p, acknowledged=True)}) == 300, within=120
        )
        acked = receiver.at(path, acknowledged=True)
        firsts = list(dict.fromkeys(r.json["n"] for r in acked))
        assert firsts == list(range(300)), path  # each arrived, first arrivals in order; redeliveries only of
        # what the dead worker had sent without recording it

    async def all_delivered() -> bool:
        for hook in hooks:
            listed = await deliveries(api, acme, hook["id"], limit=500)
            if len(listed) != 300 or any(d["status"] != "delivered" for d in listed):
                return False
        return True

    await eventually(all_delivered, within=30)


async def test_a_webhook_can_ask_for_every_event_by_name(api: httpx.AsyncClient) -> None:
    acme = await new_client(api, "acme")
    every = [kind.value for kind in EventType]
    assert "contact-update" in every
    created = await api.post("/whatsapp/webhooks", headers=acme, json={"url": "https://example.com/h", "events": every})
    assert created.status_code == 201, created.text
    assert sorted(created.json()["events"]) == sorted(every)
    problem = assert_problem(
        await api.post(
            "/whatsapp/webhooks", headers=acme, json={"url": "https://example.com/h", "events": ["message-sent"]}
        ),
        422,
    )
    assert "message-edited" in problem["detail"]  # the refusal lists what there is
