"""Contacts end to end on the sandbox: one contact per person whether WhatsApp names them by LID, by number or by
both (the LID revealed later), both ids and the contact id on every message and event, pictures, blocking, number
checks that make contacts, and sends addressed to a contact id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.acceptance.support import api_client, assert_problem, events, linked, new_client, sent
from tests.support.waiting import eventually
from zapgate.engines.sandbox import PICTURE_URL, simulated_lid
from zapgate.services.worker import Worker

BOT = "5511966660001"
ANA = "447700900123"
ANA_LID = f"{simulated_lid(ANA)}@lid"
ANA_JID = f"{ANA}@s.whatsapp.net"
FACELESS = "447700900100"  # ends in 00: the sandbox shows no picture for it


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(database_url, send_rate=0, engine_call_timeout=5.0) as http:
        yield http


async def _inject(api: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> str:
    answer = await api.post("/whatsapp/sandbox/inbound", headers=headers, json={"sessionId": "bot", **body})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["messageId"])


async def _inbound(api: httpx.AsyncClient, headers: dict[str, str], count: int) -> list[dict[str, Any]]:
    async def arrived() -> list[dict[str, Any]] | None:
        page = await api.get("/whatsapp/messages", headers=headers, params={"sessionId": "bot", "direction": "inbound"})
        found: list[dict[str, Any]] = page.json()["messages"]
        return found if len(found) >= count else None

    found: list[dict[str, Any]] = await eventually(arrived, within=20.0)
    return found


async def _contacts(api: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    page = await api.get("/whatsapp/contacts", headers=headers, params={"sessionId": "bot"})
    assert page.status_code == 200, page.text
    return list(page.json()["contacts"])


async def test_a_lid_revealed_later_makes_one_contact_with_both_messages(
    api: httpx.AsyncClient, worker: Worker
) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "bot", BOT)

    first = await _inject(api, acme, **{"from": ANA_LID, "message": "who am I?", "pushName": "Ana"})
    [by_lid] = await _inbound(api, acme, 1)
    assert by_lid["chatJid"] == ANA_LID
    assert (by_lid["contact"]["jid"], by_lid["contact"]["lid"]) == (None, ANA_LID)
    lid_contact = by_lid["contactId"]

    # the same person writes again, and WhatsApp names both ids this time (the sandbox knows a number's LID)
    second = await _inject(api, acme, **{"from": ANA, "message": "it's me", "businessName": "Ana's Bakery"})
    messages = await _inbound(api, acme, 2)
    assert {m["messageId"] for m in messages} == {first, second}
    [contact] = await _contacts(api, acme)
    assert {m["contactId"] for m in messages} == {contact["id"]}  # the first message moved to the one contact
    assert contact["id"] == lid_contact  # the only row there was: it learned its number
    assert (contact["phoneNumber"], contact["jid"], contact["lid"]) == (ANA, ANA_JID, ANA_LID)
    assert (contact["pushName"], contact["businessName"], contact["onWhatsApp"]) == ("Ana", "Ana's Bakery", True)
    for message in messages:
        assert (message["contact"]["jid"], message["contact"]["lid"]) == (ANA_JID, ANA_LID)
    for named in (contact["id"], ANA_LID, ANA_JID, ANA):  # the conversation, by any of the person's ids
        page = await api.get("/whatsapp/messages", headers=acme, params={"sessionId": "bot", "contact": named})
        assert {m["messageId"] for m in page.json()["messages"]} == {first, second}, named

    received = await events(api, acme, "bot", "message-received")
    by_id = {event["messageId"]: event for event in received}
    assert by_id[first]["contactId"] == by_id[second]["contactId"] == contact["id"]
    assert (by_id[first]["contactJid"], by_id[first]["contactLid"]) == (None, ANA_LID)  # as known then
    assert (by_id[second]["contactJid"], by_id[second]["contactLid"]) == (ANA_JID, ANA_LID)
    assert (by_id[second]["senderJid"], by_id[second]["senderLid"]) == (ANA_JID, ANA_LID)
    assert by_id[second]["businessName"] == "Ana's Bakery"

    # what acts on a message names its contact too
    await _inject(api, acme, **{"from": ANA, "type": "edit", "edit": {"message_id": second, "text": "it's me!"}})

    async def edited() -> list[dict[str, Any]]:
        return await events(api, acme, "bot", "message-edited")

    [edit] = await eventually(edited, within=20.0)
    assert (edit["contactId"], edit["contactJid"], edit["contactLid"]) == (contact["id"], ANA_JID, ANA_LID)

    # a reply to the contact id goes to the number, on the same contact, and its statuses name it
    reply = await api.post(
        "/whatsapp/messages", headers=acme, json={"sessionId": "bot", "to": contact["id"], "text": {"body": "hi Ana"}}
    )
    assert reply.status_code == 202, reply.text
    out = await sent(api, acme, "bot", reply.json()["messageId"])
    assert out["contactId"] == contact["id"] and out["chatJid"] == ANA_JID
    statuses = [e for e in await events(api, acme, "bot", "message-status") if e["messageId"] == out["messageId"]]
    assert [e["status"] for e in statuses] == ["sent", "delivered", "read"]
    assert {(e["contactId"], e["contactJid"], e["contactLid"]) for e in statuses} == {(contact["id"], ANA_JID, ANA_LID)}
    # and to its LID: still the same contact
    by_lid_send = await api.post(
        "/whatsapp/send", headers=acme, json={"sessionId": "bot", "to": ANA_LID, "message": "x"}
    )
    assert by_lid_send.status_code == 202, by_lid_send.text
    assert (await sent(api, acme, "bot", by_lid_send.json()["messageId"]))["contactId"] == contact["id"]
    assert len(await _contacts(api, acme)) == 1


async def test_contact_details_picture_and_blocking(api: httpx.AsyncClient, worker: Worker) -> None:
    acme, globex = await new_client(api, "acme"), await new_client(api, "globex")
    await linked(api, acme, "bot", BOT)
    await _inject(api, acme, **{"from": ANA, "message": "hello"})
    await _inject(api, acme, **{"from": FACELESS, "message": "hello"})
    await _inject(api, acme, **{"from": ANA, "group": "120363000000000001@g.us", "message": "hi all"})
    await _inbound(api, acme, 3)
    found = {c["phoneNumber"]: c for c in await _contacts(api, acme)}
    ana, faceless, group = found[ANA], found[FACELESS], found["120363000000000001@g.us"]
    assert ana["pictureUrl"] is None and ana["pictureExpiresAt"] is None  # not asked until someone looks

    shown = await api.get(f"/whatsapp/contacts/{ana['id']}", headers=acme)
    assert shown.status_code == 200, shown.text
    details = shown.json()
    assert details["pictureUrl"].startswith(PICTURE_URL) and details["pictureExpiresAt"]
    assert (details["jid"], details["lid"], details["blocked"]) == (ANA_JID, ANA_LID, False)
    again = (await api.get(f"/whatsapp/contacts/{ana['id']}", headers=acme)).json()
    assert again["pictureUrl"] == details["pictureUrl"] and again["updatedAt"] == details["updatedAt"]  # cached
    assert (await api.get(f"/whatsapp/contacts/{faceless['id']}", headers=acme)).json()["pictureUrl"] is None
    assert (await api.get(f"/whatsapp/contacts/{group['id']}", headers=acme)).json()["isGroup"] is True

    # another client's contact, an unknown one: 404
    assert_problem(await api.get(f"/whatsapp/contacts/{ana['id']}", headers=globex), 404, "contact_not_found")
    assert_problem(await api.post(f"/whatsapp/contacts/{ana['id']}/block", headers=globex), 404)
    assert_problem(await api.get("/whatsapp/contacts/k000000000000000000000000", headers=acme), 404)
    assert_problem(await api.get("/whatsapp/contacts/not-an-id", headers=acme), 404)
    assert_problem(await api.post(f"/whatsapp/contacts/{group['id']}/block", headers=acme), 422)

    blocked = await api.post(f"/whatsapp/contacts/{ana['id']}/block", headers=acme)
    assert blocked.status_code == 200, blocked.text
    assert blocked.json()["blocked"] is True
    # WhatsApp no longer delivers what they write, by number or by LID; after the unblock it does again
    dropped = await _inject(api, acme, **{"from": ANA, "message": "are you there?"})
    dropped_lid = await _inject(api, acme, **{"from": ANA_LID, "message": "hello??"})
    unblocked = await api.post(f"/whatsapp/contacts/{ana['id']}/unblock", headers=acme)
    assert unblocked.status_code == 200 and unblocked.json()["blocked"] is False
    delivered = await _inject(api, acme, **{"from": ANA, "message": "back"})
    ids = {m["messageId"] for m in await _inbound(api, acme, 4)}
    assert delivered in ids and dropped not in ids and dropped_lid not in ids

    async def audited() -> list[str] | None:
        page = await api.get("/whatsapp/audit", headers=acme, params={"action": "contact.block"})
        outcomes = sorted(entry["outcome"] for entry in page.json()["entries"])
        return outcomes if len(outcomes) == 2 else None

    assert await eventually(audited, within=10.0) == ["invalid_request", "ok"]  # the group's refusal, Ana's block


async def test_number_checks_and_sends_name_contacts(api: httpx.AsyncClient, worker: Worker) -> None:
    acme, globex = await new_client(api, "acme"), await new_client(api, "globex")
    await linked(api, acme, "bot", BOT)
    await _inject(api, acme, **{"from": ANA_LID, "message": "by LID only"})
    await _inbound(api, acme, 1)
    [lid_only] = await _contacts(api, acme)
    assert (lid_only["jid"], lid_only["lid"]) == (None, ANA_LID)

    # the check names the number's LID: the contact known by LID learns its number
    checked = await api.get("/whatsapp/contacts/check", headers=acme, params={"sessionId": "bot", "numbers": ANA})
    assert checked.status_code == 200, checked.text
    [answer] = checked.json()["numbers"]
    assert answer["contactId"] == lid_only["id"]
    [contact] = await _contacts(api, acme)
    assert (contact["id"], contact["jid"], contact["lid"], contact["onWhatsApp"]) == (
        lid_only["id"],
        ANA_JID,
        ANA_LID,
        True,
    )

    # a phone JID is the number: one contact; a contact id of another client names nobody
    as_jid = await api.post("/whatsapp/send", headers=acme, json={"sessionId": "bot", "to": ANA_JID, "message": "y"})
    assert as_jid.status_code == 202, as_jid.text
    assert (await sent(api, acme, "bot", as_jid.json()["messageId"]))["contactId"] == contact["id"]
    assert len(await _contacts(api, acme)) == 1
    # a number new to the session: the send's lookup tells its ids, and its contact learns them
    fresh = await api.post(
        "/whatsapp/send", headers=acme, json={"sessionId": "bot", "to": "447700900777", "message": "w"}
    )
    assert fresh.status_code == 202, fresh.text
    await sent(api, acme, "bot", fresh.json()["messageId"])
    learned = {c["phoneNumber"]: c for c in await _contacts(api, acme)}["447700900777"]
    assert (learned["jid"], learned["lid"], learned["onWhatsApp"]) == (
        "447700900777@s.whatsapp.net",
        f"{simulated_lid('447700900777')}@lid",
        True,
    )
    assert (await api.post("/whatsapp/session", headers=globex, json={"sessionId": "bot"})).status_code == 201
    theirs = await api.post(
        "/whatsapp/send", headers=globex, json={"sessionId": "bot", "to": contact["id"], "message": "z"}
    )
    problem = assert_problem(theirs, 422, "unknown_contact")
    assert problem["errors"][0]["field"] == "to"


# -- contact-update (issue 14) ---------------------------------------------------------------------------------


async def _updates(api: httpx.AsyncClient, headers: dict[str, str], count: int) -> list[dict[str, Any]]:
    """The session's contact-update events once there are `count` (read over SSE from the start of the log)."""

    async def arrived() -> list[dict[str, Any]] | None:
        found = await events(api, headers, "bot", "contact-update")
        return found if len(found) >= count else None

    found: list[dict[str, Any]] = await eventually(arrived, within=20.0)
    return found


