"""What a message holds, pure: every kind a person sends on WhatsApp, its limits and its public JSON shape.

One vocabulary for both directions and every layer: the API parses a request into `Content`, the outbox
hands it to an engine, an engine reports what arrived as `Content`, the recorder stores `to_payload` of it
and the events carry the same object. The public shape follows the WhatsApp Cloud API's message object
(`{"type": "image", "image": {"id": ..., "caption": ...}}`, snake_case inside the kind's object), so code
written for the official API reads zapgate's messages and webhooks naturally.

Messages that act on another message (a reaction, an edit, a delete for everyone, a poll vote, a reply's
quote) name it by `MessageKey`: WhatsApp's id, whether the session wrote it, and who did in a group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from zapgate.domain.groups import group_jid
from zapgate.domain.phones import MAX_TEXT_LENGTH
from zapgate.errors import InvalidRequest

MAX_CAPTION_LENGTH = 1024  # characters of a media caption (the Cloud API's limit)
MAX_FILENAME_LENGTH = 240  # characters of a document's file name
MAX_POLL_QUESTION = 255  # characters
MAX_POLL_OPTION = 100  # characters per option
MIN_POLL_OPTIONS, MAX_POLL_OPTIONS = 2, 12  # WhatsApp's bounds
MAX_CONTACT_CARDS = 20  # cards in one contacts message
MAX_VCARD_LENGTH = 10_000  # characters of one card
MAX_MENTIONS = 256  # JIDs mentioned in one message
MAX_EMOJI_LENGTH = 16  # characters: one emoji with its modifiers and joiners


class MediaKind(StrEnum):
    """The kinds of message that carry a file."""

    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"  # a voice note too (`Media.voice`)
    DOCUMENT = "document"
    STICKER = "sticker"


class ContentKind(StrEnum):
    """Every kind of message content; the `type` of a message and of its public object."""

    TEXT = "text"
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    DOCUMENT = "document"
    STICKER = "sticker"
    LOCATION = "location"
    CONTACTS = "contacts"
    REACTION = "reaction"
    POLL = "poll"
    POLL_VOTE = "poll_vote"
    EDIT = "edit"
    REVOKE = "revoke"  # deleted for everyone by its sender
    GROUP_INVITE = "group_invite"  # an admin's invitation to join a group
    UNSUPPORTED = "unsupported"  # a kind zapgate does not translate (yet): `Unsupported.wa_type` names it


@dataclass(frozen=True, slots=True)
class MessageKey:
    """Names one message of a chat as WhatsApp does: its id, whether the session wrote it, who did in a group."""

    id: str  # WhatsApp's id of the message
    from_me: bool = False
    sender_jid: str | None = None  # the author in a group (the participant), else None


@dataclass(frozen=True, slots=True)
class Text:
    """A text message (WhatsApp's conversation or extended text)."""

    body: str
    preview_url: bool = False


@dataclass(frozen=True, slots=True)
class Media:
    """A file message: image, video, audio or voice note, document, sticker.

    The public fields describe the file (`media_id` is zapgate's id: `GET /whatsapp/media/{id}`). The rest is
    for the engines and never leaves the process: `path` is the prepared file to upload when sending,
    `thumbnail`/`waveform` what WhatsApp shows before the download, `handle` what an engine needs to download
    an arrived file later (opaque bytes, kept with the media row for retries).
    """

    kind: MediaKind
    media_id: str | None = None
    mime_type: str | None = None
    size: int | None = None
    sha256: str | None = None
    caption: str | None = None
    filename: str | None = None
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    voice: bool = False  # an audio recorded as a voice note (push-to-talk)
    view_once: bool = False
    animated: bool = False  # an animated sticker or a GIF-like video
    path: str | None = field(default=None, compare=False, repr=False)
    thumbnail: bytes | None = field(default=None, compare=False, repr=False)
    waveform: bytes | None = field(default=None, compare=False, repr=False)
    handle: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Location:
    """A place on the map (or a live location's latest point)."""

    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None
    url: str | None = None
    live: bool = False


@dataclass(frozen=True, slots=True)
class ContactPhone:
    """One phone number of a contact card; `wa_id` its WhatsApp id when the card says."""

    phone: str
    wa_id: str | None = None
    type: str | None = None  # CELL, WORK, ...


@dataclass(frozen=True, slots=True)
class ContactCard:
    """One person's card: the name shown, their numbers, and the vCard as sent."""

    formatted_name: str
    phones: tuple[ContactPhone, ...] = ()
    vcard: str | None = None


@dataclass(frozen=True, slots=True)
class Contacts:
    """One or more contact cards."""

    cards: tuple[ContactCard, ...]


@dataclass(frozen=True, slots=True)
class Reaction:
    """An emoji on another message; an empty `emoji` removes the reactor's reaction."""

    key: MessageKey
    emoji: str


@dataclass(frozen=True, slots=True)
class Poll:
    """A poll: a question, its options, how many of them each voter may choose."""

    question: str
    options: tuple[str, ...]
    selectable_count: int = 1  # 1: single choice; up to len(options): multiple


@dataclass(frozen=True, slots=True)
class PollVote:
    """A vote on a poll (decrypted): the options chosen, by name; none withdraws the vote."""

    key: MessageKey  # the poll
    selected: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Edit:
    """A new text (or caption) for a message its author sent before."""

    key: MessageKey
    text: str


@dataclass(frozen=True, slots=True)
class Revoke:
    """A message deleted for everyone by its author."""

    key: MessageKey


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A message of a kind zapgate does not translate; `wa_type` names WhatsApp's kind, `summary` describes it."""

    wa_type: str
    summary: str = ""


@dataclass(frozen=True, slots=True)
class GroupInvite:
    """An invitation to a group sent as a message: the group, its invite code and when the code expires.

    Asked to send (`parse_outgoing`), it names the group and a caption only (`code` empty): the service
    fills in the group's current code, subject and expiry, asked of WhatsApp, before it is queued.
    """

    group_jid: str
    code: str
    expires_at: int | None = None  # Unix seconds; None: WhatsApp said no expiry
    subject: str | None = None  # the group's name as the inviter saw it
    caption: str | None = None


Content = Text | Media | Location | Contacts | Reaction | Poll | PollVote | Edit | Revoke | GroupInvite | Unsupported


@dataclass(frozen=True, slots=True)
class Quote:
    """The message a reply answers: its key, and what it held when the engine has it (shown above the reply)."""

    key: MessageKey
    content: Content | None = None


def kind_of(content: Content) -> ContentKind:
    """The kind of `content`, as its `type`."""
    if isinstance(content, Media):
        return ContentKind(content.kind.value)
    return _KINDS[type(content)]


_KINDS: dict[type, ContentKind] = {
    Text: ContentKind.TEXT,
    Location: ContentKind.LOCATION,
    Contacts: ContentKind.CONTACTS,
    Reaction: ContentKind.REACTION,
    Poll: ContentKind.POLL,
    PollVote: ContentKind.POLL_VOTE,
    Edit: ContentKind.EDIT,
    Revoke: ContentKind.REVOKE,
    GroupInvite: ContentKind.GROUP_INVITE,
    Unsupported: ContentKind.UNSUPPORTED,
}


def summary(content: Content) -> str:
    """A one-line text for `content`: what a list of messages shows (the message's `content` column)."""
    match content:
        case Text(body=body):
            return body
        case Media(kind=kind, caption=caption, filename=filename, voice=voice):
            label = "voice note" if voice else kind.value
            detail = caption or filename
            return f"[{label}] {detail}" if detail else f"[{label}]"
        case Location(latitude=lat, longitude=lon, name=name, live=live):
            where = name or f"{lat:.5f},{lon:.5f}"
            return f"[{'live location' if live else 'location'}] {where}"
        case Contacts(cards=cards):
            return "[contacts] " + ", ".join(card.formatted_name for card in cards)
        case Reaction(emoji=emoji):
            return f"[reaction] {emoji}" if emoji else "[reaction removed]"
        case Poll(question=question):
            return f"[poll] {question}"
        case PollVote(selected=selected):
            return "[vote] " + ", ".join(selected) if selected else "[vote withdrawn]"
        case Edit(text=text):
            return f"[edit] {text}"
        case Revoke():
            return "[deleted]"
        case GroupInvite(subject=subject, group_jid=group_jid):
            return f"[group invite] {subject or group_jid}"
        case Unsupported(wa_type=wa_type, summary=said):
            return said or f"[{wa_type}]"
    raise AssertionError(f"unknown content {content!r}")  # pragma: no cover


# -- the public JSON shape ----------------------------------------------------------------------------


def to_payload(content: Content) -> dict[str, Any]:
    """`content` as its public object: `{"type": kind, kind: {...}}`, without the engine-only fields."""
    kind = kind_of(content)
    return {"type": kind.value, kind.value: _body(content)}


def _key_out(key: MessageKey) -> dict[str, Any]:
    return _compact({"message_id": key.id, "from_me": key.from_me, "sender": key.sender_jid})


def _body(content: Content) -> Any:
    match content:
        case Text():
            return _compact({"body": content.body, "preview_url": content.preview_url or None})
        case Media():
            return _compact(
                {
                    "id": content.media_id,
                    "mime_type": content.mime_type,
                    "size": content.size,
                    "sha256": content.sha256,
                    "caption": content.caption,
                    "filename": content.filename,
                    "width": content.width,
                    "height": content.height,
                    "duration": content.duration_seconds,
                    "voice": content.voice or None,
                    "view_once": content.view_once or None,
                    "animated": content.animated or None,
                }
            )
        case Location():
            return _compact(
                {
                    "latitude": content.latitude,
                    "longitude": content.longitude,
                    "name": content.name,
                    "address": content.address,
                    "url": content.url,
                    "live": content.live or None,
                }
            )
        case Contacts():
            return [_card_out(card) for card in content.cards]
        case Reaction():
            return {**_key_out(content.key), "emoji": content.emoji}
        case Poll():
            return {
                "question": content.question,
                "options": list(content.options),
                "selectable_count": content.selectable_count,
            }
        case PollVote():
            return {**_key_out(content.key), "selected": list(content.selected)}
        case Edit():
            return {**_key_out(content.key), "text": content.text}
        case Revoke():
            return _key_out(content.key)
        case GroupInvite():
            return _compact(
                {
                    "group_id": content.group_jid,
                    "code": content.code,
                    "expires_at": content.expires_at,
                    "subject": content.subject,
                    "caption": content.caption,
                }
            )
        case Unsupported():
            return _compact({"wa_type": content.wa_type, "summary": content.summary or None})
    raise AssertionError(f"unknown content {content!r}")  # pragma: no cover


def _card_out(card: ContactCard) -> dict[str, Any]:
    phones = [_compact({"phone": p.phone, "wa_id": p.wa_id, "type": p.type}) for p in card.phones]
    return _compact({"name": {"formatted_name": card.formatted_name}, "phones": phones, "vcard": card.vcard})


def _compact(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def from_payload(payload: Mapping[str, Any]) -> Content:
    """Read back what `to_payload` wrote (a stored message's content). Raises ValueError on anything else."""
    try:
        kind = ContentKind(payload["type"])
        body = payload[kind.value]
        return _from_body(kind, body)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a stored message content: {exc}") from exc


def _key_in(body: Mapping[str, Any]) -> MessageKey:
    return MessageKey(id=str(body["message_id"]), from_me=bool(body.get("from_me")), sender_jid=body.get("sender"))


def _from_body(kind: ContentKind, body: Any) -> Content:
    if kind is ContentKind.TEXT:
        return Text(body=body["body"], preview_url=bool(body.get("preview_url")))
    if kind.value in set(MediaKind):
        return Media(
            kind=MediaKind(kind.value),
            media_id=body.get("id"),
            mime_type=body.get("mime_type"),
            size=body.get("size"),
            sha256=body.get("sha256"),
            caption=body.get("caption"),
            filename=body.get("filename"),
            width=body.get("width"),
            height=body.get("height"),
            duration_seconds=body.get("duration"),
            voice=bool(body.get("voice")),
            view_once=bool(body.get("view_once")),
            animated=bool(body.get("animated")),
        )
    if kind is ContentKind.LOCATION:
        return Location(
            latitude=float(body["latitude"]),
            longitude=float(body["longitude"]),
            name=body.get("name"),
            address=body.get("address"),
            url=body.get("url"),
            live=bool(body.get("live")),
        )
    if kind is ContentKind.CONTACTS:
        return Contacts(cards=tuple(_card_in(card) for card in body))
    if kind is ContentKind.REACTION:
        return Reaction(key=_key_in(body), emoji=str(body["emoji"]))
    if kind is ContentKind.POLL:
        return Poll(
            question=body["question"],
            options=tuple(body["options"]),
            selectable_count=int(body.get("selectable_count", 1)),
        )
    if kind is ContentKind.POLL_VOTE:
        return PollVote(key=_key_in(body), selected=tuple(body["selected"]))
    if kind is ContentKind.EDIT:
        return Edit(key=_key_in(body), text=body["text"])
    if kind is ContentKind.REVOKE:
        return Revoke(key=_key_in(body))
    if kind is ContentKind.GROUP_INVITE:
        expires_at = body.get("expires_at")
        return GroupInvite(
            group_jid=str(body["group_id"]),
            code=str(body["code"]),
            expires_at=None if expires_at is None else int(expires_at),
            subject=body.get("subject"),
            caption=body.get("caption"),
        )
    return Unsupported(wa_type=body["wa_type"], summary=body.get("summary", ""))


def _card_in(card: Mapping[str, Any]) -> ContactCard:
    phones = tuple(
        ContactPhone(phone=str(p["phone"]), wa_id=p.get("wa_id"), type=p.get("type")) for p in card.get("phones", ())
    )
    return ContactCard(formatted_name=card["name"]["formatted_name"], phones=phones, vcard=card.get("vcard"))


# -- checking what a client asks to send --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaSource:
    """Where the file of a media message comes from: uploaded before (`id`), or an address to fetch (`link`)."""

    media_id: str | None = None
    link: str | None = None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A checked request to send: the content, where its file comes from, the message it replies to, mentions.

    `reply_to` and the targets of reactions, polls votes and the like are zapgate's public message ids here;
    the service looks them up (a message of the same session and chat) before anything is queued.
    """

    content: Content
    source: MediaSource | None = None
    reply_to: str | None = None
    mentions: tuple[str, ...] = ()


SENDABLE = (
    ContentKind.TEXT,
    ContentKind.IMAGE,
    ContentKind.VIDEO,
    ContentKind.AUDIO,
    ContentKind.DOCUMENT,
    ContentKind.STICKER,
    ContentKind.LOCATION,
    ContentKind.CONTACTS,
    ContentKind.REACTION,
    ContentKind.POLL,
    ContentKind.GROUP_INVITE,
)


def parse_outgoing(body: Mapping[str, Any]) -> Outgoing:
    """Check the content part of a `POST /whatsapp/messages` body (Cloud API shape); InvalidRequest names the field.

    `body` holds `type`, the object of that type, and optionally `context: {message_id}` and `mentions`.
    Media come by `id` or `link`; an upload in the same request is attached by the caller as `id`.
    """
    kind_name = body.get("type", "text")
    if kind_name not in set(SENDABLE):
        raise InvalidRequest(f"type: one of {', '.join(SENDABLE)} expected")
    kind = ContentKind(kind_name)
    part = body.get(kind.value)
    if part is None:
        raise InvalidRequest(f"{kind.value}: an object is required for type {kind.value!r}")
    content, source = _parse_part(kind, part)
    context = body.get("context")
    reply_to = None
    if context is not None:
        if not isinstance(context, Mapping):
            raise InvalidRequest("context: an object with message_id expected")
        reply_to = _string(context.get("message_id"), "context.message_id", limit=256)
        if kind is ContentKind.REACTION:
            raise InvalidRequest("context: a reaction cannot reply to a message (name it in reaction.message_id)")
    mentions = _mentions(body.get("mentions"))
    if kind is ContentKind.GROUP_INVITE and (reply_to is not None or mentions):
        name = "context" if reply_to is not None else "mentions"
        raise InvalidRequest(f"{name}: an invite message replies to nothing and mentions nobody")
    return Outgoing(content=content, source=source, reply_to=reply_to, mentions=mentions)


def _parse_part(kind: ContentKind, part: Any) -> tuple[Content, MediaSource | None]:
    if kind is ContentKind.CONTACTS:
        return _parse_contacts(part), None
    if not isinstance(part, Mapping):
        raise InvalidRequest(f"{kind.value}: an object expected")
    _no_unknown(part, kind.value, _FIELDS[kind])
    if kind is ContentKind.TEXT:
        return Text(body=text_body(part.get("body"), "text.body"), preview_url=_flag(part, "text", "preview_url")), None
    if kind.value in set(MediaKind):
        return _parse_media(MediaKind(kind.value), part)
    if kind is ContentKind.LOCATION:
        return _parse_location(part), None
    if kind is ContentKind.GROUP_INVITE:
        group = _string(part.get("group_id"), "group_invite.group_id", limit=64)
        return GroupInvite(
            group_jid=group_jid(group, field="group_invite.group_id"),
            code="",
            caption=_optional_text(part, "group_invite", "caption", MAX_CAPTION_LENGTH),
        ), None
    if kind is ContentKind.REACTION:
        emoji = part.get("emoji", "")
        if not isinstance(emoji, str) or len(emoji) > MAX_EMOJI_LENGTH or any(c.isascii() for c in emoji):
            raise InvalidRequest('reaction.emoji: one emoji expected ("" removes the reaction)')
        target = _string(part.get("message_id"), "reaction.message_id", limit=256)
        return Reaction(key=MessageKey(id=target), emoji=emoji), None
    return _parse_poll(part), None


_FIELDS: dict[ContentKind, frozenset[str]] = {
    ContentKind.TEXT: frozenset({"body", "preview_url"}),
    ContentKind.IMAGE: frozenset({"id", "link", "caption", "view_once"}),
    ContentKind.VIDEO: frozenset({"id", "link", "caption", "view_once"}),
    ContentKind.AUDIO: frozenset({"id", "link", "voice", "view_once"}),
    ContentKind.DOCUMENT: frozenset({"id", "link", "caption", "filename"}),
    ContentKind.STICKER: frozenset({"id", "link"}),
    ContentKind.LOCATION: frozenset({"latitude", "longitude", "name", "address", "url"}),
    ContentKind.REACTION: frozenset({"message_id", "emoji"}),
    ContentKind.POLL: frozenset({"question", "options", "selectable_count"}),
    ContentKind.GROUP_INVITE: frozenset({"group_id", "caption"}),
}


def text_body(value: object, name: str, *, limit: int = MAX_TEXT_LENGTH) -> str:
    """`value` as a text to send under field `name`: 1 to `limit` characters, not only spaces, no NUL."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{name}: a text of 1 to {limit} characters is required")
    if len(value) > limit:
        raise InvalidRequest(f"{name}: at most {limit} characters ({len(value)} given)")
    if "\x00" in value:
        raise InvalidRequest(f"{name}: NUL characters (\\u0000) cannot be sent")
    return value


def _optional_text(part: Mapping[str, Any], name: str, field_name: str, limit: int) -> str | None:
    value = part.get(field_name)
    return None if value is None else text_body(value, f"{name}.{field_name}", limit=limit)


def _string(value: object, name: str, *, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        raise InvalidRequest(f"{name}: a string of 1 to {limit} printable characters is required")
    return value


def _flag(part: Mapping[str, Any], name: str, field_name: str) -> bool:
    value = part.get(field_name, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name}.{field_name}: true or false expected")
    return value


def _no_unknown(part: Mapping[str, Any], name: str, known: frozenset[str]) -> None:
    unknown = sorted(set(part) - known)
    if unknown:
        raise InvalidRequest(f"{name}.{unknown[0]}: not a field of {name} (known: {', '.join(sorted(known))})")


def _parse_media(kind: MediaKind, part: Mapping[str, Any]) -> tuple[Media, MediaSource]:
    name = kind.value
    media_id, link = part.get("id"), part.get("link")
    if (media_id is None) == (link is None):
        raise InvalidRequest(f"{name}: exactly one of {name}.id (uploaded before) or {name}.link expected")
    if media_id is not None:
        source = MediaSource(media_id=_string(media_id, f"{name}.id", limit=64))
    else:
        link_text = _string(link, f"{name}.link", limit=2048)
        if not link_text.lower().startswith(("https://", "http://")):
            raise InvalidRequest(f"{name}.link: an http or https address expected")
        source = MediaSource(link=link_text)
    view_once = _flag(part, name, "view_once")
    if view_once and kind not in (MediaKind.IMAGE, MediaKind.VIDEO, MediaKind.AUDIO):
        raise InvalidRequest(f"{name}.view_once: only images, videos and voice notes can be view once")
    voice = _flag(part, name, "voice")
    if view_once and kind is MediaKind.AUDIO and not voice:
        raise InvalidRequest("audio.view_once: only a voice note (audio.voice: true) can be view once")
    media = Media(
        kind=kind,
        caption=_optional_text(part, name, "caption", MAX_CAPTION_LENGTH),
        filename=_filename(part.get("filename")),
        voice=voice,
        view_once=view_once,
    )
    return media, source


def _filename(value: object) -> str | None:
    if value is None:
        return None
    name = text_body(value, "document.filename", limit=MAX_FILENAME_LENGTH)
    if "/" in name or "\\" in name or name in {".", ".."} or not name.isprintable():
        raise InvalidRequest("document.filename: a file name without folders or control characters expected")
    return name


def _number(value: object, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"{name}: a number from {low:g} to {high:g} expected")
    if not low <= value <= high:
        raise InvalidRequest(f"{name}: a number from {low:g} to {high:g} expected ({value:g} given)")
    return float(value)


def _parse_location(part: Mapping[str, Any]) -> Location:
    url = _optional_text(part, "location", "url", 2048)
    if url is not None and not url.lower().startswith(("https://", "http://")):
        raise InvalidRequest("location.url: an http or https address expected")
    return Location(
        latitude=_number(part.get("latitude"), "location.latitude", -90, 90),
        longitude=_number(part.get("longitude"), "location.longitude", -180, 180),
        name=_optional_text(part, "location", "name", 1000),
        address=_optional_text(part, "location", "address", 1000),
        url=url,
    )


def _parse_contacts(part: object) -> Contacts:
    if not isinstance(part, Sequence) or isinstance(part, str) or not 1 <= len(part) <= MAX_CONTACT_CARDS:
        raise InvalidRequest(f"contacts: a list of 1 to {MAX_CONTACT_CARDS} contact cards expected")
    cards = []
    for index, card in enumerate(part):
        name = f"contacts[{index}]"
        if not isinstance(card, Mapping):
            raise InvalidRequest(f"{name}: an object with name.formatted_name and phones expected")
        _no_unknown(card, name, frozenset({"name", "phones", "vcard"}))
        person = card.get("name")
        if not isinstance(person, Mapping):
            raise InvalidRequest(f"{name}.name: an object with formatted_name expected")
        formatted = text_body(person.get("formatted_name"), f"{name}.name.formatted_name", limit=256)
        phones = card.get("phones", [])
        if not isinstance(phones, Sequence) or isinstance(phones, str) or len(phones) > 20:
            raise InvalidRequest(f"{name}.phones: a list of at most 20 phones expected")
        numbers = tuple(_contact_phone(phone, f"{name}.phones[{i}]") for i, phone in enumerate(phones))
        vcard = card.get("vcard")
        if vcard is not None:
            vcard = text_body(vcard, f"{name}.vcard", limit=MAX_VCARD_LENGTH)
            if not vcard.lstrip().upper().startswith("BEGIN:VCARD"):
                raise InvalidRequest(f"{name}.vcard: a vCard (BEGIN:VCARD ... END:VCARD) expected")
        if not numbers and vcard is None:
            raise InvalidRequest(f"{name}: at least one phone (or a vcard) expected")
        cards.append(ContactCard(formatted_name=formatted, phones=numbers, vcard=vcard))
    return Contacts(cards=tuple(cards))


def _contact_phone(value: object, name: str) -> ContactPhone:
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"{name}: an object with phone expected")
    _no_unknown(value, name, frozenset({"phone", "wa_id", "type"}))
    phone = _string(value.get("phone"), f"{name}.phone", limit=32)
    if not any(c.isdigit() for c in phone) or any(c not in "+0123456789 -()." for c in phone):
        raise InvalidRequest(f"{name}.phone: a phone number expected")
    wa_id = value.get("wa_id")
    if wa_id is not None and (not isinstance(wa_id, str) or not wa_id.isdigit() or len(wa_id) > 20):
        raise InvalidRequest(f"{name}.wa_id: the number's digits expected")
    kind = value.get("type")
    if kind is not None:
        kind = _string(kind, f"{name}.type", limit=20)
    return ContactPhone(phone=phone, wa_id=wa_id, type=kind)


def _parse_poll(part: Mapping[str, Any]) -> Poll:
    question = text_body(part.get("question"), "poll.question", limit=MAX_POLL_QUESTION)
    options = part.get("options")
    if (
        not isinstance(options, Sequence)
        or isinstance(options, str)
        or not MIN_POLL_OPTIONS <= len(options) <= MAX_POLL_OPTIONS
    ):
        raise InvalidRequest(f"poll.options: a list of {MIN_POLL_OPTIONS} to {MAX_POLL_OPTIONS} options expected")
    names = tuple(text_body(option, f"poll.options[{i}]", limit=MAX_POLL_OPTION) for i, option in enumerate(options))
    if len(set(names)) != len(names):
        raise InvalidRequest("poll.options: each option must be different")
    count = part.get("selectable_count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(names):
        raise InvalidRequest(f"poll.selectable_count: a whole number from 1 to {len(names)} expected")
    return Poll(question=question, options=names, selectable_count=count)


def _mentions(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) > MAX_MENTIONS:
        raise InvalidRequest(f"mentions: a list of at most {MAX_MENTIONS} phone numbers or JIDs expected")
    return tuple(_string(item, f"mentions[{i}]", limit=128) for i, item in enumerate(value))
