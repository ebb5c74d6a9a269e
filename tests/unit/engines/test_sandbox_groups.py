"""Groups on the sandbox network (in memory): WhatsApp's rules on who may do what, fan-out, receipts, notices."""

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest

from tests.unit.engines.test_sandbox import Recorder, pair
from zapgate.domain.content import MessageKey, Reaction, Text
from zapgate.domain.groups import MAX_PARTICIPANTS, GroupAction, ParticipantAction, ParticipantOutcome, RequestAction
from zapgate.domain.records import MessageStatus
from zapgate.engines import sandbox_groups
from zapgate.engines.base import (
    EngineEvent,
    GroupChanged,
    GroupForbidden,
    GroupNotFound,
    InboundMessage,
    InviteInvalid,
    Receipt,
    SendRejected,
    SessionRef,
)
from zapgate.engines.sandbox import LocalSandboxNetwork, SandboxEngine, simulated_lid
from zapgate.engines.sandbox_groups import SandboxGroup

A, B, C = SessionRef("acme", "alice"), SessionRef("acme", "bob"), SessionRef("acme", "carol")
PA, PB, PC = "5511999990001", "5511999990002", "5511999990003"
SIMULATED = "5511988887777"


def jid(phone: str) -> str:
    return f"{phone}@s.whatsapp.net"


@pytest.fixture
def network() -> LocalSandboxNetwork:
    return LocalSandboxNetwork()


@pytest.fixture
async def events() -> Recorder:
    return Recorder()


@pytest.fixture
async def engine(network: LocalSandboxNetwork, events: Recorder) -> AsyncIterator[SandboxEngine]:
    engine = SandboxEngine(events, network, reconnect_delay=0.01)
    await pair(engine, network, events, A, PA)
    await pair(engine, network, events, B, PB)
    await pair(engine, network, events, C, PC)
    yield engine
    await engine.close()


def changed(ref: SessionRef, action: GroupAction) -> Callable[[EngineEvent], bool]:
    return lambda e: isinstance(e, GroupChanged) and e.ref == ref and e.action is action


async def test_a_created_group_has_its_creator_as_super_admin_and_tells_every_member(
    engine: SandboxEngine, events: Recorder
) -> None:
    info, results = await engine.create_group(A, "Team", (jid(PB), jid(SIMULATED), jid("5511999990404")))
    assert info.jid.startswith("120363") and info.jid.endswith("@g.us")
    assert [r.outcome for r in results] == [
        ParticipantOutcome.OK,
        ParticipantOutcome.OK,
        ParticipantOutcome.NOT_ON_WHATSAPP,
    ]
    owner = info.participants[0]
    assert owner.jid == jid(PA) and owner.is_super_admin and owner.is_admin
    assert owner.lid == f"{simulated_lid(PA)}@lid"
    assert {p.jid for p in info.participants} == {jid(PA), jid(PB), jid(SIMULATED)}
    mine = await events.wait_for(changed(A, GroupAction.JOINED))
    assert isinstance(mine, GroupChanged) and mine.reason == "created" and mine.info is not None
    theirs = await events.wait_for(changed(B, GroupAction.JOINED))
    assert isinstance(theirs, GroupChanged) and theirs.reason == "added" and theirs.actor_jid == jid(PA)
    assert theirs.info is not None and theirs.info.subject == "Team"
    assert [g.jid for g in await engine.list_groups(B)] == [info.jid]
    assert await engine.list_groups(C) == []
    with pytest.raises(GroupNotFound):
        await engine.group_info(C, info.jid)


async def test_a_group_message_reaches_every_member_session_with_receipts_from_each(
    engine: SandboxEngine, events: Recorder
) -> None:
    info, _ = await engine.create_group(A, "Team", (jid(PB), jid(PC), jid(SIMULATED)))
    sent = await engine.send(A, info.jid, Text(body="hello team"), "m1")
    for reader in (B, C):
        got = await events.wait_for(lambda e, r=reader: isinstance(e, InboundMessage) and e.ref == r)
        assert isinstance(got, InboundMessage)
        assert got.chat_jid == info.jid and got.is_group and got.sender_jid == jid(PA) and got.text == "hello team"
        assert got.message_id == sent.message_id and not got.from_me
    for member in (PB, PC, SIMULATED):
        read = await events.wait_for(
            lambda e, m=member: (
                isinstance(e, Receipt) and e.ref == A and e.sender_jid == jid(m) and e.status is MessageStatus.READ
            )
        )
        assert isinstance(read, Receipt) and read.chat_jid == info.jid and read.message_ids == (sent.message_id,)


