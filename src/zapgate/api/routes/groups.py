"""The groups of the client's sessions: list, create, info, settings, picture, participants, invite links, join, leave.

Each call asks the session's worker (the session must be connected) and answers what WhatsApp said. Changes
reach every member as events: `group-update`, `group-participants`, `group-join` and `group-leave`. To send to
a group, POST /whatsapp/messages with `to` = the group's JID.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import Field
from starlette.datastructures import UploadFile

from zapgate.api.deps import Sessions, client_of_request, from_state
from zapgate.api.schemas import Accepted, Problem, _Body, _Request
from zapgate.domain.groups import MAX_CHANGE, MAX_DESCRIPTION, MAX_PARTICIPANTS, MAX_SUBJECT
from zapgate.domain.ids import SESSION_ID_PATTERN
from zapgate.errors import InvalidRequest
from zapgate.services.groups import MAX_PICTURE, GroupService

ClientId = Annotated[str, Depends(client_of_request)]
Groups = Annotated[GroupService, Depends(from_state("groups", GroupService))]
router = APIRouter(prefix="/whatsapp/groups", tags=["groups"])
sandbox = APIRouter(prefix="/whatsapp/sandbox", tags=["sandbox"])

_SessionId = Annotated[str, Query(alias="sessionId", pattern=SESSION_ID_PATTERN, description="The session.")]
_GroupId = Annotated[
    str,
    Path(
        min_length=5,
        max_length=64,
        description="The group's JID (`120363012345678901@g.us`) or the part before `@`.",
        examples=["120363012345678901@g.us"],
    ),
]
_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": Problem, "description": "The session's role in the group does not allow this (not an admin)."},
    404: {"model": Problem, "description": "No such session, or no such group with the session in it."},
    409: {"model": Problem, "description": "The session is not connected, or the group is full."},
    502: {"model": Problem, "description": "WhatsApp refused (the engine's reason in `reason`)."},
    504: {"model": Problem, "description": "The session's worker did not answer in time: try again."},
}
_PICTURE_PART = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        }
    }
}


class ParticipantOut(_Body):
    """A member of a group."""

    jid: str = Field(description="The phone JID when known, else the LID.")
    lid: str | None = None
    is_admin: bool
    is_super_admin: bool = Field(description="The creator: nobody can remove or demote it.")


class GroupOut(_Body):
    """A group."""

    id: str = Field(description="The group's JID.", examples=["120363012345678901@g.us"])
    subject: str
    description: str
    owner: str | None = Field(None, description="The creator's JID.")
    announce: bool = Field(description="Only admins send messages.")
    locked: bool = Field(description="Only admins edit the subject, description and picture.")
    join_approval: bool | None = Field(
        None,
        description="Joining by link or invitation needs an admin's approval (null: the engine cannot tell).",
    )
    picture_id: str | None = None
    created_at: str | None = None
    size: int = Field(description="How many participants it has.")
    participants: list[ParticipantOut]


class GroupList(_Body):
    """The groups a session is in."""

    session_id: str
    groups: list[GroupOut]


class ParticipantResultOut(_Body):
    """What became of one participant of a change."""

    jid: str
    status: str = Field(
        description="ok, not_authorized, not_in_group, already_in, not_on_whatsapp, group_full, no_request or failed.",
        examples=["ok"],
    )
    code: int | None = Field(None, description="WhatsApp's code for it (200 when it went through).")


class CreateGroupRequest(_Request):
    """A new group: the session is its creator and super admin."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN)
    subject: str = Field(min_length=1, max_length=MAX_SUBJECT, description=f"1 to {MAX_SUBJECT} characters.")
    participants: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list,
        max_length=MAX_PARTICIPANTS - 1,
        description="Phone numbers with country code, phone JIDs or LIDs.",
    )


class GroupCreated(_Body):
    """The group created, and what became of each participant asked for."""

    session_id: str
    group: GroupOut
    participants: list[ParticipantResultOut]


