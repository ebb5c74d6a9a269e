"""The sandbox's contacts, in one process: profile pictures by number, LID or group, and blocklists that keep a
blocked number's messages (by number or by LID) from the session, between two linked sessions too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest

from tests.support.waiting import eventually
from zapgate.domain.content import Text
from zapgate.engines.base import EngineEvent, InboundMessage, QrCode, SendRejected, SessionRef, StartMode, StartRequest
from zapgate.engines.sandbox import (
    PICTURE_URL,
    LocalSandboxNetwork,
    SandboxEngine,
    session_address,
    simulated_lid,
)

A, B = SessionRef("acme", "alice"), SessionRef("acme", "bob")
PHONE_A, PHONE_B = "5511999990001", "5511999990002"
ANA = "447700900123"


class _Events(list[EngineEvent]):
    def __call__(self, event: EngineEvent) -> None:
        self.append(event)

    def texts(self, ref: SessionRef) -> list[str]:
        return [e.text for e in self if isinstance(e, InboundMessage) and e.ref == ref]


@pytest.fixture
async def world() -> AsyncIterator[tuple[SandboxEngine, LocalSandboxNetwork, _Events]]:
    network, events = LocalSandboxNetwork(), _Events()
    engine = SandboxEngine(events, network, reconnect_delay=0.01)
    for ref, phone in ((A, PHONE_A), (B, PHONE_B)):
        await engine.start(StartRequest(ref=ref, mode=StartMode.QR, qr_timeout=5))
        await _until(lambda ref=ref: any(isinstance(e, QrCode) and e.ref == ref for e in events))
        await network.post(session_address(ref), {"kind": "scan", "phone": phone})
        await _until(lambda ref=ref: engine.hosts(ref) and engine._sessions[ref].phone is not None)
    yield engine, network, events
    await engine.close()


async def _until(check: Callable[[], object], within: float = 2.0) -> None:
    async def checked() -> object:
        return check()

    await eventually(checked, within=within, every=0.01)


async def _inject(network: LocalSandboxNetwork, text: str, **sender: str) -> None:
    mail = {"kind": "message", "id": text, "text": text, "timestamp": datetime.now(UTC).isoformat(), **sender}
    await network.post(session_address(A), mail)


async def test_pictures_by_number_lid_or_group_and_none_for_some(world: tuple[SandboxEngine, object, object]) -> None:
    engine = world[0]
    by_number = await engine.profile_picture(A, f"{ANA}@s.whatsapp.net")
    assert by_number.url is not None and by_number.url.startswith(PICTURE_URL) and by_number.expires_at is not None
    assert (await engine.profile_picture(A, f"{simulated_lid(ANA)}@lid")).url == by_number.url  # the same account
    assert (await engine.profile_picture(A, "447700900100@s.whatsapp.net")).url is None  # ends in 00: no picture
    assert (await engine.profile_picture(A, "447700900404@s.whatsapp.net")).url is None  # not on WhatsApp
    assert (await engine.profile_picture(A, "120363000000000001@g.us")).url is not None


async def test_a_blocked_number_writes_to_nobody_until_unblocked(
    world: tuple[SandboxEngine, LocalSandboxNetwork, _Events],
) -> None:
    engine, network, events = world
    await engine.set_blocked(A, f"{ANA}@s.whatsapp.net", True)
    await engine.set_blocked(A, f"{PHONE_B}@s.whatsapp.net", True)
    await _inject(network, "by number", **{"from": ANA})
    await _inject(network, "by lid", from_lid=f"{simulated_lid(ANA)}@lid")
    await engine.send(B, f"{PHONE_A}@s.whatsapp.net", Text(body="from bob"), "M1")  # a linked session's too
    await _inject(network, "someone else", **{"from": "447700900999"})
    await _until(lambda: "someone else" in events.texts(A))
    await engine.set_blocked(A, f"{simulated_lid(ANA)}@lid", False)  # unblocked by LID: the same account
    await _inject(network, "again", **{"from": ANA})
    await _until(lambda: "again" in events.texts(A))
    assert events.texts(A) == ["someone else", "again"]
    with pytest.raises(SendRejected):
        await engine.set_blocked(A, "120363000000000001@g.us", True)