async def test_only_admins_change_participants_and_nobody_removes_the_creator(
    engine: SandboxEngine, events: Recorder
) -> None:
    info, _ = await engine.create_group(A, "Team", (jid(PB),))
    with pytest.raises(GroupForbidden):
        await engine.update_group_participants(B, info.jid, ParticipantAction.ADD, (jid(PC),))
    results = await engine.update_group_participants(
        A, info.jid, ParticipantAction.ADD, (jid(PC), jid(PB), jid("5511999990404"))
    )
    assert [r.outcome for r in results] == [
        ParticipantOutcome.OK,
        ParticipantOutcome.ALREADY_IN,
        ParticipantOutcome.NOT_ON_WHATSAPP,
    ]
    added = await events.wait_for(changed(B, GroupAction.ADD))
    assert isinstance(added, GroupChanged) and added.participants == (jid(PC),)
    await events.wait_for(changed(C, GroupAction.JOINED))
    promoted = await engine.update_group_participants(A, info.jid, ParticipantAction.PROMOTE, (jid(PB), jid(SIMULATED)))
    assert [r.outcome for r in promoted] == [ParticipantOutcome.OK, ParticipantOutcome.NOT_IN_GROUP]
    refused = await engine.update_group_participants(B, info.jid, ParticipantAction.REMOVE, (jid(PA), jid(PC)))
    assert [r.outcome for r in refused] == [ParticipantOutcome.NOT_AUTHORIZED, ParticipantOutcome.OK]
    left = await events.wait_for(changed(C, GroupAction.LEFT))
    assert isinstance(left, GroupChanged) and left.reason == "removed" and left.actor_jid == jid(PB)
    demoted = await engine.update_group_participants(B, info.jid, ParticipantAction.DEMOTE, (jid(PA),))
    assert demoted[0].outcome is ParticipantOutcome.NOT_AUTHORIZED
    roles = {p.jid: (p.is_admin, p.is_super_admin) for p in (await engine.group_info(A, info.jid)).participants}
    assert roles == {jid(PA): (True, True), jid(PB): (True, False)}


async def test_locked_and_announce_groups_hold_non_admins_back(engine: SandboxEngine, events: Recorder) -> None:
    info, _ = await engine.create_group(A, "Team", (jid(PB),))
    await engine.set_group_subject(B, info.jid, "Renamed by a member")  # not locked: anyone edits the info
    renamed = await events.wait_for(changed(A, GroupAction.SUBJECT))
    assert isinstance(renamed, GroupChanged) and renamed.subject == "Renamed by a member"
    with pytest.raises(GroupForbidden):
        await engine.set_group_locked(B, info.jid, True)  # settings: admins only
    await engine.set_group_locked(A, info.jid, True)
    locked = await events.wait_for(changed(B, GroupAction.LOCKED))
    assert isinstance(locked, GroupChanged) and locked.locked is True
    with pytest.raises(GroupForbidden):
        await engine.set_group_description(B, info.jid, "nope")
    await engine.set_group_announce(A, info.jid, True)
    with pytest.raises(SendRejected):
        await engine.send(B, info.jid, Text(body="may I?"), "m2")
    await engine.send(A, info.jid, Text(body="admins only"), "m3")
    assert (await engine.group_info(B, info.jid)).announce is True


async def test_invite_links_join_reset_and_leave(engine: SandboxEngine, events: Recorder) -> None:
    info, _ = await engine.create_group(A, "Team", ())
    with pytest.raises(GroupNotFound):
        await engine.group_invite_link(B, info.jid)
    link = await engine.group_invite_link(A, info.jid)
    code = link.rsplit("/", 1)[1]
    assert await engine.join_group(B, code) == info.jid
    joined = await events.wait_for(changed(A, GroupAction.JOIN_BY_LINK))
    assert isinstance(joined, GroupChanged) and joined.participants == (jid(PB),)
    mine = await events.wait_for(changed(B, GroupAction.JOINED))
    assert isinstance(mine, GroupChanged) and mine.reason == "invite"
    new_link = await engine.group_invite_link(A, info.jid, reset=True)
    assert new_link != link
    with pytest.raises(InviteInvalid):
        await engine.join_group(C, code)
    await engine.leave_group(B, info.jid)
    gone = await events.wait_for(changed(A, GroupAction.LEAVE))
    assert isinstance(gone, GroupChanged) and gone.participants == (jid(PB),)
    own = await events.wait_for(changed(B, GroupAction.LEFT))
    assert isinstance(own, GroupChanged) and own.reason == "left"
    with pytest.raises(GroupNotFound):
        await engine.send(B, info.jid, Text(body="still there?"), "m4")


async def test_a_reaction_in_a_group_names_its_message_from_each_readers_side(
    engine: SandboxEngine, events: Recorder
) -> None:
    info, _ = await engine.create_group(A, "Team", (jid(PB), jid(PC)))
    sent = await engine.send(A, info.jid, Text(body="vote on this"), "m1")
    await events.wait_for(lambda e: isinstance(e, InboundMessage) and e.ref == B)
    reaction = Reaction(key=MessageKey(id=sent.message_id, from_me=False, sender_jid=jid(PA)), emoji="👍")
    await engine.send(B, info.jid, reaction, "r1")
    for reader, mine in ((A, True), (C, False)):
        got = await events.wait_for(
            lambda e, r=reader: isinstance(e, InboundMessage) and e.ref == r and isinstance(e.content, Reaction)
        )
        assert isinstance(got, InboundMessage) and isinstance(got.content, Reaction)
        assert got.content.key.id == sent.message_id and got.content.key.from_me is mine
        assert got.content.key.sender_jid == jid(PA) and got.sender_jid == jid(PB)


