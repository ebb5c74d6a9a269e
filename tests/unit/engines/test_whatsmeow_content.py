"""The whatsmeow engine's message content rules, offline and without Go: keys seen from our side, vCards, polls."""

from __future__ import annotations

import pytest

from zapgate.domain.content import ContactCard, ContactPhone, MessageKey
from zapgate.engines.whatsmeow import (
    _bare,
    _Carrier,
    _key_of,
    _poll,
    _poll_message,
    _vcard,
    make_vcard,
    wa,
)

OWN_USERS = frozenset({"5511999999999", "99887766"})
PHONE = "5521988887777@s.whatsapp.net"
MEMBER = "5511944443333@s.whatsapp.net"


def _carrier(*, from_me: bool = False, sender: str = PHONE, group: bool = False) -> _Carrier:
    return _Carrier(from_me=from_me, sender_jid=sender, is_group=group, own_users=OWN_USERS)


# (what the key says: fromMe, participant; the message carrying it; the key as the session sees it)
KEYS = [
    # one to one, written by the other party
    ((True, ""), _carrier(), MessageKey("ID")),  # their own message
    ((False, ""), _carrier(), MessageKey("ID", from_me=True)),  # ours
    # one to one, written by our phone
    ((True, ""), _carrier(from_me=True, sender="5511999999999@s.whatsapp.net"), MessageKey("ID", from_me=True)),
    ((False, ""), _carrier(from_me=True, sender="5511999999999@s.whatsapp.net"), MessageKey("ID")),
    # groups: the participant names the author, by phone or LID, with or without a device
    ((False, MEMBER), _carrier(group=True), MessageKey("ID", sender_jid=MEMBER)),
    ((False, "5511944443333:4@s.whatsapp.net"), _carrier(group=True), MessageKey("ID", sender_jid=MEMBER)),
    ((False, "99887766:2@lid"), _carrier(group=True), MessageKey("ID", from_me=True)),
    ((True, ""), _carrier(group=True, sender=MEMBER), MessageKey("ID", sender_jid=MEMBER)),
    ((False, ""), _carrier(group=True), MessageKey("ID")),  # nobody named: unknown, not ours
    # quotes in one-to-one chats name the author too, with no sender_jid outside groups
    ((False, PHONE), _carrier(), MessageKey("ID")),
    ((False, "5511999999999@s.whatsapp.net"), _carrier(), MessageKey("ID", from_me=True)),
]


@pytest.mark.parametrize(("said", "carrier", "seen"), KEYS)
def test_a_key_is_read_from_its_authors_side_into_ours(
    said: tuple[bool, str], carrier: _Carrier, seen: MessageKey
) -> None:
    assert _key_of("ID", said[0], said[1], carrier) == seen


def test_devices_are_dropped_from_jids() -> None:
    assert [_bare(j) for j in ("1:2@s.whatsapp.net", "1@lid", "status@broadcast", "")] == [
        "1@s.whatsapp.net",
        "1@lid",
        "status@broadcast",
        "",
    ]


def test_a_vcard_made_for_a_card_reads_back_into_the_same_card() -> None:
    card = ContactCard(
        "Ana; the \\boss\\, ok\nreally",
        (ContactPhone("+55 11 98888-7777", wa_id="5511988887777"), ContactPhone("+1 555 0100", type="work;x")),
    )
    vcard = make_vcard(card)
    assert vcard.splitlines()[:4] == [
        "BEGIN:VCARD",
        "VERSION:3.0",
        "N:;Ana\\; the \\\\boss\\\\\\, ok\\nreally;;;",
        "FN:Ana\\; the \\\\boss\\\\\\, ok\\nreally",
    ]
    assert vcard.splitlines()[4:] == [
        "TEL;type=CELL;waid=5511988887777:+55 11 98888-7777",
        "TEL;type=WORKX:+1 555 0100",  # a type cannot break the line's structure
        "END:VCARD",
    ]
    name, phones = _vcard(vcard)
    assert name == card.formatted_name
    assert phones == (
        ContactPhone("+55 11 98888-7777", "5511988887777", "CELL"),
        ContactPhone("+1 555 0100", None, "WORKX"),
    )


def test_vcards_of_other_shapes_still_give_their_numbers() -> None:
    older = "BEGIN:VCARD\nVERSION:2.1\nFN:Bo\nTEL;CELL;PREF:+1 555 0101\nTEL;waid=abc:+1 555 0102\nEND:VCARD"
    assert _vcard(older) == ("Bo", (ContactPhone("+1 555 0101", None, "CELL"), ContactPhone("+1 555 0102")))
    assert _vcard("not a vcard at all") == ("", ())


@pytest.mark.parametrize(
    ("count", "options", "selectable"),
    [(1, 3, 1), (2, 3, 2), (3, 3, 3), (0, 3, 3), (9, 3, 3), (0, 0, 1)],
)
def test_a_polls_choice_count_reads_whatsapps_zero_as_any_number(count: int, options: int, selectable: int) -> None:
    names = [wa.PollCreationMessage.Option(optionName=f"o{n}") for n in range(options)]
    poll = _poll(wa.PollCreationMessage(name="Q", options=names, selectableOptionsCount=count))
    assert poll.selectable_count == selectable and len(poll.options) == options
    if options:  # and what we send reads back the same
        sent = _poll_message(poll, None).pollCreationMessage
        assert _poll(sent) == poll and not _poll_message(poll, None).HasField("messageContextInfo")
