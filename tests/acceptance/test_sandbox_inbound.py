"""POST /whatsapp/sandbox/inbound over real HTTP with every kind of message: JSON (files inline in base64) and
multipart uploads, reactions, votes, edits and deletes naming the session's messages, and what it refuses."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.acceptance.support import ADMIN_KEY, assert_problem, new_client, running_app
from zapgate.db.manager import ConnectionManager
from zapgate.domain.records import Message
from zapgate.engines.base import SessionRef
from zapgate.services.sandbox import PostgresSandboxNetwork
from zapgate.services.worker import Worker
from zapgate.settings import Settings

INBOUND = "/whatsapp/sandbox/inbound"
UK = "447700900123"
BOT_PHONE = "5511999990001"


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url, default_engine="sandbox", send_rate=0)
    async with running_app(settings, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        yield http


@pytest.fixture
async def manager(database_url: str) -> AsyncIterator[ConnectionManager]:
    async with ConnectionManager(database_url, pool_size=3) as manager:
        yield manager


async def _until(check: Any, what: str) -> Any:
    for _ in range(300):
        if found := await check():
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def _stored(manager: ConnectionManager, message_id: str) -> Message:
    db = await manager.get_connection("acme")
    found: Message = await _until(lambda: db.message.find_unique(message_id), f"message {message_id} stored")
    return found


async def _linked_bot(api: httpx.AsyncClient, acme: dict[str, str]) -> None:
    assert (await api.post("/whatsapp/session", headers=acme, json={"sessionId": "bot"})).status_code == 201

    async def qr() -> bool:
        return (await api.get("/whatsapp/sessions/bot/qr", headers=acme)).status_code == 200

    await _until(qr, "a QR code")
    scanned = await api.post("/whatsapp/sandbox/sessions/bot/scan", headers=acme, json={"phoneNumber": BOT_PHONE})
    assert scanned.status_code == 202, scanned.text

    async def connected() -> bool:
        return bool((await api.get("/whatsapp/sessions/bot", headers=acme)).json()["status"] == "connected")

    await _until(connected, "connected")


async def test_every_kind_can_be_injected(
    api: httpx.AsyncClient, manager: ConnectionManager, database_url: str
) -> None:
    acme = await new_client(api, "acme")
    worker = Worker(manager, database_url, ("sandbox",), qr_timeout=30, poll_interval=0.2)
    await worker.start()
    try:
        await _linked_bot(api, acme)
        # the session writes to the phone: its message is the one the phone reacts to, votes on, cannot edit
        sent = await api.post("/whatsapp/send", headers=acme, json={"sessionId": "bot", "to": UK, "message": "hi"})
        assert sent.status_code == 202, sent.text
        ours = sent.json()["messageId"]

        async def whatsapp_id() -> str | None:
            return (await _stored(manager, ours)).wa_message_id

        theirs = await _until(whatsapp_id, "the send went out")
        uk = {"sessionId": "bot", "from": "+44 7700 900123"}
        png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + os.urandom(2000)).decode()
        kinds: list[tuple[dict[str, Any], str, str]] = [
            ({"type": "text", "text": {"body": "plain"}}, "text", "plain"),
            ({"message": "a reply", "context": {"message_id": theirs}, "mentions": [BOT_PHONE]}, "text", "a reply"),
            (
                {"type": "image", "image": {"data": png, "mime_type": "image/png", "caption": "a cat", "width": 2}},
                "image",
                "[image] a cat",
            ),
            ({"type": "sticker", "sticker": {"data": png, "mime_type": "image/webp"}}, "sticker", "[sticker]"),
            (
                {"type": "audio", "audio": {"data": "T2dnUw==", "voice": True, "duration": 1.5}},
                "audio",
                "[voice note]",
            ),
            (
                {"type": "location", "location": {"latitude": -23.5, "longitude": -46.6, "name": "Sé"}},
                "location",
                "[location] Sé",
            ),
            (
                {"type": "contacts", "contacts": [{"name": {"formatted_name": "Maria"}, "phones": [{"phone": "+55"}]}]},
                "contacts",
                "[contacts] Maria",
            ),
            ({"type": "poll", "poll": {"question": "Lunch?", "options": ["a", "b"]}}, "poll", "[poll] Lunch?"),
            ({"type": "reaction", "reaction": {"message_id": theirs, "emoji": "👍"}}, "reaction", "[reaction] 👍"),
            ({"type": "reaction", "reaction": {"message_id": ours, "emoji": ""}}, "reaction", "[reaction removed]"),
            ({"type": "poll_vote", "poll_vote": {"message_id": theirs, "selected": ["a"]}}, "poll_vote", "[vote] a"),
            (
                {
                    "type": "group_invite",
                    "group_invite": {"group_id": "120363000000000001", "code": "AbC1", "subject": "T"},
                },
                "group_invite",
                "[group invite] T",
            ),
        ]
        for extra, kind, summary in kinds:
            injected = await api.post(INBOUND, headers=acme, json={**uk, **extra})
            assert injected.status_code == 202, (extra, injected.text)
            stored = await _stored(manager, injected.json()["messageId"])
            assert (stored.type, stored.content, stored.direction) == (kind, summary, "inbound"), extra

        # the phone edits and deletes its own message (and the linked phone its own, fromMe)
        own = (await api.post(INBOUND, headers=acme, json={**uk, "message": "typo"})).json()["messageId"]
        await _stored(manager, own)
        for extra, kind, _summary in (
            ({"type": "edit", "edit": {"message_id": own, "text": "fixed"}}, "edit", "[edit] fixed"),
            ({"type": "revoke", "revoke": {"message_id": own}}, "revoke", "[deleted]"),
            ({"type": "edit", "edit": {"message_id": theirs, "text": "mine"}, "fromMe": True}, "edit", "[edit] mine"),
        ):
            injected = await api.post(INBOUND, headers=acme, json={**uk, **extra})
            assert injected.status_code == 202, (extra, injected.text)
            assert (await _stored(manager, injected.json()["messageId"])).type == kind
        # ... but not the session's
        refused = assert_problem(
            await api.post(INBOUND, headers=acme, json={**uk, "type": "revoke", "revoke": {"message_id": theirs}}), 422
        )
        assert [e["field"] for e in refused["errors"]] == ["revoke.message_id"]

        # a file uploaded (multipart), its type and name from the upload
        document = os.urandom(300_000)
        form = {"message": json.dumps({**uk, "type": "document", "document": {"caption": "Q3"}})}
        files = {"file": ("q3.pdf", document, "application/pdf")}
        uploaded = await api.post(INBOUND, headers=acme, data=form, files=files)
        assert uploaded.status_code == 202, uploaded.text
        stored = await _stored(manager, uploaded.json()["messageId"])
        assert (stored.type, stored.content) == ("document", "[document] Q3")

        async def audited() -> bool:  # uploads are audited as any other call, with their session
            page = await api.get("/whatsapp/audit", headers=acme, params={"action": "sandbox.inbound", "limit": 1})
            return bool([e for e in page.json()["entries"] if e["sessionId"] == "bot" and e["status"] == 202])

        await _until(audited, "the upload audited")
    finally:
        await worker.close()


async def test_what_the_route_refuses(api: httpx.AsyncClient, database_url: str) -> None:
    acme = await new_client(api, "acme")
    assert (await api.post("/whatsapp/session", headers=acme, json={"sessionId": "bot"})).status_code == 201
    async with ConnectionManager(database_url, pool_size=1) as manager:
        await PostgresSandboxNetwork(manager).link(BOT_PHONE, SessionRef("acme", "bot"))
    uk = {"sessionId": "bot", "from": UK}
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"type": "sms", "text": {"body": "x"}}, "type"),
        ({"type": "text"}, "text"),
        ({"type": "text", "text": {"body": ""}}, "text.body"),
        ({"type": "text", "text": {"body": "x", "bold": True}}, "text.bold"),
        ({"type": "text", "text": {"body": "x"}, "location": {"latitude": 0, "longitude": 0}}, "location"),
        ({"type": "text", "text": {"body": "x"}, "message": "y"}, "message"),
        ({"type": "image", "image": {"caption": "no file"}}, "image.data"),
        ({"type": "image", "image": {"data": "not base64!"}}, "image.data"),
        ({"type": "image", "image": {"id": "media-1"}}, "image.id"),
        ({"type": "image", "image": {"link": "https://example.com/x.jpg"}}, "image.link"),
        ({"type": "image", "image": {"data": "AAAA", "mime_type": "jpeg"}}, "image.mime_type"),
        ({"type": "image", "image": {"data": "AAAA", "width": 0}}, "image.width"),
        ({"type": "sticker", "sticker": {"data": "AAAA", "caption": "x"}}, "sticker.caption"),
        ({"type": "location", "location": {"latitude": 91, "longitude": 0}}, "location.latitude"),
        ({"type": "contacts", "contacts": []}, "contacts"),
        ({"type": "poll", "poll": {"question": "?", "options": ["only one"]}}, "poll.options"),
        ({"type": "reaction", "reaction": {"message_id": "X", "emoji": "ok"}}, "reaction.emoji"),
        ({"type": "reaction", "reaction": {"emoji": "👍"}}, "reaction.message_id"),
        ({"type": "poll_vote", "poll_vote": {"message_id": "X", "selected": "a"}}, "poll_vote.selected"),
        ({"type": "poll_vote", "poll_vote": {"message_id": "X", "selected": ["a", "a"]}}, "poll_vote.selected"),
        ({"type": "group_invite", "group_invite": {"group_id": "nope", "code": "AbC"}}, "group_invite.group_id"),
        ({"type": "group_invite", "group_invite": {"group_id": "1203630001", "code": "a b"}}, "group_invite.code"),
        ({"type": "edit", "edit": {"message_id": "X"}}, "edit.text"),
        ({"type": "edit", "edit": {"message_id": "X", "text": "y"}, "context": {"message_id": "Z"}}, "context"),
        ({"type": "revoke", "revoke": {"message_id": ""}}, "revoke.message_id"),
        ({"type": "revoke", "revoke": {"message_id": "X"}, "mentions": [UK]}, "mentions"),
        ({"message": "x", "mentions": ["nobody"]}, "mentions[0]"),
        ({"message": "x", "context": {"message_id": 7}}, "context.message_id"),
        ({"context": {"message_id": "X"}}, "type"),
        ({"notice": "undecryptable", "type": "text", "text": {"body": "x"}}, "notice"),
        ({"type": "text", "text": "x"}, "text"),
    ]
    for extra, field in refusals:
        refused = assert_problem(await api.post(INBOUND, headers=acme, json={**uk, **extra}), 422)
        assert [e["field"] for e in refused.get("errors", [])] == [field], (extra, refused)
    # a file inline is 1 MiB at most (a larger one is uploaded); the JSON body has its limit too
    too_big = base64.b64encode(bytes(1024 * 1024 + 1)).decode()
    refused = assert_problem(
        await api.post(INBOUND, headers=acme, json={**uk, "type": "image", "image": {"data": too_big}}), 422
    )
    assert [e["field"] for e in refused["errors"]] == ["image.data"]
    huge = {**uk, "type": "image", "image": {"data": too_big + too_big}}
    assert_problem(await api.post(INBOUND, headers=acme, json=huge), 413, "payload_too_large")
    # not JSON; a multipart upload without its message, without its file, or with a file for a text
    assert_problem(await api.post(INBOUND, headers={**acme, "Content-Type": "application/json"}, content=b"{"), 422)
    upload = {"file": ("x.jpg", b"\xff\xd8", "image/jpeg")}
    refused = assert_problem(await api.post(INBOUND, headers=acme, files=upload), 422)
    assert [e["field"] for e in refused["errors"]] == ["message"]
    form = {"message": json.dumps({**uk, "type": "image", "image": {}})}
    refused = assert_problem(await api.post(INBOUND, headers=acme, data=form, files={"x": ("x", b"", "a/b")}), 422)
    assert [e["field"] for e in refused["errors"]] == ["file"]
    form = {"message": json.dumps({**uk, "type": "text", "text": {"body": "x"}})}
    refused = assert_problem(await api.post(INBOUND, headers=acme, data=form, files=upload), 422)
    assert [e["field"] for e in refused["errors"]] == ["file"]
    form = {"message": json.dumps({**uk, "message": "a text with a file"})}
    refused = assert_problem(await api.post(INBOUND, headers=acme, data=form, files=upload), 422)
    assert [e["field"] for e in refused["errors"]] == ["type"]
    form = {"message": json.dumps({**uk, "type": "image", "image": {"data": "AAAA"}})}
    refused = assert_problem(await api.post(INBOUND, headers=acme, data=form, files=upload), 422)
    assert [e["field"] for e in refused["errors"]] == ["image.data"]
    # and what is right is taken, JSON and multipart alike
    fine = {**uk, "type": "image", "image": {"data": "AAAA", "mime_type": "image/jpeg"}}
    assert (await api.post(INBOUND, headers=acme, json=fine)).status_code == 202
    form = {"message": json.dumps({**uk, "type": "image", "image": {"caption": "up"}})}
    assert (await api.post(INBOUND, headers=acme, data=form, files=upload)).status_code == 202
