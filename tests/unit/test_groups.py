"""Groups' pure rules: ids, invite codes, WhatsApp's limits, and which event each change is."""

from datetime import UTC, datetime

import pytest

from zapgate.domain.events import EventType
from zapgate.domain.groups import (
    GroupAction,
    GroupInfo,
    GroupParticipant,
    check_description,
    check_subject,
    group_event,
    group_jid,
    invite_code,
)
from zapgate.errors import InvalidRequest

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("120363012345678901@g.us", "120363012345678901@g.us"),
        ("120363012345678901", "120363012345678901@g.us"),
        ("5511999999999-1700000000@g.us", "5511999999999-1700000000@g.us"),
        (" 5511999999999-1700000000 ", "5511999999999-1700000000@g.us"),
    ],
)
def test_a_group_is_named_by_its_jid_or_the_part_before_the_at(given: str, expected: str) -> None:
    assert group_jid(given) == expected


@pytest.mark.parametrize("given", ["", "abc", "5511999999999@s.whatsapp.net", "123@g.us", "1234567-@g.us"])
def test_what_is_not_a_group_id_is_refused_naming_the_field(given: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        group_jid(given)
    assert refused.value.details["field"] == "groupId"


@pytest.mark.parametrize(
    "given",
    [
        "https://chat.whatsapp.com/AbCdEfGhIjKlMnOpQrStUv",
        "chat.whatsapp.com/AbCdEfGhIjKlMnOpQrStUv/",
        "https://chat.whatsapp.com/AbCdEfGhIjKlMnOpQrStUv?mode=r_c",
        "AbCdEfGhIjKlMnOpQrStUv",
    ],
)
def test_an_invite_is_a_link_or_its_code(given: str) -> None:
    assert invite_code(given) == "AbCdEfGhIjKlMnOpQrStUv"


def test_an_invite_that_is_no_code_is_refused() -> None:
    with pytest.raises(InvalidRequest) as refused:
        invite_code("https://example.com/not a code")
    assert refused.value.details["field"] == "link"


def test_subjects_and_descriptions_within_whatsapps_limits() -> None:
    assert check_subject("  Team  ") == "Team"
    assert check_subject("x" * 100) == "x" * 100
    for subject in ("", "   ", "x" * 101):
        with pytest.raises(InvalidRequest):
            check_subject(subject)
    assert check_description("") == ""
    assert check_description("x" * 2048) == "x" * 2048
    with pytest.raises(InvalidRequest) as refused:
        check_description("x" * 2049)
    assert refused.value.details == {"field": "description", "limit": 2048}


def test_each_change_is_the_event_its_kind_says() -> None:
    member = "5511999990002@s.whatsapp.net"
    kind, body = group_event(GroupAction.SUBJECT, "1@g.us", actor=member, timestamp=AT, value="New")
    assert kind is EventType.GROUP_UPDATE and body["action"] == "subject" and body["subject"] == "New"
    kind, body = group_event(GroupAction.PICTURE, "1@g.us", actor=None, timestamp=AT, value="123")
    assert kind is EventType.GROUP_UPDATE and body["pictureId"] == "123" and body["actor"] is None
    kind, body = group_event(GroupAction.JOIN_BY_LINK, "1@g.us", actor=member, timestamp=AT, participants=(member,))
    assert kind is EventType.GROUP_PARTICIPANTS and body == {
        "groupId": "1@g.us",
        "actor": member,
        "timestamp": AT.isoformat(),
        "action": "join-by-link",
        "participants": [member],
    }
    info = GroupInfo(jid="1@g.us", subject="Team", participants=(GroupParticipant(member, is_admin=True),))
    kind, body = group_event(GroupAction.JOINED, "1@g.us", actor=member, timestamp=AT, reason="added", info=info)
    assert kind is EventType.GROUP_JOIN and body["reason"] == "added"
    assert body["group"]["participants"] == [{"jid": member, "lid": None, "isAdmin": True, "isSuperAdmin": False}]
    kind, body = group_event(GroupAction.LEFT, "1@g.us", actor=member, timestamp=AT, reason="removed")
    assert kind is EventType.GROUP_LEAVE and body["reason"] == "removed"
