"""The whatsmeow engine's edge, offline: real neonize protobufs in, our events, lookups and errors out."""

from __future__ import annotations

import ctypes
import importlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from zapgate.domain.records import MessageStatus
from zapgate.engines.base import (
    EngineError,
    NotConnected,
    NoticeKind,
    NotOnWhatsApp,
    RecipientUnknown,
    Restricted,
    SendRejected,
    SessionRef,
    StartMode,
    StartRequest,
)
from zapgate.engines.whatsmeow import (
    LookupRejected,
    WhatsmeowEngine,
    _Session,
    _translate_error,
    pb,
    translate_history_sync,
    translate_message,
    translate_receipt,
    translate_undecryptable,
    wa,
)

# imported through the engine first: neonize's own import leaks a popen, which the engine's import absorbs
_exc = importlib.import_module("neonize.exc")
GetJIDFromStoreError, IsOnWhatsAppError, SendMessageError = (
    _exc.GetJIDFromStoreError,
    _exc.IsOnWhatsAppError,
    _exc.SendMessageError,
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
    assert [(m.type, m.text) for m in found if m is not None] == [("image", "[image] a cat"), ("audio", "[audio]")]


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


# -- errors -------------------------------------------------------------------------------------------------

# (whatsmeow's error text, what we raise, retryable); file:line in whatsmeow 33cfac51 unless said otherwise
ERRORS: list[tuple[str, type[EngineError], bool]] = [
    ("websocket not connected", NotConnected, True),  # errors.go:22
    ("failed to get device list: failed to send usync query: websocket not connected", NotConnected, True),
    ("websocket disconnected before info query returned response", NotConnected, True),  # errors.go:259
    ("the store doesn't contain a device JID", NotConnected, True),  # ErrNotLoggedIn, errors.go:23
    ("client is nil", NotConnected, True),  # errors.go:19
    ("timed out waiting for message send response", EngineError, True),  # errors.go:24
    (
        "failed to get user info for 5511988887777@s.whatsapp.net to fill LID cache: info query timed out",
        EngineError,
        True,
    ),
    ("context canceled", EngineError, True),  # send.go:436
    ("context deadline exceeded", EngineError, True),
    ("no LID found for 5511988887777@s.whatsapp.net from server", RecipientUnknown, False),  # send.go:344
    ("server returned error 463", Restricted, False),  # send.go:452, reach-out timelock
    ("server returned error 479", EngineError, True),  # smax-invalid, client.go:309
    ("server returned error 403", SendRejected, False),
    ("server returned error 405", SendRejected, False),
    ("server returned error 500", EngineError, True),
    ("failed to get group members: info query returned status 404: item-not-found", RecipientUnknown, False),
    ("failed to get group members: info query returned status 403: forbidden", SendRejected, False),
    ("info query returned status 429: rate-overlimit", EngineError, True),  # errors.go:195
    ("info query returned status 503: service-unavailable", EngineError, True),
    ("can't send message to unknown server example.com", SendRejected, False),  # errors.go:110, send.go:414
    ("message recipient must be a user JID with no device part", SendRejected, False),  # errors.go:111
    ("account restricted", Restricted, False),  # not whatsmeow's words: a text that says so
    ("not on whatsapp", NotOnWhatsApp, False),
    ("cipher encryption failed: something new", EngineError, True),  # send.go:1426: unknown, so retryable
]


@pytest.mark.parametrize(("text", "kind", "retryable"), ERRORS, ids=[e[0][:48] for e in ERRORS])
def test_whatsmeow_errors_are_typed(text: str, kind: type[EngineError], retryable: bool) -> None:
    error = _translate_error(SendMessageError(text), REF)
    assert type(error) is kind
    assert error.retryable is retryable
    assert text in error.message and error.details["session"] == "acme/s1"


def test_a_server_error_code_is_kept_in_the_details() -> None:
    assert _translate_error(SendMessageError("server returned error 463"), REF).details["error_code"] == 463
    assert _translate_error(SendMessageError("server returned error 479"), REF).details["error_code"] == 479


# -- lookups and sends through a stand-in for neonize's client -----------------------------------------------


class FakeClient:
    """Answers as neonize's NewClient does, with real protobufs; remembers what it was asked."""

    def __init__(self, answers: dict[str, list[pb.IsOnWhatsAppResponse]], lids: dict[str, str]) -> None:
        self.answers = answers  # by the number asked
        self.lids = lids  # phone JID -> LID, as whatsmeow's store keeps them
        self.asked: list[tuple[str, ...]] = []
        self.sent: list[tuple[pb.JID, wa.Message]] = []
        self.send_error: str | None = None

    def is_on_whatsapp(self, *numbers: str) -> list[pb.IsOnWhatsAppResponse]:
        self.asked.append(numbers)
        found = [a for n in numbers for a in self.answers.get(n, [])]
        if not found:
            raise IsOnWhatsAppError("Function returned nothing.")  # goneonize/main.go:1235
        return found

    def get_lid_from_pn(self, jid: pb.JID) -> pb.JID:
        return _jid(self.lids.get(f"{jid.User}@{jid.Server}", ""))  # the empty JID when unknown (lidmap.go:96-115)

    def get_pn_from_lid(self, jid: pb.JID) -> pb.JID:
        if jid.Server != "lid":
            raise GetJIDFromStoreError("invalid GetPNForLID call with non-LID JID")
        phones = {lid: phone for phone, lid in self.lids.items()}
        return _jid(phones.get(f"{jid.User}@{jid.Server}", ""))

    def send_message(self, to: pb.JID, message: wa.Message) -> pb.SendResponse:
        if self.send_error:
            raise SendMessageError(self.send_error)
        self.sent.append((to, message))
        timings = pb.MessageDebugTimings(
            Queue=0, Marshal=0, GetParticipants=0, GetDevices=0, GroupEncrypt=0, PeerEncrypt=0, Send=0, Resp=0, Retry=0
        )
        return pb.SendResponse(Timestamp=1_790_000_002, ID="3EB0WHATSAPP", ServerID=0, DebugTimings=timings)

    def stop(self) -> None:
        pass


def _answer(jid: str, *, is_in: bool = True, query: str = "") -> pb.IsOnWhatsAppResponse:
    return pb.IsOnWhatsAppResponse(Query=query, JID=_jid(jid), IsIn=is_in)


@pytest.fixture
async def hosting() -> AsyncIterator[Callable[[FakeClient], WhatsmeowEngine]]:
    engines: list[WhatsmeowEngine] = []

    def host(client: FakeClient) -> WhatsmeowEngine:
        engine = WhatsmeowEngine(lambda event: None, lambda client_id: ":memory:")
        session = _Session(request=StartRequest(REF, StartMode.RESTORE, jid="5511999999999:7@s.whatsapp.net"), dsn="")
        session.client, session.go_live = client, True
        engine._sessions[REF] = session
        engines.append(engine)
        return engine

    yield host
    for engine in engines:
        engine._sessions.clear()  # the stand-in has no Go thread to stop
        await engine.close()


async def test_a_lookup_asks_with_a_plus_and_keeps_the_phone_jid_and_the_lid(hosting: Any) -> None:
    client = FakeClient({"+5511988887777": [_answer(PHONE)]}, {PHONE: LID})
    found = await hosting(client).resolve(REF, "5511988887777")
    assert client.asked == [("+5511988887777",)]  # international format with `+` (whatsmeow user.go:174-175)
    assert (found.on_whatsapp, found.jid, found.lid, found.phone_number) == (True, PHONE, LID, "5511988887777")


async def test_a_lookup_answered_with_the_lid_maps_it_back_to_the_phone_jid(hosting: Any) -> None:
    client = FakeClient({"+5511988887777": [_answer("123456789012345@lid")]}, {PHONE: LID})
    found = await hosting(client).resolve(REF, "+5511988887777")
    assert client.asked == [("+5511988887777",)]
    assert (found.on_whatsapp, found.jid, found.lid) == (True, PHONE, LID)


async def test_a_lid_answer_without_a_stored_phone_jid_gives_no_made_up_one(hosting: Any) -> None:
    client = FakeClient({"+5511988887777": [_answer("123456789012345@lid")]}, {})
    found = await hosting(client).resolve(REF, "5511988887777")
    assert (found.on_whatsapp, found.jid, found.lid) == (True, None, LID)


async def test_a_number_without_an_account_is_not_on_whatsapp(hosting: Any) -> None:
    client = FakeClient({"+5511900000000": [_answer("5511900000000@s.whatsapp.net", is_in=False)]}, {})
    engine = hosting(client)
    out = await engine.resolve(REF, "5511900000000")
    assert (out.on_whatsapp, out.jid, out.lid) == (False, None, None)
    nothing = await engine.resolve(REF, "5511900000001")  # WhatsApp answered no user at all
    assert (nothing.on_whatsapp, nothing.jid) == (False, None)


async def test_a_brazilian_number_is_the_jid_whatsapp_answers_without_the_ninth_digit(hosting: Any) -> None:
    old_style = "551188887777@s.whatsapp.net"
    client = FakeClient({"+5511988887777": [_answer(old_style)]}, {old_style: LID})
    found = await hosting(client).resolve(REF, "5511988887777")
    assert client.asked == [("+5511988887777",)]  # asked as given: no digit added or dropped
    assert (found.jid, found.lid, found.phone_number) == (old_style, LID, "5511988887777")


async def test_a_lookup_of_something_not_a_number_is_refused_before_whatsapp(hosting: Any) -> None:
    client = FakeClient({}, {})
    with pytest.raises(LookupRejected):
        await hosting(client).resolve(REF, "5511 98888")  # neonize would ask for two numbers
    assert client.asked == []


async def test_a_send_returns_whatsapps_id_and_the_lid_it_went_to(hosting: Any) -> None:
    client = FakeClient({}, {PHONE: LID})
    result = await hosting(client).send_text(REF, PHONE, "olá", "OURS-1")
    assert (result.message_id, result.to) == ("3EB0WHATSAPP", LID)
    assert result.timestamp == datetime.fromtimestamp(1_790_000_002, UTC)
    ((to, message),) = client.sent
    assert (to.User, to.Server, message.conversation) == ("5511988887777", "s.whatsapp.net", "olá")
    group = await hosting(client).send_text(REF, "120363000000000000@g.us", "oi", "OURS-2")
    assert group.to == "120363000000000000@g.us"


async def test_a_send_to_a_number_without_an_account_is_not_on_whatsapp(hosting: Any) -> None:
    client = FakeClient({"+5511900000000": [_answer("5511900000000@s.whatsapp.net", is_in=False)]}, {})
    client.send_error = "no LID found for 5511900000000@s.whatsapp.net from server"
    with pytest.raises(NotOnWhatsApp) as absent:
        await hosting(client).send_text(REF, "5511900000000@s.whatsapp.net", "hi", "OURS-1")
    assert not absent.value.retryable
    # on WhatsApp after all: the send's own answer stands
    present = FakeClient({"+5511988887777": [_answer(PHONE)]}, {})
    present.send_error = "no LID found for 5511988887777@s.whatsapp.net from server"
    with pytest.raises(RecipientUnknown):
        await hosting(present).send_text(REF, PHONE, "hi", "OURS-2")


async def test_sends_fail_typed(hosting: Any) -> None:
    client = FakeClient({}, {})
    engine = hosting(client)
    client.send_error = "server returned error 463"
    with pytest.raises(Restricted) as restricted:
        await engine.send_text(REF, PHONE, "hi", "OURS-1")
    assert restricted.value.details["error_code"] == 463 and not restricted.value.retryable
    client.send_error = "websocket not connected"
    with pytest.raises(NotConnected):
        await engine.send_text(REF, PHONE, "hi", "OURS-2")
    client.send_error = None
    with pytest.raises(SendRejected):
        await engine.send_text(REF, PHONE, "a lone \ud800 surrogate", "OURS-3")  # protobuf cannot carry it
    assert client.sent == []


def test_sends_carry_no_bot_tag() -> None:
    # neonize adds a bot node to one-to-one sends, which recipients see as an AI label, unless NEONIZE_BOT_TAG
    # says "off" (goneonize/main.go:146-157); Go copies the C environment when the engine's import loads it
    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    assert libc.getenv(b"NEONIZE_BOT_TAG") == b"off"


async def test_a_recipient_that_is_no_jid_is_rejected_before_whatsapp(hosting: Any) -> None:
    client = FakeClient({}, {})
    with pytest.raises(SendRejected):
        await hosting(client).send_text(REF, "5511988887777:x@s.whatsapp.net", "hi", "OURS-1")
    assert client.sent == []
