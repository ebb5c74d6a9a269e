"""POST /whatsapp/send over real HTTP: Idempotency-Key, the per-session rate limit (across API processes), 409."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.acceptance.support import ADMIN_KEY, assert_problem, new_client, running_app
from tests.support.databases import plain_url
from zapgate.api.schemas import MessageAccepted
from zapgate.settings import Settings

SEND = {"sessionId": "s1", "to": "5511999999999", "message": "hello"}


@contextlib.asynccontextmanager
async def api_process(database_url: str, **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url, default_engine="sandbox", **overrides)
    async with running_app(settings, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        yield http


async def pending_count(database_url: str, schema: str) -> int:
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".messages'))  # test's own schema name
    finally:
        await conn.close()


async def test_idempotency_key_replays_the_first_result(clear_zapgate_env: None, database_url: str) -> None:
    async with api_process(database_url, send_rate=0) as api:
        acme = await new_client(api, "acme")
        assert (await api.post("/whatsapp/session", headers=acme, json={"sessionId": "s1"})).status_code == 201
        keyed = {**acme, "Idempotency-Key": "order-1001"}
        first = await api.post("/whatsapp/send", headers=keyed, json=SEND)
        assert first.status_code == 202 and "Idempotent-Replayed" not in first.headers
        accepted = MessageAccepted.model_validate(first.json())  # the documented body, built by hand
        assert accepted.session_id == "s1" and accepted.status == "pending"
        assert first.json()["timestamp"].endswith("Z")
        again = await api.post("/whatsapp/send", headers=keyed, json=SEND)
        assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
        # ten concurrent retries of a new key: one message
        racing = {**acme, "Idempotency-Key": "order-1002"}
        answers = await asyncio.gather(*(api.post("/whatsapp/send", headers=racing, json=SEND) for _ in range(10)))
        assert {r.status_code for r in answers} == {202}
        assert len({r.json()["messageId"] for r in answers}) == 1
        assert await pending_count(database_url, "client_acme") == 2
        # the same key for another request is refused; another client's same key is its own
        other = await api.post("/whatsapp/send", headers=keyed, json={**SEND, "message": "different"})
        assert_problem(other, 422, "idempotency_key_reused")
        globex = await new_client(api, "globex")
        assert (await api.post("/whatsapp/session", headers=globex, json={"sessionId": "s1"})).status_code == 201
        theirs = await api.post("/whatsapp/send", headers={**globex, "Idempotency-Key": "order-1001"}, json=SEND)
        assert theirs.status_code == 202 and theirs.json()["messageId"] != first.json()["messageId"]
        # a refused request stores nothing: the key works once the request can succeed
        bad = await api.post("/whatsapp/send", headers={**acme, "Idempotency-Key": "k3"}, json={**SEND, "to": "12"})
        assert_problem(bad, 422)
        for key in (b"", b"x" * 256, "naïve".encode(), b"tab\there"):
            headers: dict[str, str | bytes] = {**acme, "Idempotency-Key": key}
            assert_problem(await api.post("/whatsapp/send", headers=headers, json=SEND), 422)


async def test_the_rate_limit_holds_across_api_processes(clear_zapgate_env: None, database_url: str) -> None:
    async with (
        api_process(database_url, send_rate=1, send_burst=5) as one,
        api_process(database_url, send_rate=1, send_burst=5) as two,
    ):
        acme = await new_client(one, "acme")
        for sid in ("s1", "s2"):
            assert (await one.post("/whatsapp/session", headers=acme, json={"sessionId": sid})).status_code == 201
        answers = []
        for i in range(8):
            api = one if i % 2 == 0 else two
            answers.append(await api.post("/whatsapp/send", headers=acme, json=SEND))
        assert [r.status_code for r in answers] == [202] * 5 + [429] * 3
        limited = answers[-1]
        assert_problem(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["Retry-After"]) <= 2
        # another session has its own budget
        other = await two.post("/whatsapp/send", headers=acme, json={**SEND, "sessionId": "s2"})
        assert other.status_code == 202
        # refused sends stored nothing
        assert await pending_count(database_url, "client_acme") == 6
        await asyncio.sleep(float(limited.headers["Retry-After"]) + 0.1)
        assert (await one.post("/whatsapp/send", headers=acme, json=SEND)).status_code == 202


@pytest.mark.parametrize("status", ["logged_out", "failed"])
async def test_a_session_that_cannot_send_is_409_with_its_state(
    clear_zapgate_env: None, database_url: str, status: str
) -> None:
    async with api_process(database_url) as api:
        acme = await new_client(api, "acme")
        assert (await api.post("/whatsapp/session", headers=acme, json={"sessionId": "s1"})).status_code == 201
        conn = await asyncpg.connect(plain_url(database_url))
        try:
            await conn.execute("UPDATE client_acme.sessions SET status = $1", status)
        finally:
            await conn.close()
        refused = await api.post("/whatsapp/send", headers=acme, json=SEND)
        problem = assert_problem(refused, 409, "session_not_connected")
        assert status in problem["detail"]


async def test_a_revoked_key_stops_working_in_every_api_process(clear_zapgate_env: None, database_url: str) -> None:
    async with api_process(database_url) as one, api_process(database_url) as two:
        acme = await new_client(one, "acme")
        for api in (one, two):  # both processes now remember the key
            assert (await api.get("/whatsapp/sessions", headers=acme)).status_code == 200
        rotated = await one.post("/admin/clients/acme/rotate-key", headers={"X-API-Key": ADMIN_KEY})
        assert rotated.status_code == 200
        new = {"X-API-Key": rotated.json()["apiKey"]}
        assert_problem(await one.get("/whatsapp/sessions", headers=acme), 401)
        for _ in range(100):  # the other process hears of it by NOTIFY
            if (await two.get("/whatsapp/sessions", headers=acme)).status_code == 401:
                break
            await asyncio.sleep(0.05)
        assert_problem(await two.get("/whatsapp/sessions", headers=acme), 401)
        assert (await two.get("/whatsapp/sessions", headers=new)).status_code == 200
        assert (await one.delete("/admin/clients/acme", headers={"X-API-Key": ADMIN_KEY})).status_code == 204
        for _ in range(100):
            if (await two.get("/whatsapp/sessions", headers=new)).status_code == 401:
                break
            await asyncio.sleep(0.05)
        assert_problem(await two.get("/whatsapp/sessions", headers=new), 401)


async def test_concurrent_first_sends_to_a_new_number_all_go(clear_zapgate_env: None, database_url: str) -> None:
    async with api_process(database_url, send_rate=0) as api:
        acme = await new_client(api, "acme")
        assert (await api.post("/whatsapp/session", headers=acme, json={"sessionId": "s1"})).status_code == 201
        for round_ in range(3):
            to = f"55119888800{round_:02d}"
            body = {**SEND, "to": to}
            answers = await asyncio.gather(*(api.post("/whatsapp/send", headers=acme, json=body) for _ in range(20)))
            assert [r.status_code for r in answers] == [202] * 20, [r.text for r in answers if r.status_code != 202]
        contacts = (await api.get("/whatsapp/contacts", headers=acme)).json()["contacts"]
        assert len(contacts) == 3
        assert await pending_count(database_url, "client_acme") == 60
