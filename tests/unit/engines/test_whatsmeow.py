"""The whatsmeow engine's edge, offline: real neonize protobufs in, our events, lookups and errors out."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from typing import Any

import pytest

from zapgate.domain.records import MessageStatus
from zapgate.engines.base import (
    NoticeKind,
    SessionRef,
)
from zapgate.engines.whatsmeow import (
    pb,
    translate_history_sync,
    translate_message,
    translate_receipt,
    translate_undecryptable,
    wa,
)

history = importlib.import_module("neonize.proto.waHistorySync.WAWebProtobufsHistorySync_pb2")

REF = SessionRef("acme", "s1")
PHONE = "5511988887777@s.whatsapp.net"
LID = "123456789012345@lid"


def _jid(value: str = "") -> pb.JID:
    """A neonize JID for `user[:device]@server` ("" for the empty JID Go sends for "none")."""
    user, _, server = value.partition("@")
    user, _, device = user.partition(":")
    return pb.JID(User=user, Server=server, Device=int(device or 0), RawAgent=0, Integrator=0)


def _source(
    chat: str, sender: str, *, sender_alt: str = "", recipient_alt: str = "", from_me: bool = False
) -> pb.MessageSource:
    return pb.MessageSource(
        Chat=_jid(chat),
        Sender=_jid(sender),
        IsFromMe=from_me,
        # whatsmeow sets IsGroup for groups and broadcasts alike (message.go:97-98)
        IsGroup=chat.endswith(("@g.us", "@broadcast")),
        SenderAlt=_jid(sender_alt),
        RecipientAlt=_jid(recipient_alt),
        BroadcastListOwner=_jid(),
    )


def _info(source: pb.MessageSource, message_id: str = "3EB0MSG") -> pb.MessageInfo:
    return pb.MessageInfo(MessageSource=source, ID=message_id, Pushname="Ana", Timestamp=1_790_000_000_000)


def _message(source: pb.MessageSource, text: str = "olá", message_id: str = "3EB0MSG") -> pb.Message:
    return pb.Message(Info=_info(source, message_id), Message=wa.Message(conversation=text))


def _reparsed(message: Any) -> Any:
    """`message` as neonize parses what Go sends (proto2 with required fields: a partial serialisation)."""
    return type(message).FromString(message.SerializePartialToString())


# -- inbound messages -------------------------------------------------------------------------------------


def test_a_lid_addressed_chat_is_named_by_its_phone_jid_with_the_lid_alongside() -> None:
    # an incoming DM in LID addressing: Sender is the LID (with its device), SenderAlt the phone (message.go:172-185)
    source = _source(LID, "123456789012345:3@lid", sender_alt="5511988887777:3@s.whatsapp.net")
    inbound = translate_message(REF, _reparsed(_message(source)))
    assert inbound is not None
    assert (inbound.chat_jid, inbound.chat_lid) == (PHONE, LID)
    assert (inbound.sender_jid, inbound.sender_lid) == (PHONE, LID)
    assert not inbound.from_me and not inbound.is_group
    assert (inbound.type, inbound.text, inbound.push_name, inbound.message_id) == ("text", "olá", "Ana", "3EB0MSG")
    assert inbound.timestamp == datetime.fromtimestamp(1_790_000_000, UTC)


def test_a_phone_addressed_chat_keeps_the_lid_whatsmeow_gives_alongside() -> None:
    inbound = translate_message(REF, _message(_source(PHONE, PHONE, sender_alt=LID)))
    assert inbound is not None
    assert (inbound.chat_jid, inbound.chat_lid, inbound.sender_jid, inbound.sender_lid) == (PHONE, LID, PHONE, LID)


def test_a_message_sent_from_the_phone_is_from_me_in_the_chat_with_the_other_party() -> None:
    # sent from the linked phone: Sender is us, Chat the recipient, RecipientAlt its other JID (message.go:143-161)
    mine = _source(LID, "99887766:0@lid", recipient_alt=PHONE, from_me=True)
    inbound = translate_message(REF, _reparsed(_message(mine)))
    assert inbound is not None and inbound.from_me
    assert (inbound.chat_jid, inbound.chat_lid) == (PHONE, LID)
    assert (inbound.sender_jid, inbound.sender_lid) == ("99887766@lid", "99887766@lid")


def test_a_group_message_names_the_writer_by_phone_and_lid() -> None:
    group = "120363000000000000@g.us"
    lid_mode = translate_message(REF, _reparsed(_message(_source(group, "123456789012345:2@lid", sender_alt=PHONE))))
    assert lid_mode is not None and lid_mode.is_group
    assert (lid_mode.chat_jid, lid_mode.chat_lid) == (group, None)
    assert (lid_mode.sender_jid, lid_mode.sender_lid) == (PHONE, LID)
    # no phone number known for the writer: the LID is all there is
    lid_only = translate_message(REF, _message(_source(group, LID)))
    assert lid_only is not None and (lid_only.sender_jid, lid_only.sender_lid) == (LID, LID)


def test_a_story_keeps_its_status_broadcast_chat() -> None:
    story = translate_message(REF, _reparsed(_message(_source("status@broadcast", LID, sender_alt=PHONE))))
    assert story is not None
    assert (story.chat_jid, story.chat_lid, story.sender_jid, story.sender_lid) == (
        "status@broadcast",
        None,
        PHONE,
        LID,
    )
    assert not story.is_group  # a story is not a group chat, whatever IsGroup says


def test_nul_characters_and_lone_surrogates_pass_through_without_an_exception() -> None:
    # Go marshals whatever bytes a string holds; upb then returns bytes for the field instead of str
    raw = _message(_source(PHONE, PHONE), "a\x00XXXb").SerializePartialToString()
    odd = pb.Message.FromString(raw.replace(b"XXX", b"\xed\xa0\x80"))  # the WTF-8 bytes of U+D800
    inbound = translate_message(REF, odd)
    assert inbound is not None and inbound.text == "a\x00\ud800b"
    worse = pb.Message.FromString(raw.replace(b"XXX", b"\xff\xfe\x80"))
    inbound = translate_message(REF, worse)
    assert inbound is not None and inbound.text == "a\x00\udcff\udcfe\udc80b"


@pytest.mark.parametrize(
    "event",
    [
        pb.Message(),  # nothing at all
        pb.Message(Info=_info(_source(PHONE, PHONE))),  # no content
        pb.Message(Info=_info(_source(PHONE, PHONE)), Message=wa.Message(protocolMessage=wa.ProtocolMessage())),
        pb.Message(Info=_info(_source(PHONE, PHONE), message_id=""), Message=wa.Message(conversation="x")),
        pb.Message(Info=_info(_source("", "")), Message=wa.Message(conversation="x")),
    ],
    ids=["empty", "no-content", "protocol", "no-id", "no-chat"],
)
def test_events_that_carry_no_message_translate_to_nothing(event: pb.Message) -> None:
    assert translate_message(REF, _reparsed(event)) is None


def test_captions_wrappers_and_empty_media_have_a_type_and_a_text() -> None:
    image = wa.Message(imageMessage=wa.ImageMessage(caption="a cat"))
    audio = wa.Message(ephemeralMessage=wa.FutureProofMessage(message=wa.Message(audioMessage=wa.AudioMessage())))
    found = [translate_message(REF, pb.Message(Info=_info(_source(PHONE, PHONE)), Message=m)) for m in (image, audio)]
    assert [(m.type, m.text) for m in found if m is not None] == [("image", "a cat"), ("audio", "[audio]")]


# -- receipts ---------------------------------------------------------------------------------------------


def _receipt(kind: int, source: pb.MessageSource, ids: tuple[str, ...] = ("3EB0A", "3EB0B")) -> pb.Receipt:
    return _reparsed(pb.Receipt(MessageSource=source, MessageIDs=list(ids), Timestamp=1_790_000_001, Type=kind))


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (pb.Receipt.DELIVERED, MessageStatus.DELIVERED),
        (pb.Receipt.READ, MessageStatus.READ),
        (pb.Receipt.PLAYED, MessageStatus.PLAYED),
        # our own other devices opening what we received (types/presence.go:46-56): not a recipient's doing
        (pb.Receipt.READ_SELF, None),
        (pb.Receipt.SERVER_ERROR, None),  # neonize 0.5's name for played-self (goneonize/utils/encoder.go:695)
        (pb.Receipt.SENDER, None),
        (pb.Receipt.RETRY, None),
        (pb.Receipt.INACTIVE, None),
        (pb.Receipt.PEER_MSG, None),
        (pb.Receipt.HISTORY_SYNC, None),
    ],
)
def test_receipts_name_whatsapp_ids_and_only_a_recipients_statuses(kind: int, status: MessageStatus | None) -> None:
    receipt = translate_receipt(REF, _receipt(kind, _source(LID, "123456789012345:5@lid", sender_alt=PHONE)))
    if status is None:
        assert receipt is None
        return
    assert receipt is not None
    assert (receipt.status, receipt.message_ids, receipt.chat_jid, receipt.sender_jid) == (
        status,
        ("3EB0A", "3EB0B"),
        PHONE,
        PHONE,
    )
    assert receipt.timestamp == datetime.fromtimestamp(1_790_000_001, UTC)


def test_receipts_from_our_own_account_are_not_a_recipients() -> None:
    # we read or played a message we received, on the phone (played is sent both ways: types/presence.go:49-53)
    for kind in (pb.Receipt.READ, pb.Receipt.PLAYED, pb.Receipt.DELIVERED):
        mine = _source(PHONE, "5511999999999:0@s.whatsapp.net", from_me=True)
        assert translate_receipt(REF, _receipt(kind, mine)) is None


def test_a_group_receipt_names_the_group_and_the_participant() -> None:
    group = "120363000000000000@g.us"
    receipt = translate_receipt(REF, _receipt(pb.Receipt.READ, _source(group, LID, sender_alt=PHONE), ("3EB0A",)))
    assert receipt is not None and (receipt.chat_jid, receipt.sender_jid) == (group, PHONE)
    assert translate_receipt(REF, _receipt(pb.Receipt.READ, _source(PHONE, PHONE), ())) is None


# -- notices ----------------------------------------------------------------------------------------------


def test_an_undecryptable_message_is_a_notice_with_what_whatsmeow_says() -> None:
    event = pb.UndecryptableMessage(
        Info=_info(_source(LID, LID, sender_alt=PHONE), "3EB0BAD"),
        IsUnavailable=True,
        DecryptFailMode=pb.UndecryptableMessage.DECRYPT_FAIL_HIDE,
    )
    notice = translate_undecryptable(REF, _reparsed(event))
    assert notice.kind is NoticeKind.UNDECRYPTABLE
    assert notice.timestamp == datetime.fromtimestamp(1_790_000_000, UTC)
    assert notice.details == {
        "messageId": "3EB0BAD",
        "chatJid": PHONE,
        "chatLid": LID,
        "senderJid": PHONE,
        "senderLid": LID,
        "isGroup": False,
        "fromMe": False,
        "isUnavailable": True,
        "unavailableType": None,
        "decryptFailMode": "hide",
    }


def test_a_history_sync_is_a_notice_with_its_type_progress_and_size() -> None:
    conversations = [
        history.Conversation(ID=PHONE, messages=[history.HistorySyncMsg(), history.HistorySyncMsg()]),
        history.Conversation(ID="120363000000000000@g.us", messages=[history.HistorySyncMsg()]),
    ]
    data = history.HistorySync(
        syncType=history.HistorySync.RECENT, progress=40, chunkOrder=2, conversations=conversations
    )
    notice = translate_history_sync(REF, _reparsed(pb.HistorySync(Data=data)))
    assert notice.kind is NoticeKind.HISTORY_SYNC
    assert notice.details == {"syncType": "recent", "progress": 40, "chunkOrder": 2, "conversations": 2, "messages": 3}
    bare = translate_history_sync(
        REF, _reparsed(pb.HistorySync(Data=history.HistorySync(syncType=history.HistorySync.PUSH_NAME)))
    )
    assert bare.details == {
        "syncType": "push_name",
        "progress": None,
        "chunkOrder": None,
        "conversations": 0,
        "messages": 0,
    }
