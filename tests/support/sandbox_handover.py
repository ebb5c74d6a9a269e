"""A sandbox number changing hands (engines/sandbox.py, `SandboxNetwork.link`), on any network: alice's client
leaves traces on the number's account, logs out, and someone links the number again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.support.waiting import eventually
from zapgate.domain.chats import ChatState
from zapgate.domain.groups import GroupAction
from zapgate.domain.sessions import SessionStatus
from zapgate.engines.base import (
    EngineEvent,
    GroupChanged,
    InboundMessage,
    QrCode,
    SessionRef,
    StartMode,
    StartRequest,
    StatusChanged,
)
from zapgate.engines.sandbox import SandboxEngine, SandboxNetwork, phone_address, session_address

ALICE = SessionRef("acme", "alice")  # the number's first owner
MARY = SessionRef("globex", "mary")  # in a group with it
PHONE, MARY_PHONE = "5511999990001", "5511999990002"
CONTACT, SPAMMER = "447700900123", "5511988887777"
ARCHIVED = ChatState(archived=True, pinned=False, muted=False)


def jid(phone: str) -> str:
    return f"{phone}@s.whatsapp.net"


@dataclass
class Handover:
    """A sandbox engine over `network`, with the events it reported in `seen`."""

    engine: SandboxEngine
    network: SandboxNetwork
    seen: list[EngineEvent]

    async def event(self, predicate: Callable[[Any], bool], since: int = 0) -> Any:
        """The first event from the `since`-th on that `predicate` accepts, once there is one."""
        return await eventually(lambda: _first(self.seen[since:], predicate), within=10.0)

    async def link(self, ref: SessionRef, phone: str) -> None:
        since = len(self.seen)  # a session linked again: not its earlier link's events
        await self.engine.start(StartRequest(ref=ref, mode=StartMode.QR, qr_timeout=30))
        await self.event(lambda e: isinstance(e, QrCode) and e.ref == ref, since)
        await self.network.post(session_address(ref), {"kind": "scan", "phone": phone})
        connected = SessionStatus.CONNECTED
        await self.event(lambda e: isinstance(e, StatusChanged) and e.ref == ref and e.status is connected, since)

    async def leave_traces(self) -> str:
        """Alice links PHONE, archives a chat, blocks SPAMMER, creates a group with mary (its only admin), hears
        mary's presence and mary hers; she logs out, and a message waits for PHONE. Return the group's JID."""
        await self.link(ALICE, PHONE)
        await self.link(MARY, MARY_PHONE)
        await self.engine.change_chat(ALICE, jid(CONTACT), ChatState(archived=True))
        await self.engine.set_blocked(ALICE, jid(SPAMMER), True)
        info, _ = await self.engine.create_group(ALICE, "Team", (jid(MARY_PHONE),))
        await self.event(lambda e: isinstance(e, GroupChanged) and e.ref == MARY)
        await self.engine.subscribe_presence(MARY, jid(PHONE))
        await self.engine.subscribe_presence(ALICE, jid(MARY_PHONE))
        assert await self.network.presence_subscribers(PHONE) == [MARY_PHONE]
        await self.engine.logout(ALICE)
        await self.network.post(phone_address(PHONE), message("FOR-ALICE", CONTACT))
        return info.jid

    async def marker(self, ref: SessionRef) -> None:
        """Wait for a message mary sends `ref`'s number now: mail waiting before it has come by then."""
        sent = await self.engine.send_text(MARY, jid(PHONE), "now", f"MARK-{ref.session_id}")
        await self.event(lambda e: isinstance(e, InboundMessage) and e.ref == ref and e.message_id == sent.message_id)

    def inbound(self, ref: SessionRef) -> list[str]:
        return [e.message_id for e in self.seen if isinstance(e, InboundMessage) and e.ref == ref]

    def group_events(self, ref: SessionRef, group: str) -> list[GroupChanged]:
        return [e for e in self.seen if isinstance(e, GroupChanged) and e.ref == ref and e.group_jid == group]

    async def assert_a_new_account(self, ref: SessionRef, group: str) -> None:
        """`ref` linked PHONE after alice (another client's): it finds none of alice's account."""
        assert await self.engine.chat_state(ref, jid(CONTACT)) is None
        assert not await self.network.is_blocked(PHONE, SPAMMER)
        assert await self.engine.list_groups(ref) == []
        info = await self.engine.group_info(MARY, group)
        assert [(p.jid, p.is_admin) for p in info.participants] == [(jid(MARY_PHONE), True)]  # promoted
        left = await self.event(
            lambda e: isinstance(e, GroupChanged) and e.ref == MARY and e.action is GroupAction.LEAVE
        )
        assert left.group_jid == group and left.participants == (jid(PHONE),) and left.actor_jid == jid(PHONE)
        assert await self.network.presence_subscribers(PHONE) == []  # mary heard alice, not the new owner
        await self.marker(ref)
        assert "FOR-ALICE" not in self.inbound(ref)
        assert self.group_events(ref, group) == []  # the new owner never hears of alice's group

    async def assert_the_same_account(self, ref: SessionRef, group: str) -> None:
        """`ref` (alice's client) linked PHONE again: it finds alice's account as she left it."""
        assert await self.engine.chat_state(ref, jid(CONTACT)) == ARCHIVED
        assert await self.network.is_blocked(PHONE, SPAMMER)
        assert [g.jid for g in await self.engine.list_groups(ref)] == [group]
        await self.event(lambda e: isinstance(e, InboundMessage) and e.ref == ref and e.message_id == "FOR-ALICE")
        assert [e for e in self.group_events(MARY, group) if e.action is GroupAction.LEAVE] == []


def message(message_id: str, sender: str) -> dict[str, Any]:
    return {"kind": "message", "id": message_id, "from": sender, "text": "hi", "timestamp": "2026-11-30T00:00:00+00:00"}


async def _first(events: list[EngineEvent], predicate: Callable[[Any], bool]) -> Any:
    return next((e for e in events if predicate(e)), None)
