"""Every kind of message through the whatsmeow engine, offline, against WhatsApp's schema (waE2E): what the engine
hands neonize's Go library to upload and to send (as neonize's real Python client serialises it), what arrives
through neonize's event entry point, and downloads.

The Go library is a stand-in (tests.support.neonize.FakeGo) answering as the exports do; everything from
neonize's Python client up is the real thing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.neonize import FakeGo, empty_jid, jid, live_engine, until
from zapgate.domain.content import (
    ContactCard,
    ContactPhone,
    Contacts,
    Content,
    Edit,
    GroupInvite,
    Location,
    Media,
    MediaKind,
    MessageKey,
    Poll,
    PollVote,
    Quote,
    Reaction,
    Revoke,
    Text,
    Unsupported,
)
from zapgate.engines.base import (
    EngineError,
    EngineEvent,
    InboundMessage,
    MediaGone,
    NotConnected,
    NotOnWhatsApp,
    Restricted,
    SendRejected,
    SessionRef,
    UnknownSession,
)
from zapgate.engines.whatsmeow import VOICE_MIME, MediaHandleInvalid, NotSupported, WhatsmeowEngine, pb, wa

REF = SessionRef("acme", "s1")
OWN = "5511999999999@s.whatsapp.net"  # FakeGo's device is 5511999999999:7 with LID 99887766
OWN_LID = "99887766@lid"
PHONE = "5521988887777@s.whatsapp.net"
PHONE_LID = "123456789012345@lid"
MEMBER = "5511944443333@s.whatsapp.net"
GROUP = "120363000000000000@g.us"


def _jid_of(value: str) -> pb.JID:
    user, _, server = value.partition("@")
    user, _, device = user.partition(":")
    return jid(user, server, int(device or 0))


def _event(
    content: wa.Message, *, chat: str = PHONE, sender: str = PHONE, from_me: bool = False, message_id: str = "3EB0IN"
) -> pb.Message:
    """A Message event as neonize's Go encodes one (goneonize/utils/encoder.go:303-326): every field set."""
    where = pb.MessageSource(
        Chat=_jid_of(chat),
        Sender=_jid_of(sender),
        IsFromMe=from_me,
        IsGroup=chat.endswith("@g.us"),
        SenderAlt=empty_jid(),
        RecipientAlt=empty_jid(),
        BroadcastListOwner=empty_jid(),
    )
    info = pb.MessageInfo(
        MessageSource=where,
        ID=message_id,
        ServerID=0,
        Type="text",
        Pushname="Ana",
        Timestamp=1_790_000_000_000,
        Category="",
        Multicast=False,
        MediaType="",
        Edit="",
    )
    flags = dict.fromkeys(
        (
            "IsEphemeral",
            "IsViewOnce",
            "IsViewOnceV2",
            "IsViewOnceV2Extension",
            "IsDocumentWithCaption",
            "IsLottieSticker",
            "IsEdit",
        ),
        False,
    )
    return pb.Message(Info=info, Message=content, UnavailableRequestID="", RetryCount=0, **flags)


def _fields(message: Any) -> list[str]:
    return [descriptor.name for descriptor, _ in message.ListFields()]


@dataclasses.dataclass
class Live:
    """A connected session of the whatsmeow engine over a stand-in Go library."""

    engine: WhatsmeowEngine
    fake: FakeGo
    events: list[EngineEvent]

    def arrived(self) -> list[InboundMessage]:
        return [e for e in self.events if isinstance(e, InboundMessage)]

    async def inbound(self, content: wa.Message, **where: Any) -> InboundMessage:
        """Deliver `content` as Go does (its event loop, neonize's entry point) and return what the engine made."""
        return await self.deliver(_event(content, **where))

    async def deliver(self, event: pb.Message) -> InboundMessage:
        before = len(self.arrived())
        self.fake.push(event)
        await until(lambda: len(self.arrived()) > before)
        return self.arrived()[-1]

    async def send(self, to: str, content: Content, **extra: Any) -> wa.Message:
        """Send `content` and return the waE2E.Message neonize handed Go's SendMessage."""
        before = len(self.fake.sent)
        await self.engine.send(REF, to, content, "OURS-1", **extra)
        assert len(self.fake.sent) == before + 1
        return self.fake.sent[-1][1]


@pytest.fixture
async def live(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Live]:
    fake = FakeGo()
    monkeypatch.setattr(importlib.import_module("neonize.client"), "gocode", fake)
    async with live_engine(REF, fake) as (engine, events):
        yield Live(engine, fake, events)


# -- sending: what reaches Go's SendMessage -------------------------------------------------------------


async def test_a_reply_quotes_its_message_names_its_author_and_mentions_by_jid(live: Live) -> None:
    live.fake.lids["5521988887777"] = _jid_of(PHONE_LID)
    result = await live.engine.send(
        REF,
        PHONE,
        Text("@5511977776666 did it"),
        "OURS-1",
        quote=Quote(MessageKey("3EB0THEIRS"), Text("who?")),
        mentions=("5511977776666",),
    )
    assert (result.message_id, result.to) == ("3EB0SENT1", PHONE_LID)  # WhatsApp's id, and the LID it went to
    to, sent = live.fake.sent[-1]
    assert (to.User, to.Server) == ("5521988887777", "s.whatsapp.net")
    assert _fields(sent) == ["extendedTextMessage"]
    assert sent.extendedTextMessage.text == "@5511977776666 did it"  # the @digits stay in the text
    context = sent.extendedTextMessage.contextInfo
    assert _fields(context) == ["stanzaID", "participant", "quotedMessage", "mentionedJID"]
    assert (context.stanzaID, context.participant) == ("3EB0THEIRS", PHONE)  # the chat's one other party
    assert context.quotedMessage == wa.Message(conversation="who?")
    assert list(context.mentionedJID) == ["5511977776666@s.whatsapp.net"]


