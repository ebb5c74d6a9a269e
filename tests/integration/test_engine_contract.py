"""What every engine promises the worker, checked on each: the sandbox, and whatsmeow as far as offline allows
(neonize's real Python client over a stand-in Go library that calls back as Go does).

Event kinds and their order, WhatsApp's ids on what arrives, receipts in the order they came, errors as
`EngineError`s, and stops, closes and abandons that are bounded and final.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import pytest

from tests.support.neonize import FakeGo, jid, message, source
from zapgate.domain.chats import ChatState, SeenPresence
from zapgate.domain.content import Location, Media, MediaKind, MessageKey, Quote, Text, Unsupported
from zapgate.domain.records import MessageStatus
from zapgate.domain.sessions import SessionStatus
from zapgate.engines.base import (
    Engine,
    EngineError,
    EngineEvent,
    InboundMessage,
    Presence,
    PresenceSeen,
    Receipt,
    SendRejected,
    SessionRef,
    StartMode,
    StartRequest,
    StatusChanged,
)
from zapgate.engines.sandbox import LocalSandboxNetwork, SandboxEngine, phone_address, session_address

REF = SessionRef("acme", "s1")
ACCOUNT = "5511999999999"  # the session's own number
OTHER = "5521988887777"  # who writes to it
BOUND = 10.0  # seconds: every stop, close and abandon must be done well within this


class Driver(Protocol):
    """Drives one engine as WhatsApp would: links a session, delivers messages and receipts."""

    engine: Engine
    events: list[EngineEvent]

    async def connect(self, ref: SessionRef) -> None: ...

    async def inbound(self, ref: SessionRef, wa_id: str, sender: str, text: str) -> None: ...

    async def receipt(self, ref: SessionRef, wa_ids: list[str], status: MessageStatus) -> None: ...

    async def offline(self, ref: SessionRef, who: str, last_seen: int) -> None: ...


def _sink(events: list[EngineEvent]) -> Callable[[EngineEvent], None]:
    def sink(event: EngineEvent) -> None:
        events.append(event)
        ack = getattr(event, "ack", None)
        if ack is not None:
            ack()  # stored, as the worker would say

    return sink


class SandboxDriver:
    def __init__(self) -> None:
        self.events: list[EngineEvent] = []
        self.network = LocalSandboxNetwork()
        self.engine: Engine = SandboxEngine(_sink(self.events), self.network)

    async def connect(self, ref: SessionRef) -> None:
        await self.engine.start(StartRequest(ref, StartMode.QR, qr_timeout=30))
        await _until(lambda: any(e.status is SessionStatus.QR for e in _changes(self.events)))
        await self.network.post(session_address(ref), {"kind": "scan", "phone": ACCOUNT})

    async def inbound(self, ref: SessionRef, wa_id: str, sender: str, text: str) -> None:
        mail = {
            "kind": "message",
            "id": wa_id,
            "from": sender,
            "to": ACCOUNT,
            "text": text,
            "group": False,
            "timestamp": datetime.now(UTC).isoformat(),
        }
        await self.network.post(phone_address(ACCOUNT), mail)

    async def receipt(self, ref: SessionRef, wa_ids: list[str], status: MessageStatus) -> None:
        mail = {"kind": "receipt", "ids": wa_ids, "status": status.value, "from": OTHER}
        await self.network.post(phone_address(ACCOUNT), {**mail, "timestamp": datetime.now(UTC).isoformat()})

    async def offline(self, ref: SessionRef, who: str, last_seen: int) -> None:
        seen = datetime.fromtimestamp(last_seen, UTC).isoformat()
        mail = {"kind": "presence", "from": who, "presence": "unavailable", "last_seen": seen}
        await self.network.post(phone_address(ACCOUNT), mail)


class WhatsmeowDriver:
    def __init__(self, fake: FakeGo) -> None:
        from zapgate.engines.whatsmeow import WhatsmeowEngine

        self.events: list[EngineEvent] = []
        self.fake = fake
        self.engine: Engine = WhatsmeowEngine(_sink(self.events), lambda _client: ":memory:", stop_timeout=3.0)

    async def connect(self, ref: SessionRef) -> None:
        from zapgate.engines.whatsmeow import pb

        await self.engine.start(StartRequest(ref, StartMode.QR, qr_timeout=30))
        await asyncio.to_thread(self.fake.delivered_me.wait, BOUND)  # the device event: Go's maps hold it
        self.fake.push(pb.Connected(status=True))

    async def inbound(self, ref: SessionRef, wa_id: str, sender: str, text: str) -> None:
        from zapgate.engines.whatsmeow import wa

        self.fake.push(message(source(jid(sender), jid(sender)), wa.Message(conversation=text), wa_id))

    async def receipt(self, ref: SessionRef, wa_ids: list[str], status: MessageStatus) -> None:
        from zapgate.engines.whatsmeow import pb

        kind = {MessageStatus.DELIVERED: pb.Receipt.DELIVERED, MessageStatus.READ: pb.Receipt.READ}[status]
        where = source(jid(OTHER), jid(OTHER))
        self.fake.push(pb.Receipt(MessageSource=where, MessageIDs=wa_ids, Timestamp=int(time.time()), Type=kind))

    async def offline(self, ref: SessionRef, who: str, last_seen: int) -> None:
        from zapgate.engines.whatsmeow import pb

        self.fake.push(pb.Presence(From=jid(who), Unavailable=True, LastSeen=last_seen))


@pytest.fixture(params=["sandbox", "whatsmeow"])
async def driver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Driver]:
    made: Driver
    fake: FakeGo | None = None
    if request.param == "sandbox":
        made = SandboxDriver()
    else:
        import importlib

        fake = FakeGo()
        monkeypatch.setattr(importlib.import_module("neonize.client"), "gocode", fake)
        made = WhatsmeowDriver(fake)
    try:
        yield made
    finally:
        try:
            async with asyncio.timeout(BOUND):
                await made.engine.close()
        finally:
            if fake is not None:
                fake.shut_down()


async def _until(predicate: Callable[[], Any], seconds: float = BOUND) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _changes(events: list[EngineEvent]) -> list[StatusChanged]:
    return [e for e in events if isinstance(e, StatusChanged)]


def _connected(events: list[EngineEvent]) -> bool:
    return any(e.status is SessionStatus.CONNECTED for e in _changes(events))


async def test_a_session_reports_connecting_first_then_connected_with_its_account(driver: Driver) -> None:
    await driver.connect(REF)
    await _until(lambda: _connected(driver.events))
    changes = _changes(driver.events)
    assert changes[0].status is SessionStatus.CONNECTING and all(c.ref == REF for c in changes)
    connected = next(c for c in changes if c.status is SessionStatus.CONNECTED)
    assert connected.jid is not None and connected.jid.split("@")[0].split(":")[0] == ACCOUNT
    assert driver.engine.hosts(REF)


async def test_inbound_messages_carry_whatsapps_id_and_sender_in_the_order_they_came(driver: Driver) -> None:
    await driver.connect(REF)
    await _until(lambda: _connected(driver.events))
    for n in range(3):
        await driver.inbound(REF, f"3EB0IN{n}", OTHER, f"hello {n}")
    await _until(lambda: len([e for e in driver.events if isinstance(e, InboundMessage)]) == 3)
    arrived = [e for e in driver.events if isinstance(e, InboundMessage)]
    assert [m.message_id for m in arrived] == ["3EB0IN0", "3EB0IN1", "3EB0IN2"]
    assert [m.text for m in arrived] == ["hello 0", "hello 1", "hello 2"]
    assert all(m.chat_jid == f"{OTHER}@s.whatsapp.net" and m.sender_jid == m.chat_jid for m in arrived)
    assert all(m.type == "text" and not m.from_me and not m.is_group and m.ref == REF for m in arrived)
    assert all(m.ack is not None for m in arrived)  # held until the worker says it is stored


async def test_receipts_name_whatsapps_ids_and_keep_their_order(driver: Driver) -> None:
    await driver.connect(REF)
    await _until(lambda: _connected(driver.events))
    await driver.receipt(REF, ["3EB0A", "3EB0B"], MessageStatus.DELIVERED)
    await driver.receipt(REF, ["3EB0A"], MessageStatus.READ)
    await _until(lambda: len([e for e in driver.events if isinstance(e, Receipt)]) == 2)
    receipts = [e for e in driver.events if isinstance(e, Receipt)]
    assert [(r.message_ids, r.status) for r in receipts] == [
        (("3EB0A", "3EB0B"), MessageStatus.DELIVERED),
        (("3EB0A",), MessageStatus.READ),
    ]
    assert all(r.ref == REF for r in receipts)


async def test_calls_on_a_session_not_hosted_fail_as_engine_errors(driver: Driver) -> None:
    ghost = SessionRef("acme", "ghost")
    calls = [
        driver.engine.send_text(ghost, f"{OTHER}@s.whatsapp.net", "hi", "3EB0X"),
        driver.engine.resolve(ghost, OTHER),
        driver.engine.send_presence(ghost, f"{OTHER}@s.whatsapp.net", Presence.COMPOSING),
        driver.engine.logout(ghost),
        driver.engine.send(ghost, f"{OTHER}@s.whatsapp.net", Location(latitude=1.0, longitude=2.0), "3EB0X"),
        driver.engine.send(ghost, f"{OTHER}@s.whatsapp.net", Text("hi"), "3EB0Y", quote=Quote(MessageKey("3EB0Z"))),
        driver.engine.download(ghost, Media(kind=MediaKind.IMAGE), "/nonexistent/file"),
        driver.engine.request_reupload(ghost, f"{OTHER}@s.whatsapp.net", MessageKey("3EB0Z"), Media(MediaKind.IMAGE)),
        # chats and presence (issue 14)
        driver.engine.change_chat(ghost, f"{OTHER}@s.whatsapp.net", ChatState(archived=True)),
        driver.engine.subscribe_presence(ghost, f"{OTHER}@s.whatsapp.net"),
        driver.engine.set_available(ghost, True),
    ]
    for call in calls:
        with pytest.raises(EngineError):
            await call
    assert not driver.engine.hosts(ghost)
    await driver.engine.stop(ghost)  # stopping what is not hosted is nothing


async def test_a_contacts_presence_arrives_with_its_last_seen(driver: Driver) -> None:
    await driver.connect(REF)
    await _until(lambda: _connected(driver.events))
    await driver.offline(REF, OTHER, 1_790_000_000)
    await _until(lambda: any(isinstance(e, PresenceSeen) for e in driver.events))
    seen = next(e for e in driver.events if isinstance(e, PresenceSeen))
    assert (seen.ref, seen.jid, seen.presence, seen.chat_jid) == (
        REF,
        f"{OTHER}@s.whatsapp.net",
        SeenPresence.UNAVAILABLE,
        None,
    )
    assert seen.last_seen == datetime.fromtimestamp(1_790_000_000, UTC)


async def test_what_an_engine_cannot_send_is_refused_for_good(driver: Driver) -> None:
    await driver.connect(REF)
    await _until(lambda: _connected(driver.events))
    with pytest.raises(SendRejected) as refused:
        await driver.engine.send(REF, f"{OTHER}@s.whatsapp.net", Unsupported(wa_type="paymentInviteMessage"), "3EB0U")
    assert not refused.value.retryable


async def test_a_stop_is_bounded_and_final(driver: Driver) -> None:
    await driver.connect(REF)
    await _until(lambda: _connected(driver.events))
    async with asyncio.timeout(BOUND):
        await driver.engine.stop(REF)
    assert not driver.engine.hosts(REF)
    seen = len(driver.events)
    await driver.inbound(REF, "3EB0LATE", OTHER, "too late")
    await asyncio.sleep(0.3)
    assert not [e for e in driver.events[seen:] if isinstance(e, InboundMessage)]
    with pytest.raises(EngineError):
        await driver.engine.send_text(REF, f"{OTHER}@s.whatsapp.net", "hi", "3EB0Y")


async def test_an_abandoned_session_reports_nothing_more(driver: Driver) -> None:
    await driver.connect(REF)
    await _until(lambda: _connected(driver.events))
    driver.engine.abandon(REF)
    assert not driver.engine.hosts(REF)
    seen = len(driver.events)
    await driver.inbound(REF, "3EB0GONE", OTHER, "nobody hears this")
    await asyncio.sleep(0.3)
    assert driver.events[seen:] == []
