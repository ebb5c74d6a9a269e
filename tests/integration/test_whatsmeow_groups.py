"""Groups on the whatsmeow engine, offline: what reaches Go's group exports, and how its answers and events read.

The Go library is a stand-in (tests.support.neonize.FakeGo, with the group exports below) answering as
neonize's goneonize exports do: protobufs in (serialised by neonize 0.5.2's own client), protobufs or error
strings out. Events are real neonize protobufs fed through Go's entry point.
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.neonize import FakeGo, jid, live_engine
from zapgate.domain.groups import GroupAction, ParticipantAction, ParticipantOutcome, RequestAction
from zapgate.engines.base import (
    EngineEvent,
    GroupChanged,
    GroupForbidden,
    GroupNotFound,
    InviteInvalid,
    SessionRef,
)
from zapgate.engines.whatsmeow import NotSupported, WhatsmeowEngine, pb

REF = SessionRef("acme", "s1")
GROUP = "120363000000000001@g.us"
ANA, BIA = "5511944443333", "5521988887777"


def filled(kind: Any, **fields: Any) -> Any:
    """A neonize protobuf of `kind` with `fields`, and every required field Go always sets given its zero value."""
    message = kind(**fields)
    _fill(message)
    return message


def _fill(message: Any) -> None:
    for descriptor in message.DESCRIPTOR.fields:
        if descriptor.message_type is not None:
            if descriptor.is_repeated:
                for item in getattr(message, descriptor.name):
                    _fill(item)
            elif descriptor.is_required or message.HasField(descriptor.name):
                _fill(getattr(message, descriptor.name))
                if descriptor.is_required and not message.HasField(descriptor.name):
                    getattr(message, descriptor.name).SetInParent()
        elif descriptor.is_required and not message.HasField(descriptor.name):
            setattr(message, descriptor.name, descriptor.default_value)


def group_info(*participants: Any, subject: str = "Team") -> Any:
    return filled(
        pb.GroupInfo,
        JID=jid("120363000000000001", "g.us"),
        OwnerJID=jid("99887766", "lid"),
        OwnerPN=jid("5511999999999"),
        GroupName=filled(pb.GroupName, Name=subject),
        GroupTopic=filled(pb.GroupTopic, Topic="About us"),
        GroupAnnounce=filled(pb.GroupAnnounce, IsAnnounce=True),
        GroupCreated=1_790_000_000,
        Participants=list(participants),
    )


def participant(user: str, *, lid: str | None = None, admin: bool = False, error: int = 0) -> Any:
    fields: dict[str, Any] = {"JID": jid(user), "IsAdmin": admin, "Error": error}
    if lid is not None:
        fields.update(LID=jid(lid, "lid"), PhoneNumber=jid(user))
    return filled(pb.GroupParticipant, **fields)


class GroupGo(FakeGo):
    """FakeGo with neonize's group exports (goneonize/main.go), remembering what neonize handed each."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.error = ""  # what the next group call answers as its error
        self.participants_answer: list[Any] = []

    def _answer(self, kind: Any, **fields: Any) -> bytes:
        error, self.error = self.error, ""
        if error:
            return bytes(kind(Error=error).SerializeToString())
        return bytes(kind(**fields).SerializeToString())

    def _error(self) -> bytes:
        error, self.error = self.error, ""
        return error.encode()

    def GenerateMessageID(self, _uuid: bytes) -> bytes:
        return b"3EB0CREATEKEY"

    def CreateGroup(self, _uuid: bytes, data: bytes, size: int) -> bytes:
        self.calls.append(("create", pb.ReqCreateGroup.FromString(data[:size])))
        info = group_info(participant("5511999999999", admin=True), participant(ANA), participant(BIA, error=403))
        return self._answer(pb.GetGroupInfoReturnFunction, GroupInfo=info)

    def GetGroupInfo(self, _uuid: bytes, data: bytes, size: int) -> bytes:
        self.calls.append(("info", pb.JID.FromString(data[:size])))
        return self._answer(pb.GetGroupInfoReturnFunction, GroupInfo=group_info(participant(ANA, lid="123456789")))

    def GetJoinedGroups(self, _uuid: bytes) -> bytes:
        self.calls.append(("joined", None))
        return self._answer(pb.GetJoinedGroupsReturnFunction, Group=[group_info(), group_info(subject="Other")])

    def SetGroupName(self, _uuid: bytes, data: bytes, size: int, name: Any) -> bytes:
        self.calls.append(("name", (pb.JID.FromString(data[:size]), name.value.decode())))
        return self._error()

    def SetGroupTopic(self, _uuid: bytes, data: bytes, size: int, previous: bytes, new: bytes, topic: bytes) -> bytes:
        self.calls.append(("topic", (pb.JID.FromString(data[:size]), previous, new, topic.decode())))
        return self._error()

    def SetGroupAnnounce(self, _uuid: bytes, data: bytes, size: int, announce: bool) -> bytes:
        self.calls.append(("announce", (pb.JID.FromString(data[:size]), announce)))
        return self._error()

    def SetGroupLocked(self, _uuid: bytes, data: bytes, size: int, locked: bool) -> bytes:
        self.calls.append(("locked", (pb.JID.FromString(data[:size]), locked)))
        return self._error()

    def SetGroupPhoto(self, _uuid: bytes, data: bytes, size: int, image: bytes, image_size: int) -> bytes:
        self.calls.append(("photo", (pb.JID.FromString(data[:size]), bytes(image[:image_size]))))
        return self._answer(pb.SetGroupPhotoReturnFunction, PictureID="1790000123")

    def UpdateGroupParticipants(
        self, _uuid: bytes, data: bytes, size: int, jids: bytes, jids_size: int, action: bytes
    ) -> bytes:
        asked = list(pb.JIDArray.FromString(jids[:jids_size]).JIDS)
        self.calls.append(("participants", (pb.JID.FromString(data[:size]), asked, action.decode())))
        return self._answer(pb.UpdateGroupParticipantsReturnFunction, participants=self.participants_answer)

    def GetGroupInviteLink(self, _uuid: bytes, data: bytes, size: int, revoke: bool) -> bytes:
        self.calls.append(("invite", (pb.JID.FromString(data[:size]), revoke)))
        code = "NewCode0000000000000000" if revoke else "OldCode0000000000000000"
        return self._answer(pb.GetGroupInviteLinkReturnFunction, InviteLink="https://chat.whatsapp.com/" + code)

    def JoinGroupWithLink(self, _uuid: bytes, code: bytes) -> bytes:
        self.calls.append(("join", code.decode()))
        return self._answer(pb.JoinGroupWithLinkReturnFunction, Jid=jid("120363000000000001", "g.us"))

    def JoinGroupWithInvite(
        self, _uuid: bytes, data: bytes, size: int, inviter: bytes, inviter_size: int, code: bytes, expiration: int
    ) -> bytes:
        asked = (pb.JID.FromString(data[:size]), pb.JID.FromString(inviter[:inviter_size]), code.decode(), expiration)
        self.calls.append(("join_invite", asked))
        return self._error()

    def GetGroupRequestParticipants(self, _uuid: bytes, data: bytes, size: int) -> bytes:
        self.calls.append(("requests", pb.JID.FromString(data[:size])))
        asked = [
            pb.GroupParticipantRequest(Participant=jid(ANA), TimeAt=1_790_000_000),
            pb.GroupParticipantRequest(Participant=jid("123456789", "lid"), TimeAt=0),
        ]
        return self._answer(pb.GetGroupRequestParticipantsReturnFunction, Participants=asked)

    def LeaveGroup(self, _uuid: bytes, data: bytes, size: int) -> bytes:
        self.calls.append(("leave", pb.JID.FromString(data[:size])))
        return self._error()