async def test_a_quote_of_our_own_message_names_us_as_the_chat_does(live: Live) -> None:
    mine = Quote(MessageKey("3EB0MINE", from_me=True))
    by_phone = await live.send(PHONE, Text("yes"), quote=mine)
    assert by_phone.extendedTextMessage.contextInfo.participant == OWN  # no device part
    by_lid = await live.send(PHONE_LID, Text("yes"), quote=mine)
    assert by_lid.extendedTextMessage.contextInfo.participant == OWN_LID
    assert not by_lid.extendedTextMessage.contextInfo.HasField("quotedMessage")  # no content given, none made up


async def test_a_quote_of_a_group_members_file_shows_it_without_uploading_it(live: Live) -> None:
    picture = Media(kind=MediaKind.IMAGE, mime_type="image/jpeg", caption="the view", width=8, height=6)
    quote = Quote(MessageKey("3EB0PIC", sender_jid="5511944443333:2@s.whatsapp.net"), picture)
    sent = await live.send(GROUP, Text("nice"), quote=quote)
    context = sent.extendedTextMessage.contextInfo
    assert (context.stanzaID, context.participant) == ("3EB0PIC", MEMBER)
    assert context.quotedMessage == wa.Message(
        imageMessage=wa.ImageMessage(mimetype="image/jpeg", caption="the view", width=8, height=6)
    )
    assert live.fake.uploads == []


# (kind, upload MediaType number in neonize's enum (utils/enum.py:50-58), field, its fields beyond the upload's)
MEDIA_SENDS = [
    pytest.param(
        Media(kind=MediaKind.IMAGE, mime_type="image/png", caption="a cat", width=640, height=480, thumbnail=b"jpg"),
        0,
        "imageMessage",
        {"mimetype": "image/png", "caption": "a cat", "width": 640, "height": 480, "JPEGThumbnail": b"jpg"},
        id="image",
    ),
    pytest.param(
        Media(
            kind=MediaKind.VIDEO,
            mime_type="video/mp4",
            caption="a loop",
            width=320,
            height=240,
            duration_seconds=12.4,
            animated=True,
            thumbnail=b"jpg",
        ),
        1,
        "videoMessage",
        {
            "mimetype": "video/mp4",
            "caption": "a loop",
            "width": 320,
            "height": 240,
            "seconds": 12,
            "gifPlayback": True,
            "JPEGThumbnail": b"jpg",
        },
        id="video-gif",
    ),
    pytest.param(
        Media(kind=MediaKind.AUDIO, mime_type="audio/ogg", duration_seconds=3.6, voice=True, waveform=bytes(range(64))),
        2,
        "audioMessage",
        {"mimetype": VOICE_MIME, "seconds": 4, "PTT": True, "waveform": bytes(range(64))},
        id="voice-note",
    ),
    pytest.param(
        Media(kind=MediaKind.AUDIO, mime_type="audio/mpeg", duration_seconds=200.0),
        2,
        "audioMessage",
        {"mimetype": "audio/mpeg", "seconds": 200},
        id="audio",
    ),
    pytest.param(
        Media(
            kind=MediaKind.DOCUMENT,
            mime_type="application/pdf",
            caption="the deal",
            filename="deal.pdf",
            thumbnail=b"jpg",
        ),
        3,
        "documentMessage",
        {"mimetype": "application/pdf", "caption": "the deal", "fileName": "deal.pdf", "JPEGThumbnail": b"jpg"},
        id="document",
    ),
    pytest.param(
        Media(kind=MediaKind.STICKER, mime_type="image/webp", width=512, height=512, animated=True),
        0,  # stickers are encrypted under the image keys (whatsmeow download.go:95-100)
        "stickerMessage",
        {"mimetype": "image/webp", "width": 512, "height": 512, "isAnimated": True},
        id="sticker",
    ),
]
UPLOADED = {"URL", "directPath", "mediaKey", "fileEncSHA256", "fileSHA256", "fileLength", "mediaKeyTimestamp"}


@pytest.mark.parametrize(("media", "upload_type", "field", "expected"), MEDIA_SENDS)
async def test_a_file_is_uploaded_then_sent_with_the_uploads_url_key_and_hashes(
    live: Live, tmp_path: Path, media: Media, upload_type: int, field: str, expected: dict[str, Any]
) -> None:
    data = os.urandom(5000)
    (tmp_path / "file").write_bytes(data)
    sent = await live.send(PHONE, dataclasses.replace(media, path=str(tmp_path / "file")))
    assert live.fake.uploads == [(data, upload_type)]  # the prepared file as it is, under its kind's keys
    assert _fields(sent) == [field]
    sub = getattr(sent, field)
    where = "/v/t62.7118-24/1.enc?ccb=11-4"
    assert (sub.URL, sub.directPath, sub.mediaKey, sub.fileEncSHA256) == (
        "https://mmg.whatsapp.net" + where,
        where,
        b"K" * 32,
        b"E" * 32,
    )
    assert (sub.fileSHA256, sub.fileLength) == (hashlib.sha256(data).digest(), len(data))
    assert abs(sub.mediaKeyTimestamp - time.time()) < 60  # seconds
    assert {name: getattr(sub, name) for name in expected} == expected
    assert set(_fields(sub)) == UPLOADED | set(expected)  # nothing else (no made-up thumbnail path)


