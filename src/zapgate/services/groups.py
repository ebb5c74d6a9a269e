"""Groups: what a session does in its groups, through its worker (engine calls), and what is stored of them.

Every request is checked against WhatsApp's limits here (subject, description, participants), becomes an
engine call answered by the worker that hosts the session (services/group_calls.py), and what the engine
answers about a group refreshes the stored copy (`groups`, `group_participants`). Changes reach every member
as events (group-update, group-participants, group-join, group-leave), recorded by the worker.
WhatsApp's refusals come back as errors that say what to fix: no such group (404), not allowed for the
session's role (403), the group is full (409).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from zapgate.db import groups as records
from zapgate.db import outbound
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.domain.content import GroupInvite, from_payload
from zapgate.domain.groups import (
    INVITE_MESSAGE_LIFETIME,
    MAX_CHANGE,
    MAX_PARTICIPANTS,
    GroupInfo,
    GroupParticipant,
    ParticipantAction,
    RequestAction,
    check_description,
    check_subject,
    group_jid,
    group_out,
    invite_code,
)
from zapgate.domain.ids import client_id as valid_client_id
from zapgate.domain.ids import session_id as valid_session_id
from zapgate.domain.phones import parse_recipient, phone_jid
from zapgate.errors import (
    EngineCallFailed,
    GroupActionForbidden,
    GroupFull,
    GroupNotFound,
    InvalidRequest,
    InviteNotFound,
    MessageNotFound,
    SessionNotFound,
)
from zapgate.services.engine_calls import EngineCalls
from zapgate.services.sessions import SessionService

MAX_PICTURE = 2 * 1024 * 1024  # bytes of a group picture (WhatsApp shows 640x640 JPEGs)
_JPEG = b"\xff\xd8\xff"


class GroupService:
    """The groups of a client's sessions."""

    def __init__(self, manager: ConnectionManager, calls: EngineCalls) -> None:
        self._manager = manager
        self._calls = calls

    async def list_groups(self, client: str, session: str) -> list[dict[str, Any]]:
        """The groups the session is in now (asked of WhatsApp; the stored copy is refreshed)."""
        result = await self._call(client, session, "groups", {})
        infos = [_info_of(raw) for raw in result["groups"]]
        await self._store(client, session, lambda tx, row: records.save_infos(tx.connection, row, infos))
        return [group_out(info) for info in sorted(infos, key=lambda i: (i.subject.casefold(), i.jid))]

    async def create(self, client: str, session: str, subject: str, participants: list[str]) -> dict[str, Any]:
        """Create a group with `subject` and `participants` (the session is its creator and super admin)."""
        name = check_subject(subject)
        if len(participants) > MAX_PARTICIPANTS - 1:
            raise InvalidRequest(
                f"participants: at most {MAX_PARTICIPANTS - 1} besides the creator", field="participants"
            )
        people = _participants(participants)
        result = await self._call(client, session, "group_create", {"subject": name, "participants": people})
        info = _info_of(result["group"])
        await self._store(client, session, lambda tx, row: records.save_info(tx.connection, row, info))
        return {"group": group_out(info), "participants": result["participants"]}

    async def info(self, client: str, session: str, group: str) -> dict[str, Any]:
        """What the group is now, with its participants."""
        jid = group_jid(group)
        result = await self._call(client, session, "group_info", {"group": jid})
        info = _info_of(result["group"])
        await self._store(client, session, lambda tx, row: records.save_info(tx.connection, row, info))
        return group_out(info)

    async def update(
        self,
        client: str,
        session: str,
        group: str,
        *,
        subject: str | None = None,
        description: str | None = None,
        announce: bool | None = None,
        locked: bool | None = None,
        join_approval: bool | None = None,
    ) -> dict[str, Any]:
        """Change the group's subject, description or settings (only what is given)."""
        jid = group_jid(group)
        args: dict[str, Any] = {"group": jid}
        if subject is not None:
            args["subject"] = check_subject(subject)
        if description is not None:
            args["description"] = check_description(description)
        if announce is not None:
            args["announce"] = announce
        if locked is not None:
            args["locked"] = locked
        if join_approval is not None:
            args["join_approval"] = join_approval
        if len(args) == 1:
            raise InvalidRequest(
                "nothing to change: give subject, description, announce, locked or joinApproval", field="subject"
            )
        names = {"subject": "subject", "description": "description", "announce": "announce", "locked": "locked"}
        names["join_approval"] = "joinApproval"
        field = next(public for name, public in names.items() if name in args)
        result = await self._call(client, session, "group_update", args, field=field)
        info = _info_of(result["group"])
        await self._store(client, session, lambda tx, row: records.save_info(tx.connection, row, info))
        return {"changed": result["changed"], "group": group_out(info)}

    async def set_picture(self, client: str, session: str, group: str, image: bytes) -> dict[str, Any]:
        """Give the group a new picture (a JPEG, at most MAX_PICTURE bytes)."""
        jid = group_jid(group)
        if not image.startswith(_JPEG):
            raise InvalidRequest("file: a JPEG image is expected (WhatsApp's group pictures are JPEGs)", field="file")
        if len(image) > MAX_PICTURE:
            raise InvalidRequest(f"file: at most {MAX_PICTURE // 1024} KiB", field="file", limit=MAX_PICTURE)
        args = {"group": jid, "image": base64.b64encode(image).decode()}
        result = await self._call(client, session, "group_picture", args, field="file")
        picture_id = str(result["pictureId"])
        await self._store(
            client,
            session,
            lambda tx, row: records.update_settings(tx.connection, row, jid, {"picture_id": picture_id}),
        )
        return {"groupId": jid, "pictureId": picture_id}

    async def change_participants(
        self, client: str, session: str, group: str, action: str, participants: list[str]
    ) -> dict[str, Any]:
        """Add, remove, promote or demote participants; each one's outcome is answered separately."""
        jid = group_jid(group)
        try:
            change = ParticipantAction(action)
        except ValueError as exc:
            raise InvalidRequest(f"action: one of {', '.join(ParticipantAction)}", field="action") from exc
        args = {"group": jid, "action": change.value, "participants": _changed(participants)}
        result = await self._call(client, session, "group_participants", args, field="participants")
        try:  # the stored copy follows WhatsApp's word (the change events update it too)
            await self.info(client, session, jid)
        except (GroupNotFound, EngineCallFailed):
            pass  # removed ourselves, or the worker is busy: the events will tell
        return {"groupId": jid, "action": change.value, "participants": result["participants"]}

    async def requests(self, client: str, session: str, group: str) -> dict[str, Any]:
        """The requests to join the group that wait for an admin's answer (admins only), oldest first."""
        jid = group_jid(group)
        result = await self._call(client, session, "group_requests", {"group": jid})
        return {"groupId": jid, "requests": result["requests"]}

    async def answer_requests(
        self, client: str, session: str, group: str, action: str, participants: list[str]
    ) -> dict[str, Any]:
        """Approve or reject requests to join; each one's outcome is answered separately."""
        jid = group_jid(group)
        try:
            answer = RequestAction(action)
        except ValueError as exc:
            raise InvalidRequest(f"action: one of {', '.join(RequestAction)}", field="action") from exc
        args = {"group": jid, "action": answer.value, "participants": _changed(participants)}
        result = await self._call(client, session, "group_requests_answer", args, field="participants")
        if answer is RequestAction.APPROVE:
            try:  # the stored copy follows WhatsApp's word (the change events update it too)
                await self.info(client, session, jid)
            except (GroupNotFound, EngineCallFailed):
                pass
        return {"groupId": jid, "action": answer.value, "participants": result["participants"]}

    async def invite_link(self, client: str, session: str, group: str, *, reset: bool = False) -> dict[str, Any]:
        """The group's invite link; `reset` revokes it and answers the new one."""
        jid = group_jid(group)
        result = await self._call(client, session, "group_invite", {"group": jid, "reset": reset})
        link = str(result["link"])
        return {"groupId": jid, "link": link, "code": link.rsplit("/", 1)[-1]}

    async def invite_message(self, client: str, session: str, invite: GroupInvite) -> GroupInvite:
        """`invite` (a group and a caption, to send) with the group's current code, subject and expiry.

        Only an admin sees the code (403 naming `group_invite.group_id` for the others, 404 when the session
        is not in the group); the invitation is good for INVITE_MESSAGE_LIFETIME, as WhatsApp's.
        """
        field = "group_invite.group_id"
        jid = group_jid(invite.group_jid, field=field)
        result = await self._call(
            client, session, "group_invite_message", {"group": jid}, field=field, group_field=field
        )
        expires = datetime.now(UTC) + INVITE_MESSAGE_LIFETIME
        return replace(
            invite,
            group_jid=jid,
            code=str(result["code"]),
            subject=str(result.get("subject") or "") or None,
            expires_at=int(expires.timestamp()),
        )

    async def join(self, client: str, session: str, link: str) -> dict[str, Any]:
        """Join a group by its invite link (or code)."""
        code = invite_code(link)
        result = await self._call(client, session, "group_join", {"code": code}, field="link")
        return await self._joined(client, session, str(result["group"]))

    async def _joined(self, client: str, session: str, jid: str) -> dict[str, Any]:
        """The group joined; or, when it approves new participants, the request made (`pending`, no group yet)."""
        try:
            return {"groupId": jid, "pending": False, "group": await self.info(client, session, jid)}
        except GroupNotFound:  # not a member after joining: the request waits for an admin
            return {"groupId": jid, "pending": True, "group": None}

    async def join_by_invite(
        self,
        client: str,
        session: str,
        *,
        message_id: str | None = None,
        group: str | None = None,
        inviter: str | None = None,
        code: str | None = None,
        expiration: int | None = None,
    ) -> dict[str, Any]:
        """Join a group by an invite message: the session's received one (`message_id`), or its parts given."""
        if message_id is not None:
            if not message_id.isprintable():
                raise InvalidRequest("messageId: a message id (printable characters) expected", field="messageId")
            group, inviter, code, expiration = await self._invite_of(client, session, message_id)
        jid = group_jid(group or "", field="groupId")
        if not inviter:
            raise InvalidRequest("inviter: who sent the invitation (a number or JID) is required", field="inviter")
        sender = parse_recipient(inviter, field="inviter")
        if sender.is_group:
            raise InvalidRequest("inviter: a person is expected, not a group", field="inviter")
        inviter_jid = phone_jid(sender.phone) if sender.phone is not None else str(sender.jid)
        if not code or len(code) > 100 or not code.isprintable():
            raise InvalidRequest("code: the invitation's code is required", field="code")
        args = {"group": jid, "inviter": inviter_jid, "code": code, "expiration": expiration}
        named = "messageId" if message_id is not None else "code"
        result = await self._call(client, session, "group_join_invite", args, field=named)
        return await self._joined(client, session, str(result["group"]))

    async def _invite_of(self, client: str, session: str, message_id: str) -> tuple[str, str, str, int | None]:
        """The group, inviter, code and expiry of the session's received group_invite message `message_id`."""
        found: list[tuple[dict[str, Any], str | None] | None] = []

        async def read(tx: Transaction, row: str) -> None:
            found.append(await records.received_invite(tx.connection, row, message_id))

        await self._store(client, session, read)
        stored = found[0] if found else None
        if stored is None:
            raise MessageNotFound(f"messageId: no message {message_id!r} received by this session", field="messageId")
        payload, author = stored
        try:
            content = from_payload(payload)
        except ValueError:
            content = None
        if not isinstance(content, GroupInvite) or not author:
            raise InvalidRequest("messageId: not a group invite message", field="messageId")
        return content.group_jid, author, content.code, content.expires_at

    async def leave(self, client: str, session: str, group: str) -> dict[str, Any]:
        """Leave the group."""
        jid = group_jid(group)
        await self._call(client, session, "group_leave", {"group": jid})
        await self._store(
            client, session, lambda tx, row: records.mark_left(tx.connection, row, jid, datetime.now(UTC))
        )
        return {"groupId": jid, "left": True}

    async def sandbox_act(
        self,
        sessions: SessionService,
        client: str,
        session: str,
        *,
        phone_number: str,
        action: str,
        group: str | None = None,
        participants: list[str] | None = None,
        subject: str | None = None,
        description: str | None = None,
        enabled: bool | None = None,
        link: str | None = None,
    ) -> None:
        """Sandbox: the simulated phone `phone_number` acts in a group (or creates one), told through `session`."""
        actor = parse_recipient(phone_number, field="phoneNumber")
        if actor.phone is None:
            raise InvalidRequest("phoneNumber: a phone number with country code is expected", field="phoneNumber")
        act: dict[str, Any] = {"as": actor.phone, "action": action}
        if action != "create" and action != "join":
            act["group"] = group_jid(group or "", field="groupId")
        if action == "create" or action == "subject":
            act["value"] = check_subject(subject or "")
        elif action == "description":
            act["value"] = check_description(description or "")
        elif action in ("announce", "locked"):
            if enabled is None:
                raise InvalidRequest(f"enabled: true or false, for {action}", field="enabled")
            act["value"] = enabled
        elif action == "join":
            act["value"] = invite_code(link or "")
        if action == "invite" and not participants:
            raise InvalidRequest("participants: whom to send the invite message", field="participants")
        if action in ("create", "invite") or action in {a.value for a in ParticipantAction}:
            act["participants"] = _participants(participants or [])
        await sessions.sandbox_group_act(client, session, act)

    async def check_session(self, client: str, session: str) -> None:
        """Raise SessionNotFound unless the client has the session (before reading a file for it)."""

        async def nothing(tx: Transaction, row: str) -> None:
            return None

        await self._store(client, session, nothing)

    async def _call(
        self,
        client: str,
        session: str,
        kind: str,
        args: dict[str, Any],
        *,
        field: str = "groupId",
        group_field: str = "groupId",
    ) -> dict[str, Any]:
        """Make the engine call; WhatsApp's refusals become the errors they mean (naming `field`, or
        `group_field` for a group the session is not in)."""
        try:
            return await self._calls.call(client, session, kind, args)
        except EngineCallFailed as exc:
            reason = exc.details.get("reason")
            if reason == "group_not_found":
                raise GroupNotFound(
                    f"{group_field}: no such group with this session in it ({exc.message})", field=group_field
                ) from exc
            if reason == "group_forbidden":
                raise GroupActionForbidden(f"{field}: {exc.message}", field=field) from exc
            if reason == "invite_invalid":
                name = "link" if field == "groupId" else field
                raise InviteNotFound(f"{name}: {exc.message}", field=name) from exc
            if reason == "group_full":
                raise GroupFull(f"participants: {exc.message}", field="participants") from exc
            raise

    async def _store(self, client: str, session: str, work: Callable[[Transaction, str], Awaitable[None]]) -> None:
        """Run `work(tx, session row id)` in the client's schema."""
        cid, sid = valid_client_id(client), valid_session_id(session)

        async def run(tx: Transaction) -> None:
            found = await outbound.sessions_for_send(tx.connection, {sid})
            if sid not in found:
                raise SessionNotFound(f"session {sid!r} not found", session_id=sid)
            await work(tx, found[sid][0])

        await self._manager.execute_transaction(cid, run)


