"""The client's /whatsapp API over real HTTP: the seed's endpoints, keys, isolation, validation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.acceptance.support import ADMIN, ADMIN_KEY, assert_problem, new_client, running_app
from zapgate.db.manager import ConnectionManager
from zapgate.engines.base import SessionRef
from zapgate.services.sandbox import PostgresSandboxNetwork
from zapgate.services.sessions import SessionService
from zapgate.services.worker import Worker
from zapgate.settings import Settings


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url, default_engine="sandbox")
    async with running_app(settings, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        yield http


async def test_the_seeds_flow_over_http(api: httpx.AsyncClient, database_url: str) -> None:
    acme = await new_client(api, "acme")
    async with ConnectionManager(database_url, pool_size=3) as manager:
        worker = Worker(manager, database_url, ("sandbox",), qr_timeout=30, poll_interval=0.2)
        await worker.start()
        try:
            created = await api.post("/whatsapp/session", headers=acme, json={"sessionId": "user123"})
            assert created.status_code == 201, created.text
            assert created.json()["engine"] == "sandbox" and created.json()["sandbox"] is True

            async def session() -> dict[str, Any]:
                response = await api.get("/whatsapp/sessions/user123", headers=acme)
                assert response.status_code == 200, response.text
                return dict(response.json())

            async def until(predicate: Any) -> dict[str, Any]:
                for _ in range(200):
                    if predicate(current := await session()):
                        return current
                    await asyncio.sleep(0.05)
                raise AssertionError(f"not reached in 10 s: {current}")

            shown = await until(lambda s: s["qrCode"])
            assert shown["status"] == "qr" and shown["qrExpiresAt"]
            await SessionService(manager).sandbox_scan("acme", "user123", "5511999990001")
            linked = await until(lambda s: s["status"] == "connected")
            assert linked["phoneNumber"] == "5511999990001" and linked["qrCode"] is None

            # the seed's send, with the key added
            sent = await api.post(
                "/whatsapp/send",
                headers=acme,
                json={"sessionId": "user123", "to": "5511999999999", "message": "Olá! Como posso ajudar?"},
            )
            assert sent.status_code == 202, sent.text
            assert sent.json()["status"] == "pending" and sent.json()["messageId"].startswith("3EB0")
            db = await manager.get_connection("acme")

            async def read() -> bool:
                found = await db.message.find_unique(sent.json()["messageId"])
                return found is not None and found.status == "read"

            for _ in range(200):
                if await read():
                    break
                await asyncio.sleep(0.05)
            assert await read()
            listed = await api.get("/whatsapp/sessions", headers=acme)
            assert [s["sessionId"] for s in listed.json()["sessions"]] == ["user123"]
        finally:
            await worker.close()


async def test_keys_and_isolation(api: httpx.AsyncClient) -> None:
    acme, globex = await new_client(api, "acme"), await new_client(api, "globex")
    assert (await api.post("/whatsapp/session", headers=acme, json={"sessionId": "shared"})).status_code == 201
    for headers in ({}, {"X-API-Key": "zg_wrong"}, {"Authorization": "Bearer nope"}, ADMIN):
        assert_problem(await api.get("/whatsapp/sessions", headers=headers), 401)
    bearer = {"Authorization": "Bearer " + acme["X-API-Key"]}
    assert [s["sessionId"] for s in (await api.get("/whatsapp/sessions", headers=bearer)).json()["sessions"]] == [
        "shared"
    ]
    # another client's session does not exist for globex
    assert (await api.get("/whatsapp/sessions", headers=globex)).json()["sessions"] == []
    assert_problem(await api.get("/whatsapp/sessions/shared", headers=globex), 404, "session_not_found")
    send = {"sessionId": "shared", "to": "5511999999999", "message": "hi"}
    assert_problem(await api.post("/whatsapp/send", headers=globex, json=send), 404, "session_not_found")
    # and the same id is free for globex
    assert (await api.post("/whatsapp/session", headers=globex, json={"sessionId": "shared"})).status_code == 201


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/whatsapp/session", {"sessionId": "a b"}, "sessionId"),
        ("/whatsapp/session", {"sessionId": "x" * 65}, "sessionId"),
        ("/whatsapp/session", {"sessionId": "ok", "engine": "baileys"}, "engine"),
        ("/whatsapp/session", {"sessionId": "ok", "surprise": 1}, "surprise"),
        ("/whatsapp/session", {}, "sessionId"),
        ("/whatsapp/send", {"sessionId": "s1", "to": "5511999999999", "message": ""}, "message"),
        ("/whatsapp/send", {"sessionId": "s1", "to": "5511999999999", "message": "x" * 4097}, "message"),
        ("/whatsapp/send", {"sessionId": "s1", "to": "5511999999999"}, "message"),
        ("/whatsapp/send", {"sessionId": "s1", "to": "5511999999999", "message": "x", "extra": True}, "extra"),
    ],
)
async def test_bad_bodies_get_field_errors(api: httpx.AsyncClient, path: str, body: dict[str, Any], field: str) -> None:
    acme = await new_client(api, "acme")
    problem = assert_problem(await api.post(path, headers=acme, json=body), 422, "validation_failed")
    assert field in [error["field"] for error in problem["errors"]]
    assert (await api.get("/whatsapp/sessions", headers=acme)).json()["sessions"] == []


async def test_refusals_of_the_services_are_problems(api: httpx.AsyncClient) -> None:
    acme = await new_client(api, "acme")
    assert (await api.post("/whatsapp/session", headers=acme, json={"sessionId": "s1"})).status_code == 201
    assert_problem(await api.post("/whatsapp/session", headers=acme, json={"sessionId": "s1"}), 409)
    bad_number = {"sessionId": "s1", "to": "123", "message": "x"}
    refused = assert_problem(
        await api.post("/whatsapp/send", headers=acme, json=bad_number), 422, "invalid_phone_number"
    )
    assert [e["field"] for e in refused["errors"]] == ["to"]  # field-level, as pydantic's refusals
    pairing = {"sessionId": "s2", "phoneNumber": "12"}
    refused = assert_problem(
        await api.post("/whatsapp/session", headers=acme, json=pairing), 422, "invalid_phone_number"
    )
    assert [e["field"] for e in refused["errors"]] == ["phoneNumber"]
    inbound = {"sessionId": "s1", "from": "1", "message": "x"}
    refused = assert_problem(await api.post("/whatsapp/sandbox/inbound", headers=acme, json=inbound), 422)
    assert [e["field"] for e in refused["errors"]] == ["from"]


async def test_qr_pairing_code_logout_restart_delete(api: httpx.AsyncClient, database_url: str) -> None:
    acme = await new_client(api, "acme")
    async with ConnectionManager(database_url, pool_size=3) as manager:
        worker = Worker(manager, database_url, ("sandbox",), qr_timeout=30, poll_interval=0.2)
        await worker.start()
        try:
            assert (await api.post("/whatsapp/session", headers=acme, json={"sessionId": "s1"})).status_code == 201

            async def qr() -> httpx.Response:
                for _ in range(200):
                    response = await api.get("/whatsapp/sessions/s1/qr", headers=acme)
                    if response.status_code == 200:
                        return response
                    await asyncio.sleep(0.05)
                raise AssertionError(response.text)

            shown = (await qr()).json()
            assert shown["qr"].startswith("sandbox@acme/s1") and shown["qrDataUrl"].startswith("data:image/png;base64,")
            png = await api.get("/whatsapp/sessions/s1/qr", headers={**acme, "Accept": "image/png"})
            assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
            svg = await api.get("/whatsapp/sessions/s1/qr", headers={**acme, "Accept": "image/svg+xml"})
            assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content

            coded = await api.post(
                "/whatsapp/sessions/s1/pairing-code", headers=acme, json={"phoneNumber": "5511999990001"}
            )
            assert coded.status_code == 202, coded.text
            for _ in range(200):
                current = (await api.get("/whatsapp/sessions/s1", headers=acme)).json()
                if current["pairingCode"]:
                    break
                await asyncio.sleep(0.05)
            assert current["status"] == "pairing" and current["pairingCode"]
            no_qr = assert_problem(await api.get("/whatsapp/sessions/s1/qr", headers=acme), 404)
            assert "pairing" in no_qr["detail"]

            # the simulated phone types the code (over HTTP); a missing code is refused
            typo = await api.post("/whatsapp/sandbox/sessions/s1/enter-code", headers=acme, json={"code": ""})
            assert_problem(typo, 422)
            typed = await api.post(
                "/whatsapp/sandbox/sessions/s1/enter-code", headers=acme, json={"code": current["pairingCode"]}
            )
            assert typed.status_code == 202, typed.text
            for _ in range(200):
                if (await api.get("/whatsapp/sessions/s1", headers=acme)).json()["status"] == "connected":
                    break
                await asyncio.sleep(0.05)
            assert (await api.get("/whatsapp/sessions/s1", headers=acme)).json()["status"] == "connected"
            logout = await api.post("/whatsapp/sessions/s1/logout", headers=acme)
            assert logout.status_code == 202 and logout.json()["desired"] == "logged_out"
            for _ in range(200):
                if (await api.get("/whatsapp/sessions/s1", headers=acme)).json()["status"] == "logged_out":
                    break
                await asyncio.sleep(0.05)
            assert (await api.get("/whatsapp/sessions/s1", headers=acme)).json()["status"] == "logged_out"
            restarted = await api.post("/whatsapp/sessions/s1/restart", headers=acme)
            assert restarted.status_code == 202 and restarted.json()["desired"] == "running"
            await qr()  # logged out, so it pairs anew by QR code

            assert (await api.delete("/whatsapp/sessions/s1", headers=acme)).status_code == 204
            assert_problem(await api.get("/whatsapp/sessions/s1", headers=acme), 404)
            for path in ("/qr",):
                assert_problem(await api.get(f"/whatsapp/sessions/s1{path}", headers=acme), 404)
            for action in ("restart", "logout"):
                assert_problem(await api.post(f"/whatsapp/sessions/s1/{action}", headers=acme), 404)
            assert_problem(await api.delete("/whatsapp/sessions/s1", headers=acme), 404)
            bad = await api.post("/whatsapp/sessions/s1/pairing-code", headers=acme, json={"phoneNumber": 5511})
            assert_problem(bad, 422)
        finally:
            await worker.close()


async def test_sandbox_routes(api: httpx.AsyncClient, database_url: str) -> None:
    acme = await new_client(api, "acme")
    async with ConnectionManager(database_url, pool_size=3) as manager:
        worker = Worker(manager, database_url, ("sandbox",), qr_timeout=30, poll_interval=0.2)
        await worker.start()
        try:
            await api.post("/whatsapp/session", headers=acme, json={"sessionId": "bot"})
            for _ in range(200):
                if (await api.get("/whatsapp/sessions/bot/qr", headers=acme)).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            scanned = await api.post(
                "/whatsapp/sandbox/sessions/bot/scan", headers=acme, json={"phoneNumber": "+55 11 99999-0001"}
            )
            assert scanned.status_code == 202, scanned.text
            for _ in range(200):
                if (await api.get("/whatsapp/sessions/bot", headers=acme)).json()["status"] == "connected":
                    break
                await asyncio.sleep(0.05)
            injected = await api.post(
                "/whatsapp/sandbox/inbound",
                headers=acme,
                json={"sessionId": "bot", "from": "+44 7700 900123", "message": "hi bot"},
            )
            assert injected.status_code == 202, injected.text
            db = await manager.get_connection("acme")
            for _ in range(200):
                stored = await db.message.find_unique(injected.json()["messageId"], include_contact=True)
                if stored is not None:
                    break
                await asyncio.sleep(0.05)
            assert stored is not None and stored.direction == "inbound" and stored.content == "hi bot"
            assert stored.contact is not None and stored.contact.phone_number == "447700900123"
        finally:
            await worker.close()
    # a real-WhatsApp session is not the sandbox's to drive
    await api.post("/whatsapp/session", headers=acme, json={"sessionId": "real", "engine": "whatsmeow"})
    refused = await api.post(
        "/whatsapp/sandbox/sessions/real/scan", headers=acme, json={"phoneNumber": "5511999990002"}
    )
    assert_problem(refused, 422)
    assert_problem(
        await api.post("/whatsapp/sandbox/sessions/nope/scan", headers=acme, json={"phoneNumber": "5511999990002"}), 404
    )
    bad = await api.post("/whatsapp/sandbox/inbound", headers=acme, json={"sessionId": "bot", "message": "x"})
    assert_problem(bad, 422)


async def test_sandbox_faults_and_inbound_kinds(api: httpx.AsyncClient, database_url: str) -> None:
    acme = await new_client(api, "acme")
    await api.post("/whatsapp/session", headers=acme, json={"sessionId": "bot"})
    fault = "/whatsapp/sandbox/sessions/bot/fault"
    for body in (
        {"fault": "drop_connection"},
        {"fault": "logout"},
        {"fault": "reject_next_send"},
        {"fault": "restrict"},
        {"fault": "fail_transient"},
        {"fault": "fail_transient", "count": 3},
    ):
        accepted = await api.post(fault, headers=acme, json=body)
        assert (accepted.status_code, accepted.json()) == (202, {"accepted": True}), accepted.text
    for body, field in (
        ({"fault": "explode"}, "fault"),
        ({"fault": "fail_transient", "count": 0}, "count"),
        ({"fault": "fail_transient", "count": 101}, "count"),
        ({"fault": "restrict", "count": 2}, "count"),
        ({"fault": "restrict", "extra": 1}, "extra"),
    ):
        refused = assert_problem(await api.post(fault, headers=acme, json=body), 422)
        assert [e["field"] for e in refused["errors"]] == [field], refused
    assert_problem(await api.post("/whatsapp/sandbox/sessions/nope/fault", headers=acme, json={"fault": "logout"}), 404)
    await api.post("/whatsapp/session", headers=acme, json={"sessionId": "real", "engine": "whatsmeow"})
    assert_problem(await api.post("/whatsapp/sandbox/sessions/real/fault", headers=acme, json={"fault": "logout"}), 422)

    inbound = "/whatsapp/sandbox/inbound"
    uk = {"sessionId": "bot", "from": "+44 7700 900123"}
    # only a session linked now receives: link bot's simulated phone as a scan would (no worker runs here)
    assert_problem(await api.post(inbound, headers=acme, json={**uk, "message": "nobody"}), 409)
    async with ConnectionManager(database_url, pool_size=1) as manager:
        await PostgresSandboxNetwork(manager).link("5511999990001", SessionRef("acme", "bot"))
    for extra in (
        {"message": "sent from my phone", "fromMe": True},
        {"message": "my story", "story": True},
        {"message": "hi all", "group": "120363012345678901@g.us", "pushName": "Maria"},
        {"message": "both", "fromLid": "123456789012345@lid"},
        {"notice": "undecryptable"},
        {"notice": "history_sync"},
    ):
        accepted = await api.post(inbound, headers=acme, json={**uk, **extra})
        assert accepted.status_code == 202 and accepted.json()["messageId"], accepted.text
    by_lid = await api.post(
        inbound, headers=acme, json={"sessionId": "bot", "from": "123456789012345@lid", "message": "?"}
    )
    assert by_lid.status_code == 202, by_lid.text
    refusals: list[tuple[dict[str, Any], str | None]] = [
        ({}, "message"),
        ({"message": "nul\x00byte"}, None),  # refused as before: the sandbox carries NUL, the API does not
        ({"message": ""}, "message"),
        ({"message": "x" * 4097}, "message"),
        ({"notice": "typing"}, "notice"),
        ({"message": "x", "fromLid": "12ab"}, "fromLid"),
        ({"message": "x", "group": "5511999990001@s.whatsapp.net"}, "group"),
        ({"message": "x", "group": "120363012345678901@g.us", "story": True}, "group"),
        ({"message": "x", "fromMe": "maybe"}, "fromMe"),
    ]
    for extra, wrong in refusals:
        refused = assert_problem(await api.post(inbound, headers=acme, json={**uk, **extra}), 422)
        if wrong is not None:
            assert [e["field"] for e in refused["errors"]] == [wrong], refused
