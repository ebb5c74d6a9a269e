"""Chats and presence through the whatsmeow engine, offline: what reaches neonize's Go library (SubscribePresence,
SendPresence), Presence and ChatPresence events as Go encodes them (goneonize/utils/encoder.go EncodePresence,
EncodeChatPresence) through neonize's real entry point, and what neonize 0.5.2 cannot do (app state)."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.neonize import FakeGo, empty_jid, jid, live_engine, until
from zapgate.domain.chats import ChatState, SeenPresence
from zapgate.engines.base import EngineError, EngineEvent, PresenceSeen, SessionRef
from zapgate.engines.whatsmeow import NotSupported, WhatsmeowEngine, pb

REF = SessionRef("acme", "s1")
PHONE = "5521988887777"
PHONE_LID = "123456789012345"
MEMBER = "5511944443333"
GROUP = "120363000000000000"
GO_ZERO_TIME = -62_135_596_800  # Go's time.Time{}.Unix(): what neonize sends when whatsmeow knows no last seen


class Live:
    def __init__(self, engine: WhatsmeowEngine, fake: FakeGo, events: list[EngineEvent]) -> None:
        self.engine, self.fake, self.events = engine, fake, events

    async def seen(self, event: Any) -> PresenceSeen:
        """Deliver `event` as Go does and return the PresenceSeen the engine made of it."""
        before = len(self.presences())
        self.fake.push(event)
        await until(lambda: len(self.presences()) > before)
        return self.presences()[-1]

    def presences(self) -> list[PresenceSeen]:
        return [e for e in self.events if isinstance(e, PresenceSeen)]


@pytest.fixture
async def live(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Live]:
    fake = FakeGo()
    monkeypatch.setattr(importlib.import_module("neonize.client"), "gocode", fake)
    async with live_engine(REF, fake, ack=False) as (engine, events):
        yield Live(engine, fake, events)


def _chat_presence(
    chat: pb.JID, sender: pb.JID, state: int, media: int, *, alt: pb.JID | None = None
) -> pb.ChatPresence:
    source = pb.MessageSource(
        Chat=chat,
        Sender=sender,
        IsFromMe=False,
        IsGroup=chat.Server == "g.us",
        SenderAlt=alt or empty_jid(),
        RecipientAlt=empty_jid(),
        BroadcastListOwner=empty_jid(),
    )
    return pb.ChatPresence(MessageSource=source, State=state, Media=media)


async def test_subscribing_and_showing_the_account_online_reach_go(live: Live) -> None:
    await live.engine.subscribe_presence(REF, f"{PHONE}@s.whatsapp.net")
    assert [(j.User, j.Server) for j in live.fake.subscribed] == [(PHONE, "s.whatsapp.net")]
    await live.engine.subscribe_presence(REF, f"{PHONE_LID}@lid")
    assert (live.fake.subscribed[-1].User, live.fake.subscribed[-1].Server) == (PHONE_LID, "lid")
    await live.engine.set_available(REF, True)
    await live.engine.set_available(REF, False)
    assert live.fake.presences == [b"available", b"unavailable"]


async def test_a_failed_subscription_is_an_engine_error(live: Live) -> None:
    live.fake.presence_error = b"server returned error 400"
    with pytest.raises(EngineError, match="400"):  # translated into our error tree, not neonize's
        await live.engine.subscribe_presence(REF, f"{PHONE}@s.whatsapp.net")


async def test_online_and_offline_arrive_with_the_last_seen_when_shared(live: Live) -> None:
    online = await live.seen(pb.Presence(From=jid(PHONE), Unavailable=False, LastSeen=GO_ZERO_TIME))
    assert online == PresenceSeen(
        ref=REF, jid=f"{PHONE}@s.whatsapp.net", presence=SeenPresence.AVAILABLE, lid=None, last_seen=None
    )
    offline = await live.seen(pb.Presence(From=jid(PHONE), Unavailable=True, LastSeen=1_790_000_000))
    assert offline.presence is SeenPresence.UNAVAILABLE
    assert offline.last_seen == datetime.fromtimestamp(1_790_000_000, UTC)
    hidden = await live.seen(pb.Presence(From=jid(PHONE_LID, "lid"), Unavailable=True, LastSeen=GO_ZERO_TIME))
    assert hidden.last_seen is None and hidden.jid == f"{PHONE_LID}@lid" and hidden.lid == f"{PHONE_LID}@lid"


async def test_typing_recording_and_paused_arrive_in_their_chat(live: Live) -> None:
    composing, paused = pb.ChatPresence.COMPOSING, pb.ChatPresence.PAUSED
    text, audio = pb.ChatPresence.TEXT, pb.ChatPresence.AUDIO
    typing = await live.seen(_chat_presence(jid(PHONE), jid(PHONE), composing, text, alt=jid(PHONE_LID, "lid")))
    assert typing.presence is SeenPresence.COMPOSING
    assert typing.chat_jid == f"{PHONE}@s.whatsapp.net" and typing.jid == f"{PHONE}@s.whatsapp.net"
    assert typing.lid == f"{PHONE_LID}@lid"
    recording = await live.seen(_chat_presence(jid(PHONE), jid(PHONE), composing, audio))
    assert recording.presence is SeenPresence.RECORDING
    stopped = await live.seen(_chat_presence(jid(PHONE), jid(PHONE), paused, text))
    assert stopped.presence is SeenPresence.PAUSED
    in_group = await live.seen(_chat_presence(jid(GROUP, "g.us"), jid(MEMBER), composing, text))
    assert in_group.chat_jid == f"{GROUP}@g.us" and in_group.jid == f"{MEMBER}@s.whatsapp.net"


async def test_archive_pin_and_mute_are_not_supported_by_neonize_and_say_why(live: Live) -> None:
    for state in (ChatState(archived=True), ChatState(pinned=True), ChatState(muted=True)):
        with pytest.raises(NotSupported, match=r"decoder\.go") as raised:
            await live.engine.change_chat(REF, f"{PHONE}@s.whatsapp.net", state)
        assert raised.value.code == "not_supported" and raised.value.retryable is False
