"""The sandbox engine on an in-memory network: pairing, messaging every kind with receipts, media, faults."""

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.support.waiting import eventually
from zapgate.domain.chats import ChatState, SeenPresence
from zapgate.domain.content import (
    ContactCard,
    ContactPhone,
    Contacts,
    Content,
    Edit,
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
    kind_of,
    summary,
)
from zapgate.domain.records import MessageStatus
from zapgate.domain.sessions import SessionStatus
from zapgate.engines.base import (
    ChatChanged,
    EngineError,
    EngineEvent,
    EngineFailure,
    InboundMessage,
    MediaGone,
    MediaReuploaded,
    NotConnected,
    Notice,
    NoticeKind,
    NotOnWhatsApp,
    PairingCode,
    Presence,
    PresenceSeen,
    QrCode,
    Receipt,
    RecipientUnknown,
    Restricted,
    SendRejected,
    SessionRef,
    StartMode,
    StartRequest,
    StatusChanged,
    UnknownSession,
)
from zapgate.engines.sandbox import (
    MEDIA_CHUNK,
    LocalSandboxNetwork,
    MediaCorrupt,
    SandboxEngine,
    phone_address,
    phone_of_lid,
    session_address,
    simulated_lid,
    whatsapp_message_id,
)

A = SessionRef("acme", "alice")
B = SessionRef("acme", "bob")
PHONE_A, PHONE_B = "5511999990001", "5511999990002"


class Recorder:
    def __init__(self) -> None:
        self.events: list[EngineEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: EngineEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[EngineEvent], bool], within: float = 2.0) -> EngineEvent:
        async with asyncio.timeout(within):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

    def statuses(self, ref: SessionRef) -> list[SessionStatus]:
        return [e.status for e in self.events if isinstance(e, StatusChanged) and e.ref == ref]


@pytest.fixture
def network() -> LocalSandboxNetwork:
    return LocalSandboxNetwork()


@pytest.fixture
async def events() -> Recorder:
    return Recorder()


@pytest.fixture
async def engine(network: LocalSandboxNetwork, events: Recorder) -> AsyncIterator[SandboxEngine]:
    engine = SandboxEngine(events, network, reconnect_delay=0.01)
    yield engine
    await engine.close()


def connected(ref: SessionRef) -> Callable[[EngineEvent], bool]:
    return lambda e: isinstance(e, StatusChanged) and e.ref == ref and e.status is SessionStatus.CONNECTED


async def pair(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder, ref: SessionRef, phone: str
) -> None:
    await engine.start(StartRequest(ref=ref, mode=StartMode.QR, qr_timeout=5))
    await events.wait_for(lambda e: isinstance(e, QrCode) and e.ref == ref)
    await network.post(session_address(ref), {"kind": "scan", "phone": phone})
    await events.wait_for(connected(ref))


async def test_qr_codes_rotate_expire_and_end_in_qr_timeout(engine: SandboxEngine, events: Recorder) -> None:
    await engine.start(StartRequest(ref=A, mode=StartMode.QR, qr_timeout=0.05, max_qr_codes=3))
    await events.wait_for(lambda e: isinstance(e, StatusChanged) and e.status is SessionStatus.QR_TIMEOUT)
    codes = [e for e in events.events if isinstance(e, QrCode)]
    assert [c.sequence for c in codes] == [1, 2, 3]
    assert len({c.code for c in codes}) == 3
    assert all(c.code.startswith("sandbox@acme/alice,") for c in codes)
    assert codes[0].expires_at < codes[1].expires_at
    assert events.statuses(A) == [SessionStatus.CONNECTING, SessionStatus.QR, SessionStatus.QR_TIMEOUT]
    assert not engine.hosts(A)


async def test_scanning_links_the_phone(engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder) -> None:
    await pair(engine, network, events, A, PHONE_A)
    done = await events.wait_for(connected(A))
    assert isinstance(done, StatusChanged)
    assert done.jid == f"{PHONE_A}@s.whatsapp.net" and done.phone_number == PHONE_A
    assert events.statuses(A) == [
        SessionStatus.CONNECTING,
        SessionStatus.QR,
        SessionStatus.CONNECTING,
        SessionStatus.CONNECTED,
    ]
    assert await network.linked_session(PHONE_A) == A


