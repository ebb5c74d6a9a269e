"""Groups end to end on the sandbox: three sessions in one group, over HTTP, with the events each member hears."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from tests.acceptance.receiver import receiving
from tests.acceptance.sse import read_sse
from tests.acceptance.support import api_client, assert_problem, linked, message, new_client, send, sent
from tests.support.waiting import eventually
from zapgate.db.manager import ConnectionManager
from zapgate.domain.webhooks import AddressPolicy
from zapgate.services.webhook_dispatcher import WebhookDispatcher
from zapgate.services.worker import Worker

ALICE, BOB, CAROL = "5511977770001", "5511977770002", "5511977770003"
SIMULATED = "5511977778888"  # a phone no session has linked: it reads at once
NOBODY = "5511977770404"  # no WhatsApp account (the sandbox's rule: ending in 404)


def jid(phone: str) -> str:
    return f"{phone}@s.whatsapp.net"


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(database_url, send_rate=0, engine_call_timeout=5.0) as http:
        yield http


async def event(
    api: httpx.AsyncClient,
    headers: dict[str, str],
    session: str,
    kind: str,
    match: Callable[[dict[str, Any]], bool] = lambda body: True,
    within: float = 20.0,
) -> dict[str, Any]:
    """The first event of `kind` of the session that `match`es, read over SSE from the start of the log."""
    params = {"sessionId": session, "lastEventId": "0"}
    stream = api.stream("GET", "/whatsapp/stream", headers=headers, params=params, timeout=within + 5)
    async with asyncio.timeout(within), stream as r:
        async for item in read_sse(r):
            if item.event == kind and match(item.data):
                return dict(item.data)
    raise AssertionError(f"no {kind} event for {session}")


async def test_three_sessions_in_one_group(api: httpx.AsyncClient, worker: Worker) -> None:
    acme = await new_client(api, "acme")
    for session, phone in (("alice", ALICE), ("bob", BOB), ("carol", CAROL)):
        await linked(api, acme, session, phone)

    # create: alice is the creator (super admin); each participant's outcome apart
    made = await api.post(
        "/whatsapp/groups",
        headers=acme,
        json={"sessionId": "alice", "subject": "Team", "participants": [BOB, jid(SIMULATED), NOBODY]},
    )
    assert made.status_code == 201, made.text
    body = made.json()
    group = body["group"]["id"]
    assert group.endswith("@g.us")
    assert [(p["jid"], p["status"]) for p in body["participants"]] == [
        (jid(BOB), "ok"),
        (jid(SIMULATED), "ok"),
        (jid(NOBODY), "not_on_whatsapp"),
    ]
    roles = {p["jid"]: (p["isAdmin"], p["isSuperAdmin"]) for p in body["group"]["participants"]}
    assert roles == {jid(ALICE): (True, True), jid(BOB): (False, False), jid(SIMULATED): (False, False)}
    joined = await event(api, acme, "bob", "group-join")
    assert joined["groupId"] == group and joined["reason"] == "added" and joined["actor"] == jid(ALICE)
    assert joined["group"]["subject"] == "Team"
    listed = await api.get("/whatsapp/groups", headers=acme, params={"sessionId": "bob"})
    assert [g["id"] for g in listed.json()["groups"]] == [group]
    by_user_part = await api.get(f"/whatsapp/groups/{group.split('@')[0]}", headers=acme, params={"sessionId": "bob"})
    assert by_user_part.status_code == 200 and by_user_part.json()["size"] == 3

    # a message to the group reaches the member sessions; receipts come from each member
    sent_id = await send(api, acme, {"sessionId": "alice", "to": group, "type": "text", "text": {"body": "hello team"}})
    got = await event(api, acme, "bob", "message-received", lambda b: b.get("text") == "hello team")
    assert got["chatJid"] == group and got["isGroup"] is True, got
    assert got["senderJid"] == jid(ALICE), got

    async def read_by_members() -> bool:
        return (await message(api, acme, "alice", sent_id))["status"] == "read"

    await eventually(read_by_members, within=20.0)

    # participants: admins only; each participant's result apart (200 with a body per participant)
    add = await api.post(
        f"/whatsapp/groups/{group}/participants",
        headers=acme,
        json={"sessionId": "alice", "action": "add", "participants": [CAROL, BOB]},
    )
    assert add.status_code == 200, add.text
    assert [(p["jid"], p["status"]) for p in add.json()["participants"]] == [
        (jid(CAROL), "ok"),
        (jid(BOB), "already_in"),
    ]
    assert (await event(api, acme, "carol", "group-join"))["reason"] == "added"
    told = await event(api, acme, "bob", "group-participants", lambda b: b["action"] == "add")
    assert told["participants"] == [jid(CAROL)] and told["actor"] == jid(ALICE)

    refused = await api.post(
        f"/whatsapp/groups/{group}/participants",
        headers=acme,
        json={"sessionId": "bob", "action": "remove", "participants": [CAROL]},
    )
    problem = assert_problem(refused, 403, "group_forbidden")
    assert problem["errors"][0]["field"] == "participants"
    settings = await api.patch(f"/whatsapp/groups/{group}", headers=acme, json={"sessionId": "bob", "announce": True})
    assert assert_problem(settings, 403, "group_forbidden")["errors"][0]["field"] == "announce"

    promote = await api.post(
        f"/whatsapp/groups/{group}/participants",
        headers=acme,
        json={"sessionId": "alice", "action": "promote", "participants": [BOB]},
    )
    assert [p["status"] for p in promote.json()["participants"]] == ["ok"]
    promoted = await event(api, acme, "carol", "group-participants", lambda b: b["action"] == "promote")
    assert promoted["participants"] == [jid(BOB)]
    by_bob = await api.post(
        f"/whatsapp/groups/{group}/participants",
        headers=acme,
        json={"sessionId": "bob", "action": "demote", "participants": [ALICE, jid(SIMULATED)]},
    )
    assert [p["status"] for p in by_bob.json()["participants"]] == [
        "not_authorized",
        "ok",
    ]  # nobody demotes the creator
    removed = await api.post(
        f"/whatsapp/groups/{group}/participants",
        headers=acme,
        json={"sessionId": "bob", "action": "remove", "participants": [CAROL]},
    )
    assert [p["status"] for p in removed.json()["participants"]] == ["ok"]
    gone = await event(api, acme, "carol", "group-leave")
    assert gone["reason"] == "removed" and gone["actor"] == jid(BOB)

    # settings: the other members hear each change as an event
    changed = await api.patch(
        f"/whatsapp/groups/{group}",
        headers=acme,
        json={"sessionId": "alice", "subject": "Team 2", "description": "Our team", "announce": True},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["changed"] == ["subject", "description", "announce"]
    assert changed.json()["group"]["announce"] is True
    update = await event(api, acme, "bob", "group-update", lambda b: b["action"] == "subject")
    assert update["subject"] == "Team 2" and update["actor"] == jid(ALICE)
    assert (await event(api, acme, "bob", "group-update", lambda b: b["action"] == "announce"))["announce"] is True
    info = (await api.get(f"/whatsapp/groups/{group}", headers=acme, params={"sessionId": "bob"})).json()
    assert (info["subject"], info["description"], info["announce"]) == ("Team 2", "Our team", True)

    # invite link: carol joins by it; revoking it makes the old one unknown
    invite = await api.get(f"/whatsapp/groups/{group}/invite", headers=acme, params={"sessionId": "alice"})
    assert invite.status_code == 200, invite.text
    link = invite.json()["link"]
    assert link.startswith("https://chat.whatsapp.com/")
    joined_by_link = await api.post("/whatsapp/groups/join", headers=acme, json={"sessionId": "carol", "link": link})
    assert joined_by_link.status_code == 200, joined_by_link.text
    assert joined_by_link.json()["groupId"] == group
    by_link = await event(api, acme, "alice", "group-participants", lambda b: b["action"] == "join-by-link")
    assert by_link["participants"] == [jid(CAROL)]
    assert (await event(api, acme, "carol", "group-join", lambda b: b["reason"] == "invite"))["groupId"] == group

    # announce: a member who is not an admin cannot send
    muted = await send(api, acme, {"sessionId": "carol", "to": group, "type": "text", "text": {"body": "may I?"}})

    async def failed() -> bool:
        return (await message(api, acme, "carol", muted))["status"] == "failed"

    await eventually(failed, within=20.0)

    revoked = await api.delete(f"/whatsapp/groups/{group}/invite", headers=acme, params={"sessionId": "alice"})
    assert revoked.status_code == 200 and revoked.json()["link"] != link
    stale = await api.post("/whatsapp/groups/join", headers=acme, json={"sessionId": "carol", "link": link})
    assert_problem(stale, 404, "invite_not_found")

    # leave
    left = await api.post(f"/whatsapp/groups/{group}/leave", headers=acme, json={"sessionId": "carol"})
    assert left.status_code == 200, left.text
    leaving = await event(api, acme, "alice", "group-participants", lambda b: b["action"] == "leave")
    assert leaving["participants"] == [jid(CAROL)]
    assert (await event(api, acme, "carol", "group-leave", lambda b: b["reason"] == "left"))["groupId"] == group
    assert (await api.get("/whatsapp/groups", headers=acme, params={"sessionId": "carol"})).json()["groups"] == []
    after = await api.get(f"/whatsapp/groups/{group}", headers=acme, params={"sessionId": "carol"})
    assert_problem(after, 404, "group_not_found")


async def test_bad_group_input_is_refused_naming_the_field(api: httpx.AsyncClient, worker: Worker) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    long_subject = await api.post(
        "/whatsapp/groups", headers=acme, json={"sessionId": "alice", "subject": "x" * 101, "participants": []}
    )
    assert assert_problem(long_subject, 422)["errors"][0]["field"] == "subject"
    made = await api.post("/whatsapp/groups", headers=acme, json={"sessionId": "alice", "subject": "Solo"})
    assert made.status_code == 201, made.text
    group = made.json()["group"]["id"]
    long_description = await api.patch(
        f"/whatsapp/groups/{group}", headers=acme, json={"sessionId": "alice", "description": "x" * 2049}
    )
    assert assert_problem(long_description, 422)["errors"][0]["field"] == "description"
    nothing = await api.patch(f"/whatsapp/groups/{group}", headers=acme, json={"sessionId": "alice"})
    assert_problem(nothing, 422)
    bad_participant = await api.post(
        f"/whatsapp/groups/{group}/participants",
        headers=acme,
        json={"sessionId": "alice", "action": "add", "participants": ["not a number"]},
    )
    assert assert_problem(bad_participant, 422)["errors"][0]["field"] == "participants[0]"
    unknown = await api.get("/whatsapp/groups/120363999999999999@g.us", headers=acme, params={"sessionId": "alice"})
    assert_problem(unknown, 404, "group_not_found")
    bad_id = await api.get("/whatsapp/groups/not-a-group", headers=acme, params={"sessionId": "alice"})
    assert assert_problem(bad_id, 422)["errors"][0]["field"] == "groupId"
    not_jpeg = await api.put(
        f"/whatsapp/groups/{group}/picture",
        headers=acme,
        params={"sessionId": "alice"},
        files={"file": ("a.png", b"\x89PNG\r\n\x1a\n")},
    )
    assert assert_problem(not_jpeg, 422)["errors"][0]["field"] == "file"
    picture = await api.put(
        f"/whatsapp/groups/{group}/picture",
        headers=acme,
        params={"sessionId": "alice"},
        files={"file": ("a.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 100_000)},
    )
    assert picture.status_code == 200, picture.text
    picture_id = picture.json()["pictureId"]
    told = await event(api, acme, "alice", "group-update", lambda b: b["action"] == "picture")
    assert told["pictureId"] == picture_id
    info = await api.get(f"/whatsapp/groups/{group}", headers=acme, params={"sessionId": "alice"})
    assert info.json()["pictureId"] == picture_id


@pytest.fixture
async def hooked_api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = {"send_rate": 0, "engine_call_timeout": 5.0, "webhook_allow_loopback": True}
    async with api_client(database_url, **settings) as http:
        yield http


async def test_group_events_reach_webhooks_like_every_other_event(
    hooked_api: httpx.AsyncClient, database_url: str, worker: Worker
) -> None:
    api = hooked_api
    async with (
        receiving() as receiver,
        ConnectionManager(database_url, pool_size=4, health_interval=3600) as manager,
    ):
        dispatcher = WebhookDispatcher(manager, database_url, policy=AddressPolicy(allow_loopback=True), timeout=5.0)
        await dispatcher.start()
        try:
            acme = await new_client(api, "acme")
            await linked(api, acme, "alice", ALICE)
            await linked(api, acme, "bob", BOB)
            hook = await api.post(
                "/whatsapp/webhooks",
                headers=acme,
                json={"url": receiver.url("/groups"), "events": ["group-join", "group-update"]},
            )
            assert hook.status_code == 201, hook.text
            made = await api.post(
                "/whatsapp/groups",
                headers=acme,
                json={"sessionId": "alice", "subject": "Hooked", "participants": [BOB]},
            )
            group = made.json()["group"]["id"]
            renamed = await api.patch(
                f"/whatsapp/groups/{group}", headers=acme, json={"sessionId": "bob", "subject": "Renamed"}
            )
            assert renamed.status_code == 200, renamed.text
            delivered = [r.json for r in await receiver.wait_for("/groups", 4, within=30.0)]
            kinds = sorted((body["type"], body["sessionId"]) for body in delivered)
            assert kinds == [
                ("group-join", "alice"),
                ("group-join", "bob"),
                ("group-update", "alice"),
                ("group-update", "bob"),
            ]
            assert all(body["groupId"] == group for body in delivered)
            assert {body.get("subject") for body in delivered if body["type"] == "group-update"} == {"Renamed"}
        finally:
            await dispatcher.close()


async def test_simulated_phones_act_in_groups_as_members_would(api: httpx.AsyncClient, worker: Worker) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    act = "/whatsapp/sandbox/sessions/alice/group-act"
    created = await api.post(
        act,
        headers=acme,
        json={"phoneNumber": SIMULATED, "action": "create", "subject": "Outside", "participants": [ALICE]},
    )
    assert created.status_code == 202, created.text
    joined = await event(api, acme, "alice", "group-join")
    assert joined["reason"] == "added" and joined["actor"] == jid(SIMULATED)
    group = joined["groupId"]
    owner = {p["jid"]: p["isSuperAdmin"] for p in joined["group"]["participants"]}
    assert owner == {jid(SIMULATED): True, jid(ALICE): False}

    stranger = "5511977776666"
    await api.post(
        act,
        headers=acme,
        json={"phoneNumber": SIMULATED, "action": "add", "groupId": group, "participants": [stranger]},
    )
    added = await event(api, acme, "alice", "group-participants", lambda b: b["action"] == "add")
    assert added["participants"] == [jid(stranger)] and added["actor"] == jid(SIMULATED)
    # a simulated member who is not an admin is held back, as a session would be: the session hears why
    refused = await api.post(
        act, headers=acme, json={"phoneNumber": stranger, "action": "announce", "groupId": group, "enabled": True}
    )
    assert refused.status_code == 202
    error = await event(api, acme, "alice", "error", lambda b: b["code"] == "group_forbidden")
    assert "admins" in error["message"]
    await api.post(
        act,
        headers=acme,
        json={"phoneNumber": SIMULATED, "action": "remove", "groupId": group, "participants": [ALICE]},
    )
    gone = await event(api, acme, "alice", "group-leave")
    assert gone["reason"] == "removed" and gone["actor"] == jid(SIMULATED)
    bad = await api.post(act, headers=acme, json={"phoneNumber": SIMULATED, "action": "subject", "groupId": group})
    assert assert_problem(bad, 422)["errors"][0]["field"] == "subject"


async def test_a_session_joins_by_an_invite_message(api: httpx.AsyncClient, worker: Worker) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    await linked(api, acme, "bob", BOB)
    made = await api.post(
        "/whatsapp/groups", headers=acme, json={"sessionId": "alice", "subject": "Invited", "participants": [SIMULATED]}
    )
    assert made.status_code == 201, made.text
    group = made.json()["group"]["id"]
    # only an admin invites by message: a member who is not one is refused, told as an error of the session
    act = "/whatsapp/sandbox/sessions/alice/group-act"
    invite = {"phoneNumber": SIMULATED, "action": "invite", "groupId": group, "participants": [BOB]}
    assert (await api.post(act, headers=acme, json=invite)).status_code == 202
    refused = await event(api, acme, "alice", "error", lambda b: b["code"] == "group_forbidden")
    assert "invite" in refused["message"]
    promoted = await api.post(
        f"/whatsapp/groups/{group}/participants",
        headers=acme,
        json={"sessionId": "alice", "action": "promote", "participants": [SIMULATED]},
    )
    assert [p["status"] for p in promoted.json()["participants"]] == ["ok"]
    code = (await api.get(f"/whatsapp/groups/{group}/invite", headers=acme, params={"sessionId": "alice"})).json()[
        "code"
    ]

    # the simulated admin invites bob by message: bob receives a group_invite message
    assert (await api.post(act, headers=acme, json=invite)).status_code == 202
    got = await event(api, acme, "bob", "message-received", lambda b: b.get("messageType") == "group_invite")
    card = got["message"]["group_invite"]
    assert card["group_id"] == group and card["code"] == code, got
    assert card["subject"] == "Invited" and card["expires_at"] > 0, got
    assert got["text"] == "[group invite] Invited"
    assert got["chatJid"] == jid(SIMULATED)
    stored = await message(api, acme, "bob", got["messageId"])
    assert stored["type"] == "group_invite"

    # bob joins with the message: the members hear it, bob is in
    joined = await api.post(
        "/whatsapp/groups/join", headers=acme, json={"sessionId": "bob", "messageId": got["messageId"]}
    )
    assert joined.status_code == 200, joined.text
    assert joined.json()["groupId"] == group
    assert jid(BOB) in {p["jid"] for p in joined.json()["group"]["participants"]}
    assert (await event(api, acme, "bob", "group-join", lambda b: b["reason"] == "invite"))["groupId"] == group
    heard = await event(api, acme, "alice", "group-participants", lambda b: b["action"] == "join-by-link")
    assert heard["participants"] == [jid(BOB)]
    listed = await api.get("/whatsapp/groups", headers=acme, params={"sessionId": "bob"})
    assert [g["id"] for g in listed.json()["groups"]] == [group]

    # expired, revoked: 404; a message that is no invite, or none given: 422 naming the field
    explicit = {"sessionId": "bob", "groupId": group, "inviter": SIMULATED, "code": code}
    expired = await api.post("/whatsapp/groups/join", headers=acme, json={**explicit, "expiration": 1_600_000_000})
    assert assert_problem(expired, 404, "invite_not_found")["errors"][0]["field"] == "code"
    revoked = await api.delete(f"/whatsapp/groups/{group}/invite", headers=acme, params={"sessionId": "alice"})
    assert revoked.status_code == 200
    stale = await api.post(
        "/whatsapp/groups/join", headers=acme, json={"sessionId": "bob", "messageId": got["messageId"]}
    )
    assert assert_problem(stale, 404, "invite_not_found")["errors"][0]["field"] == "messageId"
    stale_explicit = await api.post(
        "/whatsapp/groups/join", headers=acme, json={**explicit, "expiration": 4_000_000_000}
    )
    assert_problem(stale_explicit, 404, "invite_not_found")
    text_id = await send(api, acme, {"sessionId": "alice", "to": BOB, "type": "text", "text": {"body": "hi bob"}})
    said = await event(api, acme, "bob", "message-received", lambda b: b.get("text") == "hi bob")
    assert text_id
    not_invite = await api.post(
        "/whatsapp/groups/join", headers=acme, json={"sessionId": "bob", "messageId": said["messageId"]}
    )
    assert assert_problem(not_invite, 422)["errors"][0]["field"] == "messageId"
    unknown = await api.post("/whatsapp/groups/join", headers=acme, json={"sessionId": "bob", "messageId": "nope"})
    assert_problem(unknown, 404, "message_not_found")
    both = await api.post(
        "/whatsapp/groups/join", headers=acme, json={"sessionId": "bob", "messageId": "x", "link": code}
    )
    assert assert_problem(both, 422)["errors"][0]["field"] == "messageId"
    neither = await api.post("/whatsapp/groups/join", headers=acme, json={"sessionId": "bob"})
    assert assert_problem(neither, 422)["errors"][0]["field"] == "link"


async def test_an_admin_sends_an_invite_message_and_the_recipient_joins_with_it(
    api: httpx.AsyncClient, worker: Worker
) -> None:
    acme = await new_client(api, "acme")
    for session, phone in (("alice", ALICE), ("bob", BOB), ("carol", CAROL)):
        await linked(api, acme, session, phone)
    made = await api.post(
        "/whatsapp/groups",
        headers=acme,
        json={"sessionId": "alice", "subject": "Sent invites", "participants": [CAROL]},
    )
    assert made.status_code == 201, made.text
    group = made.json()["group"]["id"]
    code = (await api.get(f"/whatsapp/groups/{group}/invite", headers=acme, params={"sessionId": "alice"})).json()[
        "code"
    ]

    # alice (the admin) sends bob an invitation: the group's current code, subject and 3 days' expiry are added
    body = {
        "sessionId": "alice",
        "to": BOB,
        "type": "group_invite",
        "group_invite": {"group_id": group, "caption": "Come"},
    }
    first = await api.post("/whatsapp/messages", headers={**acme, "Idempotency-Key": "inv-1"}, json=body)
    assert first.status_code == 202, first.text
    again = await api.post("/whatsapp/messages", headers={**acme, "Idempotency-Key": "inv-1"}, json=body)
    assert again.status_code == 202 and again.headers.get("Idempotent-Replayed") == "true", again.text
    assert again.json()["messageId"] == first.json()["messageId"]
    mine = await sent(api, acme, "alice", first.json()["messageId"])
    assert mine["type"] == "group_invite" and mine["content"] == "[group invite] Sent invites", mine
    got = await event(api, acme, "bob", "message-received", lambda b: b.get("messageType") == "group_invite")
    card = got["message"]["group_invite"]
    assert card["group_id"] == group and card["code"] == code and card["caption"] == "Come", got
    assert card["subject"] == "Sent invites", got
    assert 3 * 86400 - 60 < card["expires_at"] - time.time() <= 3 * 86400, got
    assert got["chatJid"] == jid(ALICE)

    # bob joins with it: he is in, the members hear it
    joined = await api.post(
        "/whatsapp/groups/join", headers=acme, json={"sessionId": "bob", "messageId": got["messageId"]}
    )
    assert joined.status_code == 200, joined.text
    assert jid(BOB) in {p["jid"] for p in joined.json()["group"]["participants"]}
    heard = await event(api, acme, "alice", "group-participants", lambda b: b["action"] == "join-by-link")
    assert heard["participants"] == [jid(BOB)]

    # a member who is not an admin cannot send one (403), nor can one who is not in the group (404)
    by_member = {**body, "sessionId": "carol", "to": ALICE}
    forbidden = await api.post("/whatsapp/messages", headers=acme, json=by_member)
    assert assert_problem(forbidden, 403, "group_forbidden")["errors"][0]["field"] == "group_invite.group_id"
    await api.post(f"/whatsapp/groups/{group}/leave", headers=acme, json={"sessionId": "carol"})
    outsider = await api.post("/whatsapp/messages", headers=acme, json=by_member)
    assert assert_problem(outsider, 404, "group_not_found")["errors"][0]["field"] == "group_invite.group_id"
    # bad input: to a group, an unknown field, a bad group id
    to_group = await api.post("/whatsapp/messages", headers=acme, json={**body, "to": group})
    assert assert_problem(to_group, 422)["errors"][0]["field"] == "to"
    code_given = {**body, "group_invite": {"group_id": group, "code": "mine"}}
    assert_problem(await api.post("/whatsapp/messages", headers=acme, json=code_given), 422)
    bad_group = {**body, "group_invite": {"group_id": "nope"}}
    assert_problem(await api.post("/whatsapp/messages", headers=acme, json=bad_group), 422)
    listed = await api.get("/whatsapp/messages", headers=acme, params={"sessionId": "carol", "direction": "outbound"})
    assert listed.json()["messages"] == []  # nothing refused was queued

    # a replay answers what was accepted, though WhatsApp would now refuse the invitation (alice left the group)
    left = await api.post(f"/whatsapp/groups/{group}/leave", headers=acme, json={"sessionId": "alice"})
    assert left.status_code == 200, left.text
    late = await api.post("/whatsapp/messages", headers={**acme, "Idempotency-Key": "inv-1"}, json=body)
    assert late.status_code == 202 and late.headers.get("Idempotent-Replayed") == "true", late.text
    assert late.json()["messageId"] == first.json()["messageId"]
    other = await api.post("/whatsapp/messages", headers={**acme, "Idempotency-Key": "inv-2"}, json=body)
    assert_problem(other, 404, "group_not_found")


async def test_a_group_that_approves_new_participants_takes_requests_its_admins_answer(
    api: httpx.AsyncClient, worker: Worker
) -> None:
    acme = await new_client(api, "acme")
    for session, phone in (("alice", ALICE), ("bob", BOB), ("carol", CAROL)):
        await linked(api, acme, session, phone)
    made = await api.post(
        "/whatsapp/groups", headers=acme, json={"sessionId": "alice", "subject": "Vetted", "participants": [CAROL]}
    )
    group = made.json()["group"]["id"]
    assert made.json()["group"]["joinApproval"] is False
    url = f"/whatsapp/groups/{group}"

    # only admins switch it on; the members hear it
    by_member = await api.patch(url, headers=acme, json={"sessionId": "carol", "joinApproval": True})
    assert assert_problem(by_member, 403, "group_forbidden")["errors"][0]["field"] == "joinApproval"
    switched = await api.patch(url, headers=acme, json={"sessionId": "alice", "joinApproval": True})
    assert switched.status_code == 200, switched.text
    assert switched.json()["changed"] == ["joinApproval"] and switched.json()["group"]["joinApproval"] is True
    told = await event(api, acme, "carol", "group-update", lambda b: b["action"] == "join-approval")
    assert told["joinApproval"] is True and told["actor"] == jid(ALICE)

    # bob joins by link: a request (202, pending), told to the admins only
    code = (await api.get(f"{url}/invite", headers=acme, params={"sessionId": "alice"})).json()["code"]
    asked = await api.post("/whatsapp/groups/join", headers=acme, json={"sessionId": "bob", "link": code})
    assert asked.status_code == 202, asked.text
    assert asked.json() == {"sessionId": "bob", "groupId": group, "pending": True, "group": None}
    heard = await event(api, acme, "alice", "group-participants", lambda b: b["action"] == "requested")
    assert heard["participants"] == [jid(BOB)]
    requests = await api.get(f"{url}/requests", headers=acme, params={"sessionId": "alice"})
    assert requests.status_code == 200, requests.text
    assert [r["jid"] for r in requests.json()["requests"]] == [jid(BOB)]
    assert requests.json()["requests"][0]["requestedAt"]
    not_admin = await api.get(f"{url}/requests", headers=acme, params={"sessionId": "carol"})
    assert_problem(not_admin, 403, "group_forbidden")
    outside = await api.get(url, headers=acme, params={"sessionId": "bob"})
    assert_problem(outside, 404, "group_not_found")

    # alice approves bob (and nobody asked by the simulated number): bob is in, everyone hears it
    answer = {"sessionId": "alice", "action": "approve", "participants": [BOB, SIMULATED]}
    approved = await api.post(f"{url}/requests", headers=acme, json=answer)
    assert approved.status_code == 200, approved.text
    assert [(p["jid"], p["status"]) for p in approved.json()["participants"]] == [
        (jid(BOB), "ok"),
        (jid(SIMULATED), "no_request"),
    ]
    assert (await event(api, acme, "bob", "group-join", lambda b: b["reason"] == "approved"))["groupId"] == group
    welcomed = await event(api, acme, "carol", "group-participants", lambda b: b["action"] == "approved")
    assert welcomed["participants"] == [jid(BOB)]
    seen = await api.get(url, headers=acme, params={"sessionId": "bob"})
    assert seen.status_code == 200 and seen.json()["joinApproval"] is True
    assert jid(BOB) in {p["jid"] for p in seen.json()["participants"]}

    # a simulated phone asks too; rejected, it stays out and the admins hear it
    act = "/whatsapp/sandbox/sessions/alice/group-act"
    joining = {"phoneNumber": SIMULATED, "action": "join", "link": code}
    assert (await api.post(act, headers=acme, json=joining)).status_code == 202
    await event(
        api,
        acme,
        "alice",
        "group-participants",
        lambda b: b["action"] == "requested" and jid(SIMULATED) in b["participants"],
    )
    rejected = await api.post(
        f"{url}/requests", headers=acme, json={"sessionId": "alice", "action": "reject", "participants": [SIMULATED]}
    )
    assert [p["status"] for p in rejected.json()["participants"]] == ["ok"]
    await event(api, acme, "alice", "group-participants", lambda b: b["action"] == "rejected")
    after = await api.get(f"{url}/requests", headers=acme, params={"sessionId": "alice"})
    assert after.json()["requests"] == []
    members = (await api.get(url, headers=acme, params={"sessionId": "alice"})).json()["participants"]
    assert jid(SIMULATED) not in {p["jid"] for p in members}

    # bad answers: 422 naming the field
    maybe = await api.post(f"{url}/requests", headers=acme, json={**answer, "action": "maybe"})
    assert_problem(maybe, 422)
    nobody = await api.post(f"{url}/requests", headers=acme, json={**answer, "participants": []})
    assert_problem(nobody, 422)
    by_carol = await api.post(f"{url}/requests", headers=acme, json={**answer, "sessionId": "carol"})
    assert assert_problem(by_carol, 403, "group_forbidden")["errors"][0]["field"] == "participants"
