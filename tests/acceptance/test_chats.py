"""Chats and presence end to end on the sandbox: the chats list both sides, read receipts, archive/pin/mute and the
phone's own changes, presence subscriptions and events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.acceptance.support import api_client, assert_problem, events, linked, message, new_client, send, sent
from tests.support.waiting import eventually
from zapgate.engines.base import SessionRef
from zapgate.engines.sandbox import SandboxEngine, simulated_lid
from zapgate.services.worker import Worker

ALICE = "5511966661001"
BOB = "5511966661002"
CAROL = "447700900501"  # a simulated phone (no session has it)
DAVE = "447700900502"


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(database_url, send_rate=0, engine_call_timeout=5.0) as http:
        yield http


def sandbox(worker: Worker) -> SandboxEngine:
    engine = worker.engine("sandbox")
    assert isinstance(engine, SandboxEngine)
    return engine


async def chats(api: httpx.AsyncClient, headers: dict[str, str], session: str, **params: Any) -> list[dict[str, Any]]:
    answer = await api.get("/whatsapp/chats", headers=headers, params={"sessionId": session, **params})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["chats"])


async def text(api: httpx.AsyncClient, headers: dict[str, str], session: str, to: str, body: str) -> str:
    return await send(api, headers, {"sessionId": session, "to": to, "type": "text", "text": {"body": body}})


async def inject(api: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]) -> str:
    answer = await api.post("/whatsapp/sandbox/inbound", headers=headers, json=body)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["messageId"])


async def an_event(
    api: httpx.AsyncClient, headers: dict[str, str], session: str, kind: str, where: dict[str, Any]
) -> dict[str, Any]:
    """Wait for the session's event of `kind` whose fields include `where`; return it."""
    found: list[dict[str, Any]] = []

    async def arrived() -> bool:
        found[:] = [e for e in await events(api, headers, session, kind) if where.items() <= e.items()]
        return bool(found)

    await eventually(arrived, within=30.0)
    return found[-1]