async def test_a_group_that_approves_new_participants_takes_requests_that_admins_answer(
    engine: SandboxEngine, events: Recorder
) -> None:
    info, _ = await engine.create_group(A, "Vetted", (jid(PC),))
    with pytest.raises(GroupForbidden):  # a member who is not an admin cannot switch it
        await engine.set_group_join_approval(C, info.jid, True)
    await engine.set_group_join_approval(A, info.jid, True)
    switched = await events.wait_for(changed(C, GroupAction.JOIN_APPROVAL))
    assert isinstance(switched, GroupChanged) and switched.join_approval is True
    assert (await engine.group_info(A, info.jid)).join_approval is True
    code = (await engine.group_invite_link(A, info.jid)).rsplit("/", 1)[1]

    # joining by link asks: not a member yet; only the admins hear the request
    assert await engine.join_group(B, code) == info.jid
    with pytest.raises(GroupNotFound):
        await engine.group_info(B, info.jid)
    asked = await events.wait_for(changed(A, GroupAction.REQUESTED))
    assert isinstance(asked, GroupChanged) and asked.participants == (jid(PB),)
    assert not [e for e in events.events if changed(C, GroupAction.REQUESTED)(e)]
    assert await engine.join_group(B, code) == info.jid  # asking again changes nothing
    [request] = await engine.group_requests(A, info.jid)
    assert request.jid == jid(PB) and request.requested_at is not None
    with pytest.raises(GroupForbidden):
        await engine.group_requests(C, info.jid)
    with pytest.raises(GroupForbidden):
        await engine.answer_group_requests(C, info.jid, RequestAction.APPROVE, (jid(PB),))

    # approved: a member, told as every join is; nobody else's request to answer
    results = await engine.answer_group_requests(A, info.jid, RequestAction.APPROVE, (jid(PB), jid(SIMULATED)))
    assert [r.outcome for r in results] == [ParticipantOutcome.OK, ParticipantOutcome.NO_REQUEST]
    mine = await events.wait_for(changed(B, GroupAction.JOINED))
    assert isinstance(mine, GroupChanged) and mine.reason == "approved"
    heard = await events.wait_for(changed(C, GroupAction.APPROVED))
    assert isinstance(heard, GroupChanged) and heard.participants == (jid(PB),)
    assert jid(PB) in {p.jid for p in (await engine.group_info(B, info.jid)).participants}
    assert await engine.group_requests(A, info.jid) == []

    # rejected: still out, told to the admins; switched off, what waits is approved
    await engine.leave_group(B, info.jid)
    await engine.join_group(B, code)
    rejected = await engine.answer_group_requests(A, info.jid, RequestAction.REJECT, (jid(PB),))
    assert [r.outcome for r in rejected] == [ParticipantOutcome.OK]
    assert await events.wait_for(changed(A, GroupAction.REJECTED))
    with pytest.raises(GroupNotFound):
        await engine.group_info(B, info.jid)
    await engine.join_group(B, code)
    await engine.set_group_join_approval(A, info.jid, False)
    assert jid(PB) in {p.jid for p in (await engine.group_info(B, info.jid)).participants}
    assert await engine.group_requests(A, info.jid) == []
    await engine.leave_group(B, info.jid)
    await engine.join_group(B, code)  # no approval now: in at once
    assert jid(PB) in {p.jid for p in (await engine.group_info(B, info.jid)).participants}


def test_approving_into_a_full_group_is_group_full_and_switching_off_drops_what_has_no_room() -> None:
    at = datetime(2026, 11, 30, tzinfo=UTC)
    group = SandboxGroup(jid="120363000000000001@g.us", subject="Full", owner=PA, created_at=at, invite_code="c")
    group.members = {PA: "superadmin", **{f"55119{n:08d}": "member" for n in range(MAX_PARTICIPANTS - 2)}}
    group.join_approval = True
    assert sandbox_groups.join(group, PB, at) == "requested"
    assert sandbox_groups.join(group, PC, at) == "requested"
    assert sandbox_groups.join(group, PA, at) == "in"
    [first] = sandbox_groups.answer_requests(group, PA, RequestAction.APPROVE, [(jid(PB), PB)])
    assert first.outcome is ParticipantOutcome.OK and len(group.members) == MAX_PARTICIPANTS
    [second] = sandbox_groups.answer_requests(group, PA, RequestAction.APPROVE, [(jid(PC), PC)])
    assert second.outcome is ParticipantOutcome.GROUP_FULL and PC in group.requests
    assert sandbox_groups.set_join_approval(group, PA, False) == []
    assert group.requests == {} and PC not in group.members