async def test_a_view_once_file_is_wrapped_and_marked(live: Live, tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"jpeg")
    photo = Media(kind=MediaKind.IMAGE, mime_type="image/jpeg", view_once=True, path=str(tmp_path / "file"))
    sent = await live.send(PHONE, photo, quote=Quote(MessageKey("3EB0Q")))
    assert _fields(sent) == ["viewOnceMessage"]
    inner = sent.viewOnceMessage.message
    assert _fields(inner) == ["imageMessage"] and inner.imageMessage.viewOnce
    assert inner.imageMessage.contextInfo.stanzaID == "3EB0Q"  # the reply's context goes inside the wrapper


async def test_a_file_that_is_not_there_is_refused_before_whatsapp(live: Live, tmp_path: Path) -> None:
    for media in (
        Media(kind=MediaKind.IMAGE, path=str(tmp_path / "gone.jpg")),
        Media(kind=MediaKind.IMAGE),  # no prepared file at all
    ):
        with pytest.raises(SendRejected) as refused:
            await live.engine.send(REF, PHONE, media, "OURS-1")
        assert not refused.value.retryable and refused.value.details["session"] == str(REF)
    assert live.fake.uploads == [] and live.fake.sent == []


async def test_a_failed_or_stuck_upload_sends_nothing(live: Live, tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"jpeg")
    photo = Media(kind=MediaKind.IMAGE, path=str(tmp_path / "file"))
    live.fake.upload_error = "failed to refresh media connections: websocket not connected"
    with pytest.raises(NotConnected):
        await live.engine.send(REF, PHONE, photo, "OURS-1")
    live.fake.upload_error = ""
    live.fake.upload_hangs = True
    live.engine._call_timeout = 0.3  # the bound of a four-byte upload is the call's
    started = time.perf_counter()
    with pytest.raises(EngineError) as stuck:
        await live.engine.send(REF, PHONE, photo, "OURS-2")
    assert stuck.value.retryable and not isinstance(stuck.value, NotConnected)
    assert time.perf_counter() - started < 2
    live.fake.release.set()
    assert live.fake.sent == []


async def test_a_location(live: Live) -> None:
    place = Location(latitude=-23.5505, longitude=-46.6333, name="Sé", address="Praça da Sé", url="https://m.example")
    assert await live.send(PHONE, place) == wa.Message(
        locationMessage=wa.LocationMessage(
            degreesLatitude=-23.5505,
            degreesLongitude=-46.6333,
            name="Sé",
            address="Praça da Sé",
            URL="https://m.example",
        )
    )
    bare = await live.send(PHONE, Location(latitude=1.5, longitude=2.5))
    assert _fields(bare.locationMessage) == ["degreesLatitude", "degreesLongitude"]


async def test_a_group_invite_is_a_group_invite_message_with_its_code_expiry_name_and_caption(live: Live) -> None:
    invite = GroupInvite(group_jid=GROUP, code="AbCdEfGhIjKl", expires_at=1_790_259_200, subject="Team", caption="Join")
    assert await live.send(PHONE, invite) == wa.Message(
        groupInviteMessage=wa.GroupInviteMessage(
            groupJID=GROUP, inviteCode="AbCdEfGhIjKl", inviteExpiration=1_790_259_200, groupName="Team", caption="Join"
        )
    )
    bare = await live.send(PHONE, GroupInvite(group_jid=GROUP, code="AbCdEfGhIjKl"))
    assert _fields(bare.groupInviteMessage) == ["groupJID", "inviteCode"]
    # what the recipient's whatsmeow reads of it is the same invitation
    arrived = await live.inbound(wa.Message(groupInviteMessage=(await live.send(PHONE, invite)).groupInviteMessage))
    assert arrived.content == invite


async def test_one_contact_card_gets_a_vcard_and_several_are_an_array(live: Live) -> None:
    ana = ContactCard("Ana, Maria", (ContactPhone("+55 11 98888-7777", wa_id="5511988887777"),))
    sent = await live.send(PHONE, Contacts((ana,)))
    assert sent == wa.Message(
        contactMessage=wa.ContactMessage(
            displayName="Ana, Maria",
            vcard="BEGIN:VCARD\nVERSION:3.0\nN:;Ana\\, Maria;;;\nFN:Ana\\, Maria\n"
            "TEL;type=CELL;waid=5511988887777:+55 11 98888-7777\nEND:VCARD",
        )
    )
    own_card = ContactCard("Bo", (), vcard="BEGIN:VCARD\nVERSION:3.0\nFN:Bo\nEND:VCARD")
    both = await live.send(PHONE, Contacts((ana, own_card)))
    assert _fields(both) == ["contactsArrayMessage"]
    assert both.contactsArrayMessage.displayName == "2 contacts"
    assert [c.displayName for c in both.contactsArrayMessage.contacts] == ["Ana, Maria", "Bo"]
    assert both.contactsArrayMessage.contacts[1].vcard == own_card.vcard  # a given vCard goes as it is


