"""Socket.IO on `/whatsapp`: the seed's WebSocket events, read from the client's event log.

A socket authenticates once, in the handshake: `io(url + '/whatsapp', {auth: {apiKey}})`, or the `X-API-Key`
(or `Authorization: Bearer`) header for clients that can set headers. It then receives the events of the
sessions it joined, as they are written to the log: one pump task per socket reads them through the EventHub
and emits them, so a slow socket holds up no other. Commands (`join-session`, `leave-session`,
`send-message`, `get-sessions`) are answered by their ack, `{"ok": true, ...}` or
`{"ok": false, "error": {...}}`; a refusal is also sent as an `error` event naming the command in `event`
(a session's errors from the log are `error` events too, told apart by their `eventId` and `sessionId`).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import socketio
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zapgate import metrics
from zapgate.api.connections import Connection, Connections, transport_of
from zapgate.api.deps import key_in_headers
from zapgate.api.events import event_body
from zapgate.api.guard import MAX_BODY
from zapgate.api.problems import field_errors, public_detail, status_for, validation_errors
from zapgate.api.routes.whatsapp import session_out
from zapgate.api.schemas import MESSAGE_TYPES, MessageAccepted, MessageRequest, SendMessageRequest, SessionList
from zapgate.background import TaskGroup
from zapgate.domain.content import parse_outgoing
from zapgate.domain.events import EventType
from zapgate.domain.ids import SESSION_ID_PATTERN, ClientId
from zapgate.domain.records import AuditEntry, Event, Session
from zapgate.errors import AuthenticationFailed, InvalidRequest, NotFound, RateLimited, ZapgateError
from zapgate.log import get_logger
from zapgate.services.audit import AuditLog
from zapgate.services.clients import ClientService, hash_key, key_display_prefix
from zapgate.services.events import EventHub, Subscription
from zapgate.services.sessions import SessionService
from zapgate.settings import Settings

log = get_logger(__name__)

NAMESPACE = "/whatsapp"
SOCKETIO_PATH = "/socket.io"
MAX_EVENT_ID = 2**63 - 1
BACKLOG_EXCEEDED = "backlog_exceeded"  # the reason a socket too far behind is disconnected with
DROP_GRACE = 5.0  # seconds a dropped socket's peer has to read why before its connection is aborted
ROOM_POLL = 0.05  # seconds between looks at a full outgoing queue


class _Command(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="forbid")


class JoinSession(_Command):
    """`join-session`: receive a session's events; with `lastEventId`, first those after that id (a `gap`
    event first, and `gap` in the ack, when retention pruned some of them)."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN)
    last_event_id: int | None = Field(None, ge=0, le=MAX_EVENT_ID)


