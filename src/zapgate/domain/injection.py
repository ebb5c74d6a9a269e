"""What a simulated phone writes to a sandbox session, checked: every kind, in the shape of the send body.

The body is the Cloud API's message object (`type`, the object of that type, `context: {message_id}` for a
reply, `mentions`), as `domain.content.parse_outgoing` checks it for sends, plus what only a phone writes:
votes, edits and deletes for everyone. A file comes inline (`data`, base64, up to `MAX_INLINE_MEDIA` bytes)
or attached by the caller (an upload), never by `id` or `link`; the phone also says what the file is
(`mime_type`, and for what WhatsApp shows before the download `width`, `height`, `duration`, `animated`).

Messages that act on another name it by WhatsApp's id, as the session knows it; whether the session wrote it
is for the caller to find out (`Injected.targets` lists what to look up).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from zapgate.domain.content import (
    MAX_MENTIONS,
    MAX_POLL_OPTION,
    MAX_POLL_OPTIONS,
    SENDABLE,
    Content,
    ContentKind,
    Edit,
    GroupInvite,
    Media,
    MediaKind,
    MessageKey,
    PollVote,
    Reaction,
    Revoke,
    parse_outgoing,
    text_body,
)
from zapgate.domain.groups import group_jid
from zapgate.errors import InvalidRequest

MAX_INLINE_MEDIA = 1024 * 1024  # bytes of a file given inline (base64 in JSON); larger ones are uploaded
MAX_UPLOADED_MEDIA = 100 * 1024 * 1024  # bytes of an uploaded file (the Cloud API's limit for documents)
INJECTABLE = (*SENDABLE, ContentKind.POLL_VOTE, ContentKind.EDIT, ContentKind.REVOKE)  # group_invite is sendable
MEDIA_DESCRIPTION = frozenset({"data", "mime_type", "width", "height", "duration", "animated"})
_MAX_ID = 256  # characters of a message id


@dataclass(frozen=True, slots=True)
class Injected:
    """A checked message of a simulated phone.

    Keys in `content` hold the target's id only (`from_me` False) until the caller resolves them;
    `data` is an inline file's bytes; `target` the id a reaction, vote, edit or delete acts on.
    """

    content: Content
    reply_to: str | None = None
    mentions: tuple[str, ...] = ()
    data: bytes | None = None
    target: str | None = None

    @property
    def media(self) -> bool:
        return isinstance(self.content, Media)


def parse_injected(body: Mapping[str, Any], *, file_attached: bool = False) -> Injected:
    """Check the message part of an injection (`type`, its object, `context`, `mentions`); InvalidRequest names
    the field. `file_attached`: the file comes as an upload, not inline."""
    try:
        return _parse(body, file_attached)
    except InvalidRequest as exc:
        # the content checks name the field at the start of their message: say it as a field error too
        field = exc.message.split(":", 1)[0]
        if "field" not in exc.details and field and " " not in field:
            exc.details["field"] = field
        raise


def _parse(body: Mapping[str, Any], file_attached: bool) -> Injected:
    kind_name = body.get("type")
    if kind_name not in set(INJECTABLE):
        raise InvalidRequest(f"type: one of {', '.join(INJECTABLE)} expected", field="type")
    kind = ContentKind(kind_name)
    part = body.get(kind.value)
    if part is None:
        raise _field(kind.value, f"an object is required for type {kind.value!r}")
    if file_attached and kind.value not in set(MediaKind):
        raise InvalidRequest(f"file: only a media message carries a file, not a {kind.value}", field="file")
    if kind in (ContentKind.POLL_VOTE, ContentKind.EDIT, ContentKind.REVOKE):
        return _parse_action(kind, part, body)
    if kind.value in set(MediaKind):
        return _parse_media(MediaKind(kind.value), part, body, file_attached)
    if kind is ContentKind.GROUP_INVITE:
        return _parse_invite(part, body)
    outgoing = parse_outgoing(body)
    target = outgoing.content.key.id if isinstance(outgoing.content, Reaction) else None
    return Injected(outgoing.content, outgoing.reply_to, outgoing.mentions, target=target)


def _parse_media(kind: MediaKind, part: object, body: Mapping[str, Any], file_attached: bool) -> Injected:
    name = kind.value
    if not isinstance(part, Mapping):
        raise _field(name, "an object expected")
    for sourced in ("id", "link"):
        if sourced in part:
            raise _field(f"{name}.{sourced}", "the simulated phone sends its own file: give `data` or upload `file`")
    data = _inline(part.get("data"), name) if "data" in part else None
    if (data is None) != file_attached:
        raise _field(
            f"{name}.data",
            f"the file is required, once: inline (base64, up to {MAX_INLINE_MEDIA // 1024} KiB) or uploaded as `file`",
        )
    # the send body's checks for the rest: caption, filename, voice, view once, context, mentions
    checked = {key: value for key, value in part.items() if key not in MEDIA_DESCRIPTION}
    outgoing = parse_outgoing({**body, name: {**checked, "id": "inline"}})
    media = outgoing.content
    assert isinstance(media, Media)
    media = replace(
        media,
        mime_type=_mime(part.get("mime_type"), name),
        width=_whole(part.get("width"), f"{name}.width"),
        height=_whole(part.get("height"), f"{name}.height"),
        duration_seconds=_seconds(part.get("duration"), f"{name}.duration"),
        animated=_flag(part.get("animated"), f"{name}.animated"),
    )
    return Injected(media, outgoing.reply_to, outgoing.mentions, data=data)


def _parse_action(kind: ContentKind, part: object, body: Mapping[str, Any]) -> Injected:
    """A vote, an edit or a delete for everyone: about another message, never a reply."""
    name = kind.value
    if not isinstance(part, Mapping):
        raise _field(name, "an object expected")
    known = {ContentKind.POLL_VOTE: {"message_id", "selected"}, ContentKind.EDIT: {"message_id", "text"}}
    allowed = known.get(kind, {"message_id"})
    unknown = sorted(set(part) - allowed)
    if unknown:
        raise _field(f"{name}.{unknown[0]}", f"not a field of {name} (known: {', '.join(sorted(allowed))})")
    if body.get("context") is not None:
        raise _field("context", f"a {name} acts on a message (name it in {name}.message_id): it replies to none")
    target = message_id(part.get("message_id"), f"{name}.message_id")
    key = MessageKey(id=target)
    content: Content
    mentions: tuple[str, ...] = ()
    if kind is ContentKind.EDIT:
        content = Edit(key=key, text=text_body(part.get("text"), "edit.text"))
        mentions = _mentions(body.get("mentions"))
    elif kind is ContentKind.REVOKE:
        content = Revoke(key=key)
    else:
        content = PollVote(key=key, selected=_selected(part.get("selected")))
    if kind is not ContentKind.EDIT and body.get("mentions") is not None:
        raise _field("mentions", f"a {name} mentions nobody")
    return Injected(content, mentions=mentions, target=target)


def _parse_invite(part: object, body: Mapping[str, Any]) -> Injected:
    """An admin's invitation to a group, as WhatsApp's invite message carries it (the code is taken as given)."""
    if not isinstance(part, Mapping):
        raise _field("group_invite", "an object expected")
    allowed = {"group_id", "code", "expires_at", "subject", "caption"}
    unknown = sorted(set(part) - allowed)
    if unknown:
        raise _field(f"group_invite.{unknown[0]}", f"not a field of group_invite (known: {', '.join(sorted(allowed))})")
    for extra in ("context", "mentions"):
        if body.get(extra) is not None:
            raise _field(extra, "an invite message replies to nothing and mentions nobody")
    code = part.get("code")
    if not isinstance(code, str) or not code or len(code) > 100 or not code.isalnum():
        raise _field("group_invite.code", "the group's invite code expected (letters and digits)")
    expires_at = part.get("expires_at")
    whole = isinstance(expires_at, int) and not isinstance(expires_at, bool)
    if expires_at is not None and not (whole and 0 <= expires_at < 2**40):
        raise _field("group_invite.expires_at", "when the code expires, in Unix seconds, expected")
    subject, caption = part.get("subject"), part.get("caption")
    invite = GroupInvite(
        group_jid=group_jid(str(part.get("group_id") or ""), field="group_invite.group_id"),
        code=code,
        expires_at=expires_at,
        subject=None if subject is None else text_body(subject, "group_invite.subject", limit=100),
        caption=None if caption is None else text_body(caption, "group_invite.caption", limit=1024),
    )
    return Injected(invite)


def message_id(value: object, field: str) -> str:
    """`value` as the WhatsApp id of a message (1 to 256 printable characters)."""
    if not isinstance(value, str) or not value or len(value) > _MAX_ID or not value.isprintable():
        raise _field(field, f"the id of a message expected (1 to {_MAX_ID} printable characters)")
    return value


def _selected(value: object) -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) > MAX_POLL_OPTIONS:
        raise _field("poll_vote.selected", f"a list of at most {MAX_POLL_OPTIONS} options expected ([] withdraws)")
    names = tuple(
        text_body(option, f"poll_vote.selected[{i}]", limit=MAX_POLL_OPTION) for i, option in enumerate(value)
    )
    if len(set(names)) != len(names):
        raise _field("poll_vote.selected", "each option once")
    return names


def _mentions(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) > MAX_MENTIONS:
        raise _field("mentions", f"a list of at most {MAX_MENTIONS} phone numbers or JIDs expected")
    return tuple(message_id(item, f"mentions[{i}]") for i, item in enumerate(value))


def _inline(value: object, name: str) -> bytes:
    if not isinstance(value, str) or len(value) > (MAX_INLINE_MEDIA + 2) // 3 * 4 + 8:
        raise _field(f"{name}.data", f"the file in base64, up to {MAX_INLINE_MEDIA // 1024} KiB (upload larger ones)")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _field(f"{name}.data", "the file in base64 expected (standard alphabet, padded)") from exc
    if len(data) > MAX_INLINE_MEDIA:
        raise _field(f"{name}.data", f"at most {MAX_INLINE_MEDIA // 1024} KiB inline (upload larger ones)")
    return data


def _mime(value: object, name: str) -> str | None:
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not 3 <= len(value) <= 128
        or "/" not in value
        or not value.isprintable()
        or not value.isascii()
    ):
        raise _field(f"{name}.mime_type", "a media type expected, e.g. image/jpeg")
    return value


def _whole(value: object, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        raise _field(field, "a whole number of pixels from 1 to 100000 expected")
    return value


def _seconds(value: object, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86_400:
        raise _field(field, "seconds from 0 to 86400 expected")
    return float(value)


def _flag(value: object, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _field(field, "true or false expected")
    return value


def _field(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {message}", field=field)
