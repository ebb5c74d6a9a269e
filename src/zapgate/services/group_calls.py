"""The worker's side of the group engine calls (services/engine_calls.py runs them; services/groups.py makes them).

Each takes the call's JSON arguments, asks the session's engine, and answers JSON: groups in their public shape
(`domain.groups.group_out`), participants' outcomes one by one. What WhatsApp refuses leaves as the engine's
error (its code names it: group_not_found, group_forbidden, invite_invalid, group_full).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

from zapgate.domain.groups import ParticipantAction, ParticipantResult, RequestAction, group_out, request_out
from zapgate.domain.phones import USER_SERVER, jid_user
from zapgate.engines.base import SessionRef
from zapgate.services.hosted import Hosted

Bounded = Callable[[str, Awaitable[Any]], Awaitable[Any]]
Handler = Callable[[SessionRef, Hosted, dict[str, Any]], Awaitable[dict[str, Any]]]


def results_out(results: tuple[ParticipantResult, ...]) -> list[dict[str, Any]]:
    """Each participant's outcome as the API shows it."""
    return [{"jid": r.jid, "status": r.outcome.value, "code": r.code} for r in results]


class GroupCalls:
    """The handlers of the group calls; `bounded` gives each engine call its deadline."""

    def __init__(self, bounded: Bounded) -> None:
        self._bounded = bounded

    def handlers(self) -> dict[str, Handler]:
        """The handlers, by call kind."""
        return {
            "groups": self.list_groups,
            "group_create": self.create,
            "group_info": self.info,
            "group_update": self.update,
            "group_picture": self.picture,
            "group_participants": self.participants,
            "group_requests": self.requests,
            "group_requests_answer": self.answer_requests,
            "group_invite": self.invite,
            "group_invite_message": self.invite_message,
            "group_join": self.join,
            "group_join_invite": self.join_invite,
            "group_leave": self.leave,
        }

    async def _jids(self, ref: SessionRef, hosted: Hosted, given: list[Any]) -> tuple[str, ...]:
        """The JIDs of `given`; a phone number's is WhatsApp's answer (the ninth digit), never a guess."""
        found = []
        for raw in given:
            jid = str(raw)
            if jid.endswith("@" + USER_SERVER):
                lookup = await self._bounded("resolve", hosted.engine.resolve(ref, jid_user(jid)))
                jid = lookup.jid or jid
            found.append(jid)
        return tuple(found)

    async def list_groups(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        found = await self._bounded("groups", hosted.engine.list_groups(ref))
        return {"groups": [group_out(info) for info in found]}

    async def create(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        participants = await self._jids(ref, hosted, args["participants"])
        creating = hosted.engine.create_group(ref, str(args["subject"]), participants)
        info, results = await self._bounded("group_create", creating)
        return {"group": group_out(info), "participants": results_out(results)}

    async def info(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "group": group_out(await self._bounded("group_info", hosted.engine.group_info(ref, str(args["group"]))))
        }

    async def update(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        group, engine = str(args["group"]), hosted.engine
        setters: dict[str, Callable[[], Awaitable[None]]] = {
            "subject": lambda: engine.set_group_subject(ref, group, str(args["subject"])),
            "description": lambda: engine.set_group_description(ref, group, str(args["description"])),
            "announce": lambda: engine.set_group_announce(ref, group, bool(args["announce"])),
            "locked": lambda: engine.set_group_locked(ref, group, bool(args["locked"])),
            "join_approval": lambda: engine.set_group_join_approval(ref, group, bool(args["join_approval"])),
        }
        changed = []
        for name, setter in setters.items():
            if args.get(name) is not None:
                await self._bounded(f"group_{name}", setter())
                changed.append("joinApproval" if name == "join_approval" else name)
        return {
            "changed": changed,
            "group": group_out(await self._bounded("group_info", engine.group_info(ref, group))),
        }

    async def picture(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        image = base64.b64decode(str(args["image"]))
        setting = hosted.engine.set_group_picture(ref, str(args["group"]), image)
        return {"pictureId": await self._bounded("group_picture", setting)}

    async def participants(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        action = ParticipantAction(args["action"])
        people = await self._jids(ref, hosted, args["participants"])
        changing = hosted.engine.update_group_participants(ref, str(args["group"]), action, people)
        return {
            "action": action.value,
            "participants": results_out(await self._bounded("group_participants", changing)),
        }

    async def requests(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        found = await self._bounded("group_requests", hosted.engine.group_requests(ref, str(args["group"])))
        return {"requests": [request_out(request) for request in found]}

    async def answer_requests(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        action = RequestAction(args["action"])
        people = await self._jids(ref, hosted, args["participants"])
        answering = hosted.engine.answer_group_requests(ref, str(args["group"]), action, people)
        return {
            "action": action.value,
            "participants": results_out(await self._bounded("group_requests_answer", answering)),
        }

    async def invite(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        asking = hosted.engine.group_invite_link(ref, str(args["group"]), reset=bool(args.get("reset")))
        return {"link": await self._bounded("group_invite", asking)}

    async def invite_message(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        """What an invite message carries: the group's current code (admins only) and its subject."""
        group, engine = str(args["group"]), hosted.engine
        link = await self._bounded("group_invite", engine.group_invite_link(ref, group))
        info = await self._bounded("group_info", engine.group_info(ref, group))
        return {"code": str(link).rsplit("/", 1)[-1], "subject": info.subject}

    async def join(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        return {"group": await self._bounded("group_join", hosted.engine.join_group(ref, str(args["code"])))}

    async def join_invite(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        expiration = args.get("expiration")
        joining = hosted.engine.join_group_with_invite(
            ref,
            str(args["group"]),
            str(args["inviter"]),
            str(args["code"]),
            None if expiration is None else int(expiration),
        )
        return {"group": await self._bounded("group_join_invite", joining)}

    async def leave(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        await self._bounded("group_leave", hosted.engine.leave_group(ref, str(args["group"])))
        return {"left": True}


def group_call_handlers(bounded: Bounded) -> dict[str, Handler]:
    """The handlers of the group calls, by kind (for CallRunner)."""
    return GroupCalls(bounded).handlers()