class Live:
    def __init__(self, engine: WhatsmeowEngine, fake: GroupGo, events: list[EngineEvent]) -> None:
        self.engine, self.fake, self.events = engine, fake, events

    async def changes(self, count: int) -> list[GroupChanged]:
        deadline = time.monotonic() + 10
        while len(found := [e for e in self.events if isinstance(e, GroupChanged)]) < count:
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.01)
        return found


@pytest.fixture
async def live(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Live]:
    fake = GroupGo()
    monkeypatch.setattr(importlib.import_module("neonize.client"), "gocode", fake)
    async with live_engine(REF, fake, ack=False) as (engine, events):
        yield Live(engine, fake, events)


async def test_create_asks_go_with_the_subject_and_jids_and_reads_each_participants_error(live: Live) -> None:
    info, results = await live.engine.create_group(REF, "Team", (f"{ANA}@s.whatsapp.net", f"{BIA}@s.whatsapp.net"))
    kind, request = live.fake.calls[-1]
    assert kind == "create" and request.name == "Team"
    assert [(j.User, j.Server) for j in request.Participants] == [(ANA, "s.whatsapp.net"), (BIA, "s.whatsapp.net")]
    assert request.CreateKey  # neonize makes one: whatsmeow dedupes creations by it
    assert info.jid == GROUP and info.subject == "Team" and info.description == "About us" and info.announce
    assert info.owner_jid == "5511999999999@s.whatsapp.net"  # the owner's phone JID (OwnerPN) over its LID
    assert [p.jid for p in info.participants] == ["5511999999999@s.whatsapp.net", f"{ANA}@s.whatsapp.net"]
    assert [(r.jid, r.outcome, r.code) for r in results] == [
        (f"{ANA}@s.whatsapp.net", ParticipantOutcome.OK, 200),
        (f"{BIA}@s.whatsapp.net", ParticipantOutcome.NOT_AUTHORIZED, 403),
    ]