class UpdateGroupRequest(_Request):
    """What to change (only what is given)."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN)
    subject: str | None = Field(None, min_length=1, max_length=MAX_SUBJECT)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION, description='"" removes it.')
    announce: bool | None = Field(None, description="Only admins send messages.")
    locked: bool | None = Field(None, description="Only admins edit the group's info.")
    join_approval: bool | None = Field(
        None,
        description="Joining by link or invitation needs an admin's approval; switched off, pending requests "
        "are approved.",
    )


class GroupUpdated(_Body):
    """What changed, and the group now."""

    session_id: str
    changed: list[str]
    group: GroupOut


class PictureOut(_Body):
    """The group's new picture."""

    session_id: str
    group_id: str
    picture_id: str


class ParticipantsRequest(_Request):
    """Add, remove, promote or demote participants (admins only)."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN)
    action: Literal["add", "remove", "promote", "demote"]
    participants: list[Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=MAX_CHANGE)


class ParticipantsOut(_Body):
    """Each participant's outcome, separately: some may go through while others do not (200 either way)."""

    session_id: str
    group_id: str
    action: str
    participants: list[ParticipantResultOut]


class JoinRequestOut(_Body):
    """Someone who asked to join, waiting for an admin's answer."""

    jid: str
    requested_at: str | None = Field(None, description="When they asked (ISO 8601).")


class JoinRequestList(_Body):
    """The requests to join a group that approves new participants, oldest first."""

    session_id: str
    group_id: str
    requests: list[JoinRequestOut]


class AnswerRequestsRequest(_Request):
    """Approve or reject requests to join (admins only)."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN)
    action: Literal["approve", "reject"]
    participants: list[Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=MAX_CHANGE)


class InviteOut(_Body):
    """The group's invite link."""

    session_id: str
    group_id: str
    link: str = Field(examples=["https://chat.whatsapp.com/AbCdEfGhIjKlMnOpQrStUv"])
    code: str


class JoinRequest(_Request):
    """Join a group by its invite link, or by an invite message (`messageId`, or its parts: `groupId`...)."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN)
    link: str | None = Field(
        None, min_length=6, max_length=200, description="https://chat.whatsapp.com/CODE, or the code."
    )
    message_id: str | None = Field(
        None, min_length=1, max_length=64, description="A group_invite message the session received (our id)."
    )
    group_id: str | None = Field(None, min_length=5, max_length=64, description="An invite message's group.")
    inviter: str | None = Field(None, min_length=1, max_length=64, description="Who sent the invite message.")
    code: str | None = Field(None, min_length=1, max_length=100, description="The invite message's code.")
    expiration: int | None = Field(
        None, ge=0, le=2**40, description="When the invite message's code expires (Unix seconds)."
    )


class JoinedOut(_Body):
    """The group joined; or, for a group that approves new participants, the request made (202, `pending`)."""

    session_id: str
    group_id: str
    pending: bool = Field(False, description="The request waits for an admin's approval: not a member yet.")
    group: GroupOut | None = Field(description="The group (null while the request is pending).")


class SessionRequest(_Request):
    """The session that acts."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN)


class LeftOut(_Body):
    """The session left the group."""

    session_id: str
    group_id: str
    left: bool


@router.get("", responses=_ERRORS)
async def list_groups(client: ClientId, groups: Groups, session_id: _SessionId) -> GroupList:
    """List the groups the session is in, with their participants."""
    found = await groups.list_groups(client, session_id)
    return GroupList(session_id=session_id, groups=[GroupOut.model_validate(g) for g in found])


@router.post("", status_code=201, responses=_ERRORS)
async def create_group(body: CreateGroupRequest, client: ClientId, groups: Groups) -> GroupCreated:
    """Create a group; each participant's outcome is answered separately (one without WhatsApp is left out)."""
    made = await groups.create(client, body.session_id, body.subject, body.participants)
    return GroupCreated(
        session_id=body.session_id,
        group=GroupOut.model_validate(made["group"]),
        participants=[ParticipantResultOut.model_validate(p) for p in made["participants"]],
    )


