"""Groups on the whatsmeow engine: neonize 0.5.2's group protobufs in, zapgate's group types and events out.

The calls themselves are `WhatsmeowEngine`'s (engines/whatsmeow.py); this module translates what they answer
and the two group events neonize reports: `GroupInfoEvent` (a change: whatsmeow's events.GroupInfo, one
notification that may carry several changes at once) and `JoinedGroup` (the session is now in a group: it
created it, was added, or joined by link; with the whole group). Field names are neonize's Neonize.proto.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from zapgate.domain.groups import (
    GroupAction,
    GroupInfo,
    GroupParticipant,
    JoinRequest,
    ParticipantAction,
    ParticipantOutcome,
    ParticipantResult,
)
from zapgate.domain.phones import GROUP_SERVER, LID_SERVER
from zapgate.engines.base import (
    EngineError,
    GroupChanged,
    GroupForbidden,
    GroupFull,
    GroupNotFound,
    InviteInvalid,
    NotConnected,
    SessionRef,
)

JidText = Callable[[Any], str | None]  # a neonize JID as whatsmeow spells it (without device), None if empty


def _jid(jid_text: JidText, jid: Any) -> str | None:
    return jid_text(jid)


def participant_of(raw: Any, jid_text: JidText) -> GroupParticipant:
    """A neonize GroupParticipant: phone JID when known (PhoneNumber, else JID), with its LID."""
    jid = _jid(jid_text, raw.JID)
    phone = _jid(jid_text, raw.PhoneNumber) if raw.HasField("PhoneNumber") else None
    lid = _jid(jid_text, raw.LID) if raw.HasField("LID") else None
    if lid is None and jid is not None and jid.endswith("@" + LID_SERVER):
        lid = jid
    return GroupParticipant(
        jid=phone or jid or lid or "",
        lid=lid,
        is_admin=bool(raw.IsAdmin or raw.IsSuperAdmin),
        is_super_admin=bool(raw.IsSuperAdmin),
    )


def group_info_of(raw: Any, jid_text: JidText) -> GroupInfo:
    """A neonize GroupInfo as ours (the participants WhatsApp refused at creation left out)."""
    owner = (_jid(jid_text, raw.OwnerPN) if raw.HasField("OwnerPN") else None) or _jid(jid_text, raw.OwnerJID)
    created = int(raw.GroupCreated or 0)
    return GroupInfo(
        jid=_jid(jid_text, raw.JID) or "",
        subject=str(raw.GroupName.Name),
        description="" if raw.GroupTopic.TopicDeleted else str(raw.GroupTopic.Topic),
        owner_jid=owner,
        announce=bool(raw.GroupAnnounce.IsAnnounce),
        locked=bool(raw.GroupLocked.isLocked),
        join_approval=None,  # neonize 0.5.2's GroupInfo carries no GroupMembershipApprovalMode (Neonize.proto)
        created_at=datetime.fromtimestamp(created, UTC) if created else None,
        participants=tuple(participant_of(p, jid_text) for p in raw.Participants if not p.Error),
    )


def join_request_of(raw: Any, jid_text: JidText) -> JoinRequest:
    """A neonize GroupParticipantRequest: who asked to join (`Participant`) and when (`TimeAt`, read as Unix
    seconds, as whatsmeow's RequestedAt; 0: not told)."""
    at = int(raw.TimeAt or 0)
    return JoinRequest(
        jid=_jid(jid_text, raw.Participant) or "", requested_at=datetime.fromtimestamp(at, UTC) if at else None
    )


def creation_results(raw: Any, wanted: Sequence[str], jid_text: JidText) -> tuple[ParticipantResult, ...]:
    """Each wanted participant's outcome of CreateGroup: as whatsmeow lists them, with their `Error` codes."""
    return participant_results(ParticipantAction.ADD, wanted, list(raw.Participants), jid_text)


def participant_results(
    action: ParticipantAction, wanted: Sequence[str], answered: Sequence[Any], jid_text: JidText
) -> tuple[ParticipantResult, ...]:
    """Each wanted participant's outcome, from the participants whatsmeow answered (matched by user, any JID).

    whatsmeow's UpdateGroupParticipants answers one GroupParticipant per participant, `Error` 0 when it
    went through, else WhatsApp's code (403, 404, 409, 500, ...); it may name them by LID.
    """
    by_user: dict[str, Any] = {}
    for raw in answered:
        for field in ("JID", "PhoneNumber", "LID"):
            if raw.HasField(field):
                text = _jid(jid_text, getattr(raw, field))
                if text:
                    by_user.setdefault(_user(text), raw)
    results = []
    for jid in wanted:
        raw = by_user.get(_user(jid))
        if raw is None:
            results.append(ParticipantResult(jid=jid, outcome=ParticipantOutcome.FAILED))
            continue
        code = int(raw.Error or 0)
        results.append(ParticipantResult(jid=jid, outcome=outcome_of(action, code), code=code or 200))
    return tuple(results)


def outcome_of(action: ParticipantAction, code: int) -> ParticipantOutcome:
    """What WhatsApp's code for one participant means, for `action`."""
    if code in (0, 200):
        return ParticipantOutcome.OK
    if code in (401, 403):
        return ParticipantOutcome.NOT_AUTHORIZED
    if code == 404:
        return (
            ParticipantOutcome.NOT_ON_WHATSAPP if action is ParticipantAction.ADD else ParticipantOutcome.NOT_IN_GROUP
        )
    if code == 409:
        return ParticipantOutcome.ALREADY_IN if action is ParticipantAction.ADD else ParticipantOutcome.FAILED
    if code == 500 and action is ParticipantAction.ADD:
        return ParticipantOutcome.GROUP_FULL
    return ParticipantOutcome.FAILED


def translate_group_info(
    ref: SessionRef, event: Any, own_users: Collection[str], jid_text: JidText
) -> list[GroupChanged]:
    """The GroupChanged events of one neonize GroupInfoEvent (whatsmeow's events.GroupInfo), in a fixed order."""
    group = _jid(jid_text, event.JID) or ""
    actor = _jid(jid_text, event.Sender) if event.HasField("Sender") else None
    at = datetime.fromtimestamp(int(event.Timestamp), UTC) if event.Timestamp else datetime.now(UTC)
    changes: list[GroupChanged] = []

    def add(action: GroupAction, **fields: Any) -> None:
        changes.append(GroupChanged(ref=ref, group_jid=group, action=action, timestamp=at, actor_jid=actor, **fields))

    for action, fields in _settings_of(event):
        add(action, **fields)
    joined = _others(event.Join, own_users, jid_text)  # the session's own join comes as JoinedGroup
    if joined:
        by_link = event.JoinReason == "invite"
        add(GroupAction.JOIN_BY_LINK if by_link else GroupAction.ADD, participants=joined)
    leavers = [text for text in (_jid(jid_text, j) for j in event.Leave) if text]
    me_gone = [text for text in leavers if _user(text) in own_users]
    others = [text for text in leavers if _user(text) not in own_users]
    by_themselves = actor is not None and all(_user(text) == _user(actor) for text in leavers)
    if others:
        add(GroupAction.LEAVE if by_themselves else GroupAction.REMOVE, participants=tuple(others))
    if me_gone:
        add(GroupAction.LEFT, reason="left" if by_themselves else "removed")
    promoted = _all(event.Promote, jid_text)
    if promoted:
        add(GroupAction.PROMOTE, participants=promoted)
    demoted = _all(event.Demote, jid_text)
    if demoted:
        add(GroupAction.DEMOTE, participants=demoted)
    for node in event.UnknownChanges:
        request = _request_change(node, actor, jid_text)
        if request is not None:
            add(request[0], participants=request[1])
    return changes


def _settings_of(event: Any) -> list[tuple[GroupAction, dict[str, Any]]]:
    """The setting changes of a GroupInfoEvent, each with its new value, in a fixed order."""
    found: list[tuple[GroupAction, dict[str, Any]]] = []
    if event.HasField("Name"):
        found.append((GroupAction.SUBJECT, {"subject": str(event.Name.Name)}))
    if event.HasField("Topic"):
        found.append(
            (GroupAction.DESCRIPTION, {"description": "" if event.Topic.TopicDeleted else str(event.Topic.Topic)})
        )
    if event.HasField("Locked"):
        found.append((GroupAction.LOCKED, {"locked": bool(event.Locked.isLocked)}))
    if event.HasField("Announce"):
        found.append((GroupAction.ANNOUNCE, {"announce": bool(event.Announce.IsAnnounce)}))
    if event.HasField("NewInviteLink"):
        found.append((GroupAction.INVITE_RESET, {}))
    return found


def _request_change(node: Any, actor: str | None, jid_text: JidText) -> tuple[GroupAction, tuple[str, ...]] | None:
    """A join request in a group notification's child that whatsmeow does not parse (its UnknownChanges, which
    neonize encodes as Nodes): `created_membership_requests` (someone asked; the admins are told) and
    `revoked_membership_requests` by an admin (rejected; the requester's own withdrawal is not told).

    Who asked is the child's `participant` children (`jid`), else the notification's sender, as Baileys reads
    the same nodes (its `created_membership_requests` stub).
    """
    if node.Tag not in ("created_membership_requests", "revoked_membership_requests"):
        return None
    named = tuple(
        text for child in node.Nodes if child.Tag == "participant" for text in (_attr_jid(child, jid_text),) if text
    )
    people = named or ((actor,) if actor else ())
    if not people:
        return None
    if node.Tag == "created_membership_requests":
        return GroupAction.REQUESTED, people
    rejected = tuple(p for p in people if actor is None or _user(p) != _user(actor))
    return (GroupAction.REJECTED, rejected) if rejected else None


def _attr_jid(node: Any, jid_text: JidText) -> str | None:
    for attr in node.Attrs:
        if attr.name == "jid":
            if attr.HasField("jid"):
                return _jid(jid_text, attr.jid)
            return attr.text or None
    return None


def translate_joined_group(ref: SessionRef, event: Any, jid_text: JidText) -> GroupChanged:
    """The JOINED event of a neonize JoinedGroup: the session created a group, was added, or joined by link."""
    info = group_info_of(event.GroupInfo, jid_text)
    sender = (_jid(jid_text, event.SenderPN) if event.HasField("SenderPN") else None) or (
        _jid(jid_text, event.Sender) if event.HasField("Sender") else None
    )
    if event.Reason == "invite":
        reason = "invite"
    elif event.Type == "new" or event.CreateKey:
        reason = "created"
    else:
        reason = "added"
    return GroupChanged(
        ref=ref,
        group_jid=info.jid,
        action=GroupAction.JOINED,
        timestamp=datetime.now(UTC),
        actor_jid=sender,
        reason=reason,
        info=info,
    )


def translate_picture(ref: SessionRef, event: Any, jid_text: JidText) -> GroupChanged | None:
    """The PICTURE change of a neonize Picture event about a group (None for a person's picture).

    neonize's Picture carries no picture id (whatsmeow's PictureID is not in Neonize.proto): the event says
    that it changed, or was removed (`reason`), and by whom.
    """
    group = _jid(jid_text, event.JID) or ""
    if not group.endswith("@" + GROUP_SERVER):
        return None
    return GroupChanged(
        ref=ref,
        group_jid=group,
        action=GroupAction.PICTURE,
        timestamp=datetime.fromtimestamp(int(event.Timestamp), UTC) if event.Timestamp else datetime.now(UTC),
        actor_jid=_jid(jid_text, event.Author) if event.HasField("Author") else None,
        reason="removed" if event.Remove else "changed",
    )


# whatsmeow's group errors (errors.go) and the IQ statuses of its group queries
_NOT_FOUND = ("group not found", "not participating", "item-not-found", "status 404")
_INVITE = ("invite link is not valid", "invite link has been revoked", "status 410", "gone")
_FORBIDDEN = ("unauthorized", "forbidden", "not-authorized", "status 401", "status 403")
_FULL = ("status 406", "not-acceptable", "group is full")


def group_error(exc: EngineError, *, inviting: bool = False) -> EngineError:
    """Map an error of a group call (translated once already) to the group kinds WhatsApp's answer means."""
    if isinstance(exc, NotConnected):
        return exc
    lowered = exc.message.lower()
    if inviting and any(s in lowered for s in (*_INVITE, "status 404", "item-not-found")):
        return InviteInvalid(f"whatsapp does not know this invite: {exc.message}")
    if any(s in lowered for s in _NOT_FOUND):
        return GroupNotFound(f"whatsapp knows no such group with this account in it: {exc.message}")
    if any(s in lowered for s in _FORBIDDEN):
        return GroupForbidden(f"the session's role in the group does not allow this: {exc.message}")
    if any(s in lowered for s in _FULL):
        return GroupFull(f"the group is full: {exc.message}")
    return exc


def _user(jid: str) -> str:
    return jid.partition("@")[0].partition(":")[0]


def _all(jids: Any, jid_text: JidText) -> tuple[str, ...]:
    return tuple(text for text in (_jid(jid_text, j) for j in jids) if text)


def _others(jids: Any, own_users: Collection[str], jid_text: JidText) -> tuple[str, ...]:
    return tuple(text for text in _all(jids, jid_text) if _user(text) not in own_users)