async def test_merges_names_blocks_and_pictures_are_contact_updates(api: httpx.AsyncClient, worker: Worker) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "bot", BOT)
    await _inject(api, acme, **{"from": ANA_LID, "message": "by LID", "pushName": "Ana"})
    await _inbound(api, acme, 1)
    [by_lid] = await _contacts(api, acme)
    # a send to her number makes a contact of the number; the send's lookup tells both ids: one person, merged
    out = await api.post("/whatsapp/send", headers=acme, json={"sessionId": "bot", "to": ANA, "message": "hi"})
    assert out.status_code == 202, out.text
    await sent(api, acme, "bot", out.json()["messageId"])
    [contact] = await _contacts(api, acme)
    [merge] = await _updates(api, acme, 1)
    assert (merge["contactId"], merge["contactJid"], merge["contactLid"]) == (contact["id"], ANA_JID, ANA_LID)
    [gone] = merge["changes"]["merged"]
    assert {gone["contactId"], contact["id"]} >= {by_lid["id"]} and gone["contactId"] != contact["id"]
    assert merge["source"] == "whatsapp" and merge["sessionId"] == "bot"

    # she shows another name, then a verified business name
    await _inject(api, acme, **{"from": ANA, "message": "new name", "pushName": "Ana Maria"})
    await _inject(
        api, acme, **{"from": ANA, "message": "now a shop", "pushName": "Ana Maria", "businessName": "Bakery"}
    )
    renamed, shop = (await _updates(api, acme, 3))[1:]
    assert (renamed["changes"], renamed["previous"]) == ({"pushName": "Ana Maria"}, {"pushName": "Ana"})
    assert (shop["changes"], shop["previous"]) == ({"businessName": "Bakery"}, {"businessName": None})

    # blocked through the API, unblocked on the phone, blocked on the phone again (WhatsApp then drops her mail)
    assert (await api.post(f"/whatsapp/contacts/{contact['id']}/block", headers=acme)).status_code == 200
    await _inject(api, acme, **{"from": ANA, "blocked": False})
    await _inject(api, acme, **{"from": ANA_LID, "blocked": True})
    blocks = (await _updates(api, acme, 6))[3:]
    assert [(u["changes"], u["source"]) for u in blocks] == [
        ({"blocked": True}, "api"),
        ({"blocked": False}, "phone"),
        ({"blocked": True}, "phone"),
    ]
    assert {u["contactId"] for u in blocks} == {contact["id"]}
    shown = (await api.get(f"/whatsapp/contacts/{contact['id']}", headers=acme)).json()
    assert shown["blocked"] is True
    dropped = await _inject(api, acme, **{"from": ANA, "message": "hello?"})
    await _inject(api, acme, **{"from": ANA, "blocked": False})
    # the phone's unblock reaches the network as the worker reads it (then it is announced): a message posted
    # before that is dropped as the blocked one was, so hers goes once the unblock is announced
    assert (await _updates(api, acme, 7))[6]["changes"] == {"blocked": False}
    delivered = await _inject(api, acme, **{"from": ANA, "message": "back"})
    ids = {m["messageId"] for m in await _inbound(api, acme, 4)}
    assert delivered in ids and dropped not in ids

    # she changes her picture: the contact shows the new one; then removes it
    first = shown["pictureUrl"]
    assert first.startswith(PICTURE_URL)
    await _inject(api, acme, **{"from": ANA, "picture": "changed"})
    changed = (await _updates(api, acme, 8))[7]
    assert changed["changes"]["picture"] == "changed" and changed["source"] == "phone"
    now = (await api.get(f"/whatsapp/contacts/{contact['id']}", headers=acme)).json()
    assert now["pictureUrl"].startswith(PICTURE_URL) and now["pictureUrl"] != first
    assert changed["changes"]["pictureId"] and changed["previous"]["pictureId"] != changed["changes"]["pictureId"]
    await _inject(api, acme, **{"from": ANA, "picture": "removed"})
    assert (await _updates(api, acme, 9))[8]["changes"] == {"picture": "removed"}
    assert (await api.get(f"/whatsapp/contacts/{contact['id']}", headers=acme)).json()["pictureUrl"] is None

    # a picture change of someone who is no contact makes none; a bad injection is refused
    await _inject(api, acme, **{"from": "447700900999", "picture": "changed"})
    refused = await api.post(
        "/whatsapp/sandbox/inbound",
        headers=acme,
        json={"sessionId": "bot", "from": ANA, "blocked": True, "message": "both"},
    )
    assert_problem(refused, 422)
    refused = await api.post(
        "/whatsapp/sandbox/inbound",
        headers=acme,
        json={"sessionId": "bot", "from": ANA, "blocked": True, "picture": "removed"},
    )
    assert_problem(refused, 422)
    assert len(await _contacts(api, acme)) == 1