async def test_two_sessions_see_their_chats_unread_counts_and_read_receipts(
    api: httpx.AsyncClient, worker: Worker
) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    await linked(api, acme, "bob", BOB)
    held = await api.post("/whatsapp/sandbox/sessions/bob/fault", headers=acme, json={"fault": "hold_reads"})
    assert held.status_code == 202, held.text

    await sent(api, acme, "alice", await text(api, acme, "alice", CAROL, "hi carol"))
    one = await text(api, acme, "alice", BOB, "one")
    two = await text(api, acme, "alice", BOB, "two")

    async def bob_has_both() -> bool:
        listed = await chats(api, acme, "bob")
        return bool(listed) and listed[0]["unreadCount"] == 2

    await eventually(bob_has_both, within=20.0)
    for mine in (one, two):  # delivered to bob's phone, which has not read them (the receipt may still travel)
        await eventually(lambda mine=mine: _status_is(api, acme, "alice", mine, "delivered"), within=20.0)
    hey = await text(api, acme, "bob", ALICE, "hey")
    await sent(api, acme, "bob", hey)  # alice's phone reads at once (no hold_reads there)

    async def alice_has_it() -> bool:
        listed = await chats(api, acme, "alice")
        return len(listed) == 2 and listed[0]["unreadCount"] == 1

    await eventually(alice_has_it, within=20.0)
    alice_chats = await chats(api, acme, "alice")
    assert [c["chat"] for c in alice_chats] == [BOB, CAROL]  # newest activity first
    with_bob = alice_chats[0]
    assert with_bob["jid"] == f"{BOB}@s.whatsapp.net" and with_bob["isGroup"] is False
    assert with_bob["lastMessage"]["text"] == "hey" and with_bob["lastMessage"]["direction"] == "inbound"
    assert alice_chats[1]["lastMessage"]["direction"] == "outbound" and alice_chats[1]["unreadCount"] == 0
    assert not with_bob["archived"] and not with_bob["pinned"] and not with_bob["muted"]

    bob_chats = await chats(api, acme, "bob")
    assert len(bob_chats) == 1
    with_alice = bob_chats[0]
    assert with_alice["chat"] == ALICE and with_alice["unreadCount"] == 2
    assert with_alice["lastMessage"]["id"] == hey and with_alice["lastMessage"]["direction"] == "outbound"

    # the conversation both ways, newest first, a page at a time
    first = await api.get(f"/whatsapp/chats/{with_alice['id']}/messages", headers=acme, params={"limit": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert [m["content"] for m in page["messages"]] == ["hey", "two"]
    assert [m["direction"] for m in page["messages"]] == ["outbound", "inbound"]
    rest = await api.get(
        f"/whatsapp/chats/{with_alice['id']}/messages", headers=acme, params={"cursor": page["nextCursor"]}
    )
    assert [m["content"] for m in rest.json()["messages"]] == ["one"] and rest.json()["nextCursor"] is None

    # the chats list pages too
    paged = await api.get("/whatsapp/chats", headers=acme, params={"sessionId": "alice", "limit": 1})
    assert [c["chat"] for c in paged.json()["chats"]] == [BOB]
    after = await api.get(
        "/whatsapp/chats", headers=acme, params={"sessionId": "alice", "cursor": paged.json()["nextCursor"]}
    )
    assert [c["chat"] for c in after.json()["chats"]] == [CAROL] and after.json()["nextCursor"] is None

    # bob reads the chat: unread 0, and alice's messages turn read (bob's receipts reached her)
    read = await api.post(f"/whatsapp/chats/{with_alice['id']}/read", headers=acme)
    assert read.status_code == 200, read.text
    assert read.json()["read"] == 2 and read.json()["chat"]["unreadCount"] == 0
    assert (await chats(api, acme, "bob"))[0]["unreadCount"] == 0
    for mine in (one, two):
        await eventually(lambda mine=mine: _status_is(api, acme, "alice", mine, "read"), within=20.0)
    update = await an_event(api, acme, "bob", "chat-update", {"chatId": with_alice["id"]})
    assert update["changes"] == {"read": True} and update["source"] == "api"
    again = await api.post(f"/whatsapp/chats/{with_alice['id']}/read", headers=acme)
    assert again.json()["read"] == 0

    # bob reads on his phone: the chat is read there, and alice's new message turns read too
    three = await text(api, acme, "alice", BOB, "three")

    async def bob_unread_again() -> bool:
        return bool((await chats(api, acme, "bob"))[0]["unreadCount"] == 1)

    await eventually(bob_unread_again, within=20.0)
    await eventually(lambda: _status_is(api, acme, "alice", three, "delivered"), within=20.0)
    await inject(api, acme, {"sessionId": "bob", "from": ALICE, "appState": {"read": True}})
    await eventually(lambda: _status_is(api, acme, "alice", three, "read"), within=20.0)
    assert (await chats(api, acme, "bob"))[0]["unreadCount"] == 0
    on_phone = await an_event(api, acme, "bob", "chat-update", {"chatId": with_alice["id"], "source": "phone"})
    assert on_phone["changes"] == {"read": True}


async def _status_is(
    api: httpx.AsyncClient, headers: dict[str, str], session: str, message_id: str, status: str
) -> bool:
    return bool((await message(api, headers, session, message_id))["status"] == status)


async def test_archive_pin_mute_round_trip_and_the_phones_own_changes(api: httpx.AsyncClient, worker: Worker) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    ref = SessionRef("acme", "alice")
    hello = await inject(api, acme, {"sessionId": "alice", "from": DAVE, "message": "hello"})
    # a reaction is the chat's last message, but no unread one (WhatsApp does not count it)
    reaction = {"message_id": hello, "emoji": "👍"}
    await inject(api, acme, {"sessionId": "alice", "from": DAVE, "type": "reaction", "reaction": reaction})

    async def listed() -> bool:
        found = await chats(api, acme, "alice")
        return len(found) == 1 and found[0]["lastMessage"]["type"] == "reaction"

    await eventually(listed, within=20.0)
    chat = (await chats(api, acme, "alice"))[0]
    chat_id, dave_jid = chat["id"], f"{DAVE}@s.whatsapp.net"
    assert chat["unreadCount"] == 1

    archived = await api.post(f"/whatsapp/chats/{chat_id}/archive", headers=acme)
    assert archived.status_code == 200, archived.text
    assert archived.json()["archived"] is True
    state = await sandbox(worker).chat_state(ref, dave_jid)
    assert state is not None and state.archived is True
    assert [c["id"] for c in await chats(api, acme, "alice", archived="true")] == [chat_id]
    assert await chats(api, acme, "alice", archived="false") == []

    pinned = (await api.post(f"/whatsapp/chats/{chat_id}/pin", headers=acme)).json()
    assert pinned["pinned"] is True and pinned["archived"] is False  # pinning unarchives, as on WhatsApp
    assert (await api.post(f"/whatsapp/chats/{chat_id}/unpin", headers=acme)).json()["pinned"] is False

    muted = (await api.post(f"/whatsapp/chats/{chat_id}/mute", headers=acme, json={"duration": 3600})).json()
    until = datetime.fromisoformat(muted["mutedUntil"])
    assert muted["muted"] is True and timedelta(minutes=59) < until - datetime.now(UTC) <= timedelta(hours=1)
    forever = (await api.post(f"/whatsapp/chats/{chat_id}/mute", headers=acme)).json()
    assert forever["muted"] is True and forever["mutedUntil"] is None
    state = await sandbox(worker).chat_state(ref, dave_jid)
    assert state is not None and state.muted is True and state.muted_until is None
    unmuted = (await api.post(f"/whatsapp/chats/{chat_id}/unmute", headers=acme)).json()
    assert unmuted["muted"] is False
    state = await sandbox(worker).chat_state(ref, dave_jid)
    assert state is not None and state.muted is False
    changed = await an_event(api, acme, "alice", "chat-update", {"chatId": chat_id, "source": "api"})
    assert changed["changes"] == {"muted": False, "mutedUntil": None}
    assert (changed["contactId"], changed["contactJid"]) == (chat_id, dave_jid)

    # the phone archives the chat, then marks it unread, then reads it
    await inject(api, acme, {"sessionId": "alice", "from": DAVE, "appState": {"archived": True}})
    phone = await an_event(api, acme, "alice", "chat-update", {"chatId": chat_id, "source": "phone"})
    assert phone["changes"] == {"archived": True} and phone["chat"] == DAVE
    assert (phone["contactId"], phone["contactJid"]) == (chat_id, dave_jid)
    assert (await api.get(f"/whatsapp/chats/{chat_id}", headers=acme)).json()["archived"] is True
    state = await sandbox(worker).chat_state(ref, dave_jid)
    assert state is not None and state.archived is True

    await inject(api, acme, {"sessionId": "alice", "from": DAVE, "appState": {"read": False}})

    async def marked_unread() -> bool:
        return bool((await api.get(f"/whatsapp/chats/{chat_id}", headers=acme)).json()["markedUnread"])

    await eventually(marked_unread, within=20.0)
    await inject(api, acme, {"sessionId": "alice", "from": DAVE, "appState": {"read": True}})

    async def read_on_phone() -> bool:
        found = (await api.get(f"/whatsapp/chats/{chat_id}", headers=acme)).json()
        return found["unreadCount"] == 0 and found["markedUnread"] is False

    await eventually(read_on_phone, within=20.0)

    # bad input names its field; an unknown chat is 404
    both = await api.post(
        f"/whatsapp/chats/{chat_id}/mute", headers=acme, json={"duration": 60, "until": "2099-01-01T00:00:00Z"}
    )
    assert assert_problem(both, 422)["errors"][0]["field"] == "until"
    past = await api.post(f"/whatsapp/chats/{chat_id}/mute", headers=acme, json={"until": "2001-01-01T00:00:00Z"})
    assert assert_problem(past, 422)["errors"][0]["field"] == "until"
    assert_problem(await api.post("/whatsapp/chats/nosuchchat/archive", headers=acme), 404, "chat_not_found")
    assert_problem(await api.get("/whatsapp/chats/nosuchchat/messages", headers=acme), 404, "chat_not_found")
    no_state = await api.post(
        "/whatsapp/sandbox/inbound", headers=acme, json={"sessionId": "alice", "from": DAVE, "appState": {}}
    )
    assert assert_problem(no_state, 422)["errors"][0]["field"] == "appState"


async def test_presence_subscription_and_events(api: httpx.AsyncClient, worker: Worker) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    await linked(api, acme, "bob", BOB)
    bob_jid = f"{BOB}@s.whatsapp.net"

    subscribed = await api.post("/whatsapp/sessions/alice/presence/subscribe", headers=acme, json={"to": BOB})
    assert subscribed.status_code == 200, subscribed.text
    assert subscribed.json() == {"sessionId": "alice", "subscribed": bob_jid}
    offline = await an_event(api, acme, "alice", "presence", {"jid": bob_jid, "presence": "unavailable"})
    assert offline["chatJid"] is None and offline["contactId"] is None  # alice has no contact for bob (yet)

    online = await api.post("/whatsapp/sessions/bob/presence/own", headers=acme, json={"presence": "available"})
    assert online.status_code == 200 and online.json()["presence"] == "available"
    await an_event(api, acme, "alice", "presence", {"jid": bob_jid, "presence": "available"})

    typing = await api.post(
        "/whatsapp/sessions/bob/presence", headers=acme, json={"to": ALICE, "presence": "composing"}
    )
    assert typing.status_code == 200, typing.text
    composing = await an_event(api, acme, "alice", "presence", {"jid": bob_jid, "presence": "composing"})
    assert composing["chatJid"] == bob_jid
    away = await api.post("/whatsapp/sessions/bob/presence/own", headers=acme, json={"presence": "unavailable"})
    assert away.status_code == 200
    gone = await an_event(api, acme, "alice", "presence", {"jid": bob_jid, "presence": "unavailable"})
    assert gone["lastSeen"] is not None

    # bob never subscribed to alice: her typing is not shown to him
    await api.post("/whatsapp/sessions/alice/presence", headers=acme, json={"to": BOB, "presence": "composing"})

    # a simulated phone shows presence when told to; alice knows carol (a contact) by now
    await inject(api, acme, {"sessionId": "alice", "from": CAROL, "message": "hi"})

    async def knows_carol() -> bool:
        return len(await chats(api, acme, "alice")) == 1

    await eventually(knows_carol, within=20.0)
    carol_id = (await chats(api, acme, "alice"))[0]["id"]
    seen = "2026-11-30T10:00:00+00:00"
    await inject(api, acme, {"sessionId": "alice", "from": CAROL, "presence": "unavailable", "lastSeen": seen})
    carol = await an_event(api, acme, "alice", "presence", {"jid": f"{CAROL}@s.whatsapp.net"})
    assert carol["presence"] == "unavailable"
    assert datetime.fromisoformat(carol["lastSeen"]) == datetime.fromisoformat(seen)
    assert carol["contactId"] == carol_id and carol["contactJid"] == f"{CAROL}@s.whatsapp.net"
    group = "120363012345678901@g.us"
    await inject(api, acme, {"sessionId": "alice", "from": CAROL, "group": group, "presence": "recording"})
    recording = await an_event(api, acme, "alice", "presence", {"presence": "recording"})
    assert recording["chatJid"] == group and recording["jid"] == f"{CAROL}@s.whatsapp.net"
    assert await events(api, acme, "bob", "presence") == []

    not_a_group = await api.post("/whatsapp/sessions/alice/presence/subscribe", headers=acme, json={"to": group})
    assert assert_problem(not_a_group, 422)["errors"][0]["field"] == "to"
    bad = await api.post("/whatsapp/sessions/alice/presence/own", headers=acme, json={"presence": "composing"})
    assert_problem(bad, 422)


async def test_a_chat_keeps_its_state_when_its_lid_learns_the_number(api: httpx.AsyncClient, worker: Worker) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    lid = f"{simulated_lid(DAVE)}@lid"
    await inject(api, acme, {"sessionId": "alice", "from": lid, "message": "who am I?"})

    async def by_lid() -> bool:
        return [c["jid"] for c in await chats(api, acme, "alice")] == [lid]

    await eventually(by_lid, within=20.0)
    [chat] = await chats(api, acme, "alice")
    assert chat["lid"] == lid
    assert (await api.post(f"/whatsapp/chats/{chat['id']}/archive", headers=acme)).json()["archived"] is True

    await inject(api, acme, {"sessionId": "alice", "from": DAVE, "message": "it's Dave"})  # names both ids

    async def both_ids() -> bool:
        listed = await chats(api, acme, "alice")
        return len(listed) == 1 and listed[0]["jid"] == f"{DAVE}@s.whatsapp.net"

    await eventually(both_ids, within=20.0)
    [same] = await chats(api, acme, "alice")
    assert (same["id"], same["chat"], same["lid"], same["archived"]) == (chat["id"], DAVE, lid, True)
    assert same["unreadCount"] == 2 and same["lastMessage"]["text"] == "it's Dave"
    both = await api.get(f"/whatsapp/chats/{chat['id']}/messages", headers=acme)
    assert [m["content"] for m in both.json()["messages"]] == ["it's Dave", "who am I?"]