async def test_info_list_and_settings_reach_their_go_exports(live: Live) -> None:
    info = await live.engine.group_info(REF, GROUP)
    assert info.participants[0].jid == f"{ANA}@s.whatsapp.net" and info.participants[0].lid == "123456789@lid"
    assert [g.subject for g in await live.engine.list_groups(REF)] == ["Team", "Other"]
    await live.engine.set_group_subject(REF, GROUP, "Renamed")
    await live.engine.set_group_description(REF, GROUP, "New topic")
    await live.engine.set_group_announce(REF, GROUP, True)
    await live.engine.set_group_locked(REF, GROUP, False)
    assert await live.engine.set_group_picture(REF, GROUP, b"\xff\xd8\xffJPEG") == "1790000123"
    calls = dict(live.fake.calls)
    assert calls["name"][0].User == "120363000000000001" and calls["name"][1] == "Renamed"
    assert calls["topic"][1:] == (b"", b"", "New topic")  # whatsmeow fills the previous and new topic ids
    assert calls["announce"][1] is True and calls["locked"][1] is False
    assert calls["photo"][1] == b"\xff\xd8\xffJPEG"


async def test_participant_changes_answer_each_one_matched_by_user(live: Live) -> None:
    live.fake.participants_answer = [
        participant(BIA, lid="123456789", error=409),  # answered by LID and phone, out of order
        participant(ANA),
    ]
    asked = (f"{ANA}@s.whatsapp.net", f"{BIA}@s.whatsapp.net", "5511900000000@s.whatsapp.net")
    results = await live.engine.update_group_participants(REF, GROUP, ParticipantAction.ADD, asked)
    kind, (_, jids, action) = live.fake.calls[-1]
    assert kind == "participants" and action == "add" and [j.User for j in jids] == [ANA, BIA, "5511900000000"]
    assert [r.outcome for r in results] == [
        ParticipantOutcome.OK,
        ParticipantOutcome.ALREADY_IN,
        ParticipantOutcome.FAILED,  # WhatsApp said nothing of it
    ]
    live.fake.participants_answer = [participant(ANA, error=404)]
    removed = await live.engine.update_group_participants(REF, GROUP, ParticipantAction.REMOVE, asked[:1])
    assert live.fake.calls[-1][1][2] == "remove" and removed[0].outcome is ParticipantOutcome.NOT_IN_GROUP


