"""The sandbox network's groups: their state and WhatsApp's rules on who may change what.

A group lives on the network (in memory, or in the registry tables `sandbox_groups` and
`sandbox_group_members` for every worker), named by a JID of WhatsApp's newer form (`120363` and 12 digits
`@g.us`), with a subject, a description, a picture id, settings (announce: only admins send; locked: only
admins edit its info), an invite code and its members by phone number (sandbox sessions' numbers and simulated
phones alike), each a member, an admin or the super admin (its creator).

The rules, as WhatsApp applies them (each function below raises what whatsmeow's calls would):
- only members see a group or change anything in it (`GroupNotFound` for the others, as WhatsApp's 404);
- the subject, description and picture: any member, unless the group is locked (then admins);
- settings, participants and the invite link: admins only (`GroupForbidden`);
- per participant: adding someone without WhatsApp (not_on_whatsapp), already in (already_in), past
  MAX_PARTICIPANTS (group_full); removing or demoting the super admin (not_authorized); removing, promoting
  or demoting someone not in it (not_in_group);
- when the last admin leaves, the oldest member becomes one, as WhatsApp does;
- a group may approve new participants (`join_approval`, admins switch it): joining by link or invite then
  makes a request (`requests`, oldest first) that an admin approves (a member then) or rejects; switching it
  off approves every pending request, as WhatsApp does.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from zapgate.domain.groups import (
    MAX_PARTICIPANTS,
    ParticipantAction,
    ParticipantOutcome,
    ParticipantResult,
    RequestAction,
)
from zapgate.engines.base import GroupForbidden, GroupFull, GroupNotFound

MEMBER, ADMIN, SUPER_ADMIN = "member", "admin", "superadmin"
_ADMINS = (ADMIN, SUPER_ADMIN)
T = TypeVar("T")
_INVITE_ALPHABET = string.ascii_letters + string.digits


@dataclass
class SandboxGroup:
    """A group of the simulated network. `members` maps phone numbers to roles, oldest member first."""

    jid: str
    subject: str
    owner: str  # the creator's number
    created_at: datetime
    invite_code: str
    description: str = ""
    picture_id: str | None = None
    announce: bool = False
    locked: bool = False
    members: dict[str, str] = field(default_factory=dict)
    join_approval: bool = False
    requests: dict[str, str] = field(default_factory=dict)  # number -> when it asked (ISO), oldest first

    def role(self, phone: str | None) -> str | None:
        return None if phone is None else self.members.get(phone)

    def is_admin(self, phone: str | None) -> bool:
        return self.role(phone) in _ADMINS

    def to_mail(self) -> dict[str, Any]:
        """The group as mail carries it (JSON)."""
        return {
            "jid": self.jid,
            "subject": self.subject,
            "owner": self.owner,
            "created_at": self.created_at.isoformat(),
            "description": self.description,
            "picture_id": self.picture_id,
            "announce": self.announce,
            "locked": self.locked,
            "join_approval": self.join_approval,
            "members": [[phone, role] for phone, role in self.members.items()],
        }

    @classmethod
    def from_mail(cls, raw: dict[str, Any]) -> SandboxGroup:
        """Read what `to_mail` wrote (without the invite code: members ask for it)."""
        return cls(
            jid=str(raw["jid"]),
            subject=str(raw["subject"]),
            owner=str(raw["owner"]),
            created_at=datetime.fromisoformat(raw["created_at"]),
            invite_code="",
            description=str(raw.get("description") or ""),
            picture_id=raw.get("picture_id"),
            announce=bool(raw.get("announce")),
            locked=bool(raw.get("locked")),
            join_approval=bool(raw.get("join_approval")),
            members={str(phone): str(role) for phone, role in raw.get("members") or ()},
        )


def new_group_jid() -> str:
    """A new group JID of WhatsApp's newer form."""
    return f"120363{secrets.randbelow(10**12):012d}@g.us"


def new_invite_code() -> str:
    """A new invite code (22 letters and digits, as WhatsApp's)."""
    return "".join(secrets.choice(_INVITE_ALPHABET) for _ in range(22))


def require_member(group: SandboxGroup, phone: str) -> None:
    """Raise GroupNotFound unless `phone` is in `group` (WhatsApp shows a group to its members only)."""
    if phone not in group.members:
        raise GroupNotFound(f"no group {group.jid} with this account in it")


def require_admin(group: SandboxGroup, phone: str, what: str) -> None:
    """Raise unless `phone` is an admin of `group`."""
    require_member(group, phone)
    if not group.is_admin(phone):
        raise GroupForbidden(f"only the group's admins can {what}")


def require_editor(group: SandboxGroup, phone: str, what: str) -> None:
    """Raise unless `phone` may edit the group's info (any member; admins only when locked)."""
    require_member(group, phone)
    if group.locked and not group.is_admin(phone):
        raise GroupForbidden(f"the group is locked: only its admins can {what}")


def require_sender(group: SandboxGroup, phone: str) -> None:
    """Raise unless `phone` may send to `group` (a member; an admin when only admins send)."""
    require_member(group, phone)
    if group.announce and not group.is_admin(phone):
        raise GroupForbidden("only the group's admins can send messages to it (announce)")


def change_participants(
    group: SandboxGroup, actor: str, action: ParticipantAction, targets: list[tuple[str, str | None]]
) -> list[ParticipantResult]:
    """Apply `action` by `actor` to `targets` ((JID as given, the account's number or None if it has none)).

    Returns each target's outcome, in order; only the `ok` ones changed the group.
    """
    require_admin(group, actor, f"{action.value} participants")
    results = []
    for jid, phone in targets:
        outcome = _one(group, action, phone)
        results.append(ParticipantResult(jid=jid, outcome=outcome, code=_CODES.get(outcome)))
    return results