async def test_a_reaction_names_its_message_as_whatsmeow_does(live: Live) -> None:
    # someone else's message in a group: named with its author (whatsmeow BuildMessageKey, send.go:494-508)
    in_group = await live.send(GROUP, Reaction(MessageKey("3EB0G", sender_jid="5511944443333:2@s.whatsapp.net"), "👍"))
    reaction = in_group.reactionMessage
    assert _fields(in_group) == ["reactionMessage"]
    assert reaction.key == pb_key(GROUP, False, "3EB0G", participant=MEMBER)
    assert reaction.text == "👍" and abs(reaction.senderTimestampMS - time.time() * 1000) < 60_000
    # our own message, one to one: fromMe, no participant; an empty emoji takes the reaction back
    removal = await live.send(PHONE, Reaction(MessageKey("3EB0MINE", from_me=True), ""))
    assert removal.reactionMessage.key == pb_key(PHONE, True, "3EB0MINE")
    assert removal.reactionMessage.HasField("text") and removal.reactionMessage.text == ""
    # the other party's message, one to one
    theirs = await live.send(PHONE, Reaction(MessageKey("3EB0THEIRS"), "😂"))
    assert theirs.reactionMessage.key == pb_key(PHONE, False, "3EB0THEIRS")
    # a group member's message without its author cannot be named
    with pytest.raises(SendRejected):
        await live.engine.send(REF, GROUP, Reaction(MessageKey("3EB0G"), "👍"), "OURS-2")


def pb_key(chat: str, from_me: bool, message_id: str, participant: str | None = None) -> Any:
    key = wa.ReactionMessage().key
    key.remoteJID, key.fromMe, key.ID = chat, from_me, message_id
    if participant is not None:
        key.participant = participant
    return key


async def test_a_revoke_deletes_for_everyone(live: Live) -> None:
    own = await live.send(PHONE, Revoke(MessageKey("3EB0MINE", from_me=True)))
    assert own == wa.Message(
        protocolMessage=wa.ProtocolMessage(type=wa.ProtocolMessage.REVOKE, key=pb_key(PHONE, True, "3EB0MINE"))
    )
    # an admin deleting a member's message names its author
    admin = await live.send(GROUP, Revoke(MessageKey("3EB0G", sender_jid=MEMBER)))
    assert admin.protocolMessage.key == pb_key(GROUP, False, "3EB0G", participant=MEMBER)


async def test_a_poll_carries_its_secret_and_whatsapps_choice_count(live: Live) -> None:
    single = await live.send(GROUP, Poll("Lunch?", ("Yes", "No", "Later")))
    assert _fields(single) == ["messageContextInfo", "pollCreationMessage"]
    creation = single.pollCreationMessage
    assert (creation.name, [o.optionName for o in creation.options]) == ("Lunch?", ["Yes", "No", "Later"])
    assert creation.selectableOptionsCount == 1
    assert (
        _fields(single.messageContextInfo) == ["messageSecret"] and len(single.messageContextInfo.messageSecret) == 32
    )
    every = await live.send(GROUP, Poll("Lunch?", ("Yes", "No", "Later"), selectable_count=3))
    assert every.pollCreationMessage.selectableOptionsCount == 0  # "any number", as phones send it
    assert every.messageContextInfo.messageSecret != single.messageContextInfo.messageSecret
    two = await live.send(GROUP, Poll("Lunch?", ("Yes", "No", "Later"), selectable_count=2))
    assert two.pollCreationMessage.selectableOptionsCount == 2


async def test_an_edit_replaces_the_text_of_our_own_message(live: Live) -> None:
    sent = await live.send(PHONE, Edit(MessageKey("3EB0MINE", from_me=True), "fixed"))
    assert _fields(sent) == ["editedMessage"]
    protocol = sent.editedMessage.message.protocolMessage
    assert _fields(sent.editedMessage.message) == ["protocolMessage"]
    assert protocol.type == wa.ProtocolMessage.MESSAGE_EDIT
    assert protocol.key == pb_key(PHONE, True, "3EB0MINE")
    assert protocol.editedMessage == wa.Message(conversation="fixed")
    assert abs(protocol.timestampMS - time.time() * 1000) < 60_000
    mentioning = await live.send(
        GROUP, Edit(MessageKey("3EB0MINE", from_me=True), "@5511944443333 ok"), mentions=(MEMBER,)
    )
    edited = mentioning.editedMessage.message.protocolMessage.editedMessage.extendedTextMessage
    assert (edited.text, list(edited.contextInfo.mentionedJID)) == ("@5511944443333 ok", [MEMBER])
    with pytest.raises(SendRejected):  # whatsmeow's BuildEdit only edits our own (send.go:599-617)
        await live.engine.send(REF, PHONE, Edit(MessageKey("3EB0THEIRS"), "no"), "OURS-3")
    assert len(live.fake.sent) == 2


async def test_a_vote_is_built_by_whatsmeow_from_the_polls_message_info(live: Live) -> None:
    sent = await live.send(GROUP, PollVote(MessageKey("3EB0POLL", sender_jid=MEMBER), ("Yes", "Later")))
    poll, names = live.fake.vote_builds[-1]
    assert names == ["Yes", "Later"]  # whatsmeow hashes the names (msgsecret.go:309-318)
    source = poll.MessageSource
    assert (poll.ID, source.Chat.User, source.Chat.Server, source.IsGroup, source.IsFromMe) == (
        "3EB0POLL",
        "120363000000000000",
        "g.us",
        True,
        False,
    )
    assert (source.Sender.User, source.Sender.Server) == ("5511944443333", "s.whatsapp.net")
    assert _fields(sent) == ["pollUpdateMessage"]  # what Go built, sent as it is
    assert sent.pollUpdateMessage.vote.encPayload == b"sealed"
    await live.send(PHONE, PollVote(MessageKey("3EB0MYPOLL", from_me=True), ("No",)))
    mine = live.fake.vote_builds[-1][0].MessageSource
    assert (mine.Sender.User, mine.IsFromMe, mine.IsGroup) == ("5511999999999", True, False)


