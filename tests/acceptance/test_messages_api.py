"""Messages, contacts and the audit log over real HTTP, with real traffic on the sandbox network."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.acceptance.support import api_client, assert_problem, linked, new_client
from tests.support.waiting import eventually
from zapgate.services.worker import Worker

ALICE, BOB = "5511988880001", "5511988880002"


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(database_url, send_rate=0) as http:
        yield http


async def test_messages_contacts_and_history(api: httpx.AsyncClient, worker: Worker) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    await linked(api, acme, "bob", BOB)
    ids = []
    for i in range(5):
        sent = await api.post(
            "/whatsapp/send", headers=acme, json={"sessionId": "alice", "to": BOB, "message": f"m{i}"}
        )
        assert sent.status_code == 202
        ids.append(sent.json()["messageId"])
    inbound = await api.post(
        "/whatsapp/sandbox/inbound", headers=acme, json={"sessionId": "alice", "from": "447700900123", "message": "hi"}
    )
    assert inbound.status_code == 202

    async def all_read() -> bool:
        page = (await api.get("/whatsapp/messages", headers=acme, params={"sessionId": "alice"})).json()
        outbound = [m for m in page["messages"] if m["direction"] == "outbound"]
        return len(page["messages"]) == 6 and all(m["status"] == "read" for m in outbound)

    await eventually(all_read, within=20.0)

    # newest first, with the contact, paged by cursor
    first = (await api.get("/whatsapp/messages", headers=acme, params={"sessionId": "alice", "limit": 4})).json()
    assert len(first["messages"]) == 4 and first["nextCursor"]
    rest = await api.get(
        "/whatsapp/messages", headers=acme, params={"sessionId": "alice", "limit": 4, "cursor": first["nextCursor"]}
    )
    assert rest.status_code == 200 and rest.json()["nextCursor"] is None
    listed = first["messages"] + rest.json()["messages"]
    stamps = [(m["timestamp"], m["id"]) for m in listed]
    assert stamps == sorted(stamps, reverse=True) and len({m["id"] for m in listed}) == 6
    assert {m["contact"]["phoneNumber"] for m in listed} == {BOB, "447700900123"}
    assert all(m["sessionId"] == "alice" for m in listed)

    # filters
    async def ids_of(**params: str) -> list[str]:
        response = await api.get("/whatsapp/messages", headers=acme, params=params)
        assert response.status_code == 200, response.text
        return [m["messageId"] for m in response.json()["messages"]]

    assert sorted(await ids_of(sessionId="alice", direction="outbound")) == sorted(ids)
    assert await ids_of(sessionId="alice", contact="+44 7700 900123") == [inbound.json()["messageId"]]
    assert await ids_of(sessionId="alice", status="pending") == []
    assert len(await ids_of(sessionId="bob", direction="inbound")) == 5  # bob received alice's five
    assert await ids_of(since="2999-01-01T00:00:00Z") == []

    # one message with its status history
    one = await api.get(f"/whatsapp/messages/{ids[0]}", headers=acme, params={"sessionId": "alice"})
    assert one.status_code == 200, one.text
    history = [step["status"] for step in one.json()["history"]]
    assert history[0] == "pending" and history[-1] == "read" and "sent" in history
    assert one.json()["contact"]["phoneNumber"] == BOB

    # contacts, by number, paged
    contacts = (await api.get("/whatsapp/contacts", headers=acme, params={"limit": 2})).json()
    assert len(contacts["contacts"]) == 2 and contacts["nextCursor"]
    more = (await api.get("/whatsapp/contacts", headers=acme, params={"cursor": contacts["nextCursor"]})).json()
    everyone = contacts["contacts"] + more["contacts"]
    assert sorted((c["sessionId"], c["phoneNumber"]) for c in everyone) == [
        ("alice", "447700900123"),
        ("alice", BOB),
        ("bob", ALICE),
    ]

    # another client sees none of it
    globex = await new_client(api, "globex")
    assert (await api.get("/whatsapp/messages", headers=globex)).json()["messages"] == []
    assert (await api.get("/whatsapp/contacts", headers=globex)).json()["contacts"] == []
    assert_problem(await api.get(f"/whatsapp/messages/{ids[0]}", headers=globex), 404, "message_not_found")
    assert_problem(await api.get("/whatsapp/messages", headers=globex, params={"sessionId": "alice"}), 404)


async def test_bad_listing_parameters(api: httpx.AsyncClient) -> None:
    acme = await new_client(api, "acme")
    for params in (
        {"limit": "0"},
        {"limit": "501"},
        {"direction": "sideways"},
        {"status": "lost"},
        {"since": "yesterday"},
        {"cursor": "not-a-cursor"},
        {"sessionId": "a b"},
        {"contact": "12"},
    ):
        assert_problem(await api.get("/whatsapp/messages", headers=acme, params=params), 422)
    assert_problem(await api.get("/whatsapp/contacts", headers=acme, params={"cursor": "@@"}), 422)
    assert_problem(await api.get("/whatsapp/audit", headers=acme, params={"cursor": "x"}), 422)
    assert_problem(await api.get("/whatsapp/messages/nope", headers=acme), 404, "message_not_found")
    assert_problem(await api.get("/whatsapp/messages", headers={}), 401)


@pytest.mark.parametrize("cursor", ["²", "1²", "\u0661\u0662", "9999999999999999999", "-1", " 1"])
async def test_cursors_that_are_no_ids_are_422_not_500(api: httpx.AsyncClient, cursor: str) -> None:
    acme = await new_client(api, "acme")
    hook = await api.post("/whatsapp/webhooks", headers=acme, json={"url": "https://example.com/hook"})
    assert hook.status_code == 201, hook.text
    for path in ("/whatsapp/audit", f"/whatsapp/webhooks/{hook.json()['id']}/deliveries", "/whatsapp/messages"):
        assert_problem(await api.get(path, headers=acme, params={"cursor": cursor}), 422)
    stream = "/whatsapp/stream"
    if cursor.strip() != "1":  # Last-Event-ID is read stripped: " 1" is event 1
        assert_problem(await api.get(stream, headers={**acme, "Last-Event-ID": cursor.encode()}), 422)
    assert_problem(await api.get(stream, headers=acme, params={"lastEventId": "9" * 400}), 422)


async def test_every_mutating_call_is_audited(api: httpx.AsyncClient) -> None:
    acme, globex = await new_client(api, "acme"), await new_client(api, "globex")
    assert (await api.post("/whatsapp/session", headers=acme, json={"sessionId": "s1"})).status_code == 201
    assert (await api.post("/whatsapp/session", headers=acme, json={"sessionId": "s1"})).status_code == 409
    send = {"sessionId": "s1", "to": "5511999999999", "message": "hi"}
    assert (await api.post("/whatsapp/send", headers=acme, json=send)).status_code == 202
    assert (await api.post("/whatsapp/send", headers=acme, json={**send, "to": "1"})).status_code == 422
    assert (await api.post("/whatsapp/sessions/s1/restart", headers=acme)).status_code == 202
    assert (await api.delete("/whatsapp/sessions/s1", headers=acme)).status_code == 204
    assert (await api.post("/whatsapp/send", headers={"X-API-Key": "zg_wrong"}, json=send)).status_code == 401

    async def entries() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await api.get("/whatsapp/audit", headers=acme)).json()["entries"]
        return found if len(found) >= 6 else []

    log = list(reversed(await eventually(entries, within=20.0)))
    assert [(e["action"], e["outcome"], e["status"]) for e in log] == [
        ("session.create", "ok", 201),
        ("session.create", "duplicate_record", 409),
        ("message.send", "ok", 202),
        ("message.send", "invalid_phone_number", 422),
        ("session.restart", "ok", 202),
        ("session.delete", "ok", 204),
    ]
    assert all(e["sessionId"] == "s1" and e["actor"] == acme["X-API-Key"][:10] for e in log)
    assert log[0]["detail"] == {"method": "POST", "path": "/whatsapp/session"}
    # paged, filtered, and per client
    page = (await api.get("/whatsapp/audit", headers=acme, params={"limit": 2})).json()
    assert len(page["entries"]) == 2 and page["nextCursor"]
    sends = (await api.get("/whatsapp/audit", headers=acme, params={"action": "message.send"})).json()["entries"]
    assert len(sends) == 2
    assert (await api.get("/whatsapp/audit", headers=globex)).json()["entries"] == []


async def test_bodies_over_64_kib_are_refused(api: httpx.AsyncClient) -> None:
    acme = await new_client(api, "acme")
    big = {"sessionId": "s1", "to": "5511999999999", "message": "x" * (65 * 1024)}
    assert_problem(await api.post("/whatsapp/send", headers=acme, json=big), 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(70):
            yield b" " * 1024

    refused = await api.post(
        "/whatsapp/session", headers={**acme, "Content-Type": "application/json"}, content=chunks()
    )
    assert_problem(refused, 413, "payload_too_large")
    # just under the limit is read (and judged on its content)
    fits = {"sessionId": "s1", "to": "5511999999999", "message": "x" * 5000, "pad": " " * (50 * 1024)}
    assert_problem(await api.post("/whatsapp/send", headers=acme, json=fits), 422)
