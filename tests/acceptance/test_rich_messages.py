"""Rich messages end to end over HTTP on the sandbox: every kind without a file, replies, reactions, edits, deletes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.acceptance.support import (
    api_client,
    assert_problem,
    events,
    linked,
    message,
    new_client,
    received,
    send,
    sent,
)
from tests.support.waiting import eventually
from zapgate.services.worker import Worker

ALICE, BOB = "5511977770001", "5511977770002"


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(database_url, send_rate=0) as http:
        yield http


async def test_every_kind_without_a_file_goes_both_ways(api: httpx.AsyncClient, worker: Worker) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    await linked(api, acme, "bob", BOB)

    first = await send(api, acme, {"sessionId": "alice", "to": BOB, "type": "text", "text": {"body": "Lunch?"}})
    await sent(api, acme, "alice", first)

    async def bob_has_it() -> bool:
        return len(await received(api, acme, "bob", "text")) == 1

    await eventually(bob_has_it, within=20.0)
    [arrived] = await received(api, acme, "bob", "text")
    assert arrived["message"] == {"type": "text", "text": {"body": "Lunch?"}}

    # bob replies to it and reacts to it: alice sees both on her own message, under her own id
    reply = await send(
        api,
        acme,
        {"sessionId": "bob", "to": ALICE, "text": {"body": "Yes!"}, "context": {"message_id": arrived["messageId"]}},
    )
    reaction = await send(
        api,
        acme,
        {
            "sessionId": "bob",
            "to": ALICE,
            "type": "reaction",
            "reaction": {"message_id": arrived["messageId"], "emoji": "👍"},
        },
    )
    await sent(api, acme, "bob", reply)
    await sent(api, acme, "bob", reaction)

    async def alice_sees_the_reaction() -> bool:
        mine = await message(api, acme, "alice", first)
        return [(r["reactor"], r["emoji"]) for r in mine.get("reactions") or []] == [(f"{BOB}@s.whatsapp.net", "👍")]

    await eventually(alice_sees_the_reaction, within=20.0)
    [answer] = [m for m in await received(api, acme, "alice", "text") if m["content"] == "Yes!"]
    assert answer["context"]["message_id"] == first  # alice's own id of the message bob answered
    bobs_copy = await message(api, acme, "bob", arrived["messageId"])
    assert [(r["reactor"], r["emoji"]) for r in bobs_copy["reactions"]] == [("me", "👍")]

    # a location, contact cards and a poll arrive as they were sent
    bodies = [
        {"type": "location", "location": {"latitude": -23.5505, "longitude": -46.6333, "name": "Sé"}},
        {
            "type": "contacts",
            "contacts": [
                {
                    "name": {"formatted_name": "Ana"},
                    "phones": [{"phone": "+55 11 91234-5678", "wa_id": "5511912345678"}],
                }
            ],
        },
        {"type": "poll", "poll": {"question": "Where?", "options": ["Sé", "Pinheiros"], "selectable_count": 1}},
    ]
    for body in bodies:
        await sent(api, acme, "alice", await send(api, acme, {"sessionId": "alice", "to": BOB, **body}))
    for body in bodies:
        kind = body["type"]

        async def arrived_as_sent(kind: str = kind, body: dict[str, Any] = body) -> bool:
            found = await received(api, acme, "bob", kind)
            return bool(found) and found[0]["message"][kind] == _as_stored(kind, body[kind])

        await eventually(arrived_as_sent, within=20.0)

    # alice edits her first message, then deletes it for everyone: bob's copy follows, with events
    edit = await api.patch(f"/whatsapp/messages/{first}", headers=acme, json={"sessionId": "alice", "text": "Dinner?"})
    assert edit.status_code == 202, edit.text
    await sent(api, acme, "alice", edit.json()["messageId"])

    async def bob_sees_the_edit() -> bool:
        copy = await message(api, acme, "bob", arrived["messageId"])
        return bool(copy["content"] == "Dinner?" and copy["editedAt"])

    await eventually(bob_sees_the_edit, within=20.0)
    [edited] = await events(api, acme, "bob", "message-edited")
    assert edited["messageId"] == arrived["messageId"] and edited["previousText"] == "Lunch?"
    assert (await message(api, acme, "alice", first))["content"] == "Dinner?"

    gone = await api.delete(f"/whatsapp/messages/{first}", headers=acme, params={"sessionId": "alice"})
    assert gone.status_code == 202, gone.text
    await sent(api, acme, "alice", gone.json()["messageId"])

    async def bob_sees_the_delete() -> bool:
        return bool((await message(api, acme, "bob", arrived["messageId"]))["deletedAt"])

    await eventually(bob_sees_the_delete, within=20.0)
    [deleted] = await events(api, acme, "bob", "message-deleted")
    assert deleted["messageId"] == arrived["messageId"]
    again = await api.patch(f"/whatsapp/messages/{first}", headers=acme, json={"sessionId": "alice", "text": "x"})
    assert_problem(again, 409, "message_not_editable")


def _as_stored(kind: str, part: Any) -> Any:
    return {**part, "selectable_count": 1} if kind == "poll" else part


async def test_what_cannot_be_sent_is_refused_with_its_field(api: httpx.AsyncClient, worker: Worker) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "alice", ALICE)
    inbound = await api.post(
        "/whatsapp/sandbox/inbound", headers=acme, json={"sessionId": "alice", "from": BOB, "message": "hi"}
    )
    assert inbound.status_code == 202
    theirs = str(inbound.json()["messageId"])

    async def stored() -> bool:
        return (
            await api.get(f"/whatsapp/messages/{theirs}", headers=acme, params={"sessionId": "alice"})
        ).status_code == 200

    await eventually(stored, within=20.0)

    def body(**fields: Any) -> dict[str, Any]:
        return {"sessionId": "alice", "to": BOB, **fields}

    cases = [
        (body(type="reaction", reaction={"message_id": "nope", "emoji": "👍"}), "reaction.message_id"),
        (
            body(type="reaction", reaction={"message_id": theirs, "emoji": "👍"}, to="447700900123"),
            "reaction.message_id",
        ),
        (body(text={"body": "x"}, context={"message_id": "nope"}), "context.message_id"),
        (body(type="location", location={"latitude": 100, "longitude": 0}), None),
        (body(type="poll", poll={"question": "Q", "options": ["a"]}), "poll.options"),
        (body(type="sms", sms={}), "type"),
        (body(type="text", text={"body": "x", "colour": "red"}), "text.colour"),
    ]
    for request, field in cases:
        answer = await api.post("/whatsapp/messages", headers=acme, json=request)
        assert_problem(answer, 422)
        if field is not None:
            assert field in answer.text, answer.text
    # a received message cannot be edited or deleted; an unknown one is not found
    assert_problem(
        await api.patch(f"/whatsapp/messages/{theirs}", headers=acme, json={"sessionId": "alice", "text": "x"}),
        409,
        "message_not_editable",
    )
    assert_problem(await api.delete("/whatsapp/messages/nope", headers=acme, params={"sessionId": "alice"}), 404)
    # nothing refused was queued
    page = (await api.get("/whatsapp/messages", headers=acme, params={"sessionId": "alice"})).json()
    assert [m["direction"] for m in page["messages"]] == ["inbound"]
