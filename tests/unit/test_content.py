"""Message content: every kind's public shape round-trips, and bad requests name their field."""

from __future__ import annotations

from typing import Any

import pytest

from zapgate.domain.content import (
    ContactCard,
    ContactPhone,
    Contacts,
    Edit,
    GroupInvite,
    Location,
    Media,
    MediaKind,
    MediaSource,
    MessageKey,
    Poll,
    PollVote,
    Reaction,
    Revoke,
    Text,
    Unsupported,
    from_payload,
    kind_of,
    parse_outgoing,
    summary,
    to_payload,
)
from zapgate.errors import InvalidRequest

EVERY_KIND = [
    Text(body="hello", preview_url=True),
    Media(kind=MediaKind.IMAGE, media_id="m1", mime_type="image/jpeg", size=10, caption="look", width=4, height=3),
    Media(kind=MediaKind.AUDIO, media_id="m2", mime_type="audio/ogg; codecs=opus", duration_seconds=2.5, voice=True),
    Media(kind=MediaKind.DOCUMENT, media_id="m3", mime_type="application/pdf", filename="a.pdf"),
    Media(kind=MediaKind.STICKER, media_id="m4", mime_type="image/webp", animated=True),
    Location(latitude=-23.5, longitude=-46.6, name="São Paulo", address="SP", live=True),
    Contacts(cards=(ContactCard("Ana", (ContactPhone("+55 11 91234-5678", "5511912345678", "CELL"),), "BEGIN:VCARD"),)),
    Reaction(key=MessageKey("ABC", from_me=True), emoji="👍"),
    Reaction(key=MessageKey("ABC", sender_jid="1@s.whatsapp.net"), emoji=""),
    Poll(question="Lunch?", options=("pizza", "sushi"), selectable_count=2),
    PollVote(key=MessageKey("P1", from_me=True), selected=("sushi",)),
    Edit(key=MessageKey("E1", from_me=True), text="fixed"),
    Revoke(key=MessageKey("R1")),
    GroupInvite(
        group_jid="120363000000000001@g.us", code="AbC", expires_at=1_790_000_000, subject="Team", caption="hi"
    ),
    GroupInvite(group_jid="120363000000000001@g.us", code="AbC"),
    Unsupported(wa_type="buttonsMessage", summary="[buttons]"),
]


@pytest.mark.parametrize("content", EVERY_KIND, ids=lambda c: kind_of(c).value)
def test_every_kind_reads_back_as_it_was_stored(content: Any) -> None:
    payload = to_payload(content)
    assert payload["type"] == kind_of(content).value
    assert from_payload(payload) == content


def test_engine_only_fields_never_reach_the_public_shape() -> None:
    media = Media(kind=MediaKind.VIDEO, media_id="v", path="/tmp/x", thumbnail=b"t", waveform=b"w", handle=b"h")
    assert to_payload(media) == {"type": "video", "video": {"id": "v"}}


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (Text("hi"), "hi"),
        (Media(kind=MediaKind.AUDIO, voice=True), "[voice note]"),
        (Media(kind=MediaKind.DOCUMENT, filename="cv.pdf"), "[document] cv.pdf"),
        (Location(1.0, 2.0), "[location] 1.00000,2.00000"),
        (Reaction(MessageKey("x"), ""), "[reaction removed]"),
        (Revoke(MessageKey("x")), "[deleted]"),
        (GroupInvite("1@g.us", "c", subject="Team"), "[group invite] Team"),
        (GroupInvite("1@g.us", "c"), "[group invite] 1@g.us"),
    ],
)
def test_a_summary_says_what_a_message_holds(content: Any, line: str) -> None:
    assert summary(content) == line