class LeaveSession(_Command):
    """`leave-session`: stop receiving a session's events."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN)


class GetSessions(_Command):
    """`get-sessions`: no fields."""


class SendMessage(SendMessageRequest):
    """`send-message`: the body of POST /whatsapp/send, plus the Idempotency-Key header as a field."""

    idempotency_key: str | None = Field(None, min_length=1, max_length=255)


_TYPED_KEYS = frozenset({"type", *MESSAGE_TYPES})  # a send-message body in the shape of POST /whatsapp/messages


class SendTypedMessage(MessageRequest):
    """`send-message` with a typed body: that of POST /whatsapp/messages, plus the Idempotency-Key as a field."""

    idempotency_key: str | None = Field(None, alias="idempotencyKey", min_length=1, max_length=255)


@dataclass(eq=False)
class _Socket:
    """One connected socket: its client, the sessions it joined and its pump."""

    client: ClientId
    subscription: Subscription
    # joined session -> the id after which its events are emitted (raised as they are)
    after: dict[str, int] = field(default_factory=dict)
    backlog: deque[Event] = field(default_factory=deque)  # fetched, not yet emitted
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # held while emitting and while rewinding
    pump: asyncio.Task[Any] | None = None
    closed: bool = False
    actor: str = ""  # the API key's prefix, for the audit log
    eio_sid: str = ""  # its Engine.IO socket, whose outgoing queue is capped
    conn: Connection | None = None  # its entry in the process's connections (per-key cap, revocation)

    def follow_joined(self) -> None:
        self.subscription.sessions = set(self.after)

    async def stop_pump(self) -> None:
        task, self.pump = self.pump, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])


def _error(exc: Exception) -> dict[str, Any]:
    """The `error` of a refused command: status, code, detail and the invalid fields."""
    if isinstance(exc, ValidationError):
        detail, errors = validation_errors(exc.errors())
        return {"status": 422, "code": "validation_failed", "detail": detail, "errors": errors}
    if isinstance(exc, ZapgateError):
        status = status_for(exc)
        detail = public_detail(exc, status)
        if status >= 500 or detail != exc.message:
            log.warning("socket.error", code=exc.code, error=exc.message)
        body: dict[str, Any] = {"status": status, "code": exc.code, "detail": detail, "errors": field_errors(exc)}
        if isinstance(exc, RateLimited):
            body["retryAfter"] = max(1, math.ceil(exc.retry_after))
        return body
    log.error("socket.unhandled", error=repr(exc), exc_info=exc)
    return {"status": 500, "code": "internal_error", "detail": "internal error; it has been logged", "errors": []}


def _handshake_key(environ: dict[str, Any], auth: Any) -> str | None:
    if isinstance(auth, dict) and isinstance(auth.get("apiKey"), str):
        return str(auth["apiKey"]).strip()
    return key_in_headers(environ.get("HTTP_X_API_KEY"), environ.get("HTTP_AUTHORIZATION"))


AUDITED = {"send-message": "message.send"}  # mutating commands -> audit action

_Handler = Callable[[str, _Socket, Any], Awaitable[dict[str, Any]]]


class WhatsAppNamespace(socketio.AsyncNamespace):  # type: ignore[misc]  # python-socketio is untyped
    """The `/whatsapp` namespace: the services of the running app (`app.state`) over Socket.IO."""

    def __init__(self, state: State) -> None:
        super().__init__(NAMESPACE)
        self._state = state
        self._sockets: dict[str, _Socket] = {}
        self._tasks = TaskGroup("socketio")
        self._commands: dict[str, _Handler] = {
            "join-session": self._join,
            "leave-session": self._leave,
            "send-message": self._send,
            "get-sessions": self._list,
        }

    @property
    def _clients(self) -> ClientService:
        clients: ClientService = self._state.clients
        return clients

    @property
    def _sessions(self) -> SessionService:
        sessions: SessionService = self._state.sessions
        return sessions

    @property
    def _hub(self) -> EventHub:
        hub: EventHub = self._state.events
        return hub

    @property
    def _connections(self) -> Connections:
        connections: Connections = self._state.connections
        return connections

    @property
    def _settings(self) -> Settings:
        settings: Settings = self._state.settings
        return settings

    async def close(self) -> None:
        """Stop every socket's pump and the Socket.IO server's background tasks (at shutdown)."""
        sockets, self._sockets = list(self._sockets.values()), {}
        for sock in sockets:
            sock.closed = True
        await self._tasks.close()
        for sock in sockets:
            sock.subscription.close()
        await self.server.shutdown()

    # -- connection -----------------------------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Accept a socket that presents a client's API key; start its pump."""
        key = _handshake_key(environ, auth)
        try:
            client = await self._clients.authenticate(key)
            conn = self._connections.open(client, hash_key(key or ""), "socket.io", lambda code, detail: None)
            try:
                subscription = await self._hub.subscribe(client, sessions=())
            except BaseException:
                self._connections.release(conn)
                raise
        except AuthenticationFailed as exc:
            log.info("socket.refused", code="unauthorized")
            raise socketio.exceptions.ConnectionRefusedError(
                "missing or wrong API key", {"code": "unauthorized", "status": 401}
            ) from exc
        except ZapgateError as exc:
            log.warning("socket.refused", code=exc.code, error=exc.message)
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code, "status": status_for(exc)}
            ) from exc
        eio_sid = self.server.manager.eio_sid_from_sid(sid, NAMESPACE)
        sock = _Socket(client, subscription, actor=key_display_prefix(key or ""), eio_sid=eio_sid or "", conn=conn)
        conn.close = lambda code, detail: self._spawn_drop(sid, sock, code, detail, 401)
        self._sockets[sid] = sock
        sock.pump = self._tasks.spawn(self._pump(sid, sock), name=f"pump.{sid}")
        log.info("socket.connected", client_id=client, sid=sid)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        """Stop the socket's pump and its subscription."""
        sock = self._sockets.pop(sid, None)
        if sock is None:
            return
        sock.closed = True
        await sock.stop_pump()
        sock.subscription.close()
        if sock.conn is not None:
            self._connections.release(sock.conn)
        log.info("socket.disconnected", client_id=sock.client, sid=sid, reason=str(reason))

    def _spawn_drop(self, sid: str, sock: _Socket, code: str, detail: str, status: int) -> None:
        if not sock.closed:
            self._tasks.spawn(self._drop(sid, sock, code, detail, status), name=f"drop.{sid}")

    async def _drop(self, sid: str, sock: _Socket, code: str, detail: str, status: int) -> None:
        """Disconnect a socket from the server's side: an `error` event saying why, then the disconnect.

        What waits in its outgoing queue is discarded (the client resumes with `lastEventId`), and a
        WebSocket whose peer has not read the farewell within DROP_GRACE seconds is aborted, so neither its
        queue nor its socket holds memory.
        """
        if sock.closed:
            return
        sock.closed = True  # no command or event for it from now on
        await sock.stop_pump()
        engine = self.server.eio.sockets.get(sock.eio_sid)
        if engine is not None and code == BACKLOG_EXCEEDED:
            _discard_queued(engine.queue)
        log.info("socket.dropped", client_id=sock.client, sid=sid, code=code)
        environ = self.server.get_environ(sid, namespace=NAMESPACE) or {}
        await self.emit("error", {"status": status, "code": code, "detail": detail, "errors": []}, to=sid)
        await self.server.disconnect(sid, namespace=NAMESPACE)
        if engine is None:
            return
        await engine.close(wait=False, abort=False)  # the Engine.IO socket too: its queue goes with it
        self.server.eio.sockets.pop(sock.eio_sid, None)
        transport = transport_of(environ.get("asgi.send")) if engine.upgraded else None
        if transport is not None and _is_websocket(environ):
            asyncio.get_running_loop().call_later(DROP_GRACE, transport.abort)

    async def trigger_event(self, event: str, *args: Any) -> Any:
        """Dispatch a command; answer its ack with the result or the error (also emitted as `error`)."""
        if event in ("connect", "disconnect"):
            return await super().trigger_event(event, *args)
        sid, payload = args[0], args[1:]
        sock = self._sockets.get(sid)
        if sock is None or sock.closed:  # it disconnected meanwhile, or is being disconnected
            return None
        try:
            if event == UNREADABLE:
                event = "unreadable"
                raise InvalidRequest(
                    "the event's arguments cannot be read: JSON with no integer of more than 100 digits "
                    f"is expected ({payload[0] if payload else 'invalid'})"
                )
            handler = self._commands.get(event)
            if handler is None:
                raise InvalidRequest(f"unknown event {event[:64]!r}: expected one of {', '.join(self._commands)}")
            if len(payload) > 1:
                raise InvalidRequest(f"{event}: expected one object, got {len(payload)} arguments")
            result = await handler(sid, sock, payload[0] if payload else None)
        except Exception as exc:
            error = _error(exc)
            self._audit(sock, event, payload, error["code"], error["status"])
            await self.emit("error", {"event": event[:64], **error}, to=sid)
            return {"ok": False, "error": error}
        self._audit(sock, event, payload, "ok", 202)
        return {"ok": True, **result}

    def _audit(self, sock: _Socket, event: str, payload: tuple[Any, ...], outcome: str, status: int) -> None:
        """Write a mutating command to the client's audit log, as the REST API does for its calls."""
        action = AUDITED.get(event)
        audit: AuditLog | None = getattr(self._state, "audit", None)
        if action is None or audit is None:
            return
        body = payload[0] if payload and isinstance(payload[0], dict) else {}
        session = body.get("sessionId")
        entry = AuditEntry(
            at=datetime.now(UTC),
            actor=sock.actor,
            action=action,
            outcome=outcome,
            status=status,
            session_id=session if isinstance(session, str) and len(session) <= 64 else None,
            detail={"transport": "socket.io", "event": event},
        )
        audit.record(sock.client, entry)

    # -- commands -------------------------------------------------------------------------------------

    async def _join(self, sid: str, sock: _Socket, payload: Any) -> dict[str, Any]:
        command = JoinSession.model_validate(payload)
        view = await self._sessions.get(sock.client, command.session_id)  # 404 unless the client's own
        gap = None
        if command.last_event_id is not None:
            after = command.last_event_id
            gap = await self._hub.gap(sock.client, after)
            if gap is not None:  # retention pruned events it has not seen: say so first, then go on from the oldest
                after = gap.oldest - 1
                async with sock.lock:
                    if not sock.closed:
                        await self.emit("gap", {"sessionId": command.session_id, **gap.payload()}, to=sid)
            start = await self._rewind(sid, sock, command.session_id, after)
        elif (joined := sock.after.get(command.session_id)) is not None:
            start = joined
        else:
            head = await self._hub.head(sock.client)
            # the pump has looked at everything up to its cursor without this session: start after both
            start = sock.after[command.session_id] = max(head, sock.subscription.cursor)
            sock.follow_joined()
            await self._send_current_code(sid, sock, view.session, start)
        answer = {
            "sessionId": command.session_id,
            "lastEventId": start,
            "session": session_out(view.session, view.desired).model_dump(by_alias=True, mode="json"),
        }
        if gap is not None:
            answer["gap"] = gap.payload()
        return answer

    async def _send_current_code(self, sid: str, sock: _Socket, session: Session, start: int) -> None:
        """Send a joining socket the session's current QR or pairing code, made before it joined.

        A client that joins and then waits for `qr-code` would otherwise wait for the next code (up to 20 s)
        or for ever (the last code of a pairing, a pairing code).
        """
        wanted = [EventType.QR_CODE.value] if session.qr_code else []
        wanted += [EventType.PAIRING_CODE.value] if session.pairing_code else []
        if not wanted:
            return
        event = await self._hub.latest(sock.client, session.session_id, wanted)
        if event is None or event.id > start:
            return  # none yet, or the pump brings it
        async with sock.lock:  # before any newer event of the session
            if not sock.closed:
                await self.emit(event.type, event_body(event), to=sid)
                metrics.EVENTS_STREAMED.labels("socketio").inc()

    async def _rewind(self, sid: str, sock: _Socket, session: str, after: int) -> int:
        """Join `session` from event id `after`: events the pump already passed by are read again."""
        async with sock.lock:  # the pump is not emitting
            await sock.stop_pump()
            try:
                if after < sock.subscription.cursor:
                    start = min(after, sock.backlog[0].id - 1) if sock.backlog else after
                    replay = await self._hub.subscribe(sock.client, after=start, sessions=(*sock.after, session))
                    if sock.closed:  # it disconnected meanwhile
                        replay.close()
                        return after
                    sock.subscription.close()
                    sock.subscription = replay
                    sock.backlog.clear()  # read again; what was emitted is skipped by `after`
                sock.after[session] = after
                sock.follow_joined()
            finally:
                if not sock.closed:
                    sock.pump = self._tasks.spawn(self._pump(sid, sock), name=f"pump.{sid}")
        return after

    async def _leave(self, sid: str, sock: _Socket, payload: Any) -> dict[str, Any]:
        command = LeaveSession.model_validate(payload)
        if sock.after.pop(command.session_id, None) is None:
            raise NotFound(f"session {command.session_id!r} is not joined on this socket")
        sock.follow_joined()
        return {"sessionId": command.session_id}

    async def _send(self, sid: str, sock: _Socket, payload: Any) -> dict[str, Any]:
        if isinstance(payload, dict) and "message" not in payload and _TYPED_KEYS & payload.keys():
            typed = SendTypedMessage.model_validate(payload)
            skipped = {"session_id", "to", "messaging_product", "recipient_type", "idempotency_key"}
            outgoing = parse_outgoing(
                {"type": typed.type, **typed.model_dump(exclude_none=True, exclude_unset=True, exclude=skipped)}
            )
            accepted = await self._sessions.send_message(
                sock.client, typed.session_id, typed.to, outgoing, idempotency_key=typed.idempotency_key
            )
        else:
            command = SendMessage.model_validate(payload)
            with metrics.ACCEPT_LATENCY.time():
                accepted = await self._sessions.send_text(
                    sock.client,
                    command.session_id,
                    command.to,
                    command.message,
                    idempotency_key=command.idempotency_key,
                )
        body = MessageAccepted(
            message_id=accepted.message_id,
            session_id=accepted.session_id,
            status=accepted.status,
            timestamp=accepted.timestamp,
        )
        return {**body.model_dump(by_alias=True, mode="json"), "replayed": accepted.replayed}

    async def _list(self, sid: str, sock: _Socket, payload: Any) -> dict[str, Any]:
        GetSessions.model_validate({} if payload is None else payload)
        listed = SessionList(sessions=[session_out(session) for session in await self._sessions.list(sock.client)])
        return listed.model_dump(by_alias=True, mode="json")

    # -- events ---------------------------------------------------------------------------------------

    async def _pump(self, sid: str, sock: _Socket) -> None:
        """Emit the socket's events in log order until it disconnects or the hub closes.

        No more than ZAPGATE_SOCKET_BACKLOG_EVENTS / _BYTES wait in the socket's outgoing queue: the pump
        waits for room (the rest stays in the log), and a socket that makes none for ZAPGATE_STALL_TIMEOUT
        seconds is disconnected with `backlog_exceeded`.
        """
        while True:
            if not sock.backlog:
                batch = await sock.subscription.next_batch()
                if not batch:
                    return  # the hub closed
                sock.backlog.extend(batch)
            if not await self._room(sock):
                detail = "this socket fell too far behind its events: reconnect and join with lastEventId"
                self._spawn_drop(sid, sock, BACKLOG_EXCEEDED, detail, 429)
                return
            async with sock.lock:
                while sock.backlog and not self._full(sock):
                    event = sock.backlog.popleft()
                    session = event.session_id
                    last = None if session is None else sock.after.get(session)
                    if session is not None and last is not None and event.id > last:
                        sock.after[session] = event.id
                        await self.emit(event.type, event_body(event), to=sid)
                        metrics.EVENTS_STREAMED.labels("socketio").inc()

    def _full(self, sock: _Socket) -> bool:
        """Whether the socket's outgoing queue is at its cap (events or bytes)."""
        engine = self.server.eio.sockets.get(sock.eio_sid)
        if engine is None:
            return False
        events, size = _queued(engine.queue)
        settings = self._settings
        return events >= settings.socket_backlog_events or size >= settings.socket_backlog_bytes

    async def _room(self, sock: _Socket) -> bool:
        """Wait until the socket's outgoing queue is under its caps; False if it stayed full the stall timeout."""
        if not self._full(sock):
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.stall_timeout
        while self._full(sock):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(ROOM_POLL)
        return True