async def test_a_vote_on_a_poll_whose_secret_is_unknown_is_refused(live: Live) -> None:
    live.fake.vote_error = "failed to encrypt poll vote: original message secret key not found"
    with pytest.raises(SendRejected) as refused:
        await live.engine.send(REF, PHONE, PollVote(MessageKey("3EB0OLD"), ("Yes",)), "OURS-1")
    assert "secret" in refused.value.message and not refused.value.retryable
    with pytest.raises(SendRejected):  # hashes cannot be voted with: whatsmeow hashes names itself
        await live.engine.send(REF, PHONE, PollVote(MessageKey("3EB0OLD"), ("sha256:00",)), "OURS-2")
    assert len(live.fake.vote_builds) == 1 and live.fake.sent == []


async def test_what_cannot_be_sent_is_refused(live: Live) -> None:
    with pytest.raises(SendRejected):
        await live.engine.send(REF, PHONE, Unsupported(wa_type="groupInviteMessage"), "OURS-1")
    with pytest.raises(UnknownSession):
        await live.engine.send(SessionRef("acme", "ghost"), PHONE, Location(1.0, 2.0), "OURS-2")
    assert live.fake.sent == []


async def test_every_kind_fails_as_a_text_does(live: Live) -> None:
    live.fake.send_error = "no LID found for 5521988887777@s.whatsapp.net from server"
    live.fake.on_whatsapp["+5521988887777"] = False
    with pytest.raises(NotOnWhatsApp):
        await live.engine.send(REF, PHONE, Location(1.0, 2.0), "OURS-1")
    live.fake.send_error = "server returned error 463"
    with pytest.raises(Restricted):
        await live.engine.send(REF, PHONE, Poll("Q?", ("a", "b")), "OURS-2")
    live.fake.send_error = "websocket not connected"
    with pytest.raises(NotConnected):
        await live.engine.send(REF, PHONE, Reaction(MessageKey("3EB0X"), "👍"), "OURS-3")


# -- receiving: what arrives through neonize's event entry point --------------------------------------------


async def test_a_reply_arrives_with_its_quote_and_mentions(live: Live) -> None:
    reply = wa.ExtendedTextMessage(
        text="@5511999999999 look",
        contextInfo=wa.ContextInfo(
            stanzaID="3EB0ORIG",
            participant=OWN,  # it quotes a message of ours
            quotedMessage=wa.Message(conversation="mine"),
            mentionedJID=[OWN],
        ),
    )
    got = await live.inbound(wa.Message(extendedTextMessage=reply), chat=GROUP, sender=MEMBER)
    assert (got.type, got.text) == ("text", "@5511999999999 look")
    assert got.content == Text("@5511999999999 look")
    assert got.quote == Quote(MessageKey("3EB0ORIG", from_me=True), Text("mine"))
    assert got.mentions == (OWN,)
    # a member's message, by its LID; then, one to one, the other party's own message
    other = wa.ContextInfo(stanzaID="3EB0M", participant="123:4@lid")
    got = await live.inbound(
        wa.Message(extendedTextMessage=wa.ExtendedTextMessage(text="so", contextInfo=other)), chat=GROUP, sender=MEMBER
    )
    assert got.quote == Quote(MessageKey("3EB0M", sender_jid="123@lid")) and got.mentions == ()
    theirs = wa.ContextInfo(stanzaID="3EB0T", participant=PHONE, quotedMessage=wa.Message(conversation="hm"))
    got = await live.inbound(wa.Message(extendedTextMessage=wa.ExtendedTextMessage(text="and", contextInfo=theirs)))
    assert got.quote == Quote(MessageKey("3EB0T"), Text("hm"))


IMAGE = wa.ImageMessage(
    URL="https://mmg.whatsapp.net/o1/v/t62/x.enc",
    mimetype="image/jpeg",
    caption="a cat",
    fileSHA256=bytes(range(32)),
    fileLength=52_000,
    height=1280,
    width=960,
    mediaKey=b"M" * 32,
    fileEncSHA256=b"F" * 32,
    directPath="/o1/v/t62/x.enc?ccb=9-4",
    mediaKeyTimestamp=1_790_000_000,
    JPEGThumbnail=b"tiny",
    contextInfo=wa.ContextInfo(mentionedJID=[OWN]),
)
VIDEO = wa.VideoMessage(mimetype="video/mp4", seconds=7, gifPlayback=True, width=320, height=240, fileLength=9000)
VOICE = wa.AudioMessage(mimetype=VOICE_MIME, seconds=4, PTT=True, fileLength=6000, waveform=b"\x01\x02")
DOCUMENT = wa.DocumentMessage(mimetype="application/pdf", fileName="deal.pdf", caption="sign", fileLength=100)
STICKER = wa.StickerMessage(mimetype="image/webp", isAnimated=True, width=512, height=512, fileLength=30_000)


def _alone(**field: Any) -> bytes:
    """The handle of a file sub-message: a Message holding only it, without its contextInfo."""
    ((name, value),) = field.items()
    copy = type(value)()
    copy.CopyFrom(value)
    copy.ClearField("contextInfo")
    return wa.Message(**{name: copy}).SerializeToString()


