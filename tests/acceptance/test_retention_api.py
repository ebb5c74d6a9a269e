"""GET/PATCH /admin/clients/{clientId}/retention over real HTTP: the defaults, a client's own days, and refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.acceptance.support import ADMIN, ADMIN_KEY, assert_problem, new_client, running_app
from zapgate.settings import Settings


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url, retain_events_days=14)
    async with running_app(settings, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        yield http


async def test_a_clients_retention_starts_at_the_defaults_and_can_be_its_own(api: httpx.AsyncClient) -> None:
    await new_client(api, "acme")
    shown = await api.get("/admin/clients/acme/retention", headers=ADMIN)
    assert shown.status_code == 200, shown.text
    assert shown.json() == {
        "clientId": "acme",
        "eventsDays": 14,  # ZAPGATE_RETAIN_EVENTS_DAYS
        "auditDays": 90,
        "deliveriesDays": 30,
        "idempotencyDays": 1,
        "mediaDays": 0,  # media as long as their messages
        "overridden": [],
        "lastPrunedAt": None,
        "lastPruned": None,
    }

    changed = await api.patch("/admin/clients/acme/retention", headers=ADMIN, json={"eventsDays": 3, "auditDays": 0})
    assert changed.status_code == 200, changed.text
    assert changed.json()["eventsDays"] == 3 and changed.json()["auditDays"] == 0
    assert changed.json()["overridden"] == ["auditDays", "eventsDays"]
    assert (await api.get("/admin/clients/acme/retention", headers=ADMIN)).json() == changed.json()

    back = await api.patch("/admin/clients/acme/retention", headers=ADMIN, json={"eventsDays": None})
    assert back.json()["eventsDays"] == 14 and back.json()["overridden"] == ["auditDays"]
    media = await api.patch("/admin/clients/acme/retention", headers=ADMIN, json={"mediaDays": 7})
    assert media.json()["mediaDays"] == 7 and media.json()["overridden"] == ["auditDays", "mediaDays"]


async def test_retention_requests_that_cannot_be_are_refused(api: httpx.AsyncClient) -> None:
    await new_client(api, "acme")
    assert_problem(await api.get("/admin/clients/nobody/retention", headers=ADMIN), 404)
    assert_problem(await api.patch("/admin/clients/nobody/retention", headers=ADMIN, json={"eventsDays": 1}), 404)
    assert_problem(await api.get("/admin/clients/acme/retention"), 401)
    assert_problem(await api.get("/admin/clients/acme/retention", headers={"X-API-Key": "zg_wrong"}), 401)
    for body in ({"eventsDays": -1}, {"eventsDays": 36_501}, {"eventsDays": "x"}, {"weeks": 2}, {"eventsDays": 1.5}):
        assert_problem(await api.patch("/admin/clients/acme/retention", headers=ADMIN, json=body), 422)
    assert_problem(await api.get("/admin/clients/Bad-Id/retention", headers=ADMIN), 422)