@router.post("/join", responses={**_ERRORS, 202: {"model": JoinedOut, "description": "A request to join made."}})
async def join_group(body: JoinRequest, client: ClientId, groups: Groups, response: Response) -> JoinedOut:
    """Join a group by its invite link or an invite message (one of `link`, `messageId`, `groupId` with `inviter`,
    `code` and `expiration`); the members hear a `group-participants` event (join-by-link).

    A group that approves new participants takes a request instead: 202 with `pending` true; its admins hear
    `group-participants` (requested) and answer with POST /whatsapp/groups/{groupId}/requests.
    """
    ways = (("link", body.link), ("messageId", body.message_id), ("groupId", body.group_id))
    chosen = [name for name, given in ways if given is not None]
    if len(chosen) != 1:
        field = chosen[1] if len(chosen) > 1 else "link"
        raise InvalidRequest(
            f"{field}: give exactly one of link, messageId or groupId (with inviter, code)", field=field
        )
    if body.link is not None:
        joined = await groups.join(client, body.session_id, body.link)
    else:
        joined = await groups.join_by_invite(
            client,
            body.session_id,
            message_id=body.message_id,
            group=body.group_id,
            inviter=body.inviter,
            code=body.code,
            expiration=body.expiration,
        )
    if joined["pending"]:
        response.status_code = 202
        return JoinedOut(session_id=body.session_id, group_id=joined["groupId"], pending=True, group=None)
    return JoinedOut(
        session_id=body.session_id,
        group_id=joined["groupId"],
        pending=False,
        group=GroupOut.model_validate(joined["group"]),
    )


@router.get("/{groupId}", responses=_ERRORS)
async def get_group(groupId: _GroupId, client: ClientId, groups: Groups, session_id: _SessionId) -> GroupOut:
    """Return a group: subject, description, owner, settings, picture, participants with their roles."""
    return GroupOut.model_validate(await groups.info(client, session_id, groupId))


@router.patch("/{groupId}", responses=_ERRORS)
async def update_group(groupId: _GroupId, body: UpdateGroupRequest, client: ClientId, groups: Groups) -> GroupUpdated:
    """Change the subject, description, or settings (announce: only admins send; locked: only admins edit;
    joinApproval: joining by link needs an admin's approval).

    Settings are for admins; the subject and description too once the group is locked.
    """
    done = await groups.update(
        client,
        body.session_id,
        groupId,
        subject=body.subject,
        description=body.description,
        announce=body.announce,
        locked=body.locked,
        join_approval=body.join_approval,
    )
    return GroupUpdated(
        session_id=body.session_id, changed=done["changed"], group=GroupOut.model_validate(done["group"])
    )


@router.put("/{groupId}/picture", responses=_ERRORS, openapi_extra=_PICTURE_PART)
async def set_group_picture(
    groupId: _GroupId, request: Request, client: ClientId, groups: Groups, session_id: _SessionId
) -> PictureOut:
    """Give the group a new picture: a JPEG (multipart, part `file`), up to 2 MB."""
    request.state.session_id = session_id
    await groups.check_session(client, session_id)
    async with request.form(max_files=1, max_fields=5) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("file: a multipart/form-data part named file is required", field="file")
        image = await upload.read(MAX_PICTURE + 1)
    done = await groups.set_picture(client, session_id, groupId, image)
    return PictureOut(session_id=session_id, group_id=done["groupId"], picture_id=done["pictureId"])


@router.post("/{groupId}/participants", responses=_ERRORS)
async def update_group_participants(
    groupId: _GroupId, body: ParticipantsRequest, client: ClientId, groups: Groups
) -> ParticipantsOut:
    """Add, remove, promote or demote participants (admins only); each one's outcome separately, with 200.

    A participant may fail while the others go through: `not_authorized` (the creator cannot be removed or
    demoted), `not_in_group`, `already_in`, `not_on_whatsapp`, `group_full`.
    """
    done = await groups.change_participants(client, body.session_id, groupId, body.action, body.participants)
    return ParticipantsOut(
        session_id=body.session_id,
        group_id=done["groupId"],
        action=done["action"],
        participants=[ParticipantResultOut.model_validate(p) for p in done["participants"]],
    )


@router.get("/{groupId}/requests", responses=_ERRORS)
async def list_group_requests(
    groupId: _GroupId, client: ClientId, groups: Groups, session_id: _SessionId
) -> JoinRequestList:
    """List the requests to join the group that wait for an admin's answer (admins only), oldest first."""
    found = await groups.requests(client, session_id, groupId)
    return JoinRequestList(
        session_id=session_id,
        group_id=found["groupId"],
        requests=[JoinRequestOut.model_validate(r) for r in found["requests"]],
    )


