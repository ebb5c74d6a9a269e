"""Client quotas over HTTP: sessions and webhooks a client may hold, the engines it may use, and the admin API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.acceptance.support import ADMIN, ADMIN_KEY, assert_problem, new_client, running_app
from zapgate.db import placements
from zapgate.db.manager import ConnectionManager
from zapgate.engines.base import SessionRef
from zapgate.services.sandbox import PostgresSandboxNetwork
from zapgate.settings import Settings

HOOK = {"url": "https://93.184.216.34/hooks/zapgate"}  # a literal public address: nothing to resolve


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        admin_key=ADMIN_KEY,
        database_url=database_url,
        default_engine="sandbox",
        max_sessions_per_client=2,
        max_webhooks_per_client=1,
    )
    async with running_app(settings, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        yield http


async def create(api: httpx.AsyncClient, headers: dict[str, str], session: str, **body: str) -> httpx.Response:
    return await api.post("/whatsapp/session", headers=headers, json={"sessionId": session, **body})


async def test_a_client_holds_at_most_its_quota_of_sessions_and_webhooks(api: httpx.AsyncClient) -> None:
    acme, beta = await new_client(api, "acme"), await new_client(api, "beta")
    for name in ("s1", "s2"):
        assert (await create(api, acme, name)).status_code == 201
    over = assert_problem(await create(api, acme, "s3"), 409, "quota_exceeded")
    assert (over["quota"], over["limit"]) == ("sessions", 2)
    assert (await create(api, beta, "s1")).status_code == 201  # another client's quota is its own

    assert (await api.post("/whatsapp/webhooks", headers=acme, json=HOOK)).status_code == 201
    over = assert_problem(await api.post("/whatsapp/webhooks", headers=acme, json=HOOK), 409, "quota_exceeded")
    assert (over["quota"], over["limit"]) == ("webhooks", 1)

    quotas = await api.get("/admin/clients/acme/quotas", headers=ADMIN)
    assert quotas.status_code == 200, quotas.text
    assert quotas.json() == {
        "clientId": "acme",
        "quotas": {"maxSessions": 2, "maxWebhooks": 1, "engines": ["whatsmeow", "sandbox"]},
        "overrides": {"maxSessions": None, "maxWebhooks": None, "engines": None},
        "usage": {"sessions": 2, "webhooks": 1},
    }

    raised = await api.patch("/admin/clients/acme/quotas", headers=ADMIN, json={"maxSessions": 3, "maxWebhooks": 5})
    assert raised.status_code == 200, raised.text
    assert raised.json()["quotas"]["maxSessions"] == 3 and raised.json()["overrides"]["maxWebhooks"] == 5
    assert (await create(api, acme, "s3")).status_code == 201
    assert assert_problem(await create(api, acme, "s4"), 409, "quota_exceeded")["limit"] == 3
    assert (await api.post("/whatsapp/webhooks", headers=acme, json=HOOK)).status_code == 201

    # lowered below what it holds: kept, and nothing new; null: the deployment's default again
    lowered = await api.patch("/admin/clients/acme/quotas", headers=ADMIN, json={"maxSessions": 0})
    assert lowered.json()["usage"]["sessions"] == 3
    assert (await api.get("/whatsapp/sessions/s3", headers=acme)).status_code == 200
    assert_problem(await create(api, acme, "s4"), 409, "quota_exceeded")
    reset = await api.patch("/admin/clients/acme/quotas", headers=ADMIN, json={"maxSessions": None})
    assert reset.json()["quotas"]["maxSessions"] == 2 and reset.json()["overrides"]["maxSessions"] is None
    assert (await api.delete("/whatsapp/sessions/s3", headers=acme)).status_code == 204
    assert (await api.delete("/whatsapp/sessions/s2", headers=acme)).status_code == 204
    assert (await create(api, acme, "s4")).status_code == 201


async def test_concurrent_creations_never_pass_the_quota(api: httpx.AsyncClient) -> None:
    acme = await new_client(api, "acme")
    await api.patch("/admin/clients/acme/quotas", headers=ADMIN, json={"maxSessions": 3})
    answers = await asyncio.gather(*(create(api, acme, f"s{n}") for n in range(12)))
    assert sorted(a.status_code for a in answers) == [201] * 3 + [409] * 9
    listed = await api.get("/whatsapp/sessions", headers=acme)
    assert len(listed.json()["sessions"]) == 3, listed.text


async def test_engines_turned_off_for_a_client(api: httpx.AsyncClient, database_url: str) -> None:
    acme, beta = await new_client(api, "acme"), await new_client(api, "beta")
    assert (await create(api, acme, "bot")).status_code == 201
    off = await api.patch("/admin/clients/acme/quotas", headers=ADMIN, json={"engines": ["whatsmeow"]})
    assert off.status_code == 200, off.text
    assert off.json()["quotas"]["engines"] == ["whatsmeow"]

    refused = assert_problem(await create(api, acme, "bot2"), 403, "engine_not_allowed")
    assert "sandbox" in refused["detail"]
    assert (await create(api, acme, "real", engine="whatsmeow")).status_code == 201
    assert (await create(api, beta, "bot")).status_code == 201  # other clients keep the sandbox

    # its sandbox session was stopped, and the sandbox routes refuse it (even linked)
    async with ConnectionManager(database_url, pool_size=1) as manager:
        async with manager.registry_transaction() as conn:
            placement = await placements.get(conn, "acme", "bot")
        assert placement is not None and placement.desired == "stopped"
        await PostgresSandboxNetwork(manager).link("5511999990001", SessionRef("acme", "bot"))
    inbound = {"sessionId": "bot", "from": "+44 7700 900123", "message": "hi"}
    assert_problem(await api.post("/whatsapp/sandbox/inbound", headers=acme, json=inbound), 403, "engine_not_allowed")
    assert_problem(await api.post("/whatsapp/sessions/bot/restart", headers=acme), 403, "engine_not_allowed")

    on = await api.patch("/admin/clients/acme/quotas", headers=ADMIN, json={"engines": None})
    assert on.json()["quotas"]["engines"] == ["whatsmeow", "sandbox"]
    assert (await api.post("/whatsapp/sandbox/inbound", headers=acme, json=inbound)).status_code == 202


async def test_quota_changes_are_checked(api: httpx.AsyncClient) -> None:
    await new_client(api, "acme")
    path = "/admin/clients/acme/quotas"
    for body in ({"maxSessions": -1}, {"maxWebhooks": "many"}, {"engines": ["telegram"]}, {"engines": []}, {}):
        assert_problem(await api.patch(path, headers=ADMIN, json=body), 422)
    assert_problem(await api.get("/admin/clients/nobody/quotas", headers=ADMIN), 404, "client_not_found")
    assert_problem(await api.patch("/admin/clients/nobody/quotas", headers=ADMIN, json={"maxSessions": 1}), 404)
    assert (await api.get(path, headers=ADMIN)).json()["overrides"]["maxSessions"] is None


async def test_an_engine_the_deployment_does_not_offer_is_refused(clear_zapgate_env: None, database_url: str) -> None:
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url, engines="sandbox")
    assert settings.default_engine == "sandbox"  # the first engine offered, when none was chosen
    async with running_app(settings, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as api:
        acme = await new_client(api, "acme")
        refused = assert_problem(await create(api, acme, "real", engine="whatsmeow"), 422, "engine_not_offered")
        assert "whatsmeow" in refused["detail"]
        assert (await create(api, acme, "bot")).status_code == 201
        quotas = await api.get("/admin/clients/acme/quotas", headers=ADMIN)
        assert quotas.json()["quotas"]["engines"] == ["sandbox"]
        # a client's list never widens what the deployment offers
        await api.patch("/admin/clients/acme/quotas", headers=ADMIN, json={"engines": ["whatsmeow", "sandbox"]})
        assert (await api.get("/admin/clients/acme/quotas", headers=ADMIN)).json()["quotas"]["engines"] == ["sandbox"]