UNREADABLE = "\x00unreadable"  # the event name given to a frame whose arguments cannot be read


class _Packet(socketio.packet.Packet):  # type: ignore[misc]  # python-socketio is untyped
    """A Socket.IO packet whose unreadable arguments still reach the namespace, to be answered.

    python-socketio drops a frame whose JSON it refuses (an integer of more than 100 digits, JSON that is not
    valid or nests too deep) with a logged traceback, and its sender waits for an ack that never comes.
    """

    def decode(self, encoded_packet: Any) -> int:
        try:
            count: int = super().decode(encoded_packet)
        except (ValueError, RecursionError) as exc:
            if self.packet_type != socketio.packet.EVENT:
                raise
            self.data = [UNREADABLE, str(exc)[:200]]
            return 0
        return count


def _queued(queue: asyncio.Queue[Any]) -> tuple[int, int]:
    """Packets and bytes waiting in an Engine.IO socket's outgoing queue (python-engineio does not count them)."""
    packets = list(queue._queue)  # type: ignore[attr-defined]  # asyncio.Queue keeps its items in a deque
    size = 0
    for pkt in packets:
        data = getattr(pkt, "data", None)
        if isinstance(data, str | bytes):
            size += len(data)
    return len(packets), size


def _discard_queued(queue: asyncio.Queue[Any]) -> None:
    """Empty an Engine.IO socket's outgoing queue (its events are read again on resume)."""
    while True:
        try:
            queue.get_nowait()
        except asyncio.QueueEmpty:
            return
        queue.task_done()