@router.post("/{groupId}/requests", responses=_ERRORS)
async def answer_group_requests(
    groupId: _GroupId, body: AnswerRequestsRequest, client: ClientId, groups: Groups
) -> ParticipantsOut:
    """Approve or reject requests to join (admins only); each one's outcome separately, with 200.

    Approved, they are members (the members hear `group-participants` approved, each of them `group-join`
    with reason `approved`); rejected, the admins hear `group-participants` rejected. `no_request`: nobody by
    that number waits; `group_full`: no room left.
    """
    done = await groups.answer_requests(client, body.session_id, groupId, body.action, body.participants)
    return ParticipantsOut(
        session_id=body.session_id,
        group_id=done["groupId"],
        action=done["action"],
        participants=[ParticipantResultOut.model_validate(p) for p in done["participants"]],
    )


@router.get("/{groupId}/invite", responses=_ERRORS)
async def get_group_invite(groupId: _GroupId, client: ClientId, groups: Groups, session_id: _SessionId) -> InviteOut:
    """Return the group's invite link (admins only)."""
    link = await groups.invite_link(client, session_id, groupId)
    return InviteOut(session_id=session_id, group_id=link["groupId"], link=link["link"], code=link["code"])


@router.delete("/{groupId}/invite", responses=_ERRORS)
async def revoke_group_invite(groupId: _GroupId, client: ClientId, groups: Groups, session_id: _SessionId) -> InviteOut:
    """Revoke the group's invite link (admins only): the old one stops working; the new one is answered."""
    link = await groups.invite_link(client, session_id, groupId, reset=True)
    return InviteOut(session_id=session_id, group_id=link["groupId"], link=link["link"], code=link["code"])


@router.post("/{groupId}/leave", responses=_ERRORS)
async def leave_group(groupId: _GroupId, body: SessionRequest, client: ClientId, groups: Groups) -> LeftOut:
    """Leave the group; the members hear a `group-participants` event (leave), the session `group-leave`."""
    left = await groups.leave(client, body.session_id, groupId)
    return LeftOut(session_id=body.session_id, group_id=left["groupId"], left=True)


class SandboxGroupActRequest(_Request):
    """What a simulated phone does in a group (or creates one), as a member would."""

    phone_number: str = Field(min_length=1, max_length=32, description="The simulated phone that acts.")
    action: Literal[
        "create",
        "add",
        "remove",
        "promote",
        "demote",
        "subject",
        "description",
        "announce",
        "locked",
        "join",
        "leave",
        "invite",
    ]
    group_id: str | None = Field(None, max_length=64, description="The group (all but create and join).")
    participants: list[Annotated[str, Field(max_length=64)]] | None = Field(
        None, max_length=MAX_CHANGE, description="create, add...; invite: whom to send an invite message."
    )
    subject: str | None = Field(None, max_length=MAX_SUBJECT, description="create, subject.")
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    enabled: bool | None = Field(None, description="announce, locked: on or off.")
    link: str | None = Field(None, max_length=200, description="join: the invite link or code.")


@sandbox.post(
    "/sessions/{sessionId}/group-act",
    status_code=202,
    responses={
        404: {"model": Problem, "description": "No such session."},
        422: {"model": Problem, "description": "Not a sandbox session, or bad input."},
    },
)
async def sandbox_group_act(
    sessionId: str, body: SandboxGroupActRequest, client: ClientId, groups: Groups, sessions: Sessions
) -> Accepted:
    """Sandbox: a simulated phone acts in a group as a member would (create it, add or remove people, change
    settings, join by link, leave, invite people by message), told through the session; WhatsApp's rules
    apply, and what they refuse comes back as an `error` event of the session. Every member session hears the
    change as events."""
    await groups.sandbox_act(
        sessions,
        client,
        sessionId,
        phone_number=body.phone_number,
        action=body.action,
        group=body.group_id,
        participants=body.participants,
        subject=body.subject,
        description=body.description,
        enabled=body.enabled,
        link=body.link,
    )
    return Accepted(accepted=True)
