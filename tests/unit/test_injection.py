"""What a simulated phone may write to a sandbox session (domain/injection.py), table-driven."""

from typing import Any

import pytest

from zapgate.domain.content import Edit, Media, MediaKind, MessageKey, PollVote, Reaction, Revoke, Text
from zapgate.domain.injection import MAX_INLINE_MEDIA, Injected, parse_injected
from zapgate.errors import InvalidRequest

ACCEPTED: list[tuple[dict[str, Any], bool, Injected]] = [
    (
        {"type": "text", "text": {"body": "hi"}, "context": {"message_id": "Q"}, "mentions": ["5511999990001"]},
        False,
        Injected(Text(body="hi"), reply_to="Q", mentions=("5511999990001",)),
    ),
    (
        {"type": "image", "image": {"data": "AAEC", "mime_type": "image/png", "caption": "c", "width": 3}},
        False,
        Injected(Media(kind=MediaKind.IMAGE, mime_type="image/png", caption="c", width=3), data=b"\x00\x01\x02"),
    ),
    (
        {"type": "audio", "audio": {"voice": True, "duration": 2, "view_once": True}},
        True,
        Injected(Media(kind=MediaKind.AUDIO, voice=True, view_once=True, duration_seconds=2.0)),
    ),
    (
        {"type": "reaction", "reaction": {"message_id": "R", "emoji": "👍"}},
        False,
        Injected(Reaction(key=MessageKey("R"), emoji="👍"), target="R"),
    ),
    (
        {"type": "poll_vote", "poll_vote": {"message_id": "P", "selected": []}},
        False,
        Injected(PollVote(key=MessageKey("P"), selected=()), target="P"),
    ),
    (
        {"type": "edit", "edit": {"message_id": "E", "text": "new"}, "mentions": ["x@lid"]},
        False,
        Injected(Edit(key=MessageKey("E"), text="new"), mentions=("x@lid",), target="E"),
    ),
    ({"type": "revoke", "revoke": {"message_id": "D"}}, False, Injected(Revoke(key=MessageKey("D")), target="D")),
]


@pytest.mark.parametrize(("body", "attached", "expected"), ACCEPTED)
def test_accepted(body: dict[str, Any], attached: bool, expected: Injected) -> None:
    assert parse_injected(body, file_attached=attached) == expected


REFUSED: list[tuple[dict[str, Any], bool, str]] = [
    ({}, False, "type"),
    ({"type": "unsupported", "unsupported": {}}, False, "type"),
    ({"type": "text", "text": {"body": "x"}}, True, "file"),
    ({"type": "image", "image": {}}, False, "image.data"),
    ({"type": "image", "image": {"data": "AAAA"}}, True, "image.data"),
    ({"type": "image", "image": {"data": "A" * (MAX_INLINE_MEDIA * 2)}}, False, "image.data"),
    ({"type": "image", "image": {"data": "AA=A"}}, False, "image.data"),
    ({"type": "video", "video": {"duration": -1}}, True, "video.duration"),
    ({"type": "video", "video": {"animated": "yes"}}, True, "video.animated"),
    ({"type": "document", "document": {"filename": "../x"}}, True, "document.filename"),
    ({"type": "document", "document": "x"}, True, "document"),
    ({"type": "sticker", "sticker": {"view_once": True}}, True, "sticker.view_once"),
    (
        {"type": "reaction", "reaction": {"message_id": "R", "emoji": "👍"}, "context": {"message_id": "Q"}},
        False,
        "context",
    ),
    ({"type": "poll_vote", "poll_vote": {"message_id": "P", "selected": [1]}}, False, "poll_vote.selected[0]"),
    ({"type": "poll_vote", "poll_vote": {"message_id": "P", "selected": ["a"], "extra": 1}}, False, "poll_vote.extra"),
    ({"type": "edit", "edit": {"message_id": "E", "text": "x\x00"}}, False, "edit.text"),
    ({"type": "revoke", "revoke": {"message_id": "\n"}}, False, "revoke.message_id"),
    ({"type": "revoke", "revoke": []}, False, "revoke"),
]


@pytest.mark.parametrize(("body", "attached", "field"), REFUSED)
def test_refused_naming_the_field(body: dict[str, Any], attached: bool, field: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_injected(body, file_attached=attached)
    assert refused.value.details["field"] == field, refused.value.message