def test_a_request_in_the_cloud_api_shape_is_parsed() -> None:
    outgoing = parse_outgoing(
        {
            "type": "image",
            "image": {"link": "https://example.com/a.jpg", "caption": "hi"},
            "context": {"message_id": "M"},
        }
    )
    assert outgoing.content == Media(kind=MediaKind.IMAGE, caption="hi")
    assert outgoing.source == MediaSource(link="https://example.com/a.jpg")
    assert outgoing.reply_to == "M"
    contacts = parse_outgoing(
        {"type": "contacts", "contacts": [{"name": {"formatted_name": "A"}, "phones": [{"phone": "+1 555"}]}]}
    )
    assert contacts.content == Contacts(cards=(ContactCard("A", (ContactPhone("+1 555"),)),))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "sms", "sms": {}}, "type:"),
        ({"type": "text"}, "text:"),
        ({"type": "text", "text": {"body": ""}}, "text.body"),
        ({"type": "text", "text": {"body": "x" * 4097}}, "text.body"),
        ({"type": "text", "text": {"body": "x", "color": "red"}}, "text.color"),
        ({"type": "image", "image": {}}, "image:"),
        ({"type": "image", "image": {"id": "a", "link": "https://x"}}, "image:"),
        ({"type": "image", "image": {"link": "file:///etc/passwd"}}, "image.link"),
        ({"type": "image", "image": {"id": "a", "caption": "x" * 1025}}, "image.caption"),
        ({"type": "document", "document": {"id": "a", "filename": "../etc/passwd"}}, "document.filename"),
        ({"type": "sticker", "sticker": {"id": "a", "view_once": True}}, "sticker.view_once"),
        ({"type": "audio", "audio": {"id": "a", "view_once": True}}, "audio.view_once"),
        ({"type": "location", "location": {"latitude": 91, "longitude": 0}}, "location.latitude"),
        ({"type": "location", "location": {"latitude": 0, "longitude": float("nan")}}, "location.longitude"),
        ({"type": "location", "location": {"latitude": True, "longitude": 0}}, "location.latitude"),
        ({"type": "contacts", "contacts": []}, "contacts:"),
        ({"type": "contacts", "contacts": [{"name": {"formatted_name": "A"}}]}, "contacts[0]"),
        (
            {"type": "contacts", "contacts": [{"name": {"formatted_name": "A"}, "phones": [{"phone": "abc"}]}]},
            "phones[0].phone",
        ),
        ({"type": "reaction", "reaction": {"message_id": "M", "emoji": "ok"}}, "reaction.emoji"),
        ({"type": "reaction", "reaction": {"emoji": "👍"}}, "reaction.message_id"),
        (
            {"type": "reaction", "reaction": {"message_id": "M", "emoji": "👍"}, "context": {"message_id": "M"}},
            "context:",
        ),
        ({"type": "poll", "poll": {"question": "Q", "options": ["a"]}}, "poll.options"),
        ({"type": "poll", "poll": {"question": "Q", "options": ["a", "a"]}}, "poll.options"),
        (
            {"type": "poll", "poll": {"question": "Q", "options": ["a", "b"], "selectable_count": 3}},
            "poll.selectable_count",
        ),
        ({"type": "text", "text": {"body": "x"}, "mentions": "123"}, "mentions:"),
        ({"type": "text", "text": {"body": "x"}, "context": "M"}, "context:"),
    ],
)
def test_a_bad_request_names_the_field_at_fault(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_outgoing(body)
    assert str(raised.value).startswith(field) or field in str(raised.value)


def test_a_group_invite_has_the_public_shape_of_its_kind() -> None:
    invite = GroupInvite("120363000000000001@g.us", "AbC", expires_at=1_790_000_000, subject="Team", caption="hi")
    assert to_payload(invite) == {
        "type": "group_invite",
        "group_invite": {
            "group_id": "120363000000000001@g.us",
            "code": "AbC",
            "expires_at": 1_790_000_000,
            "subject": "Team",
            "caption": "hi",
        },
    }
    with pytest.raises(InvalidRequest, match=r"group_invite\.code"):  # the code is WhatsApp's, never the client's
        parse_outgoing({"type": "group_invite", "group_invite": {"group_id": "120363000000000001", "code": "c"}})


def test_a_group_invite_to_send_names_its_group_and_a_caption_only() -> None:
    part = {"group_id": "120363000000000001", "caption": "hi"}
    asked = parse_outgoing({"type": "group_invite", "group_invite": part})
    assert asked.content == GroupInvite("120363000000000001@g.us", "", caption="hi")
    for body, field in (
        ({"group_invite": {}}, "group_invite.group_id"),
        ({"group_invite": {"group_id": "not a group"}}, "group_invite.group_id"),
        ({"group_invite": {"group_id": "120363000000000001", "caption": "x" * 1025}}, "group_invite.caption"),
        ({"group_invite": {"group_id": "120363000000000001"}, "mentions": ["5511"]}, "mentions"),
        ({"group_invite": {"group_id": "120363000000000001"}, "context": {"message_id": "M"}}, "context"),
    ):
        with pytest.raises(InvalidRequest) as raised:
            parse_outgoing({"type": "group_invite", **body})
        assert str(raised.value).startswith(field), raised.value


def test_stored_content_that_is_not_ours_is_refused() -> None:
    with pytest.raises(ValueError, match="not a stored message content"):
        from_payload({"type": "image"})