# (the message as it arrives, event flags, the Media expected, its handle's message, the text)
MEDIA_ARRIVALS = [
    pytest.param(
        wa.Message(imageMessage=IMAGE),
        {},
        Media(
            kind=MediaKind.IMAGE,
            mime_type="image/jpeg",
            size=52_000,
            sha256=bytes(range(32)).hex(),
            caption="a cat",
            width=960,
            height=1280,
        ),
        _alone(imageMessage=IMAGE),
        "[image] a cat",
        id="image",
    ),
    pytest.param(  # as whatsmeow hands a view-once photo over: unwrapped, with IsViewOnce (events.go:393-397)
        wa.Message(imageMessage=IMAGE),
        {"IsViewOnce": True, "IsViewOnceV2": True},
        Media(
            kind=MediaKind.IMAGE,
            mime_type="image/jpeg",
            size=52_000,
            sha256=bytes(range(32)).hex(),
            caption="a cat",
            width=960,
            height=1280,
            view_once=True,
        ),
        _alone(imageMessage=IMAGE),
        "[image] a cat",
        id="view-once-flag",
    ),
    pytest.param(  # a wrapper whatsmeow left in place (or a nested one)
        wa.Message(
            viewOnceMessageV2Extension=wa.FutureProofMessage(message=wa.Message(audioMessage=VOICE)),
        ),
        {},
        Media(kind=MediaKind.AUDIO, mime_type=VOICE_MIME, size=6000, duration_seconds=4.0, voice=True, view_once=True),
        _alone(audioMessage=VOICE),
        "[voice note]",
        id="view-once-voice-wrapped",
    ),
    pytest.param(
        wa.Message(ephemeralMessage=wa.FutureProofMessage(message=wa.Message(videoMessage=VIDEO))),
        {},
        Media(
            kind=MediaKind.VIDEO,
            mime_type="video/mp4",
            size=9000,
            width=320,
            height=240,
            duration_seconds=7.0,
            animated=True,
        ),
        _alone(videoMessage=VIDEO),
        "[video]",
        id="gif-in-ephemeral",
    ),
    pytest.param(
        wa.Message(ptvMessage=VIDEO),
        {},
        Media(
            kind=MediaKind.VIDEO,
            mime_type="video/mp4",
            size=9000,
            width=320,
            height=240,
            duration_seconds=7.0,
            animated=True,
        ),
        _alone(videoMessage=VIDEO),  # a video note downloads as a video (DownloadAny knows no ptvMessage)
        "[video]",
        id="video-note",
    ),
    pytest.param(
        wa.Message(documentWithCaptionMessage=wa.FutureProofMessage(message=wa.Message(documentMessage=DOCUMENT))),
        {},
        Media(kind=MediaKind.DOCUMENT, mime_type="application/pdf", size=100, caption="sign", filename="deal.pdf"),
        _alone(documentMessage=DOCUMENT),
        "[document] sign",
        id="document-with-caption",
    ),
    pytest.param(
        wa.Message(stickerMessage=STICKER),
        {},
        Media(kind=MediaKind.STICKER, mime_type="image/webp", size=30_000, width=512, height=512, animated=True),
        _alone(stickerMessage=STICKER),
        "[sticker]",
        id="sticker",
    ),
]


@pytest.mark.parametrize(("message", "flags", "expected", "handle", "text"), MEDIA_ARRIVALS)
async def test_a_file_arrives_described_with_a_handle_to_download_it(
    live: Live, message: wa.Message, flags: dict[str, bool], expected: Media, handle: bytes, text: str
) -> None:
    event = _event(message)
    for name, value in flags.items():
        setattr(event, name, value)
    got = await live.deliver(event)
    assert got.content == expected
    assert isinstance(got.content, Media) and got.content.handle == handle
    assert (got.type, got.text) == (expected.kind.value, text)


async def test_places_and_live_locations_arrive(live: Live) -> None:
    place = wa.LocationMessage(degreesLatitude=-23.5, degreesLongitude=-46.6, name="Sé", address="Centro", URL="u")
    got = await live.inbound(wa.Message(locationMessage=place))
    assert got.content == Location(-23.5, -46.6, name="Sé", address="Centro", url="u")
    assert (got.type, got.text) == ("location", "[location] Sé")
    moving = wa.LiveLocationMessage(degreesLatitude=1.25, degreesLongitude=2.5, sequenceNumber=3)
    got = await live.inbound(wa.Message(liveLocationMessage=moving))
    assert got.content == Location(1.25, 2.5, live=True) and got.text == "[live location] 1.25000,2.50000"


VCARD = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Silva;Ana;;;\r\nFN:Ana\r\n  Silva\r\n"
    "item1.TEL;waid=5511988887777:+55 11 98888-7777\r\nitem1.X-ABLabel:Celular\r\n"
    "TEL;type=WORK;type=VOICE:+55 11 3333-4444\r\nEND:VCARD"
)


async def test_contact_cards_arrive_with_their_numbers_and_whatsapp_ids(live: Live) -> None:
    got = await live.inbound(wa.Message(contactMessage=wa.ContactMessage(displayName="Ana S.", vcard=VCARD)))
    phones = (
        ContactPhone("+55 11 98888-7777", wa_id="5511988887777"),
        ContactPhone("+55 11 3333-4444", type="WORK"),
    )
    assert got.content == Contacts((ContactCard("Ana S.", phones, VCARD),))
    assert (got.type, got.text) == ("contacts", "[contacts] Ana S.")
    unnamed = wa.ContactMessage(vcard=VCARD)  # the vCard's FN (folded over two lines) names it
    array = wa.ContactsArrayMessage(displayName="2 contacts", contacts=[unnamed, wa.ContactMessage(displayName="Bo")])
    got = await live.inbound(wa.Message(contactsArrayMessage=array))
    assert got.content == Contacts((ContactCard("Ana Silva", phones, VCARD), ContactCard("Bo")))


