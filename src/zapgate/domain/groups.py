"""Groups: what a group is (info, participants, settings), what can change in one, and WhatsApp's limits.

Pure: the engines report groups in these types, the worker stores them, the API checks input against the
limits here. WhatsApp's own rules about who may do what are the engines' (the sandbox enforces them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from zapgate.domain.events import EventType
from zapgate.domain.phones import GROUP_SERVER
from zapgate.domain.storable import storable, storable_or_none
from zapgate.errors import InvalidRequest

MAX_SUBJECT = 100  # characters of a group's subject (WhatsApp's limit)
MAX_DESCRIPTION = 2048  # characters of a group's description
MAX_PARTICIPANTS = 1024  # members of a group, its creator included
MAX_CHANGE = 256  # participants changed in one request
INVITE_LINK_PREFIX = "https://chat.whatsapp.com/"
INVITE_MESSAGE_LIFETIME = timedelta(days=3)  # how long an invitation sent by message is good for (WhatsApp's)

# `<creator digits>-<seconds>@g.us` (older groups) or `<digits>@g.us` (WhatsApp's newer form: 120363…)
_GROUP_JID = re.compile(r"[0-9]{5,20}(-[0-9]{1,20})?@g\.us", re.ASCII)
_GROUP_USER = re.compile(r"[0-9]{5,20}(-[0-9]{1,20})?", re.ASCII)
_INVITE_CODE = re.compile(r"[A-Za-z0-9_-]{6,64}", re.ASCII)


class ParticipantAction(StrEnum):
    """What an admin does to participants."""

    ADD = "add"
    REMOVE = "remove"
    PROMOTE = "promote"
    DEMOTE = "demote"


class RequestAction(StrEnum):
    """How an admin answers requests to join (a group that approves new participants)."""

    APPROVE = "approve"
    REJECT = "reject"


class GroupAction(StrEnum):
    """What changed in a group (one `GroupChanged` event each)."""

    SUBJECT = "subject"
    DESCRIPTION = "description"
    PICTURE = "picture"
    ANNOUNCE = "announce"  # only admins send (or everyone again)
    LOCKED = "locked"  # only admins edit the group's info (or everyone again)
    INVITE_RESET = "invite-reset"  # the invite link was revoked (a new one replaces it)
    JOIN_APPROVAL = "join-approval"  # joining by link needs an admin's approval (or no longer)
    ADD = "add"  # participants added by an admin
    REMOVE = "remove"  # participants removed by an admin
    PROMOTE = "promote"
    DEMOTE = "demote"
    JOIN_BY_LINK = "join-by-link"  # participants joined through the invite link
    LEAVE = "leave"  # participants left by themselves
    REQUESTED = "requested"  # asked to join (by link, approval on): told to the admins
    APPROVED = "approved"  # join requests an admin approved: they are members now
    REJECTED = "rejected"  # join requests an admin rejected: told to the admins
    JOINED = "joined"  # the session itself is now in the group (created it, was added, joined by link)
    LEFT = "left"  # the session itself is no longer in the group (left, or was removed)


SETTING_ACTIONS = frozenset(
    {
        GroupAction.SUBJECT,
        GroupAction.DESCRIPTION,
        GroupAction.PICTURE,
        GroupAction.ANNOUNCE,
        GroupAction.LOCKED,
        GroupAction.INVITE_RESET,
        GroupAction.JOIN_APPROVAL,
    }
)
PARTICIPANT_ACTIONS = frozenset(
    {
        GroupAction.ADD,
        GroupAction.REMOVE,
        GroupAction.PROMOTE,
        GroupAction.DEMOTE,
        GroupAction.JOIN_BY_LINK,
        GroupAction.LEAVE,
        GroupAction.REQUESTED,
        GroupAction.APPROVED,
        GroupAction.REJECTED,
    }
)


class ParticipantOutcome(StrEnum):
    """What became of one participant of a participants change (as whatsmeow reports each one)."""

    OK = "ok"
    NOT_AUTHORIZED = "not_authorized"  # the session may not do this to them (the creator, an admin's role, ...)
    NOT_IN_GROUP = "not_in_group"
    ALREADY_IN = "already_in"
    NOT_ON_WHATSAPP = "not_on_whatsapp"
    GROUP_FULL = "group_full"
    ALREADY_ADMIN = "already_admin"
    NOT_ADMIN = "not_admin"
    NO_REQUEST = "no_request"  # answering a join request nobody made (or answered already)
    FAILED = "failed"  # another reason (`code` says WhatsApp's number)


@dataclass(frozen=True, slots=True)
class GroupParticipant:
    """A member of a group: by phone JID when known (else LID), with its LID, and its role."""

    jid: str
    lid: str | None = None
    is_admin: bool = False
    is_super_admin: bool = False  # the creator: an admin nobody can remove or demote


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """What a group is now."""

    jid: str
    subject: str
    description: str = ""
    owner_jid: str | None = None
    announce: bool = False
    locked: bool = False
    picture_id: str | None = None
    created_at: datetime | None = None
    participants: tuple[GroupParticipant, ...] = ()
    join_approval: bool | None = False  # joining by link needs an admin's approval; None: the engine cannot tell


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """Someone who asked to join a group that approves new participants, and when."""

    jid: str
    requested_at: datetime | None = None


def storable_info(info: GroupInfo) -> GroupInfo:
    """`info` with every text WhatsApp sent made storable (any admin's subject or description may hold a NUL)."""
    return replace(
        info,
        jid=storable(info.jid),
        subject=storable(info.subject),
        description=storable(info.description),
        owner_jid=storable_or_none(info.owner_jid),
        picture_id=storable_or_none(info.picture_id),
        participants=tuple(replace(p, jid=storable(p.jid), lid=storable_or_none(p.lid)) for p in info.participants),
    )


@dataclass(frozen=True, slots=True)
class ParticipantResult:
    """One participant's outcome of a participants change."""

    jid: str
    outcome: ParticipantOutcome
    code: int | None = None  # WhatsApp's number for it, when there is one


def group_jid(raw: str, *, field: str = "groupId") -> str:
    """Return the group JID `raw` names (the JID itself, or its user part); raise InvalidRequest naming `field`."""
    value = raw.strip()
    if _GROUP_JID.fullmatch(value):
        return value
    if _GROUP_USER.fullmatch(value):
        return f"{value}@{GROUP_SERVER}"
    raise InvalidRequest(
        f"{field}: a group id is expected: 120363012345678901@g.us, 5511999999999-1700000000@g.us or the part before @",
        field=field,
    )


def is_group_jid(value: str) -> bool:
    """Return whether `value` is a group's JID."""
    return _GROUP_JID.fullmatch(value) is not None


def invite_code(raw: str, *, field: str = "link") -> str:
    """Return the invite code of `raw`: a chat.whatsapp.com link or the code itself; raise naming `field`."""
    value = raw.strip()
    for prefix in (INVITE_LINK_PREFIX, "http://chat.whatsapp.com/", "chat.whatsapp.com/"):
        if value.startswith(prefix):
            value = value[len(prefix) :]
            break
    value = value.split("?", 1)[0].rstrip("/")
    if _INVITE_CODE.fullmatch(value) is None:
        raise InvalidRequest(
            f"{field}: an invite link (https://chat.whatsapp.com/CODE) or its code expected", field=field
        )
    return value


def check_subject(subject: str, *, field: str = "subject") -> str:
    """Return `subject` stripped if WhatsApp takes it (1 to MAX_SUBJECT characters); raise naming `field`."""
    value = subject.strip()
    if not 1 <= len(value) <= MAX_SUBJECT:
        raise InvalidRequest(f"{field}: 1 to {MAX_SUBJECT} characters expected", field=field, limit=MAX_SUBJECT)
    return value


def check_description(description: str, *, field: str = "description") -> str:
    """Return `description` if WhatsApp takes it (at most MAX_DESCRIPTION characters; empty removes it)."""
    if len(description) > MAX_DESCRIPTION:
        raise InvalidRequest(
            f"{field}: at most {MAX_DESCRIPTION} characters expected", field=field, limit=MAX_DESCRIPTION
        )
    return description


# -- the public shapes (a contract: the API's answers and the events' bodies) --


def participant_out(participant: GroupParticipant) -> dict[str, Any]:
    """A participant as the API and events show it."""
    return {
        "jid": participant.jid,
        "lid": participant.lid,
        "isAdmin": participant.is_admin,
        "isSuperAdmin": participant.is_super_admin,
    }


def group_out(info: GroupInfo) -> dict[str, Any]:
    """A group as the API and events show it."""
    return {
        "id": info.jid,
        "subject": info.subject,
        "description": info.description,
        "owner": info.owner_jid,
        "announce": info.announce,
        "locked": info.locked,
        "joinApproval": info.join_approval,
        "pictureId": info.picture_id,
        "createdAt": info.created_at.isoformat() if info.created_at is not None else None,
        "size": len(info.participants),
        "participants": [participant_out(p) for p in info.participants],
    }


_SETTING_FIELDS = {
    GroupAction.SUBJECT: "subject",
    GroupAction.DESCRIPTION: "description",
    GroupAction.PICTURE: "pictureId",
    GroupAction.ANNOUNCE: "announce",
    GroupAction.LOCKED: "locked",
    GroupAction.JOIN_APPROVAL: "joinApproval",
}


def request_out(request: JoinRequest) -> dict[str, Any]:
    """A join request as the API shows it."""
    at = request.requested_at
    return {"jid": request.jid, "requestedAt": at.isoformat() if at is not None else None}


def group_event(
    action: GroupAction,
    group_jid: str,
    *,
    actor: str | None,
    timestamp: datetime,
    participants: tuple[str, ...] = (),
    value: object = None,
    reason: str | None = None,
    info: GroupInfo | None = None,
) -> tuple[EventType, dict[str, Any]]:
    """The event type and body of a group change (`value`: the new value of the setting `action` names)."""
    body: dict[str, Any] = {"groupId": group_jid, "actor": actor, "timestamp": timestamp.isoformat()}
    if action is GroupAction.JOINED:
        body.update(reason=reason, group=None if info is None else group_out(info))
        return EventType.GROUP_JOIN, body
    if action is GroupAction.LEFT:
        body["reason"] = reason
        return EventType.GROUP_LEAVE, body
    if action in PARTICIPANT_ACTIONS:
        body.update(action=action.value, participants=list(participants))
        return EventType.GROUP_PARTICIPANTS, body
    body["action"] = action.value
    field = _SETTING_FIELDS.get(action)
    if field is not None:
        body[field] = value
    if reason is not None:
        body["reason"] = reason  # a picture: changed or removed (whatsmeow tells no id)
    return EventType.GROUP_UPDATE, body
