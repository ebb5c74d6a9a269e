"""Who a contact is, pure: sightings by phone JID, LID or both, which row stays when rows merge, what the merged row
holds, and where a message to a contact goes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from zapgate.domain.contacts import (
    ContactIds,
    address_of,
    holds,
    is_contact_id,
    keeper,
    merged,
    noticed,
    picture_change,
    picture_due,
    picture_expiry,
    picture_seen,
    recipient_of,
    sighting,
    spelled_as,
)
from zapgate.domain.ids import new_id
from zapgate.domain.phones import parse_recipient
from zapgate.domain.records import Contact

PHONE = "5511988887777@s.whatsapp.net"
LID = "123456789012345@lid"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _contact(key: str, **fields: object) -> Contact:
    values: dict[str, object] = {
        "id": fields.pop("id", new_id()),
        "session_id": "row",
        "phone_number": key,
        "name": None,
        "profile_pic": None,
        "is_group": False,
    }
    values.update(fields)
    return Contact(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("jid", "lid", "expected"),
    [
        (PHONE, None, (PHONE, None, "5511988887777")),
        (LID, None, (None, LID, LID)),  # a LID given as the JID is the LID
        (PHONE, LID, (PHONE, LID, "5511988887777")),
        ("5511988887777:12@s.whatsapp.net", "123456789012345:3@lid", (PHONE, LID, "5511988887777")),  # devices dropped
        ("120363000000000001@g.us", None, ("120363000000000001@g.us", None, "120363000000000001@g.us")),
        ("status@broadcast", None, ("status@broadcast", None, "status@broadcast")),
    ],
)
def test_a_sighting_names_both_ids_and_its_key(jid: str, lid: str | None, expected: tuple[object, ...]) -> None:
    seen = sighting(jid, lid)
    assert (seen.jid, seen.lid, seen.key) == expected
    assert seen.lookup_keys == sorted(seen.lookup_keys)  # the lock order
    assert sighting("120363000000000001@g.us").is_group and not sighting(PHONE).is_group


def test_the_row_known_by_number_stays_else_the_oldest() -> None:
    by_lid = _contact(LID, lid=LID, created_at=T0)
    by_phone = _contact("5511988887777", jid=PHONE, created_at=T0 + timedelta(days=1))
    typed = _contact("5511988887777", created_at=T0 - timedelta(days=1))  # made by a send, number not confirmed
    assert keeper([by_lid, by_phone]) is by_phone
    assert keeper([by_lid, typed]) is typed
    older_lid = _contact("999@lid", lid="999@lid", created_at=T0 - timedelta(days=2))
    assert keeper([by_lid, older_lid]) is older_lid


def test_a_merge_takes_what_was_seen_and_keeps_what_only_one_row_knew() -> None:
    kept = _contact("5511988887777", jid=PHONE, name="Ana (CRM)", push_name="Ana")
    other = _contact(
        LID,
        lid=LID,
        blocked=True,
        business_name="Bakery",
        picture_url="https://pps.example/p.jpg",
        picture_id="7",
        picture_checked_at=T0,
        picture_expires_at=T0,
        on_whatsapp=True,
    )
    changes = merged(kept, [other], sighting(PHONE, LID, push_name="Ana B."))
    assert changes == {
        "lid": LID,
        "name": "Ana B.",
        "push_name": "Ana B.",
        "business_name": "Bakery",
        "blocked": True,
        "on_whatsapp": True,
        "picture_url": "https://pps.example/p.jpg",
        "picture_id": "7",
        "picture_checked_at": T0,
        "picture_expires_at": T0,
    }


def test_a_lid_row_learning_its_number_takes_the_numbers_key() -> None:
    row = _contact(LID, lid=LID, push_name="Ana")
    assert merged(row, [], sighting(PHONE, LID)) == {"jid": PHONE, "phone_number": "5511988887777"}
    assert merged(row, [], sighting(LID)) == {}  # nothing new: nothing written
    assert merged(row, [], sighting(LID, on_whatsapp=False)) == {"on_whatsapp": False}


def test_a_group_keeps_its_name_whoever_writes() -> None:
    group = _contact("120363000000000001@g.us", jid="120363000000000001@g.us", name="Family", is_group=True)
    assert merged(group, [], sighting("120363000000000001@g.us", push_name="Ana")) == {}


def test_a_message_to_a_contact_goes_to_its_number_else_its_lid_else_its_jid() -> None:
    assert recipient_of(_contact("5511988887777", jid=PHONE, lid=LID)).key == "5511988887777"
    assert recipient_of(_contact(LID, lid=LID)).key == LID
    group = recipient_of(_contact("120363000000000001@g.us", jid="120363000000000001@g.us", is_group=True))
    assert group.is_group and group.key == "120363000000000001@g.us"
    assert recipient_of(_contact("5511988887777")).phone == "5511988887777"  # a number a send made
    assert address_of(_contact("5511988887777")) == PHONE
    assert address_of(_contact(LID, lid=LID)) == LID


def test_a_phone_jid_is_the_same_recipient_as_its_number() -> None:
    assert parse_recipient(PHONE).key == parse_recipient("+55 11 98888-7777").key == "5511988887777"
    assert parse_recipient("5511988887777:7@s.whatsapp.net").key == "5511988887777"
    assert parse_recipient("123456789012345:3@lid").key == LID


def test_contact_ids_are_told_from_numbers_and_jids() -> None:
    assert is_contact_id(new_id())
    for value in ("5511988887777", PHONE, LID, "k00", "K" + "0" * 24, "120363000000000001@g.us"):
        assert not is_contact_id(value)


def test_a_picture_is_asked_again_when_its_answer_expires() -> None:
    ttl = timedelta(hours=24)
    assert picture_due(_contact("1"), T0)  # never asked
    assert not picture_due(_contact("1", picture_expires_at=T0 + timedelta(seconds=1)), T0)
    assert picture_due(_contact("1", picture_expires_at=T0), T0)
    assert picture_expiry(None, T0, ttl) == T0 + ttl
    assert picture_expiry(T0 + timedelta(hours=2), T0, ttl) == T0 + timedelta(hours=2)  # the link's own expiry
    assert picture_expiry(T0 + timedelta(days=9), T0, ttl) == T0 + ttl
    assert picture_expiry(T0 - timedelta(hours=1), T0, ttl) == T0  # an expired link: asked again next time


def test_events_name_the_contact_by_all_three_ids() -> None:
    assert ContactIds("c1", PHONE, LID).fields() == {"contactId": "c1", "contactJid": PHONE, "contactLid": LID}


def test_a_row_holding_every_id_seen_needs_no_merge() -> None:
    both = _contact("5511988887777", jid=PHONE, lid=LID)
    assert holds(both, sighting(PHONE)) and holds(both, sighting(LID)) and holds(both, sighting(PHONE, LID))
    assert not holds(_contact(LID, lid=LID), sighting(PHONE, LID))  # its number is new: rows may merge
    assert not holds(_contact("5511988887777"), sighting(PHONE))  # a number a send made learns its JID


# -- contact-update (issue 14) and Brazil's ninth digit -------------------------------------------------------


def test_an_answer_about_other_digits_names_them_and_one_about_its_own_key_does_not() -> None:
    seen = sighting("553112345678@s.whatsapp.net", LID, number="5531912345678")
    assert seen.number == "5531912345678" and "5531912345678" in seen.lookup_keys
    assert sighting("553112345678@s.whatsapp.net", number="553112345678").number is None  # its key already
    assert sighting(None, LID, number="5531912345678").number is None  # no account's number named


def test_a_row_of_the_asked_digits_is_the_person_only_until_whatsapp_named_its_own_account() -> None:
    seen = sighting("553112345678@s.whatsapp.net", LID, number="5531912345678")
    assert spelled_as(_contact("5531912345678"), seen)
    assert spelled_as(_contact("5531912345678", lid=LID), seen)
    assert not spelled_as(_contact("5531912345678", jid="5531912345678@s.whatsapp.net"), seen)
    assert not spelled_as(_contact("5531912345678", lid="999@lid"), seen)
    assert not spelled_as(_contact("5531999999999"), seen)


def test_an_update_tells_names_blocks_and_merges_but_not_ids_learned() -> None:
    before = _contact("5511988887777", jid=PHONE, push_name="Ana")
    assert noticed(before, _contact("5511988887777", id=before.id, jid=PHONE, lid=LID, push_name="Ana")) is None
    after = _contact("5511988887777", id=before.id, jid=PHONE, push_name="Ana B.", blocked=True)
    update = noticed(before, after)
    assert update is not None
    assert update.changes == {"pushName": "Ana B.", "blocked": True}
    assert update.previous == {"pushName": "Ana", "blocked": False}
    other = _contact(LID, lid=LID)
    merged_update = noticed(
        before, _contact("5511988887777", id=before.id, jid=PHONE, lid=LID, push_name="Ana"), [other]
    )
    assert merged_update is not None
    body = merged_update.payload()
    assert body["changes"] == {"merged": [{"contactId": other.id, "jid": None, "lid": LID}]}
    assert (body["contactId"], body["contactJid"], body["contactLid"]) == (before.id, PHONE, LID)
    assert body["source"] == "whatsapp" and body["previous"] == {"jid": PHONE, "lid": None}


def test_a_picture_change_names_its_new_id_and_a_removal_none() -> None:
    assert picture_change(removed=False, picture_id="123") == {"picture": "changed", "pictureId": "123"}
    assert picture_change(removed=True, picture_id="123") == {"picture": "removed"}
    assert picture_change(removed=False, picture_id=None) == {"picture": "changed"}


def test_a_look_that_finds_another_picture_tells_it_once() -> None:
    looked = _contact("5511988887777", picture_id="1", picture_url="https://x/1.jpg", picture_checked_at=T0)
    same = _contact("5511988887777", id=looked.id, picture_id="1", picture_url="https://x/1b.jpg")
    assert picture_seen(looked, same) is None  # a fresh link to the same picture
    other = picture_seen(looked, _contact("5511988887777", id=looked.id, picture_id="2", picture_url="https://x/2"))
    assert other is not None and other.changes == {"picture": "changed", "pictureId": "2"}
    assert other.previous == {"pictureId": "1"} and other.source == "whatsapp"
    gone = picture_seen(looked, _contact("5511988887777", id=looked.id))
    assert gone is not None and gone.changes == {"picture": "removed"}
    never = _contact("5511988887777", picture_id=None)  # nobody looked (or an event told the change already)
    assert picture_seen(never, _contact("5511988887777", id=never.id, picture_id="2")) is None