async def test_reactions_arrive_naming_their_message_from_our_side(live: Live) -> None:
    # the other party reacts to our message: their key says not fromMe, and one to one that means ours
    to_ours = wa.ReactionMessage(key={"remoteJID": OWN, "fromMe": False, "ID": "3EB0MINE"}, text="❤️")
    got = await live.inbound(wa.Message(reactionMessage=to_ours))
    assert got.content == Reaction(MessageKey("3EB0MINE", from_me=True), "❤️")
    assert (got.type, got.text) == ("reaction", "[reaction] ❤️")
    # a member takes back a reaction to another member's message
    taken = wa.ReactionMessage(key={"remoteJID": GROUP, "fromMe": False, "ID": "3EB0G", "participant": PHONE}, text="")
    got = await live.inbound(wa.Message(reactionMessage=taken), chat=GROUP, sender=MEMBER)
    assert got.content == Reaction(MessageKey("3EB0G", sender_jid=PHONE), "")
    assert got.text == "[reaction removed]"
    # a member reacts to their own message
    own = wa.ReactionMessage(key={"remoteJID": GROUP, "fromMe": True, "ID": "3EB0OWN"}, text="👍")
    got = await live.inbound(wa.Message(reactionMessage=own), chat=GROUP, sender=MEMBER)
    assert got.content == Reaction(MessageKey("3EB0OWN", sender_jid=MEMBER), "👍")
    # our phone reacted to a group member's message
    ours = wa.ReactionMessage(
        key={"remoteJID": GROUP, "fromMe": False, "ID": "3EB0G", "participant": MEMBER}, text="🙏"
    )
    got = await live.inbound(wa.Message(reactionMessage=ours), chat=GROUP, sender=OWN, from_me=True)
    assert got.content == Reaction(MessageKey("3EB0G", sender_jid=MEMBER), "🙏") and got.from_me


def _vote(poll_id: str, *, from_me: bool) -> wa.Message:
    update = wa.PollUpdateMessage(
        pollCreationMessageKey={"remoteJID": PHONE, "fromMe": from_me, "ID": poll_id},
        vote=wa.PollEncValue(encPayload=b"sealed", encIV=b"i" * 12),
        senderTimestampMS=1_790_000_001_000,
    )
    return wa.Message(pollUpdateMessage=update)


def _chose(*names: str) -> wa.PollVoteMessage:
    return wa.PollVoteMessage(selectedOptions=[hashlib.sha256(n.encode()).digest() for n in names])


async def test_a_poll_then_its_votes_decrypted_by_whatsmeow_and_named(live: Live) -> None:
    options = [wa.PollCreationMessage.Option(optionName=n) for n in ("Yes", "No", "Later")]
    poll = wa.PollCreationMessage(name="Lunch?", options=options, selectableOptionsCount=0)
    got = await live.inbound(wa.Message(pollCreationMessageV3=poll), message_id="3EB0POLL")
    assert got.content == Poll("Lunch?", ("Yes", "No", "Later"), selectable_count=3)  # 0: any number
    assert (got.type, got.text) == ("poll", "[poll] Lunch?")

    live.fake.vote = _chose("Later", "Yes")
    got = await live.inbound(_vote("3EB0POLL", from_me=True), message_id="3EB0VOTE")  # their own poll
    assert got.content == PollVote(MessageKey("3EB0POLL"), ("Later", "Yes"))
    assert (got.type, got.text) == ("poll_vote", "[vote] Later, Yes")
    asked = live.fake.decrypted[-1]  # the whole event, as whatsmeow's DecryptPollVote wants it
    assert asked.Info.ID == "3EB0VOTE" and asked.Message.pollUpdateMessage.vote.encPayload == b"sealed"
    live.fake.vote = wa.PollVoteMessage()
    got = await live.inbound(_vote("3EB0POLL", from_me=True), message_id="3EB0VOTE2")
    assert got.content == PollVote(MessageKey("3EB0POLL"), ()) and got.text == "[vote withdrawn]"


async def test_votes_on_our_polls_are_named_and_unknown_polls_give_hashes(live: Live) -> None:
    await live.send(PHONE, Poll("Where?", ("Here", "There")))  # WhatsApp's id for it: 3EB0SENT1
    live.fake.vote = _chose("There")
    got = await live.inbound(_vote("3EB0SENT1", from_me=False))
    assert got.content == PollVote(MessageKey("3EB0SENT1", from_me=True), ("There",))
    live.fake.vote = _chose("Maybe")
    got = await live.inbound(_vote("3EB0ELSEWHERE", from_me=True))
    digest = hashlib.sha256(b"Maybe").hexdigest()
    assert got.content == PollVote(MessageKey("3EB0ELSEWHERE"), (f"sha256:{digest}",))


async def test_a_vote_whatsmeow_cannot_decrypt_arrives_as_unsupported(live: Live) -> None:
    live.fake.decrypt_error = "failed to decrypt poll vote: original message secret key not found"
    got = await live.inbound(_vote("3EB0POLL", from_me=True))
    assert got.content == Unsupported("pollUpdateMessage", "[vote] could not be decrypted")
    assert (got.type, got.text) == ("unsupported", "[vote] could not be decrypted")