def _participants(given: list[str]) -> list[str]:
    """The JIDs of the participants `given` (numbers, phone JIDs or LIDs), each checked, without repeats."""
    jids = []
    for index, raw in enumerate(given):
        recipient = parse_recipient(raw, field=f"participants[{index}]")
        if recipient.is_group:
            raise InvalidRequest(f"participants[{index}]: a person is expected, not a group", field="participants")
        jids.append(phone_jid(recipient.phone) if recipient.phone is not None else str(recipient.jid))
    return list(dict.fromkeys(jids))


def _changed(participants: list[str]) -> list[str]:
    """The participants one change names (1 to MAX_CHANGE of them), checked as `_participants` does."""
    if not 1 <= len(participants) <= MAX_CHANGE:
        raise InvalidRequest(f"participants: 1 to {MAX_CHANGE} expected", field="participants")
    return _participants(participants)


def _info_of(raw: dict[str, Any]) -> GroupInfo:
    """Read back a group in its public shape (`group_out`), as the worker answered it."""
    created = raw.get("createdAt")
    return GroupInfo(
        jid=str(raw["id"]),
        subject=str(raw.get("subject") or ""),
        description=str(raw.get("description") or ""),
        owner_jid=raw.get("owner"),
        announce=bool(raw.get("announce")),
        locked=bool(raw.get("locked")),
        join_approval=None if raw.get("joinApproval") is None else bool(raw["joinApproval"]),
        picture_id=raw.get("pictureId"),
        created_at=datetime.fromisoformat(created) if created else None,
        participants=tuple(
            GroupParticipant(
                jid=str(p["jid"]),
                lid=p.get("lid"),
                is_admin=bool(p.get("isAdmin")),
                is_super_admin=bool(p.get("isSuperAdmin")),
            )
            for p in raw.get("participants") or ()
        ),
    )