async def test_invites_join_and_leave(live: Live) -> None:
    assert await live.engine.group_invite_link(REF, GROUP) == "https://chat.whatsapp.com/OldCode0000000000000000"
    assert live.fake.calls[-1][1][1] is False
    assert (await live.engine.group_invite_link(REF, GROUP, reset=True)).endswith("NewCode0000000000000000")
    assert live.fake.calls[-1][1][1] is True
    assert await live.engine.join_group(REF, "AbCdEf") == GROUP
    assert live.fake.calls[-1] == ("join", "AbCdEf")
    await live.engine.leave_group(REF, GROUP)
    assert live.fake.calls[-1][0] == "leave"


async def test_joining_by_an_invite_message_hands_go_the_group_inviter_code_and_expiry(live: Live) -> None:
    inviter = f"{ANA}@s.whatsapp.net"
    assert await live.engine.join_group_with_invite(REF, GROUP, inviter, "InvCode", 1_790_000_000) == GROUP
    kind, (group, who, code, expiration) = live.fake.calls[-1]
    assert kind == "join_invite"
    assert (group.User, group.Server, who.User, who.Server) == ("120363000000000001", "g.us", ANA, "s.whatsapp.net")
    assert (code, expiration) == ("InvCode", 1_790_000_000)
    await live.engine.join_group_with_invite(REF, GROUP, inviter, "InvCode", None)
    assert live.fake.calls[-1][1][3] == 0  # no expiry said: whatsmeow's zero
    live.fake.error = "failed to join group: info query returned status 410: gone"
    with pytest.raises(InviteInvalid):
        await live.engine.join_group_with_invite(REF, GROUP, inviter, "Revoked", 1_790_000_000)


async def test_whatsapps_refusals_are_the_group_errors_they_mean(live: Live) -> None:
    live.fake.error = "info query returned status 403: forbidden"
    with pytest.raises(GroupForbidden):
        await live.engine.set_group_announce(REF, GROUP, True)
    live.fake.error = "you're not participating in that group"
    with pytest.raises(GroupNotFound):
        await live.engine.group_info(REF, GROUP)
    live.fake.error = "that group invite link has been revoked"
    with pytest.raises(InviteInvalid):
        await live.engine.join_group(REF, "AbCdEf")


async def test_group_events_become_one_change_each(live: Live) -> None:
    event = filled(
        pb.GroupInfoEvent,
        JID=jid("120363000000000001", "g.us"),
        Sender=jid(ANA),
        Timestamp=1_790_000_100,
        Name=filled(pb.GroupName, Name="New name"),
        Announce=filled(pb.GroupAnnounce, IsAnnounce=True),
        Join=[jid(BIA)],
        JoinReason="invite",
        Promote=[jid(BIA)],
    )
    live.fake.push(event)
    subject, announce, joined, promoted = await live.changes(4)
    assert subject.action is GroupAction.SUBJECT and subject.subject == "New name"
    assert subject.actor_jid == f"{ANA}@s.whatsapp.net" and subject.group_jid == GROUP
    assert subject.timestamp.timestamp() == 1_790_000_100
    assert announce.action is GroupAction.ANNOUNCE and announce.announce is True
    assert joined.action is GroupAction.JOIN_BY_LINK and joined.participants == (f"{BIA}@s.whatsapp.net",)
    assert promoted.action is GroupAction.PROMOTE
    removed = filled(
        pb.GroupInfoEvent,
        JID=jid("120363000000000001", "g.us"),
        Sender=jid(ANA),
        Timestamp=1_790_000_200,
        Leave=[jid(BIA), jid("5511999999999")],  # the session itself among them
    )
    live.fake.push(removed)
    *_, others, me = await live.changes(6)
    assert others.action is GroupAction.REMOVE and others.participants == (f"{BIA}@s.whatsapp.net",)
    assert me.action is GroupAction.LEFT and me.reason == "removed"


async def test_joining_a_group_comes_with_the_whole_group(live: Live) -> None:
    live.fake.push(
        filled(
            pb.JoinedGroup,
            Reason="",
            Type="",
            CreateKey="",
            Sender=jid(ANA),
            GroupInfo=group_info(participant(ANA, admin=True), participant("5511999999999")),
        )
    )
    (joined,) = await live.changes(1)
    assert joined.action is GroupAction.JOINED and joined.reason == "added"
    assert joined.actor_jid == f"{ANA}@s.whatsapp.net"
    assert joined.info is not None and joined.info.subject == "Team" and len(joined.info.participants) == 2