async def test_deletes_and_edits_arrive_naming_their_message(live: Live) -> None:
    revoke = wa.ProtocolMessage(type=wa.ProtocolMessage.REVOKE, key={"remoteJID": OWN, "fromMe": True, "ID": "3EB0X"})
    got = await live.inbound(wa.Message(protocolMessage=revoke))
    assert got.content == Revoke(MessageKey("3EB0X")) and (got.type, got.text) == ("revoke", "[deleted]")
    edit = wa.ProtocolMessage(
        type=wa.ProtocolMessage.MESSAGE_EDIT,
        key={"remoteJID": OWN, "fromMe": True, "ID": "3EB0T"},
        editedMessage=wa.Message(conversation="fixed"),
        timestampMS=1_790_000_000_500,
    )
    # as whatsmeow hands it over (the editedMessage wrapper removed, events.go:412-415), and as sent
    for arrived in (wa.Message(protocolMessage=edit), wa.Message(editedMessage={"message": {"protocolMessage": edit}})):
        got = await live.inbound(arrived, chat=GROUP, sender=MEMBER)
        assert got.content == Edit(MessageKey("3EB0T", sender_jid=MEMBER), "fixed")
        assert (got.type, got.text) == ("edit", "[edit] fixed")
    caption = wa.ProtocolMessage(
        type=wa.ProtocolMessage.MESSAGE_EDIT,
        key={"remoteJID": PHONE, "fromMe": True, "ID": "3EB0P"},
        editedMessage=wa.Message(imageMessage=wa.ImageMessage(caption="better caption")),
    )
    got = await live.inbound(wa.Message(protocolMessage=caption), sender=OWN, from_me=True)
    assert got.content == Edit(MessageKey("3EB0P", from_me=True), "better caption")


async def test_a_group_invite_arrives_with_its_group_code_and_expiry(live: Live) -> None:
    invite = wa.GroupInviteMessage(
        groupJID=GROUP, inviteCode="abc", inviteExpiration=1_790_000_000, groupName="Family", caption="join us"
    )
    got = await live.inbound(wa.Message(groupInviteMessage=invite))
    assert got.content == GroupInvite(GROUP, "abc", expires_at=1_790_000_000, subject="Family", caption="join us")
    assert (got.type, got.text) == ("group_invite", "[group invite] Family")
    bare = await live.inbound(wa.Message(groupInviteMessage=wa.GroupInviteMessage(groupJID=GROUP, inviteCode="x")))
    assert bare.content == GroupInvite(GROUP, "x")  # no expiry, no name: none said


async def test_other_kinds_arrive_as_unsupported_with_their_name(live: Live) -> None:
    got = await live.inbound(wa.Message(eventMessage=wa.EventMessage(name="Party")))
    assert got.content == Unsupported("eventMessage", "[event] Party")
    assert (got.type, got.text) == ("unsupported", "[event] Party")


# -- downloads -------------------------------------------------------------------------------------------


async def test_an_arrived_file_downloads_by_its_handle_into_the_destination(live: Live, tmp_path: Path) -> None:
    got = await live.inbound(wa.Message(imageMessage=IMAGE))
    assert isinstance(got.content, Media)
    live.fake.download_data = b"\xff\xd8 the picture"
    await live.engine.download(REF, got.content, str(tmp_path / "picture.jpg"))
    assert (tmp_path / "picture.jpg").read_bytes() == b"\xff\xd8 the picture"
    (asked,) = live.fake.downloads
    assert _fields(asked) == ["imageMessage"]  # what whatsmeow's DownloadAny reads (download.go:127-145)
    assert (asked.imageMessage.directPath, asked.imageMessage.mediaKey) == (IMAGE.directPath, IMAGE.mediaKey)
    assert (asked.imageMessage.fileSHA256, asked.imageMessage.fileEncSHA256) == (IMAGE.fileSHA256, IMAGE.fileEncSHA256)


# whatsmeow's download errors as neonize passes them (errors.go:116-144, download.go:247-286)
DOWNLOAD_ERRORS = [
    ("download failed with status code 403", MediaGone, False),
    ("download failed with status code 404", MediaGone, False),
    ("download failed with status code 410", MediaGone, False),
    ("failed to download media from last host: download failed with status code 500", EngineError, True),
    ("failed to refresh media connections: websocket not connected", NotConnected, True),
    ("hash of media plaintext doesn't match", EngineError, True),
    ("no url present", MediaHandleInvalid, False),
]


@pytest.mark.parametrize(("text", "kind", "retryable"), DOWNLOAD_ERRORS, ids=[e[0][:40] for e in DOWNLOAD_ERRORS])
async def test_a_failed_download_is_typed(
    live: Live, tmp_path: Path, text: str, kind: type[EngineError], retryable: bool
) -> None:
    got = await live.inbound(wa.Message(imageMessage=IMAGE))
    assert isinstance(got.content, Media)
    live.fake.download_error = text
    with pytest.raises(EngineError) as failed:
        await live.engine.download(REF, got.content, str(tmp_path / "picture.jpg"))
    assert type(failed.value) is kind and failed.value.retryable is retryable
    assert not (tmp_path / "picture.jpg").exists()


async def test_a_media_without_a_whatsmeow_handle_is_not_asked_for(live: Live, tmp_path: Path) -> None:
    for media in (
        Media(kind=MediaKind.IMAGE),
        Media(kind=MediaKind.IMAGE, handle=b"\xff\xff not a protobuf"),
        Media(kind=MediaKind.IMAGE, handle=wa.Message(conversation="hi").SerializeToString()),
    ):
        with pytest.raises(MediaHandleInvalid):
            await live.engine.download(REF, media, str(tmp_path / "x"))
    assert live.fake.downloads == []


async def test_asking_the_phone_to_upload_again_is_not_supported_by_neonize(live: Live) -> None:
    media = Media(kind=MediaKind.IMAGE, handle=_alone(imageMessage=IMAGE))
    with pytest.raises(NotSupported) as refused:
        await live.engine.request_reupload(REF, PHONE, MessageKey("3EB0IN"), media)
    assert not refused.value.retryable and "neonize 0.5.2" in refused.value.message
    with pytest.raises(UnknownSession):
        await live.engine.request_reupload(SessionRef("acme", "ghost"), PHONE, MessageKey("3EB0IN"), media)
