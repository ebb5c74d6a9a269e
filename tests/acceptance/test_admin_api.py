"""The admin and health API over real HTTP: the app served by uvicorn on loopback, a fresh database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.acceptance.support import ADMIN, ADMIN_KEY, BAD_CLIENT_IDS, assert_problem, client_schemas, running_app
from zapgate.db.manager import ConnectionManager
from zapgate.services.worker import Worker
from zapgate.settings import Settings

# every admin route, with a client id where it takes one
ADMIN_ROUTES = [
    ("POST", "/admin/clients", {"clientId": "acme"}),
    ("GET", "/admin/clients", None),
    ("POST", "/admin/clients/acme/rotate-key", None),
    ("DELETE", "/admin/clients/acme", None),
    ("GET", "/admin/health/clients/acme", None),
    ("GET", "/admin/clients/acme/quotas", None),
    ("PATCH", "/admin/clients/acme/quotas", {"maxSessions": 1}),
]


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app running with an admin key on the per-test database."""
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url)
    async with running_app(settings, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        yield http


async def listed_ids(api: httpx.AsyncClient) -> list[str]:
    response = await api.get("/admin/clients", headers=ADMIN)
    assert response.status_code == 200, response.text
    return [client["clientId"] for client in response.json()["clients"]]


async def test_client_lifecycle(api: httpx.AsyncClient, database_url: str) -> None:
    created = await api.post("/admin/clients", json={"clientId": "acme"}, headers=ADMIN)
    assert created.status_code == 201, created.text
    issued = created.json()
    assert issued["clientId"] == "acme"
    assert issued["apiKey"].startswith("zg_")
    assert issued["keyPrefix"] == issued["apiKey"][:10]
    assert await client_schemas(database_url) == ["client_acme"]

    again = await api.post("/admin/clients", json={"clientId": "acme"}, headers=ADMIN)
    assert "acme" in assert_problem(again, 409, "client_exists")["detail"]

    listing = await api.get("/admin/clients", headers=ADMIN)
    assert listing.status_code == 200
    assert [(c["clientId"], c["keyPrefixes"]) for c in listing.json()["clients"]] == [("acme", [issued["keyPrefix"]])]
    assert issued["apiKey"] not in listing.text

    rotated = await api.post("/admin/clients/acme/rotate-key", headers=ADMIN)
    assert rotated.status_code == 200, rotated.text
    new_key = rotated.json()["apiKey"]
    assert new_key.startswith("zg_")
    assert new_key != issued["apiKey"]
    relisted = (await api.get("/admin/clients", headers=ADMIN)).json()["clients"]
    assert relisted[0]["keyPrefixes"] == [new_key[:10]]  # the old key is gone

    deleted = await api.delete("/admin/clients/acme", headers=ADMIN)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert await listed_ids(api) == []
    assert await client_schemas(database_url) == []

    assert_problem(await api.delete("/admin/clients/acme", headers=ADMIN), 404, "client_not_found")
    assert_problem(await api.post("/admin/clients/acme/rotate-key", headers=ADMIN), 404, "client_not_found")


async def test_admin_routes_need_the_admin_key(api: httpx.AsyncClient) -> None:
    wrong_key = "wrong-admin-key-0123456789"
    refused: list[dict[str, str]] = [
        {},
        {"X-API-Key": wrong_key},
        {"Authorization": f"Bearer {wrong_key}"},
        {"Authorization": ADMIN_KEY},  # the right key without its scheme
    ]
    for headers in refused:
        for method, path, body in ADMIN_ROUTES:
            response = await api.request(method, path, json=body, headers=headers)
            assert_problem(response, 401, "authentication_failed")
            assert response.headers["www-authenticate"].lower().startswith("bearer")
    assert await listed_ids(api) == []  # the refused POSTs created nothing


async def test_the_admin_key_works_as_a_bearer_token(api: httpx.AsyncClient) -> None:
    bearer = {"Authorization": f"Bearer {ADMIN_KEY}"}
    created = await api.post("/admin/clients", json={"clientId": "acme"}, headers=bearer)
    assert created.status_code == 201, created.text
    listing = await api.get("/admin/clients", headers={"Authorization": f"bearer {ADMIN_KEY}"})
    assert listing.status_code == 200, listing.text
    assert [c["clientId"] for c in listing.json()["clients"]] == ["acme"]


async def test_without_an_admin_key_configured_the_admin_api_is_disabled(
    clear_zapgate_env: None, database_url: str
) -> None:
    settings = Settings(admin_key=None, database_url=database_url)
    async with running_app(settings, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        for headers in ({}, ADMIN):
            for method, path, body in ADMIN_ROUTES:
                response = await http.request(method, path, json=body, headers=headers)
                problem = assert_problem(response, 403, "permission_denied")
                assert "ZAPGATE_ADMIN_KEY" in problem["detail"], (method, path, problem)
        assert (await http.get("/health")).status_code == 200  # the rest of the service runs
    assert await client_schemas(database_url) == []


def field_errors(problem: dict[str, Any]) -> list[str]:
    assert isinstance(problem.get("errors"), list) and problem["errors"], problem
    return [error["field"] for error in problem["errors"]]


async def test_bad_client_ids_in_the_body_are_refused_field_by_field(api: httpx.AsyncClient, database_url: str) -> None:
    for bad in BAD_CLIENT_IDS:
        response = await api.post("/admin/clients", json={"clientId": bad}, headers=ADMIN)
        problem = assert_problem(response, 422, "validation_failed")
        assert field_errors(problem) == ["clientId"], (bad, problem)
    assert await listed_ids(api) == []
    assert await client_schemas(database_url) == []


MALFORMED_BODIES: list[tuple[object, list[str] | None]] = [
    ({"clientId": "acme", "plan": "gold"}, ["plan"]),  # unknown field
    ({}, ["clientId"]),
    ({"client_id_typo": "acme"}, None),
    ({"clientId": 42}, ["clientId"]),
    ({"clientId": None}, ["clientId"]),
    ({"clientId": ["acme"]}, ["clientId"]),
    (["acme"], None),  # not an object
]


async def test_malformed_bodies_are_refused(api: httpx.AsyncClient, database_url: str) -> None:
    for body, fields in MALFORMED_BODIES:
        response = await api.post("/admin/clients", json=body, headers=ADMIN)
        problem = assert_problem(response, 422, "validation_failed")
        found = field_errors(problem)
        if fields is not None:
            assert found == fields, (body, problem)
    assert await listed_ids(api) == []
    assert await client_schemas(database_url) == []


async def test_invalid_json_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/admin/clients", content=b'{"clientId": "acme"', headers={**ADMIN, "Content-Type": "application/json"}
    )
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["errors"], problem
    assert await listed_ids(api) == []


# the empty id is a different URL (/admin/clients/), so it cannot reach the client id check
PATH_BAD_IDS = [bad for bad in BAD_CLIENT_IDS if bad]


def encoded(client: str) -> str:
    """Percent-encode `client` as one path segment (dots too, so that ".." is not read as "up one level")."""
    return quote(client, safe="").replace(".", "%2E")


async def test_bad_client_ids_in_the_path_are_refused(api: httpx.AsyncClient, database_url: str) -> None:
    for method, template in [
        ("DELETE", "/admin/clients/{}"),
        ("POST", "/admin/clients/{}/rotate-key"),
        ("GET", "/admin/health/clients/{}"),
    ]:
        for bad in PATH_BAD_IDS:
            response = await api.request(method, template.format(encoded(bad)), headers=ADMIN)
            problem = assert_problem(response, 422, "invalid_client_id")
            assert "expected 1-48 characters" in problem["detail"], (method, bad, problem)
    assert await listed_ids(api) == []
    assert await client_schemas(database_url) == []


async def test_client_health(api: httpx.AsyncClient) -> None:
    assert (await api.post("/admin/clients", json={"clientId": "acme"}, headers=ADMIN)).status_code == 201

    healthy = await api.get("/admin/health/clients/acme", headers=ADMIN)
    assert healthy.status_code == 200, healthy.text
    body = healthy.json()
    assert body["healthy"] is True
    assert body["revision"]
    assert body["schemaName"] == "client_acme"
    assert body["error"] is None

    missing = await api.get("/admin/health/clients/ghost", headers=ADMIN)
    assert missing.status_code == 200, missing.text
    body = missing.json()
    assert body["healthy"] is False
    assert body["revision"] is None
    assert body["error"]
    assert await listed_ids(api) == ["acme"]  # asking about a client does not create it


async def test_health_and_readiness_need_no_key(api: httpx.AsyncClient, database_url: str) -> None:
    health = await api.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}

    # no worker yet: sessions could not run
    waiting = await api.get("/health/ready")
    assert waiting.status_code == 503, waiting.text
    assert waiting.json()["checks"]["database"] == "ok"
    assert "no live worker" in waiting.json()["checks"]["workers"]
    async with ConnectionManager(database_url, pool_size=2) as manager:
        worker = Worker(manager, database_url, ("sandbox",))
        await worker.start()
        try:
            ready = await api.get("/health/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json() == {"status": "ready", "checks": {"database": "ok", "workers": "1 alive"}}
        finally:
            await worker.close()
    gone = await api.get("/health/ready")  # a worker that stops says goodbye at once
    assert gone.status_code == 503


async def test_unknown_routes_answer_problem_json(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get("/nowhere"), 404)
    assert_problem(await api.put("/health"), 405)