async def test_a_phone_links_one_session_only(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    await engine.start(StartRequest(ref=B, mode=StartMode.QR, qr_timeout=5))
    await events.wait_for(lambda e: isinstance(e, QrCode) and e.ref == B)
    await network.post(session_address(B), {"kind": "scan", "phone": PHONE_A})
    failure = await events.wait_for(lambda e: isinstance(e, EngineFailure) and e.ref == B)
    assert isinstance(failure, EngineFailure) and failure.code == "phone_in_use"
    assert SessionStatus.CONNECTED not in events.statuses(B)


async def test_pairing_code(engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder) -> None:
    await engine.start(StartRequest(ref=A, mode=StartMode.PAIRING_CODE, phone_number=PHONE_A, qr_timeout=5))
    issued = await events.wait_for(lambda e: isinstance(e, PairingCode))
    assert isinstance(issued, PairingCode) and issued.phone_number == PHONE_A
    assert len(issued.code) == 9 and issued.code[4] == "-"
    await network.post(session_address(A), {"kind": "enter_code", "code": "WRONG-000"})
    await events.wait_for(lambda e: isinstance(e, EngineFailure) and e.code == "wrong_pairing_code")
    await network.post(session_address(A), {"kind": "enter_code", "code": issued.code.lower()})
    done = await events.wait_for(connected(A))
    assert isinstance(done, StatusChanged) and done.phone_number == PHONE_A
    # deterministic: the same session and number always get the same code
    assert issued.code == (await _code_again(network, events))


async def _code_again(network: LocalSandboxNetwork, events: Recorder) -> str:
    other = SandboxEngine(Recorder(), network)
    try:
        await other.start(StartRequest(ref=A, mode=StartMode.PAIRING_CODE, phone_number=PHONE_A))
        return await other.request_pairing_code(A, PHONE_A)
    finally:
        await other.close()


async def test_sessions_message_each_other_with_receipts(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    await pair(engine, network, events, B, PHONE_B)
    sent = await engine.send_text(A, f"{PHONE_B}@s.whatsapp.net", "olá bob", "MSG-1")
    whatsapp_id = sent.message_id  # WhatsApp's id, not ours: the recipient and the receipts name it
    assert whatsapp_id == whatsapp_message_id(A, "MSG-1") != "MSG-1"
    inbound = await events.wait_for(lambda e: isinstance(e, InboundMessage) and e.ref == B)
    assert isinstance(inbound, InboundMessage)
    assert (inbound.message_id, inbound.text, inbound.chat_jid, inbound.type, inbound.from_me) == (
        whatsapp_id,
        "olá bob",
        f"{PHONE_A}@s.whatsapp.net",
        "text",
        False,
    )
    assert inbound.chat_lid == inbound.sender_lid == f"{simulated_lid(PHONE_A)}@lid"
    read = await events.wait_for(lambda e: isinstance(e, Receipt) and e.status is MessageStatus.READ)
    receipts = [e for e in events.events if isinstance(e, Receipt)]
    assert [(r.ref, r.message_ids, r.status) for r in receipts] == [
        (A, (whatsapp_id,), MessageStatus.DELIVERED),
        (A, (whatsapp_id,), MessageStatus.READ),
    ]
    assert isinstance(read, Receipt) and read.chat_jid == f"{PHONE_B}@s.whatsapp.net"


async def test_an_unlinked_number_is_a_simulated_phone_that_reads(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    await engine.send_text(A, "5521988887777@s.whatsapp.net", "hi", "MSG-2")
    await events.wait_for(lambda e: isinstance(e, Receipt) and e.status is MessageStatus.READ)
    lookup = await engine.resolve(A, "5521988887777")
    assert lookup.on_whatsapp and lookup.jid == "5521988887777@s.whatsapp.net"


async def test_inbound_from_any_number_can_be_injected(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    await network.post(
        session_address(A),
        {
            "kind": "message",
            "id": "IN-1",
            "from": "447700900123",
            "text": "hello",
            "timestamp": "2026-01-01T00:00:00+00:00",
        },
    )
    inbound = await events.wait_for(lambda e: isinstance(e, InboundMessage))
    assert isinstance(inbound, InboundMessage) and inbound.chat_jid == "447700900123@s.whatsapp.net"


async def test_faults(engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder) -> None:
    await pair(engine, network, events, A, PHONE_A)
    await network.post(session_address(A), {"kind": "fault", "fault": "reject_next_send"})
    await asyncio.sleep(0.05)
    with pytest.raises(SendRejected):
        await engine.send_text(A, "5521988887777@s.whatsapp.net", "x", "M1")
    await engine.send_text(A, "5521988887777@s.whatsapp.net", "x", "M2")  # only the next one

    await network.post(session_address(A), {"kind": "fault", "fault": "drop_connection"})
    await events.wait_for(lambda e: isinstance(e, StatusChanged) and e.status is SessionStatus.DISCONNECTED)
    with pytest.raises(NotConnected):
        await engine.send_text(A, "5521988887777@s.whatsapp.net", "x", "M3")
    before = len([e for e in events.events if connected(A)(e)])
    await events.wait_for(lambda e: len([x for x in events.events if connected(A)(x)]) > before)

    await network.post(session_address(A), {"kind": "fault", "fault": "logout"})
    await events.wait_for(lambda e: isinstance(e, StatusChanged) and e.status is SessionStatus.LOGGED_OUT)
    assert not engine.hosts(A)
    assert await network.linked_session(PHONE_A) is None
    with pytest.raises(UnknownSession):
        await engine.send_text(A, "5521988887777@s.whatsapp.net", "x", "M4")


async def test_restore_needs_the_link(engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder) -> None:
    await pair(engine, network, events, A, PHONE_A)
    await engine.stop(A)
    await engine.start(StartRequest(ref=A, mode=StartMode.RESTORE, jid=f"{PHONE_A}@s.whatsapp.net"))
    assert events.statuses(A)[-1] is SessionStatus.CONNECTED
    await engine.logout(A)
    await engine.start(StartRequest(ref=A, mode=StartMode.RESTORE, jid=f"{PHONE_A}@s.whatsapp.net"))
    assert events.statuses(A)[-1] is SessionStatus.LOGGED_OUT


class StaleOnce(LocalSandboxNetwork):
    """A network whose next directory lookup is slow, then finds the phone unlinked (a snapshot read before)."""

    def __init__(self) -> None:
        super().__init__()
        self.stale_next = False
        self.answer = asyncio.Event()

    async def linked_session(self, phone: str) -> SessionRef | None:
        if self.stale_next:
            self.stale_next = False
            await self.answer.wait()
            return None
        return await super().linked_session(phone)


async def test_a_start_that_finds_no_link_does_not_unhost_the_start_that_replaced_it(events: Recorder) -> None:
    """Issue 16: two starts of one session overlap (the worker restarted it while its restore looked the link up);
    the first finds no link and ends; the second, connected, stays hosted and collects its mail."""
    network = StaleOnce()
    engine = SandboxEngine(events, network)
    try:
        await pair(engine, network, events, A, PHONE_A)
        await pair(engine, network, events, B, PHONE_B)
        await engine.stop(A)
        restore = StartRequest(ref=A, mode=StartMode.RESTORE, jid=f"{PHONE_A}@s.whatsapp.net")
        network.stale_next = True
        first = asyncio.create_task(engine.start(restore))
        await asyncio.sleep(0.01)  # the first start waits for its lookup
        await engine.start(restore)  # replaces it, and is connected
        network.answer.set()
        await first  # finds no link: that start is over (it reports nothing: it was replaced)
        assert engine.hosts(A)
        sent = await engine.send_text(B, f"{PHONE_A}@s.whatsapp.net", "still here?", "M-STILL")
        inbound = await events.wait_for(lambda e: isinstance(e, InboundMessage) and e.ref == A)
        assert isinstance(inbound, InboundMessage) and inbound.message_id == sent.message_id
    finally:
        await engine.close()


async def test_mail_for_a_phone_waits_until_its_session_is_online(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    await pair(engine, network, events, B, PHONE_B)
    await engine.stop(B)
    sent = await engine.send_text(A, f"{PHONE_B}@s.whatsapp.net", "while you were away", "M-AWAY")
    await asyncio.sleep(0.05)
    assert not [e for e in events.events if isinstance(e, InboundMessage)]
    await engine.start(StartRequest(ref=B, mode=StartMode.RESTORE, jid=f"{PHONE_B}@s.whatsapp.net"))
    inbound = await events.wait_for(lambda e: isinstance(e, InboundMessage))
    assert isinstance(inbound, InboundMessage) and inbound.message_id == sent.message_id
    assert phone_address(PHONE_B) == "phone:5511999990002"


async def test_mail_stays_until_what_it_carries_is_stored(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    await pair(engine, network, events, B, PHONE_B)
    sent = await engine.send_text(A, f"{PHONE_B}@s.whatsapp.net", "keep me", "M-KEEP")
    inbound = await events.wait_for(lambda e: isinstance(e, InboundMessage))
    assert isinstance(inbound, InboundMessage) and inbound.ack is not None
    assert [m["id"] for m in network.unacknowledged.values() if m["kind"] == "message"] == [sent.message_id]
    inbound.ack()  # the worker stored it
    await asyncio.sleep(0.01)
    assert not [m for m in network.unacknowledged.values() if m["kind"] == "message"]


# -- WhatsApp as users see it ---------------------------------------------------------------------------------


async def test_who_is_on_whatsapp(engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder) -> None:
    await pair(engine, network, events, A, PHONE_A)
    linked = await engine.resolve(A, PHONE_A)
    assert (linked.on_whatsapp, linked.jid, linked.extra) == (True, f"{PHONE_A}@s.whatsapp.net", {"sandbox": "linked"})
    simulated = await engine.resolve(A, "447700900123")
    assert simulated.on_whatsapp and simulated.jid == "447700900123@s.whatsapp.net"
    assert simulated.extra == {"sandbox": "simulated"}
    # a LID per account: stable, never the number, and it leads back to the number
    assert simulated.lid == f"{simulated_lid('447700900123')}@lid"
    assert simulated.lid != "447700900123@lid" and simulated.lid == (await engine.resolve(A, "447700900123")).lid
    assert phone_of_lid(simulated_lid("447700900123")) == "447700900123"
    assert simulated_lid("447700900123") != simulated_lid("447700900124")
    absent = await engine.resolve(A, "447700900404")  # ends in 404: no account
    assert (absent.on_whatsapp, absent.jid, absent.lid) == (False, None, None)
    # a number a session links is on WhatsApp whatever its digits
    await pair(engine, network, events, B, "5511999990404")
    assert (await engine.resolve(A, "5511999990404")).on_whatsapp


@pytest.mark.parametrize(
    ("asked", "account"),
    [
        ("5511912345678", "5511912345678"),  # São Paulo (11 < 30): with the ninth digit
        ("551112345678", "5511912345678"),  # ... also when asked without it
        ("5531912345678", "553112345678"),  # Belo Horizonte (31 >= 30): on WhatsApp without it
        ("553112345678", "553112345678"),
        ("553132345678", "553132345678"),  # a landline (2-5 first) has no ninth digit to gain or lose
        ("14155550123", "14155550123"),
    ],
)
async def test_resolve_answers_whatsapps_jid_for_either_spelling_of_a_brazilian_mobile(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder, asked: str, account: str
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    lookup = await engine.resolve(A, asked)
    assert (lookup.phone_number, lookup.on_whatsapp, lookup.jid) == (asked, True, f"{account}@s.whatsapp.net")
    assert lookup.lid == f"{simulated_lid(account)}@lid"


async def test_a_send_to_a_guessed_spelling_fails_and_to_whatsapps_jid_arrives(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    with pytest.raises(RecipientUnknown) as refused:
        await engine.send_text(A, "5531912345678@s.whatsapp.net", "hi", "M-GUESS")
    assert not refused.value.retryable
    jid = (await engine.resolve(A, "5531912345678")).jid
    assert jid is not None
    sent = await engine.send_text(A, jid, "hi", "M-RIGHT")
    read = await events.wait_for(lambda e: isinstance(e, Receipt) and e.status is MessageStatus.READ)
    assert isinstance(read, Receipt) and read.message_ids == (sent.message_id,)
    # a linked number is on WhatsApp as it was linked, and resolve finds it from the other spelling
    await pair(engine, network, events, B, "5531988887777")
    assert (await engine.resolve(A, "553188887777")).jid == "5531988887777@s.whatsapp.net"


async def test_a_send_to_a_number_not_on_whatsapp_fails_as_whatsapp_refuses_it(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    with pytest.raises(NotOnWhatsApp) as refused:
        await engine.send_text(A, "5521988880404@s.whatsapp.net", "anyone?", "M-404")
    assert isinstance(refused.value, SendRejected) and not refused.value.retryable
    with pytest.raises(RecipientUnknown):  # nor does its LID lead anywhere
        await engine.send_text(A, f"{simulated_lid('5521988880404')}@lid", "anyone?", "M-404-LID")
    await asyncio.sleep(0.02)
    assert not [e for e in events.events if isinstance(e, Receipt)]


async def test_a_send_to_a_lid_reaches_its_number(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    await pair(engine, network, events, B, PHONE_B)
    sent = await engine.send_text(A, f"{simulated_lid(PHONE_B)}@lid", "by lid", "M-LID")
    inbound = await events.wait_for(lambda e: isinstance(e, InboundMessage) and e.ref == B)
    assert isinstance(inbound, InboundMessage) and (inbound.message_id, inbound.text) == (sent.message_id, "by lid")


async def test_sends_go_out_under_whatsapps_own_ids(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    first = await engine.send_text(A, "5521988887777@s.whatsapp.net", "x", "OURS-1")
    assert re.fullmatch(r"3EB0[0-9A-F]{18}", first.message_id)
    again = await engine.send_text(A, "5521988887777@s.whatsapp.net", "x", "OURS-1")
    other = await engine.send_text(A, "5521988887777@s.whatsapp.net", "x", "OURS-2")
    assert again.message_id == first.message_id != other.message_id  # a resend keeps its id
    assert whatsapp_message_id(B, "OURS-1") != first.message_id
    await events.wait_for(lambda e: isinstance(e, Receipt) and other.message_id in e.message_ids)
    reported = [r.message_ids for r in events.events if isinstance(r, Receipt)]
    assert {i for ids in reported for i in ids} == {first.message_id, other.message_id}
    assert all(len(set(ids)) == len(ids) for ids in reported)  # a receipt names each message once


async def test_a_phone_reports_the_messages_that_reached_it_together_in_one_receipt_of_each_status(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    # WhatsApp lists the messages that reached a phone together in one receipt (whatsmeow's Receipt.MessageIDs),
    # per chat, in the order they were sent: delivered, then read
    await pair(engine, network, events, A, PHONE_A)
    to, elsewhere = "5521988887777@s.whatsapp.net", "5521988886666@s.whatsapp.net"
    sends = [engine.send_text(A, jid, "x", f"OURS-{n}") for n, jid in enumerate([to, to, elsewhere, to])]
    ids = [sent.message_id for sent in await asyncio.gather(*sends)]
    await events.wait_for(lambda e: isinstance(e, Receipt) and e.status is MessageStatus.READ and e.chat_jid == to)
    await events.wait_for(lambda e: isinstance(e, Receipt) and e.status is MessageStatus.READ and e.chat_jid != to)
    reported = [(r.chat_jid, r.status, r.message_ids) for r in events.events if isinstance(r, Receipt)]
    assert reported == [
        (to, MessageStatus.DELIVERED, (ids[0], ids[1], ids[3])),
        (to, MessageStatus.READ, (ids[0], ids[1], ids[3])),
        (elsewhere, MessageStatus.DELIVERED, (ids[2],)),
        (elsewhere, MessageStatus.READ, (ids[2],)),
    ]


async def test_restrict_and_transient_faults(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    to = "5521988887777@s.whatsapp.net"
    await network.post(session_address(A), {"kind": "fault", "fault": "restrict"})
    await asyncio.sleep(0.05)
    with pytest.raises(Restricted) as restricted:
        await engine.send_text(A, to, "x", "M1")
    assert restricted.value.details == {"code": 463} and not restricted.value.retryable
    await engine.send_text(A, to, "x", "M2")  # only the next one

    await network.post(session_address(A), {"kind": "fault", "fault": "fail_transient", "count": 2})
    await asyncio.sleep(0.05)
    for _ in range(2):
        with pytest.raises(EngineError) as failed:
            await engine.send_text(A, to, "x", "M3")
        assert failed.value.retryable and not isinstance(failed.value, SendRejected | NotConnected)
    assert (await engine.send_text(A, to, "x", "M3")).message_id == whatsapp_message_id(A, "M3")


# -- inbound kinds --------------------------------------------------------------------------------------------


def _mail(**fields: Any) -> dict[str, Any]:
    return {"kind": "message", "id": "IN", "text": "hi", "timestamp": "2026-01-01T00:00:00+00:00", **fields}


async def _inbound(network: LocalSandboxNetwork, events: Recorder, mail: dict[str, Any]) -> InboundMessage:
    await network.post(phone_address(PHONE_A), mail)
    found = await events.wait_for(lambda e: isinstance(e, InboundMessage) and e.message_id == mail["id"])
    assert isinstance(found, InboundMessage)
    return found


async def test_inbound_kinds(engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder) -> None:
    await pair(engine, network, events, A, PHONE_A)
    other, other_lid = "447700900123@s.whatsapp.net", f"{simulated_lid('447700900123')}@lid"
    own, own_lid = f"{PHONE_A}@s.whatsapp.net", f"{simulated_lid(PHONE_A)}@lid"

    mine = await _inbound(network, events, _mail(id="FROM-ME", **{"from": "447700900123", "from_me": True}))
    assert (mine.from_me, mine.chat_jid, mine.chat_lid, mine.sender_jid, mine.is_group) == (
        True,
        other,
        other_lid,
        own,
        False,
    )

    story = await _inbound(network, events, _mail(id="STORY", story=True, **{"from": "447700900123"}))
    assert (story.chat_jid, story.chat_lid, story.sender_jid, story.is_group) == ("status@broadcast", None, other, True)

    group = "120363012345678901@g.us"
    said = await _inbound(
        network, events, _mail(id="GROUP", group=group, push_name="Maria", **{"from": "447700900123"})
    )
    assert (said.chat_jid, said.chat_lid, said.sender_jid, said.sender_lid, said.is_group, said.push_name) == (
        group,
        None,
        other,
        other_lid,
        True,
        "Maria",
    )

    hidden = await _inbound(network, events, _mail(id="LID-ONLY", from_lid="123456789012345"))
    assert (hidden.chat_jid, hidden.chat_lid, hidden.sender_jid, hidden.sender_lid) == (
        "123456789012345@lid",
        "123456789012345@lid",
        "123456789012345@lid",
        "123456789012345@lid",
    )

    both = await _inbound(network, events, _mail(id="BOTH", from_lid="123456789012345@lid", **{"from": "447700900123"}))
    assert (both.chat_jid, both.chat_lid, both.sender_jid) == (other, "123456789012345@lid", other)
    assert own_lid != other_lid


async def test_inbound_text_passes_through_unchanged(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    text = "nul\x00 bidi\u202e emoji 🧪 bom\ufeff"
    found = await _inbound(network, events, _mail(id="ODD", text=text, **{"from": "447700900123"}))
    assert found.text == text


async def test_notices_can_be_injected(engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder) -> None:
    await pair(engine, network, events, A, PHONE_A)
    for kind, details in (
        ("undecryptable", {"messageId": "X1", "chatJid": "447700900123@s.whatsapp.net"}),
        ("history_sync", {"syncType": "RECENT", "progress": 100, "conversations": 1}),
    ):
        await network.post(
            phone_address(PHONE_A),
            {"kind": "notice", "notice": kind, "details": details, "timestamp": "2026-01-01T00:00:00+00:00"},
        )
    await events.wait_for(lambda e: len([n for n in events.events if isinstance(n, Notice)]) == 2)
    notices = [e for e in events.events if isinstance(e, Notice)]
    assert [(n.ref, n.kind) for n in notices] == [(A, NoticeKind.UNDECRYPTABLE), (A, NoticeKind.HISTORY_SYNC)]
    assert notices[1].details == {"syncType": "RECENT", "progress": 100, "conversations": 1}


# -- presence, abandon ----------------------------------------------------------------------------------------


async def test_presence_is_recorded_per_chat(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    chat, other = "447700900123@s.whatsapp.net", "5521988887777@s.whatsapp.net"
    assert engine.presence(A, chat) is None
    await engine.send_presence(A, chat, Presence.COMPOSING)
    await engine.send_presence(A, other, Presence.RECORDING)
    await engine.send_presence(A, chat, Presence.PAUSED)
    assert (engine.presence(A, chat), engine.presence(A, other)) == (Presence.PAUSED, Presence.RECORDING)
    await network.post(session_address(A), {"kind": "fault", "fault": "drop_connection"})
    await events.wait_for(lambda e: isinstance(e, StatusChanged) and e.status is SessionStatus.DISCONNECTED)
    with pytest.raises(NotConnected):
        await engine.send_presence(A, chat, Presence.COMPOSING)
    with pytest.raises(UnknownSession):
        await engine.send_presence(B, chat, Presence.COMPOSING)


# -- what the network keeps of an account outlives the worker (engines/sandbox_accounts.py) --------------------


async def restored(engine: SandboxEngine, events: Recorder, ref: SessionRef, phone: str) -> None:
    """Start `ref` again from its stored link, as the worker that takes it over does."""
    await engine.start(StartRequest(ref=ref, mode=StartMode.RESTORE, jid=f"{phone}@s.whatsapp.net"))
    await events.wait_for(connected(ref))


def presence_of(ref: SessionRef, phone: str, shown: SeenPresence) -> Callable[[EngineEvent], bool]:
    jid = f"{phone}@s.whatsapp.net"
    return lambda e: isinstance(e, PresenceSeen) and e.ref == ref and e.jid == jid and e.presence is shown


async def test_app_state_and_presence_subscribers_stay_when_a_session_moves_to_another_worker(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    await pair(engine, network, events, B, PHONE_B)
    chat = "447700900123@s.whatsapp.net"
    await engine.change_chat(A, chat, ChatState(archived=True))
    await network.post(session_address(A), {"kind": "app_state", "chat": chat, "muted": True})  # on the phone
    await events.wait_for(lambda e: isinstance(e, ChatChanged) and e.ref == A)
    await engine.subscribe_presence(B, f"{PHONE_A}@s.whatsapp.net")
    await events.wait_for(presence_of(B, PHONE_A, SeenPresence.UNAVAILABLE))  # WhatsApp answers at once

    await engine.stop(A)  # alice's worker lets her go; another takes her over
    moved = Recorder()
    other = SandboxEngine(moved, network, reconnect_delay=0.01)
    try:
        await restored(other, moved, A, PHONE_A)
        archived_and_muted = ChatState(archived=True, pinned=False, muted=True, muted_until=None)
        assert await other.chat_state(A, chat) == archived_and_muted
        await other.set_available(A, True)
        await events.wait_for(presence_of(B, PHONE_A, SeenPresence.AVAILABLE), within=5.0)
        await other.send_presence(A, f"{PHONE_B}@s.whatsapp.net", Presence.COMPOSING)
        typing = await events.wait_for(presence_of(B, PHONE_A, SeenPresence.COMPOSING), within=5.0)
        assert isinstance(typing, PresenceSeen) and typing.chat_jid == f"{PHONE_A}@s.whatsapp.net"
    finally:
        await other.close()


async def test_a_new_connection_forgets_its_subscriptions_and_shows_offline_but_the_phone_keeps_its_habits(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    await pair(engine, network, events, B, PHONE_B)
    await engine.subscribe_presence(B, f"{PHONE_A}@s.whatsapp.net")
    await engine.set_available(A, True)
    await events.wait_for(presence_of(B, PHONE_A, SeenPresence.AVAILABLE))
    await network.post(session_address(A), {"kind": "fault", "fault": "hold_reads"})

    async def holding() -> bool:
        return (await network.account(PHONE_A)).holding_reads

    await eventually(holding, within=5.0)
    engine.abandon(A)  # their worker died: nobody said a word
    engine.abandon(B)

    moved = Recorder()
    other = SandboxEngine(moved, network, reconnect_delay=0.01)
    try:
        await restored(other, moved, B, PHONE_B)
        assert await network.presence_subscribers(PHONE_A) == []  # bob's new connection subscribes anew
        await restored(other, moved, A, PHONE_A)
        shown = await network.account(PHONE_A)
        assert shown.available is False and shown.last_seen is not None  # offline since its last connection
        assert shown.holding_reads is True

        sent = await other.send_text(B, f"{PHONE_A}@s.whatsapp.net", "read me later", "M-1")
        await moved.wait_for(
            lambda e: isinstance(e, Receipt) and e.ref == B and e.status is MessageStatus.DELIVERED, within=5.0
        )
        marker = await other.send_text(A, f"{PHONE_B}@s.whatsapp.net", "after", "M-2")  # mailed after any read
        await moved.wait_for(lambda e: isinstance(e, InboundMessage) and e.message_id == marker.message_id, within=5.0)
        assert not [e for e in moved.events if isinstance(e, Receipt) and e.status is MessageStatus.READ and e.ref == B]
        await other.mark_read(A, f"{PHONE_B}@s.whatsapp.net", (MessageKey(id=sent.message_id),))
        read = await moved.wait_for(
            lambda e: isinstance(e, Receipt) and e.ref == B and e.status is MessageStatus.READ, within=5.0
        )
        assert isinstance(read, Receipt) and read.message_ids == (sent.message_id,)
    finally:
        await other.close()


async def test_a_logout_ends_its_subscriptions_and_shows_the_account_offline(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    await pair(engine, network, events, B, PHONE_B)
    await engine.subscribe_presence(A, f"{PHONE_B}@s.whatsapp.net")
    await engine.subscribe_presence(B, f"{PHONE_A}@s.whatsapp.net")
    await engine.set_available(A, True)
    await events.wait_for(presence_of(B, PHONE_A, SeenPresence.AVAILABLE))
    await engine.logout(A)
    went = presence_of(B, PHONE_A, SeenPresence.UNAVAILABLE)
    await events.wait_for(lambda e: went(e) and isinstance(e, PresenceSeen) and e.last_seen is not None, within=5.0)
    assert await network.presence_subscribers(PHONE_B) == []
    assert await network.presence_subscribers(PHONE_A) == [PHONE_B]  # bob's, kept while bob is online


class _SlowLinks(LocalSandboxNetwork):
    """A network whose links wait until released (a phone scanning while its worker gives up the session)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def link(self, phone: str, ref: SessionRef) -> None:
        await self.release.wait()
        await super().link(phone, ref)


async def test_an_abandoned_session_reports_nothing_more(events: Recorder) -> None:
    network = _SlowLinks()
    engine = SandboxEngine(events, network, reconnect_delay=0.01)
    try:
        await engine.start(StartRequest(ref=A, mode=StartMode.QR, qr_timeout=5))
        await events.wait_for(lambda e: isinstance(e, QrCode))
        await network.post(session_address(A), {"kind": "scan", "phone": PHONE_A})
        await asyncio.sleep(0.05)  # the scan is being linked
        engine.abandon(A)
        seen = len(events.events)
        network.release.set()
        await network.post(session_address(A), _mail(id="LATE", **{"from": "447700900123"}))
        await asyncio.sleep(0.1)
        assert events.events[seen:] == []
        assert not engine.hosts(A)
        with pytest.raises(UnknownSession):
            await engine.send_text(A, "447700900123@s.whatsapp.net", "x", "M")
    finally:
        await engine.close()


async def test_a_connected_session_tells_its_lid(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    done = await events.wait_for(connected(A))
    assert isinstance(done, StatusChanged) and done.lid == f"{simulated_lid(PHONE_A)}@lid"


async def test_a_message_in_the_mailbox_of_a_session_not_linked_is_dropped(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    # injected while linked, delivered after a logout and a new QR: nobody reads it, and it is not kept
    await engine.start(StartRequest(ref=A, mode=StartMode.QR, qr_timeout=5))
    await events.wait_for(lambda e: isinstance(e, QrCode) and e.ref == A)
    await network.post(session_address(A), _mail(id="LATE", **{"from": "447700900123"}))
    await pair(engine, network, events, B, PHONE_B)  # time for the pump to go round
    await network.post(session_address(B), _mail(id="ON-TIME", **{"from": "447700900123"}))
    await events.wait_for(lambda e: isinstance(e, InboundMessage) and e.message_id == "ON-TIME")
    assert not [e for e in events.events if isinstance(e, InboundMessage) and e.message_id == "LATE"]
    assert await network.collect([session_address(A)]) == []


# -- every kind of message, both ways ---------------------------------------------------------------------

JID_A, JID_B = f"{PHONE_A}@s.whatsapp.net", f"{PHONE_B}@s.whatsapp.net"
PEERS = {A: (PHONE_A, JID_A), B: (PHONE_B, JID_B)}


@pytest.fixture
async def linked(engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder) -> SandboxEngine:
    await pair(engine, network, events, A, PHONE_A)
    await pair(engine, network, events, B, PHONE_B)
    return engine


async def exchange(
    engine: SandboxEngine,
    events: Recorder,
    sender: SessionRef,
    recipient: SessionRef,
    content: Content,
    *,
    quote: Quote | None = None,
    mentions: tuple[str, ...] = (),
) -> tuple[str, InboundMessage]:
    """Send `content` from `sender` to `recipient`; return WhatsApp's id and what the recipient got."""
    sent = await engine.send(
        sender, PEERS[recipient][1], content, f"M-{len(events.events)}", quote=quote, mentions=mentions
    )
    got = await events.wait_for(
        lambda e: isinstance(e, InboundMessage) and e.ref == recipient and e.message_id == sent.message_id
    )
    assert isinstance(got, InboundMessage)
    assert (got.chat_jid, got.sender_jid, got.from_me) == (PEERS[sender][1], PEERS[sender][1], False)
    assert (got.type, got.text) == (_kind(content), summary(content))
    return sent.message_id, got


def _kind(content: Content) -> str:
    return kind_of(content).value


CARDS = Contacts(
    cards=(
        ContactCard(
            formatted_name="Maria Silva",
            phones=(ContactPhone(phone="+55 11 99999-0003", wa_id="5511999990003", type="CELL"),),
            vcard="BEGIN:VCARD\nVERSION:3.0\nFN:Maria Silva\nEND:VCARD",
        ),
    )
)
PLAIN_KINDS: list[Content] = [
    Text(body="olá, *bold* and \x00 NUL", preview_url=True),
    Location(latitude=-23.55052, longitude=-46.633308, name="Praça da Sé", address="São Paulo", url="https://x.y"),
    Location(latitude=1.5, longitude=2.5, live=True),
    CARDS,
    Poll(question="Lunch?", options=("pizza", "sushi", "salad"), selectable_count=2),
]


@pytest.mark.parametrize("content", PLAIN_KINDS, ids=lambda c: _kind(c))
async def test_every_plain_kind_arrives_intact_both_ways(
    linked: SandboxEngine, events: Recorder, content: Content
) -> None:
    for sender, recipient in ((A, B), (B, A)):
        _, got = await exchange(linked, events, sender, recipient, content, mentions=(JID_B, "123456789012345@lid"))
        assert got.content == content
        assert got.quote is None and got.mentions == (JID_B, "123456789012345@lid")


async def test_keys_flip_for_the_reader_reactions_votes_edits_revokes_and_replies(
    linked: SandboxEngine, events: Recorder
) -> None:
    hello, _ = await exchange(linked, events, A, B, Text(body="hello bob"))
    # B reacts to A's message: for B it is not its own, for A it is
    _, got = await exchange(linked, events, B, A, Reaction(key=MessageKey(hello, from_me=False), emoji="👍"))
    assert got.content == Reaction(key=MessageKey(hello, from_me=True), emoji="👍")
    _, got = await exchange(linked, events, B, A, Reaction(key=MessageKey(hello, from_me=False), emoji=""))
    assert got.content == Reaction(key=MessageKey(hello, from_me=True), emoji="") and got.text == "[reaction removed]"

    # B replies to it, quoting what it held and mentioning A
    quote = Quote(key=MessageKey(hello, from_me=False), content=Text(body="hello bob"))
    reply, got = await exchange(linked, events, B, A, Text(body="hi alice"), quote=quote, mentions=(JID_A,))
    assert got.content == Text(body="hi alice")
    assert got.quote == Quote(key=MessageKey(hello, from_me=True), content=Text(body="hello bob"))
    assert got.mentions == (JID_A,)
    # A reacts to B's reply: its own key says "not mine", B's says "mine"
    _, got = await exchange(linked, events, A, B, Reaction(key=MessageKey(reply, from_me=False), emoji="❤️"))
    assert got.content == Reaction(key=MessageKey(reply, from_me=True), emoji="❤️")

    # A's poll, B's vote (and its withdrawal)
    poll, got = await exchange(linked, events, A, B, Poll(question="Lunch?", options=("pizza", "sushi")))
    _, got = await exchange(linked, events, B, A, PollVote(key=MessageKey(poll, from_me=False), selected=("sushi",)))
    assert got.content == PollVote(key=MessageKey(poll, from_me=True), selected=("sushi",))
    _, got = await exchange(linked, events, B, A, PollVote(key=MessageKey(poll, from_me=False), selected=()))
    assert got.content == PollVote(key=MessageKey(poll, from_me=True), selected=()) and got.text == "[vote withdrawn]"

    # A edits and then deletes its own message: B reads them about a message that is not B's
    _, got = await exchange(linked, events, A, B, Edit(key=MessageKey(hello, from_me=True), text="hello, bob!"))
    assert got.content == Edit(key=MessageKey(hello, from_me=False), text="hello, bob!")
    _, got = await exchange(linked, events, A, B, Revoke(key=MessageKey(hello, from_me=True)))
    assert got.content == Revoke(key=MessageKey(hello, from_me=False)) and got.text == "[deleted]"


async def test_rich_messages_get_receipts_and_whatsapps_ids_as_texts_do(
    linked: SandboxEngine, events: Recorder
) -> None:
    sent = await linked.send(A, JID_B, Poll(question="?", options=("a", "b")), "POLL-1")
    assert sent.message_id == whatsapp_message_id(A, "POLL-1")
    assert (await linked.send(A, JID_B, Poll(question="?", options=("a", "b")), "POLL-1")).message_id == sent.message_id
    await events.wait_for(
        lambda e: (
            isinstance(e, Receipt)
            and e.ref == A
            and e.status is MessageStatus.READ
            and sent.message_id in e.message_ids
        )
    )
    # a number no session linked is a simulated phone: it reads at once; a number not on WhatsApp refuses
    elsewhere = await linked.send(A, "5521988887777@s.whatsapp.net", Location(latitude=0, longitude=0), "LOC-1")
    await events.wait_for(
        lambda e: isinstance(e, Receipt) and e.status is MessageStatus.READ and elsewhere.message_id in e.message_ids
    )
    with pytest.raises(NotOnWhatsApp):
        await linked.send(A, "5521988887404@s.whatsapp.net", CARDS, "CARDS-1")
    with pytest.raises(SendRejected):
        await linked.send(A, JID_B, Unsupported(wa_type="buttons"), "U-1")


async def test_a_rich_message_from_the_phone_keeps_its_keys_as_written(
    linked: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    # injected mail is written as the session reads it: nothing flips on the way in
    from zapgate.engines.sandbox import content_mail

    reaction = Reaction(key=MessageKey("3EB0ABC", from_me=True), emoji="🎉")
    mail = _mail(id="REACT-1", **{"from": "447700900123"}, **content_mail(reaction, mentions=(JID_A,)))
    got = await _inbound(network, events, mail)
    assert (got.type, got.text, got.content, got.mentions) == ("reaction", "[reaction] 🎉", reaction, (JID_A,))


# -- media ------------------------------------------------------------------------------------------------


def _file(tmp_path: Path, name: str, size: int) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


MEDIA_KINDS = [
    Media(kind=MediaKind.IMAGE, mime_type="image/jpeg", caption="a cat", width=640, height=480, view_once=True),
    Media(kind=MediaKind.VIDEO, mime_type="video/mp4", caption="clip", duration_seconds=3.5, animated=True),
    Media(kind=MediaKind.AUDIO, mime_type="audio/ogg; codecs=opus", voice=True, duration_seconds=2.0),
    Media(kind=MediaKind.DOCUMENT, mime_type="application/pdf", filename="report.pdf", caption="Q3"),
    Media(kind=MediaKind.STICKER, mime_type="image/webp", width=512, height=512),
]


@pytest.mark.parametrize("media", MEDIA_KINDS, ids=lambda m: m.kind.value)
async def test_media_go_through_the_media_server_both_ways(
    linked: SandboxEngine, events: Recorder, tmp_path: Path, media: Media
) -> None:
    for sender, recipient in ((A, B), (B, A)):
        source = _file(tmp_path, f"{sender.session_id}.bin", MEDIA_CHUNK * 2 + 123)  # parts, and a partial one
        sending = replace(
            media, media_id="zapgate-id", path=str(source), thumbnail=b"\xff\xd8thumb", waveform=bytes(range(64))
        )
        _, got = await exchange(linked, events, sender, recipient, sending, quote=None, mentions=(JID_A,))
        received = got.content
        assert isinstance(received, Media)
        # what the sender said of it arrives, with WhatsApp's size and hash; zapgate's id and path stay behind
        assert received == replace(media, size=source.stat().st_size, sha256=_sha256(source))
        assert received.media_id is None and received.path is None and received.handle
        assert (received.thumbnail, received.waveform) == (b"\xff\xd8thumb", bytes(range(64)))
        dest = tmp_path / f"{recipient.session_id}.down"
        await linked.download(recipient, received, str(dest))
        assert _sha256(dest) == _sha256(source) == received.sha256


async def test_expired_media_come_back_through_a_reupload_until_the_phone_lost_them(
    linked: SandboxEngine, network: LocalSandboxNetwork, events: Recorder, tmp_path: Path
) -> None:
    source = _file(tmp_path, "photo.jpg", 300_000)
    photo = Media(kind=MediaKind.IMAGE, mime_type="image/jpeg", path=str(source))
    sent, got = await exchange(linked, events, A, B, photo)
    media = got.content
    assert isinstance(media, Media) and media.handle is not None
    dest = tmp_path / "down.jpg"

    await network.post(session_address(B), {"kind": "fault", "fault": "expire_media"})
    await _gone(linked, media, str(dest))
    dest.unlink(missing_ok=True)
    with pytest.raises(MediaGone):
        await linked.download(B, media, str(dest))
    assert not dest.exists()  # nothing half-written is left
    await linked.request_reupload(B, JID_A, MessageKey(sent, from_me=False), media)
    answer = await events.wait_for(lambda e: isinstance(e, MediaReuploaded) and e.message_id == sent)
    assert isinstance(answer, MediaReuploaded) and answer.error is None and answer.handle not in (None, media.handle)
    await linked.download(B, replace(media, handle=answer.handle), str(dest))
    assert _sha256(dest) == _sha256(source)
    # media the session receives after the fault are fine; the other session's never expired
    later, got_later = await exchange(linked, events, A, B, photo)
    assert isinstance(got_later.content, Media)
    await linked.download(B, got_later.content, str(tmp_path / "later.jpg"))

    await network.post(session_address(B), {"kind": "fault", "fault": "lose_media"})
    await _gone(linked, got_later.content, str(tmp_path / "lost.jpg"))
    await linked.request_reupload(B, JID_A, MessageKey(later, from_me=False), got_later.content)
    lost = await events.wait_for(lambda e: isinstance(e, MediaReuploaded) and e.message_id == later)
    assert isinstance(lost, MediaReuploaded) and (lost.handle, lost.error) == (None, "gone")
    with pytest.raises(MediaGone):
        await linked.download(B, replace(media, handle=answer.handle), str(dest))  # the reuploaded copy too


async def _gone(engine: SandboxEngine, media: Media, dest: str) -> None:
    """Wait until the fault is in force: downloads of `media` raise MediaGone."""
    for _ in range(200):
        try:
            await engine.download(B, media, dest)
        except MediaGone:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the media never expired")


async def test_media_refusals(linked: SandboxEngine, events: Recorder, tmp_path: Path) -> None:
    with pytest.raises(SendRejected, match="prepared file"):
        await linked.send(A, JID_B, Media(kind=MediaKind.IMAGE), "NO-PATH")
    with pytest.raises(SendRejected, match="cannot be read"):
        await linked.send(A, JID_B, Media(kind=MediaKind.IMAGE, path=str(tmp_path / "missing.jpg")), "MISSING")
    # to a simulated phone the file only needs to be readable: it reads at once
    source = _file(tmp_path, "doc.pdf", 10)
    doc = Media(kind=MediaKind.DOCUMENT, filename="doc.pdf", path=str(source))
    away = await linked.send(A, "5521988887777@s.whatsapp.net", doc, "DOC-1")
    await events.wait_for(lambda e: isinstance(e, Receipt) and away.message_id in e.message_ids)
    # a handle the media server never gave, no handle, and a file that is not the one the message names
    with pytest.raises(MediaGone):
        await linked.download(B, replace(doc, handle=b"not-a-handle"), str(tmp_path / "x"))
    with pytest.raises(MediaGone):
        await linked.download(B, doc, str(tmp_path / "x"))
    _, got = await exchange(linked, events, A, B, doc)
    assert isinstance(got.content, Media)
    with pytest.raises(MediaCorrupt):
        await linked.download(B, replace(got.content, sha256="0" * 64), str(tmp_path / "y"))
    assert not (tmp_path / "y").exists()
    # an empty file is a file
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    _, got = await exchange(linked, events, A, B, Media(kind=MediaKind.DOCUMENT, path=str(empty)))
    assert isinstance(got.content, Media) and got.content.size == 0
    await linked.download(B, got.content, str(tmp_path / "empty.down"))
    assert (tmp_path / "empty.down").read_bytes() == b""


class CountingNetwork(LocalSandboxNetwork):
    """A network that notes each trip the engine makes to it, and each event reported, in one sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.trips: list[str] = []

    async def post(self, address: str, mail: dict[str, Any]) -> None:
        self.trips.append(f"post {mail.get('kind')}")
        await super().post(address, mail)

    async def post_many(self, posts: Any) -> None:
        self.trips.append(f"post_many {len(posts)}")
        for address, mail in posts:
            await super().post(address, mail)

    async def is_blocked(self, owner: str, phone: str) -> bool:
        self.trips.append("is_blocked")
        return await super().is_blocked(owner, phone)

    async def blocked_among(self, pairs: Any) -> set[tuple[str, str]]:
        self.trips.append(f"blocked_among {len(pairs)}")
        return await super().blocked_among(pairs)

    async def ack(self, mail_ids: Any) -> None:
        self.trips.append(f"ack {len(mail_ids)}")
        await super().ack(mail_ids)


async def test_a_run_of_collected_messages_costs_one_blocklist_question_and_one_post_of_receipts() -> None:
    """Issue 16: at 1,000 sessions the mail pump fell behind with a few trips to the registry per message (its
    blocklist, each receipt, each acknowledgement). A run of messages collected together now asks the blocklist
    once and posts every receipt in one go, before any of them is reported (a message is stored, and its mail
    deleted, only once its receipts are on their way); what the recorder stores together is deleted in one trip.
    """
    network, events = CountingNetwork(), Recorder()

    def sink(event: EngineEvent) -> None:
        network.trips.append(f"report {type(event).__name__}")
        events(event)

    engine = SandboxEngine(sink, network, reconnect_delay=0.01)
    try:
        await pair(engine, network, events, A, PHONE_A)
        await pair(engine, network, events, B, PHONE_B)
        await engine.stop(A)  # the mail waits for alice's return: it is collected in one run
        await engine.send_text(B, f"{PHONE_A}@s.whatsapp.net", "one", "M-1")
        await engine.send_text(B, f"{PHONE_A}@s.whatsapp.net", "two", "M-2")
        for n, sender in enumerate(("5511999990008", "5511999990009")):
            await network.post(phone_address(PHONE_A), _text_mail(f"X-{n}", sender))
        await network.set_blocked(PHONE_A, "5511999990009", True)  # after X-1 reached the server
        await network.post(phone_address(PHONE_A), _text_mail("X-2", "5511999990009"))  # the server drops it
        network.trips.clear()
        await engine.start(StartRequest(ref=A, mode=StartMode.RESTORE, jid=f"{PHONE_A}@s.whatsapp.net"))
        await events.wait_for(lambda e: isinstance(e, InboundMessage) and e.message_id == "X-0")
        run = [trip for trip in network.trips if not trip.startswith(("report StatusChanged", "ack"))]
        # two messages from bob (linked: each answered with delivered and read), one from an unlinked number,
        # one from a number alice blocked while it waited (never reported, deleted at once): three senders asked
        # about at once. What the blocked number wrote after the block never reached alice's mailbox.
        assert run[:5] == ["blocked_among 3", "post_many 4"] + ["report InboundMessage"] * 3
        inbound = [e for e in events.events if isinstance(e, InboundMessage) and e.ref == A]
        for event in inbound:
            assert event.ack is not None
            event.ack()  # stored together by the recorder
        await eventually(lambda: _true(all(m["kind"] != "message" for m in network.unacknowledged.values())))
        assert [trip for trip in network.trips if trip.startswith("ack")] == ["ack 1", "ack 3"]
        receipts = await events.wait_for(lambda e: isinstance(e, Receipt) and e.ref == B and e.status == "read")
        assert isinstance(receipts, Receipt)
    finally:
        await engine.close()


def _text_mail(message_id: str, sender: str) -> dict[str, Any]:
    return {"kind": "message", "id": message_id, "from": sender, "text": "hi", "timestamp": "2026-01-01T00:00:00+00:00"}


async def _true(value: bool) -> bool:
    return value
