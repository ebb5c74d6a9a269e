"""Request limits over HTTP: a request rate per API key, and addresses that keep guessing admin keys wait."""

from __future__ import annotations

import io

import httpx
from PIL import Image

from tests.acceptance.support import ADMIN, ADMIN_KEY, assert_problem, new_client, running_app
from zapgate.settings import Settings

WRONG = {"X-API-Key": "wrong-admin-key-0123456789"}


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 90)).save(out, "PNG")
    return out.getvalue()


async def test_an_api_key_over_its_request_rate_gets_429_with_retry_after(
    clear_zapgate_env: None, database_url: str
) -> None:
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url, request_rate=0.5, request_burst=3)
    async with running_app(settings, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as api:
        acme, beta = await new_client(api, "acme"), await new_client(api, "beta")
        for _ in range(3):
            assert (await api.get("/whatsapp/sessions", headers=acme)).status_code == 200
        refused = await api.post("/whatsapp/session", headers=acme, json={"sessionId": "s1"})
        problem = assert_problem(refused, 429, "too_many_requests")
        assert refused.headers["retry-after"] == "2" and problem["retryAfter"] == 2
        assert (await api.get("/whatsapp/sessions", headers=beta)).status_code == 200  # a bucket per key
        assert (await api.get("/admin/clients", headers=ADMIN)).status_code == 200  # the admin is not metered
        # the refused request did nothing
        assert (await api.get("/whatsapp/sessions", headers=beta)).json() == {"sessions": []}


async def test_sends_are_metered_too_on_their_fast_path(clear_zapgate_env: None, database_url: str) -> None:
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url, request_rate=0.5, request_burst=2)
    async with running_app(settings, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as api:
        acme = await new_client(api, "acme")
        body = {"sessionId": "nobody", "to": "5511999990001", "message": "hi"}
        answers = [await api.post("/whatsapp/send", headers=acme, json=body) for _ in range(3)]
        # well formed and authenticated: answered by api/hotpath.py (404, no such session) until the rate says no
        assert [a.status_code for a in answers] == [404, 404, 429]
        assert_problem(answers[2], 429, "too_many_requests")
        assert int(answers[2].headers["retry-after"]) >= 1


async def test_wrong_admin_keys_lock_their_address_out(clear_zapgate_env: None, database_url: str) -> None:
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url, admin_max_failures=3, admin_failure_window=60)
    async with running_app(settings, database_url) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as api:
            for _ in range(5):  # no key at all guesses nothing: not counted
                assert_problem(await api.get("/admin/clients"), 401)
            for _ in range(3):
                assert_problem(await api.get("/admin/clients", headers=WRONG), 401, "authentication_failed")
            locked = await api.get("/admin/clients", headers=ADMIN)  # even the right key, from there
            assert_problem(locked, 429, "too_many_failures")
            assert 55 <= int(locked.headers["retry-after"]) <= 60
            assert (await api.get("/health")).status_code == 200  # the rest of the service answers
        # another address is not held up
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=base_url, transport=transport) as elsewhere:
            assert (await elsewhere.get("/admin/clients", headers=ADMIN)).status_code == 200


async def test_addresses_that_keep_trying_bad_media_links_are_locked_out(
    clear_zapgate_env: None, database_url: str
) -> None:
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url, admin_max_failures=3, admin_failure_window=60)
    async with running_app(settings, database_url) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as api:
            acme = await new_client(api, "acme")
            assert (await api.post("/whatsapp/session", headers=acme, json={"sessionId": "s1"})).status_code == 201
            stored = await api.post(
                "/whatsapp/media", headers=acme, params={"sessionId": "s1"}, files={"file": ("a.png", png())}
            )
            url = httpx.URL(stored.json()["url"])
            assert (await api.get(url)).status_code == 200
            for _ in range(3):
                bad = url.copy_set_param("signature", "A" * 43)
                assert_problem(await api.get(bad), 401, "authentication_failed")
            locked = await api.get(url)  # even a good link, from there
            assert_problem(locked, 429, "too_many_failures")
            assert 55 <= int(locked.headers["retry-after"]) <= 60
            assert (await api.get("/health")).status_code == 200
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=base_url, transport=transport) as elsewhere:
            assert (await elsewhere.get(url)).status_code == 200
