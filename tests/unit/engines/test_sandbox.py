"""The sandbox engine on an in-memory network: pairing, messaging with receipts, faults."""

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from zapgate.domain.records import MessageStatus
from zapgate.domain.sessions import SessionStatus
from zapgate.engines.base import (
    EngineEvent,
    EngineFailure,
    InboundMessage,
    NotConnected,
    PairingCode,
    QrCode,
    Receipt,
    SendRejected,
    SessionRef,
    StartMode,
    StartRequest,
    StatusChanged,
    UnknownSession,
)
from zapgate.engines.sandbox import LocalSandboxNetwork, SandboxEngine, phone_address, session_address

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
    assert sent.message_id == "MSG-1"
    inbound = await events.wait_for(lambda e: isinstance(e, InboundMessage) and e.ref == B)
    assert isinstance(inbound, InboundMessage)
    assert (inbound.message_id, inbound.text, inbound.chat_jid, inbound.type) == (
        "MSG-1",
        "olá bob",
        f"{PHONE_A}@s.whatsapp.net",
        "text",
    )
    read = await events.wait_for(lambda e: isinstance(e, Receipt) and e.status is MessageStatus.READ)
    receipts = [e for e in events.events if isinstance(e, Receipt)]
    assert [(r.ref, r.message_ids, r.status) for r in receipts] == [
        (A, ("MSG-1",), MessageStatus.DELIVERED),
        (A, ("MSG-1",), MessageStatus.READ),
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


async def test_mail_for_a_phone_waits_until_its_session_is_online(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    await pair(engine, network, events, B, PHONE_B)
    await engine.stop(B)
    await engine.send_text(A, f"{PHONE_B}@s.whatsapp.net", "while you were away", "M-AWAY")
    await asyncio.sleep(0.05)
    assert not [e for e in events.events if isinstance(e, InboundMessage)]
    await engine.start(StartRequest(ref=B, mode=StartMode.RESTORE, jid=f"{PHONE_B}@s.whatsapp.net"))
    inbound = await events.wait_for(lambda e: isinstance(e, InboundMessage))
    assert isinstance(inbound, InboundMessage) and inbound.message_id == "M-AWAY"
    assert phone_address(PHONE_B) == "phone:5511999990002"


async def test_mail_stays_until_what_it_carries_is_stored(
    engine: SandboxEngine, network: LocalSandboxNetwork, events: Recorder
) -> None:
    await pair(engine, network, events, A, PHONE_A)
    await pair(engine, network, events, B, PHONE_B)
    await engine.send_text(A, f"{PHONE_B}@s.whatsapp.net", "keep me", "M-KEEP")
    inbound = await events.wait_for(lambda e: isinstance(e, InboundMessage))
    assert isinstance(inbound, InboundMessage) and inbound.ack is not None
    assert [m["id"] for m in network.unacknowledged.values() if m["kind"] == "message"] == ["M-KEEP"]
    inbound.ack()  # the worker stored it
    await asyncio.sleep(0.01)
    assert not [m for m in network.unacknowledged.values() if m["kind"] == "message"]
