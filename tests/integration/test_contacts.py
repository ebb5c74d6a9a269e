"""One contact per person per session, on a real PostgreSQL: rows found by phone JID, LID or both, merged without
losing a message, and never duplicated by concurrent sightings."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text

from zapgate.db import contacts, migrate, outbound
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.db.outbound import QueuedText
from zapgate.domain.contacts import Sighting, sighting
from zapgate.domain.ids import SchemaName
from zapgate.domain.records import Contact

PHONE = "5511988887777@s.whatsapp.net"
LID = "123456789012345@lid"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def _session(manager: ConnectionManager, client: str = "acme") -> str:
    db = await manager.get_connection(client)
    return (await db.session.create(session_id="s1", client_id=client)).id


async def _identify(manager: ConnectionManager, row: str, seen: Sighting, *, create: bool = True) -> Contact | None:
    return await manager.execute_transaction(
        "acme", lambda tx: contacts.identify(tx.connection, row, seen, create=create)
    )


async def _message(manager: ConnectionManager, row: str, contact: Contact, message_id: str) -> None:
    async def insert(tx: Transaction) -> None:
        await tx.message.create(
            session_id=row,
            contact_id=contact.id,
            message_id=message_id,
            content="hi",
            direction="inbound",
            timestamp=T0,
        )

    await manager.execute_transaction("acme", insert)


async def _rows(manager: ConnectionManager, row: str) -> list[Contact]:
    db = await manager.get_connection("acme")
    return await db.contact.find_many(session_id=row)


async def test_a_lid_first_then_both_ids_is_one_contact_with_every_message(manager: ConnectionManager) -> None:
    row = await _session(manager)
    by_lid = await _identify(manager, row, sighting(LID, push_name="Ana"))
    assert by_lid is not None
    assert (by_lid.phone_number, by_lid.jid, by_lid.lid, by_lid.push_name) == (LID, None, LID, "Ana")
    by_phone = await _identify(manager, row, sighting(PHONE))
    assert by_phone is not None and by_phone.id != by_lid.id  # nobody said they are one person yet
    await _message(manager, row, by_lid, "M1")
    await _message(manager, row, by_phone, "M2")

    both = await _identify(manager, row, sighting(PHONE, LID, business_name="Ana's Bakery"))
    assert both is not None
    assert both.id == by_phone.id  # the row known by number stays
    assert (both.phone_number, both.jid, both.lid) == ("5511988887777", PHONE, LID)
    assert (both.push_name, both.name, both.business_name) == ("Ana", "Ana", "Ana's Bakery")
    assert [c.id for c in await _rows(manager, row)] == [both.id]
    db = await manager.get_connection("acme")
    moved = await db.message.find_many(session_id=row)
    assert {m.message_id for m in moved} == {"M1", "M2"}
    assert {m.contact_id for m in moved} == {both.id}

    # found again by either id alone, and by the number's digits
    assert (await _identify(manager, row, sighting(LID))) == both
    again = await _identify(manager, row, sighting("5511988887777:12@s.whatsapp.net", push_name="Ana B."))
    assert again is not None and again.id == both.id and again.push_name == "Ana B."


async def test_a_number_known_by_its_digits_learns_its_ids(manager: ConnectionManager) -> None:
    row = await _session(manager)
    db = await manager.get_connection("acme")
    typed = await db.contact.upsert(session_id=row, phone_number="5511988887777")  # a send made it, by digits
    learned = await _identify(manager, row, sighting(PHONE, LID, on_whatsapp=True))
    assert learned is not None and learned.id == typed.id
    assert (learned.jid, learned.lid, learned.on_whatsapp) == (PHONE, LID, True)


async def test_a_sighting_that_may_not_create_only_merges(manager: ConnectionManager) -> None:
    row = await _session(manager)
    assert await _identify(manager, row, sighting(PHONE, LID), create=False) is None
    assert await _rows(manager, row) == []
    lid_only = await _identify(manager, row, sighting(LID))
    found = await _identify(manager, row, sighting(PHONE, LID, push_name="Ana"), create=False)
    assert found is not None and lid_only is not None and found.id == lid_only.id
    assert (found.phone_number, found.jid) == ("5511988887777", PHONE)


async def test_a_merge_keeps_what_either_row_knew(manager: ConnectionManager) -> None:
    row = await _session(manager)
    by_lid = await _identify(manager, row, sighting(LID))
    by_phone = await _identify(manager, row, sighting(PHONE))
    assert by_lid is not None and by_phone is not None

    async def mark(tx: Transaction) -> None:
        await contacts.set_blocked(tx.connection, by_lid.id, True)
        await contacts.set_picture(
            tx.connection, by_lid.id, url="https://pps.example/p.jpg", picture_id="7", checked_at=T0, expires_at=T0
        )

    await manager.execute_transaction("acme", mark)
    both = await _identify(manager, row, sighting(LID, PHONE))
    assert both is not None and both.id == by_phone.id
    assert both.blocked and both.picture_url == "https://pps.example/p.jpg" and both.picture_id == "7"


async def test_groups_are_contacts_by_their_jid(manager: ConnectionManager) -> None:
    row = await _session(manager)
    group = await _identify(manager, row, sighting("120363000000000001@g.us", push_name="not a group's"))
    assert group is not None and group.is_group
    assert (group.phone_number, group.jid, group.lid, group.name) == (
        "120363000000000001@g.us",
        "120363000000000001@g.us",
        None,
        None,
    )


async def test_concurrent_sightings_of_one_person_make_one_contact(manager: ConnectionManager) -> None:
    row = await _session(manager)
    # every mix of the ids at once, many times: by number only, by LID only, by both, by digits
    seen = [sighting(PHONE), sighting(LID), sighting(PHONE, LID)] * 8

    made = await asyncio.gather(*(_identify(manager, row, s) for s in seen))
    final = await _rows(manager, row)
    assert len(final) == 1, final
    assert (final[0].jid, final[0].lid) == (PHONE, LID)
    assert all(c is not None for c in made)


async def test_concurrent_first_sightings_by_both_ids_insert_once(manager: ConnectionManager) -> None:
    row = await _session(manager)
    made = await asyncio.gather(*(_identify(manager, row, sighting(PHONE, LID)) for _ in range(10)))
    assert len({c.id for c in made if c is not None}) == 1
    assert len(await _rows(manager, row)) == 1


async def test_sessions_keep_their_own_contacts(manager: ConnectionManager) -> None:
    row = await _session(manager)
    db = await manager.get_connection("acme")
    other = (await db.session.create(session_id="s2", client_id="acme")).id
    first = await _identify(manager, row, sighting(PHONE, LID))
    second = await _identify(manager, other, sighting(PHONE, LID))
    assert first is not None and second is not None and first.id != second.id


async def test_existing_contacts_learn_their_ids_from_their_keys(manager: ConnectionManager) -> None:
    schema = SchemaName("client_legacy")
    async with manager.engine.begin() as conn:
        await migrate.upgrade_schema(conn, schema, migrate.TENANT, target="0008")
    async with manager.engine.begin() as conn:
        await conn.execute(text("SELECT set_config('search_path', 'client_legacy', true)"))
        await conn.execute(text("INSERT INTO sessions (id, session_id, client_id) VALUES ('row1', 'old', 'legacy')"))
        for contact_id, key, name, is_group in [
            ("c_number", "5511988887777", "Ana", False),
            ("c_lid", "999999999999999@lid", None, False),
            ("c_group", "120363000000000001@g.us", "Family", True),
            ("c_taken", "5511977776666", None, False),  # its cached LID is another row's key already
            ("c_taken_lid", "888888888888888@lid", None, False),
        ]:
            await conn.execute(
                text(
                    "INSERT INTO contacts (id, session_id, phone_number, name, is_group)"
                    " VALUES (:id, 'row1', :key, :name, :group)"
                ),
                {"id": contact_id, "key": key, "name": name, "group": is_group},
            )
        await conn.execute(
            text(
                "INSERT INTO recipients (session_id, phone_number, on_whatsapp, jid, lid, expires_at) VALUES"
                " ('row1', '5511988887777', true, '5511988887777@s.whatsapp.net', :lid, now()),"
                " ('row1', '5511977776666', true, '5511977776666@s.whatsapp.net', '888888888888888@lid', now())"
            ),
            {"lid": LID},
        )
    db = await manager.get_connection("legacy")  # first use upgrades it
    found = {c.id: c for c in await db.contact.find_many(session_id="row1")}
    assert (found["c_number"].jid, found["c_number"].lid) == (PHONE, LID)
    assert found["c_number"].on_whatsapp is True and found["c_number"].push_name == "Ana"
    assert (found["c_lid"].jid, found["c_lid"].lid) == (None, "999999999999999@lid")
    assert (found["c_group"].jid, found["c_group"].lid, found["c_group"].push_name) == (
        "120363000000000001@g.us",
        None,
        None,
    )
    assert (found["c_taken"].jid, found["c_taken"].lid) == ("5511977776666@s.whatsapp.net", None)
    # the two rows of that person become one the next time WhatsApp names both ids
    merged = await manager.execute_transaction(
        "legacy",
        lambda tx: contacts.identify(
            tx.connection, "row1", sighting("5511977776666@s.whatsapp.net", "888888888888888@lid")
        ),
    )
    assert merged is not None and merged.id == "c_taken" and merged.lid == "888888888888888@lid"
    assert "c_taken_lid" not in {c.id for c in await db.contact.find_many(session_id="row1")}


async def test_sends_and_arrivals_of_one_person_at_once_share_one_contact(manager: ConnectionManager) -> None:
    row = await _session(manager)
    people = [f"55119888877{i:02d}" for i in range(12)]

    async def send(number: str, n: int) -> None:
        text = QueuedText(row, number, False, "hi", f"OUT-{number}-{n}", T0)

        async def queue(tx: Transaction) -> None:
            if not await outbound.enqueue_texts(tx.connection, [text]):  # a concurrent insert of the contact
                assert await outbound.enqueue_texts(tx.connection, [text])

        await manager.execute_transaction("acme", queue)

    async def arrive(number: str, lid: str | None) -> None:
        async def store(tx: Transaction) -> None:
            contact = await contacts.identify(tx.connection, row, sighting(f"{number}@s.whatsapp.net", lid))
            assert contact is not None
            await tx.message.create(
                session_id=row,
                contact_id=contact.id,
                message_id=f"IN-{number}-{lid}",
                content="hi",
                direction="inbound",
                timestamp=T0,
            )

        await manager.execute_transaction("acme", store)

    async def by_lid(number: str) -> None:
        await _identify(manager, row, sighting(f"{number}0@lid"))

    work = []
    for number in people:
        work += [
            send(number, 1),
            arrive(number, f"{number}0@lid"),
            by_lid(number),
            send(number, 2),
            arrive(number, None),
        ]
    await asyncio.gather(*work)
    found = await _rows(manager, row)
    assert sorted(c.phone_number for c in found) == people
    assert all(c.lid == f"{c.phone_number}0@lid" and c.jid == f"{c.phone_number}@s.whatsapp.net" for c in found)
    db = await manager.get_connection("acme")
    owners = {m.message_id: m.contact_id for m in await db.message.find_many(session_id=row, limit=500)}
    assert len(owners) == 4 * len(people)
    by_number = {c.phone_number: c.id for c in found}
    assert all(owner == by_number[message_id.split("-")[1]] for message_id, owner in owners.items())


async def test_a_merge_waits_for_a_send_to_a_row_it_removes_and_moves_its_message(manager: ConnectionManager) -> None:
    row = await _session(manager)
    by_lid = await _identify(manager, row, sighting(LID))
    by_phone = await _identify(manager, row, sighting(PHONE))
    assert by_lid is not None and by_phone is not None
    queued, release = asyncio.Event(), asyncio.Event()

    async def send(tx: Transaction) -> None:  # to the LID: the row a merge will remove, still open when it starts
        assert await outbound.enqueue_texts(tx.connection, [QueuedText(row, LID, False, "hi", "OUT-1", T0)])
        queued.set()
        await release.wait()

    sending = asyncio.create_task(manager.execute_transaction("acme", send))
    await queued.wait()
    merging = asyncio.create_task(_identify(manager, row, sighting(PHONE, LID)))
    await asyncio.sleep(0.3)
    assert not merging.done()  # it waits for the send
    release.set()
    await sending
    kept = await merging
    assert kept is not None and kept.id == by_phone.id
    db = await manager.get_connection("acme")
    [message] = await db.message.find_many(session_id=row)
    assert (message.message_id, message.contact_id) == ("OUT-1", by_phone.id)


# -- contact-update (issue 14): what changed, reported in the transaction that changed it ------------------


async def _identify_reporting(manager: ConnectionManager, row: str, seen: Sighting) -> tuple[Contact, list[Any]]:
    async def work(tx: Transaction) -> tuple[Contact, list[Any]]:
        updates: list[Any] = []
        contact = await contacts.identify(tx.connection, row, seen, updates=updates)
        assert contact is not None
        return contact, updates

    return await manager.execute_transaction("acme", work)


async def test_a_merge_and_a_new_push_name_are_reported_and_ids_alone_are_not(manager: ConnectionManager) -> None:
    row = await _session(manager)
    by_lid, made = await _identify_reporting(manager, row, sighting(LID, push_name="Ana"))
    by_phone, _ = await _identify_reporting(manager, row, sighting(PHONE))
    assert made == []  # a new contact is no update
    assert (await _identify_reporting(manager, row, sighting(LID, push_name="Ana")))[1] == []  # nothing new

    both, [update] = await _identify_reporting(manager, row, sighting(PHONE, LID))
    assert both.id == by_phone.id
    body = update.payload()
    assert (body["contactId"], body["contactJid"], body["contactLid"]) == (by_phone.id, PHONE, LID)
    assert body["changes"]["merged"] == [{"contactId": by_lid.id, "jid": None, "lid": LID}]
    assert body["changes"]["pushName"] == "Ana" and body["previous"]["pushName"] is None
    assert body["source"] == "whatsapp"

    _, [renamed] = await _identify_reporting(manager, row, sighting(PHONE, push_name="Ana B.", business_name="Bakery"))
    assert renamed.changes == {"pushName": "Ana B.", "businessName": "Bakery"}
    assert renamed.previous == {"pushName": "Ana", "businessName": None}


async def test_a_number_sent_to_under_the_other_ninth_digit_spelling_is_the_accounts_contact(
    manager: ConnectionManager,
) -> None:
    row = await _session(manager)
    typed, account = "5531912345678", "553112345678"  # WhatsApp's account lacks the 9 (area code 31)
    account_jid, account_lid = f"{account}@s.whatsapp.net", "777777777777777@lid"
    known, _ = await _identify_reporting(manager, row, sighting(account_jid, account_lid, push_name="Bia"))

    async def send(message_id: str) -> None:
        text = QueuedText(row, typed, False, "oi", message_id, T0)
        await manager.execute_transaction("acme", lambda tx: outbound.enqueue_texts(tx.connection, [text]))

    await send("OUT-1")  # before WhatsApp answered: a contact of the digits as typed
    [as_typed] = [c for c in await _rows(manager, row) if c.id != known.id]
    assert (as_typed.phone_number, as_typed.jid) == (typed, None)

    async def answered(tx: Transaction) -> tuple[dict[str, Contact | None], list[Any]]:
        answer = outbound.Recipient(typed, True, account_jid, account_lid)
        await outbound.remember_recipients(tx.connection, row, [answer], 3600.0)
        updates: list[Any] = []
        return await contacts.learn_answers(tx.connection, row, [answer], updates), updates

    found, [update] = await manager.execute_transaction("acme", answered)
    assert found[typed] is not None and found[typed].id == known.id
    [contact] = await _rows(manager, row)
    assert (contact.id, contact.phone_number, contact.jid) == (known.id, account, account_jid)
    assert update.changes["merged"] == [{"contactId": as_typed.id, "jid": None, "lid": None}]
    db = await manager.get_connection("acme")
    assert {m.contact_id for m in await db.message.find_many(session_id=row)} == {known.id}

    await send("OUT-2")  # WhatsApp's answer is known now: the account's contact at once, no second row
    assert [c.id for c in await _rows(manager, row)] == [known.id]
    assert {m.contact_id for m in await db.message.find_many(session_id=row)} == {known.id}


async def test_an_answer_never_folds_in_a_row_whatsapp_named_another_account(manager: ConnectionManager) -> None:
    row = await _session(manager)
    typed = "5531912345678"
    other, _ = await _identify_reporting(manager, row, sighting(f"{typed}@s.whatsapp.net"))  # its own account
    answer = outbound.Recipient(typed, True, "553112345678@s.whatsapp.net", None)
    found = await manager.execute_transaction("acme", lambda tx: contacts.learn_answers(tx.connection, row, [answer]))
    assert found[typed] is not None and found[typed].id != other.id
    assert len(await _rows(manager, row)) == 2


async def test_blocking_reports_only_a_change(manager: ConnectionManager) -> None:
    row = await _session(manager)
    contact, _ = await _identify_reporting(manager, row, sighting(PHONE))

    async def block(state: bool) -> Any:
        return await manager.execute_transaction(
            "acme", lambda tx: contacts.set_blocked(tx.connection, contact.id, state, source="phone")
        )

    blocked, update = await block(True)
    assert blocked.blocked and update.changes == {"blocked": True} and update.previous == {"blocked": False}
    assert (await block(True))[1] is None  # blocked already (the API's own block, echoed by the phone)
    assert (await block(False))[1].changes == {"blocked": False}
