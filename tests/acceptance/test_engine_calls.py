"""Engine calls over HTTP: typing presence, read receipts and number checks answered by the session's worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.acceptance.support import api_client, assert_problem, linked, new_client
from tests.support.waiting import eventually
from zapgate.engines.base import Presence, SessionRef
from zapgate.engines.sandbox import SandboxEngine
from zapgate.services.worker import Worker

ALICE = "5511966660001"


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(database_url, send_rate=0, engine_call_timeout=2.0) as http:
        yield http


def sandbox(worker: Worker) -> SandboxEngine:
    engine = worker.engine("sandbox")
    assert isinstance(engine, SandboxEngine)
    return engine


async def test_presence_read_and_number_checks_reach_the_engine(api: httpx.AsyncClient, worker: Worker) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    ref = SessionRef("acme", "alice")

    typing = await api.post(
        "/whatsapp/sessions/alice/presence", headers=acme, json={"to": "447700900123", "presence": "recording"}
    )
    assert typing.status_code == 200, typing.text
    assert typing.json() == {"sessionId": "alice", "to": "447700900123@s.whatsapp.net", "presence": "recording"}
    assert sandbox(worker).presence(ref, "447700900123@s.whatsapp.net") is Presence.RECORDING

    ids = []
    for text in ("one", "two"):
        inbound = await api.post(
            "/whatsapp/sandbox/inbound",
            headers=acme,
            json={"sessionId": "alice", "from": "447700900123", "message": text},
        )
        ids.append(inbound.json()["messageId"])

    async def both_stored() -> bool:
        page = (await api.get("/whatsapp/messages", headers=acme, params={"sessionId": "alice"})).json()
        return len(page["messages"]) == 2

    await eventually(both_stored, within=20.0)
    read = await api.post("/whatsapp/sessions/alice/read", headers=acme, json={"chat": "+44 7700 900123"})
    assert read.status_code == 200, read.text
    assert sorted(read.json()["read"]) == sorted(ids)
    assert sorted(sandbox(worker).reads(ref)) == sorted(ids)
    for message_id in ids:
        one = await api.get(f"/whatsapp/messages/{message_id}", headers=acme, params={"sessionId": "alice"})
        assert one.json()["status"] == "read"
    again = await api.post("/whatsapp/sessions/alice/read", headers=acme, json={"chat": "447700900123"})
    assert again.json()["read"] == []  # nothing left unread: no call at all

    # WhatsApp's answer, never a rewrite of the digits: Brazil's ninth digit, and a number not on WhatsApp
    checked = await api.get(
        "/whatsapp/contacts/check",
        headers=acme,
        params=[("sessionId", "alice"), ("numbers", "+55 31 91234-5678,5511912345678"), ("numbers", "5511900000404")],
    )
    assert checked.status_code == 200, checked.text
    answers = {n["input"]: n for n in checked.json()["numbers"]}
    assert answers["+55 31 91234-5678"]["jid"] == "553112345678@s.whatsapp.net"
    assert answers["5511912345678"]["onWhatsApp"] is True and answers["5511912345678"]["lid"].endswith("@lid")
    assert answers["5511900000404"] == {
        "input": "5511900000404",
        "number": "5511900000404",
        "onWhatsApp": False,
        "jid": None,
        "lid": None,
        "contactId": None,  # no account: no contact
    }
    assert answers["5511912345678"]["contactId"]  # an account is a contact of the session


async def test_calls_fail_clearly(api: httpx.AsyncClient, worker: Worker) -> None:
    acme = await new_client(api, "acme")
    too_many = [("sessionId", "alice"), *[("numbers", f"55119{i:08d}") for i in range(51)]]
    assert (await api.post("/whatsapp/session", headers=acme, json={"sessionId": "alice"})).status_code == 201
    # not connected yet: 409 at once, nothing waits for a worker
    answer = await api.post(
        "/whatsapp/sessions/alice/presence", headers=acme, json={"to": ALICE, "presence": "composing"}
    )
    assert_problem(answer, 409)
    assert_problem(await api.get("/whatsapp/contacts/check", headers=acme, params=too_many), 422)
    assert_problem(
        await api.get("/whatsapp/contacts/check", headers=acme, params={"sessionId": "nope", "numbers": ALICE}), 404
    )
    bad = await api.post("/whatsapp/sessions/alice/presence", headers=acme, json={"to": ALICE, "presence": "dancing"})
    assert_problem(bad, 422)


async def test_a_call_no_worker_answers_times_out_and_is_never_made_late(
    api: httpx.AsyncClient, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    ignored: list[str | None] = []
    monkeypatch.setattr(worker._calls, "notified", ignored.append)  # a worker deaf to calls (moving, stalled)
    answer = await api.post("/whatsapp/sessions/alice/presence", headers=acme, json={"to": ALICE, "presence": "paused"})
    assert_problem(answer, 504, "engine_call_timed_out")
    assert len(ignored) == 1
    monkeypatch.undo()
    await worker._calls._sweep()  # the worker looks for calls it missed (as after a reconnection): none is due
    assert sandbox(worker).presence(SessionRef("acme", "alice"), f"{ALICE}@s.whatsapp.net") is None


async def test_a_call_that_crashes_the_worker_fails_at_once_without_its_words(
    api: httpx.AsyncClient, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)

    async def broken(*_: object) -> None:
        raise KeyError("secret internals")

    monkeypatch.setattr(sandbox(worker), "send_presence", broken)  # a bug in an engine, not WhatsApp's refusal
    started = asyncio.get_running_loop().time()
    answer = await api.post("/whatsapp/sessions/alice/presence", headers=acme, json={"to": ALICE, "presence": "paused"})
    problem = assert_problem(answer, 502, "engine_call_failed")
    assert problem["reason"] == "internal_error" and "secret internals" not in answer.text
    assert asyncio.get_running_loop().time() - started < 1.5  # answered, not left to its deadline (2 s here)