async def test_the_other_spelling_of_brazils_ninth_digit_is_the_same_contact(
    api: httpx.AsyncClient, worker: Worker
) -> None:
    acme = await new_client(api, "acme")
    await linked(api, acme, "bot", BOT)
    account, typed = "553112345678", "5531912345678"  # area code 31: WhatsApp's account lacks the 9
    await _inject(api, acme, **{"from": account, "message": "oi", "pushName": "Bia"})
    await _inbound(api, acme, 1)
    [bia] = await _contacts(api, acme)
    assert bia["phoneNumber"] == account

    first = await api.post("/whatsapp/send", headers=acme, json={"sessionId": "bot", "to": typed, "message": "a"})
    assert first.status_code == 202, first.text
    out = await sent(api, acme, "bot", first.json()["messageId"])
    assert out["contactId"] == bia["id"] and out["chatJid"] == f"{account}@s.whatsapp.net"
    assert [c["id"] for c in await _contacts(api, acme)] == [bia["id"]]
    [merge] = await _updates(api, acme, 1)
    assert merge["contactId"] == bia["id"] and [m["jid"] for m in merge["changes"]["merged"]] == [None]

    again = await api.post("/whatsapp/send", headers=acme, json={"sessionId": "bot", "to": typed, "message": "b"})
    assert (await sent(api, acme, "bot", again.json()["messageId"]))["contactId"] == bia["id"]
    checked = await api.get("/whatsapp/contacts/check", headers=acme, params={"sessionId": "bot", "numbers": typed})
    assert checked.json()["numbers"][0]["contactId"] == bia["id"]
    assert [c["id"] for c in await _contacts(api, acme)] == [bia["id"]]
    assert len(await _updates(api, acme, 1)) == 1  # the later sends found her at once: nothing merged again