_CODES = {
    ParticipantOutcome.OK: 200,
    ParticipantOutcome.NOT_AUTHORIZED: 403,
    ParticipantOutcome.NOT_IN_GROUP: 404,
    ParticipantOutcome.NOT_ON_WHATSAPP: 404,
    ParticipantOutcome.ALREADY_IN: 409,
    ParticipantOutcome.GROUP_FULL: 500,
    ParticipantOutcome.NO_REQUEST: 404,
}


def _one(group: SandboxGroup, action: ParticipantAction, phone: str | None) -> ParticipantOutcome:
    role = group.role(phone)
    if action is ParticipantAction.ADD:
        if phone is None:
            return ParticipantOutcome.NOT_ON_WHATSAPP
        if role is not None:
            return ParticipantOutcome.ALREADY_IN
        if len(group.members) >= MAX_PARTICIPANTS:
            return ParticipantOutcome.GROUP_FULL
        group.members[phone] = MEMBER
        return ParticipantOutcome.OK
    if phone is None or role is None:
        return ParticipantOutcome.NOT_IN_GROUP
    if role == SUPER_ADMIN and action in (ParticipantAction.REMOVE, ParticipantAction.DEMOTE):
        return ParticipantOutcome.NOT_AUTHORIZED  # nobody removes or demotes a group's creator
    if action is ParticipantAction.REMOVE:
        del group.members[phone]
        _keep_an_admin(group)
    elif action is ParticipantAction.PROMOTE:
        group.members[phone] = role if role == SUPER_ADMIN else ADMIN
    else:
        group.members[phone] = MEMBER
    return ParticipantOutcome.OK


def join(group: SandboxGroup, phone: str, at: datetime) -> str:
    """`phone` joins `group` by its invite link or an invitation: "joined", "in" (it was already), or
    "requested" (the group approves new participants: an admin answers the request made at `at`).
    Raises GroupFull."""
    if phone in group.members:
        return "in"
    if len(group.members) >= MAX_PARTICIPANTS:
        raise GroupFull("the group is full")
    if group.join_approval:
        group.requests.setdefault(phone, at.isoformat())
        return "requested"
    group.members[phone] = MEMBER
    return "joined"


def set_join_approval(group: SandboxGroup, actor: str, on: bool) -> list[str]:
    """Switch approval of new participants as the admin `actor`; switched off, the pending requests are approved
    (as many as the group has room for; the others dropped). Return the numbers approved."""
    require_admin(group, actor, "change whether new participants need approval")
    group.join_approval = on
    if on:
        return []
    approved = []
    for phone in list(group.requests):
        del group.requests[phone]
        if phone not in group.members and len(group.members) < MAX_PARTICIPANTS:
            group.members[phone] = MEMBER
            approved.append(phone)
    return approved


def pending_requests(group: SandboxGroup, actor: str) -> list[tuple[str, str]]:
    """The requests to join (number, when), oldest first: admins only."""
    require_admin(group, actor, "see the requests to join")
    return list(group.requests.items())


def answer_requests(
    group: SandboxGroup, actor: str, action: RequestAction, targets: list[tuple[str, str | None]]
) -> list[ParticipantResult]:
    """Approve or reject, as the admin `actor`, the requests of `targets` ((JID as given, its number or None)).

    Each target's outcome, in order: ok, no_request (none pending), already_in, group_full.
    """
    require_admin(group, actor, f"{action.value} requests to join")
    results = []
    for jid, phone in targets:
        outcome = _answer(group, action, phone)
        results.append(ParticipantResult(jid=jid, outcome=outcome, code=_CODES.get(outcome)))
    return results


def _answer(group: SandboxGroup, action: RequestAction, phone: str | None) -> ParticipantOutcome:
    if phone is None or phone not in group.requests:
        return ParticipantOutcome.ALREADY_IN if phone in group.members else ParticipantOutcome.NO_REQUEST
    if action is RequestAction.APPROVE:
        if len(group.members) >= MAX_PARTICIPANTS:
            return ParticipantOutcome.GROUP_FULL
        group.members[phone] = MEMBER
    del group.requests[phone]
    return ParticipantOutcome.OK


def leave(group: SandboxGroup, phone: str) -> None:
    """Take `phone` out of `group` (by itself); the oldest member becomes admin if no admin is left."""
    require_member(group, phone)
    del group.members[phone]
    _keep_an_admin(group)


def _keep_an_admin(group: SandboxGroup) -> None:
    if group.members and not any(role in _ADMINS for role in group.members.values()):
        oldest = next(iter(group.members))
        group.members[oldest] = ADMIN


class LocalGroups:
    """The groups of a `LocalSandboxNetwork` (one process)."""

    def __init__(self) -> None:
        self._groups: dict[str, SandboxGroup] = {}

    async def create_group(self, group: SandboxGroup) -> None:
        self._groups[group.jid] = group

    async def group(self, jid: str) -> SandboxGroup | None:
        found = self._groups.get(jid)
        return None if found is None else _copy(found)

    async def change_group(self, jid: str, change: Callable[[SandboxGroup], T]) -> T:
        found = self._groups.get(jid)
        if found is None:
            raise GroupNotFound(f"no group {jid}")
        copy = _copy(found)
        result = change(copy)  # raises before anything is kept
        self._groups[jid] = copy
        return result

    async def groups_of(self, phone: str) -> list[SandboxGroup]:
        return [_copy(group) for group in self._groups.values() if phone in group.members]

    async def group_of_invite(self, code: str) -> str | None:
        return next((group.jid for group in self._groups.values() if group.invite_code == code), None)


def _copy(group: SandboxGroup) -> SandboxGroup:
    return SandboxGroup(**{**group.__dict__, "members": dict(group.members), "requests": dict(group.requests)})