async def test_a_groups_picture_change_is_told_and_a_persons_is_not(live: Live) -> None:
    live.fake.push(filled(pb.Picture, JID=jid(ANA), Author=jid(ANA), Timestamp=1_790_000_300))
    live.fake.push(
        filled(pb.Picture, JID=jid("120363000000000001", "g.us"), Author=jid(BIA), Timestamp=1_790_000_301, Remove=True)
    )
    (picture,) = await live.changes(1)
    assert picture.action is GroupAction.PICTURE and picture.group_jid == GROUP and picture.reason == "removed"
    assert picture.actor_jid == f"{BIA}@s.whatsapp.net" and picture.picture_id is None


async def test_join_requests_are_listed_by_go_and_what_neonize_cannot_do_is_not_supported(live: Live) -> None:
    requests = await live.engine.group_requests(REF, GROUP)
    kind, group = live.fake.calls[-1]
    assert kind == "requests" and (group.User, group.Server) == ("120363000000000001", "g.us")
    assert [(r.jid, r.requested_at) for r in requests] == [
        (f"{ANA}@s.whatsapp.net", datetime.fromtimestamp(1_790_000_000, UTC)),
        ("123456789@lid", None),
    ]
    live.fake.error = "failed to get group request participants: info query returned status 403: forbidden"
    with pytest.raises(GroupForbidden):
        await live.engine.group_requests(REF, GROUP)
    # neonize 0.5.2 exports neither SetGroupJoinApprovalMode nor UpdateGroupRequestParticipants
    calls = len(live.fake.calls)
    with pytest.raises(NotSupported):
        await live.engine.set_group_join_approval(REF, GROUP, True)
    with pytest.raises(NotSupported):
        await live.engine.answer_group_requests(REF, GROUP, RequestAction.APPROVE, (f"{ANA}@s.whatsapp.net",))
    assert len(live.fake.calls) == calls
    assert not hasattr(importlib.import_module("neonize.client").NewClient, "update_group_request_participants")
    # neonize's GroupInfo carries no approval mode: the engine says it cannot tell
    assert (await live.engine.group_info(REF, GROUP)).join_approval is None


async def test_join_requests_told_in_a_groups_unparsed_changes_become_requested_and_rejected(live: Live) -> None:
    def node(tag: str, *people: str) -> Any:
        children = [pb.Node(Tag="participant", Attrs=[pb.NodeAttrs(name="jid", jid=jid(p))]) for p in people]
        return pb.Node(Tag=tag, Nodes=children)

    base = {"JID": jid("120363000000000001", "g.us"), "Timestamp": 1_790_000_300}
    asked = filled(pb.GroupInfoEvent, Sender=jid(BIA), UnknownChanges=[node("created_membership_requests")], **base)
    live.fake.push(asked)
    [requested] = await live.changes(1)
    assert requested.action is GroupAction.REQUESTED and requested.participants == (f"{BIA}@s.whatsapp.net",)
    rejected = node("revoked_membership_requests", BIA)
    unknown = pb.Node(Tag="member_add_mode", Nil=True)
    live.fake.push(filled(pb.GroupInfoEvent, Sender=jid(ANA), UnknownChanges=[unknown, rejected], **base))
    [_, answered] = await live.changes(2)
    assert answered.action is GroupAction.REJECTED and answered.participants == (f"{BIA}@s.whatsapp.net",)
    assert answered.actor_jid == f"{ANA}@s.whatsapp.net"
    withdrawn = filled(pb.GroupInfoEvent, Sender=jid(BIA), UnknownChanges=[node("revoked_membership_requests")], **base)
    live.fake.push(withdrawn)
    live.fake.push(filled(pb.GroupInfoEvent, Sender=jid(ANA), Promote=[jid(BIA)], **base))
    changes = await live.changes(3)
    assert changes[-1].action is GroupAction.PROMOTE  # the withdrawal told nothing