def _is_websocket(environ: dict[str, Any]) -> bool:
    scope = environ.get("asgi.scope")
    return isinstance(scope, dict) and scope.get("type") == "websocket"


class _EndAbandonedPolls:
    """End a long-polling request as soon as its client hangs up.

    python-engineio holds a poll open until there is something to send, up to ping_interval + ping_timeout
    (45 s) after a client closed its socket; those requests would hold up a graceful shutdown that long.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()

        async def read_body() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read.set()
            return message

        async def hang_up() -> None:
            await body_read.wait()  # the request is the app's to read until then
            while (await receive())["type"] != "http.disconnect":
                pass

        async def handle() -> None:
            await self.app(scope, read_body, send)

        handler = asyncio.create_task(handle())
        watcher = asyncio.create_task(hang_up())
        try:
            await asyncio.wait((handler, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (handler, watcher):
                task.cancel()
            await asyncio.wait((handler, watcher))
        if not handler.cancelled() and (error := handler.exception()) is not None:
            raise error


def mount(
    app: FastAPI, *, cors_allowed_origins: str | list[str] = "*", websocket_only: bool = False
) -> WhatsAppNamespace:
    """Serve Socket.IO at /socket.io on `app`, with the `/whatsapp` namespace; close the namespace at shutdown.

    Browsers from any origin may connect by default: the API key is the credential, not the origin.
    With `websocket_only` (several API processes on one port) the long-polling transport is refused: its
    requests of one socket would land on different processes, and only the one that opened it knows it. A
    WebSocket is one connection, so it stays with its process, and every process reads the same event log.
    """
    server = socketio.AsyncServer(
        async_mode="asgi",
        cors_allowed_origins=cors_allowed_origins,
        namespaces=[NAMESPACE],
        async_handlers=False,  # a socket's commands run in the order it sent them
        serializer=_Packet,
        max_http_buffer_size=MAX_BODY,  # a frame (or a polled POST) may be as large as an HTTP body, no larger
        transports=["websocket"] if websocket_only else ["polling", "websocket"],
    )
    namespace = WhatsAppNamespace(app.state)
    server.register_namespace(namespace)
    # the Mount routes /socket.io/... here; lifespan and every other path stay FastAPI's
    app.mount(SOCKETIO_PATH, _EndAbandonedPolls(socketio.ASGIApp(server, socketio_path=None)))
    return namespace
