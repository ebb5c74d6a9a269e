"""ASGI middleware in front of the routes: the request body limit (413) and the audit log of mutating calls.

Bodies are read here whole (up to MAX_BODY) for the audit, except on the routes that take files
(`FILE_ROUTES`): theirs stream through to the route as they come, counted against the route's own limits.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zapgate.api.problems import PROBLEM_JSON
from zapgate.domain.injection import MAX_INLINE_MEDIA, MAX_UPLOADED_MEDIA
from zapgate.domain.records import AuditEntry
from zapgate.services.audit import AuditLog

MAX_BODY = 64 * 1024
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# route path -> (limit of a JSON body, of a multipart body) in bytes: a file inline in base64, or uploaded
FILE_ROUTES = {
    "/whatsapp/sandbox/inbound": (MAX_INLINE_MEDIA * 4 // 3 + MAX_BODY, MAX_UPLOADED_MEDIA + MAX_BODY),
    "/whatsapp/media": (MAX_BODY, MAX_UPLOADED_MEDIA + MAX_BODY),  # uploads (multipart only)
    "/whatsapp/messages/upload": (MAX_BODY, MAX_UPLOADED_MEDIA + MAX_BODY),
}
GROUP_PICTURE = re.compile(r"/whatsapp/groups/[^/]+/picture")
MAX_GROUP_PICTURE = 2 * 1024 * 1024  # bytes (services/groups.py MAX_PICTURE)

# route name -> audit action
ACTIONS = {
    # groups (api/routes/groups.py)
    "create_group": "group.create",
    "update_group": "group.update",
    "set_group_picture": "group.picture",
    "update_group_participants": "group.participants",
    "answer_group_requests": "group.requests",
    "revoke_group_invite": "group.invite_revoke",
    "join_group": "group.join",
    "leave_group": "group.leave",
    "sandbox_group_act": "sandbox.group_act",
    "create_session": "session.create",
    "send_message": "message.send",
    "send_typed_message": "message.send",
    "edit_message": "message.edit",
    "delete_message": "message.delete",
    "set_presence": "chat.presence",
    "mark_read": "chat.read",
    "block_contact": "contact.block",
    "unblock_contact": "contact.unblock",
    "upload_media": "media.upload",
    "send_upload": "message.send",
    "request_pairing_code": "session.pairing_code",
    "restart_session": "session.restart",
    "logout_session": "session.logout",
    "delete_session": "session.delete",
    "sandbox_scan": "sandbox.scan",
    "sandbox_enter_code": "sandbox.enter_code",
    "sandbox_inbound": "sandbox.inbound",
    "sandbox_fault": "sandbox.fault",
    "create_webhook": "webhook.create",
    "update_webhook": "webhook.update",
    "delete_webhook": "webhook.delete",
    "rotate_webhook_secret": "webhook.rotate_secret",
    "redeliver": "webhook.redeliver",
}


def _problem_413(limit: int) -> bytes:
    return json.dumps(
        {
            "type": "https://zapgate.dev/problems/payload_too_large",
            "title": "Payload too large",
            "status": 413,
            "detail": f"the request body is larger than {limit // 1024} KiB",
            "code": "payload_too_large",
        }
    ).encode()


class RequestGuard:
    """Refuses bodies over `max_body` bytes before any route runs; audits mutating /whatsapp calls."""

    def __init__(self, app: ASGIApp, *, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        file_limits = FILE_ROUTES.get(scope["path"])
        if file_limits is None and GROUP_PICTURE.fullmatch(scope["path"]):
            file_limits = (MAX_BODY, MAX_GROUP_PICTURE + MAX_BODY)  # a group's picture (multipart)
        limit = self.max_body if file_limits is None else _file_route_limit(scope, file_limits)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(send, limit)
            return
        if file_limits is not None:
            await self._answer(scope, _counted(receive, limit), send, b"", limit)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await self._refuse(send, limit)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self._answer(scope, replay, send, bytes(body), limit)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, body: bytes, limit: int) -> None:
        """Let the app answer, then audit the call (with its `body`, when it was read here)."""
        answer: dict[str, Any] = {"status": 500, "body": bytearray(), "started": False}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"], answer["started"] = message["status"], True
            elif message["type"] == "http.response.body" and answer["status"] >= 400 and len(answer["body"]) < 4096:
                answer["body"] += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, capture)
        except _BodyTooLarge:
            if answer["started"]:
                raise
            answer["status"] = 413
            await self._refuse(send, limit)
        finally:
            self._audit(scope, body, answer["status"], bytes(answer["body"]))

    async def _refuse(self, send: Send, limit: int) -> None:
        payload = _problem_413(limit)
        headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def _audit(self, scope: Scope, body: bytes, status: int, answer: bytes) -> None:
        state = scope.get("state") or {}
        client = state.get("client_id")
        if client is None or not str(scope.get("path", "")).startswith("/whatsapp"):
            return  # not a client's call (or refused before we knew whose): nothing to attribute
        audit: AuditLog | None = getattr(scope["app"].state, "audit", None)
        if audit is None:
            return
        # a layer that answers without the router (api/hotpath.py) names the action and session itself
        action = state.get("action")
        if action is None:
            name = getattr(scope.get("route"), "name", None) or "unknown"
            action = ACTIONS.get(name, name)
        session = (
            state.get("session_id")
            or (scope.get("path_params") or {}).get("sessionId")
            or _body_field(body, "sessionId")
        )
        outcome = "ok" if status < 400 else (_body_field(answer, "code") or f"http_{status}")
        detail = {"method": scope["method"], "path": scope["path"]}
        audit.record(
            client,
            AuditEntry(
                at=datetime.now(UTC),
                actor=str(state.get("actor", "")),
                action=action,
                session_id=session if isinstance(session, str) and len(session) <= 64 else None,
                outcome=outcome,
                status=status,
                detail=detail,
            ),
        )


class _BodyTooLarge(Exception):
    """A streamed body went past its route's limit (raised to the route reading it, caught by the guard)."""


def _counted(receive: Receive, limit: int) -> Receive:
    """Return `receive`, raising _BodyTooLarge once the body it has handed out is over `limit` bytes."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _BodyTooLarge
        return message

    return counted


def _file_route_limit(scope: Scope, limits: tuple[int, int]) -> int:
    """The body limit of a file route for this request: a multipart upload's, or an inline file's."""
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return limits[1] if value.lower().startswith(b"multipart/form-data") else limits[0]
    return limits[0]


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _body_field(body: bytes, name: str) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
