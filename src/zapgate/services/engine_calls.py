"""Engine calls: what an API process asks a session's worker to do at once, and the answer.

The API never holds a WhatsApp connection. A request that needs one now (show "typing…", mark a chat read,
ask WhatsApp whether numbers are on it) becomes a row of `engine_calls` in the client's schema with a
deadline, and a NOTIFY naming it; the worker hosting the session takes it (only while pending and before
its deadline), calls its engine and records the answer with a NOTIFY back, which wakes the waiting request.
A call no worker took in time is expired, so none takes it later, and the caller hears 504: the session
may be moving between workers. A worker that missed a NOTIFY (its listener reconnected) looks for its
sessions' pending calls.

    API process: EngineCalls.call ──insert + NOTIFY calls──► worker: CallRunner.notified → claim → engine
                 (waits)         ◄──NOTIFY calls_done────────        → finish (result or error)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from zapgate.background import TaskGroup, wait_set
from zapgate.db import contacts, engine_calls, notify, outbound
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.db.notify import Listener
from zapgate.domain.chats import chat_state_of
from zapgate.domain.contacts import ContactUpdate
from zapgate.domain.content import MessageKey
from zapgate.domain.ids import client_id as valid_client_id
from zapgate.domain.ids import session_id as valid_session_id
from zapgate.domain.phones import GROUP_SERVER, phone_jid
from zapgate.domain.records import Contact
from zapgate.domain.sessions import SessionStatus
from zapgate.domain.storable import storable_json, storable_or_none
from zapgate.engines.base import EngineError, Presence, SessionRef
from zapgate.errors import EngineCallFailed, EngineCallTimedOut, SessionNotConnected, SessionNotFound
from zapgate.log import get_logger
from zapgate.services.contact_events import announce
from zapgate.services.group_calls import group_call_handlers
from zapgate.services.hosted import Hosted, HostedSessions

log = get_logger(__name__)

CALL_TIMEOUT = 20.0  # seconds an API request waits for the session's worker
CHECK_POLL = 1.0  # seconds between looks at the row while waiting (a lost NOTIFY costs at most this)


class EngineCalls:
    """The API side: make a call to a session's worker and wait for its answer."""

    def __init__(self, manager: ConnectionManager, database_url: str | None, *, timeout: float = CALL_TIMEOUT) -> None:
        self._manager = manager
        self._timeout = timeout
        self._waiting: dict[tuple[str, int], asyncio.Event] = {}
        self._listener = (
            None if database_url is None else Listener(database_url, (notify.CALLS_DONE,), on_notify=self._answered)
        )

    async def start(self) -> None:
        if self._listener is not None:
            await self._listener.start()

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()

    def _answered(self, channel: str, payload: str | None) -> None:
        if payload is None:  # (re)connected: a notification may have been missed
            for waiting in self._waiting.values():
                waiting.set()
            return
        client, _, call = payload.partition("/")
        if call.isdigit() and (event := self._waiting.get((client, int(call)))) is not None:
            event.set()

    async def call(self, client: str, session: str, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        """Have the worker of `session` make the call `kind`; return its result.

        Raises SessionNotFound, SessionNotConnected (it cannot reach WhatsApp now), EngineCallFailed (the
        engine's error code in `reason`) or EngineCallTimedOut.
        """
        cid, sid = valid_client_id(client), valid_session_id(session)
        deadline = datetime.now(UTC) + timedelta(seconds=self._timeout)

        async def ask(tx: Transaction) -> int:
            found = await outbound.sessions_for_send(tx.connection, {sid})
            if sid not in found:
                raise SessionNotFound(f"session {sid!r} not found", session_id=sid)
            row, status = found[sid]
            if status != SessionStatus.CONNECTED.value:
                raise SessionNotConnected(f"session {sid!r} is {status}: it can do this once connected", status=status)
            call_id = await engine_calls.insert(tx.connection, row, kind, args, deadline)
            await notify.notify(tx.connection, notify.CALLS, f"{cid}/{sid}/{call_id}")
            return call_id

        call_id = await self._manager.execute_transaction(cid, ask)
        woken = self._waiting[(cid, call_id)] = asyncio.Event()
        try:
            return await self._wait(cid, call_id, woken, deadline)
        finally:
            del self._waiting[(cid, call_id)]

    async def _wait(self, cid: str, call_id: int, woken: asyncio.Event, deadline: datetime) -> dict[str, Any]:
        while True:
            found = await self._manager.execute_transaction(
                cid, lambda tx: engine_calls.outcome(tx.connection, call_id)
            )
            if found is not None and found.status == "done":
                return found.result or {}
            if found is not None and found.status == "failed":
                raise EngineCallFailed(found.error or "the engine failed", reason=found.error_code)
            left = (deadline - datetime.now(UTC)).total_seconds()
            if left <= 0:
                expired = await self._manager.execute_transaction(
                    cid, lambda tx: engine_calls.expire(tx.connection, call_id)
                )
                if expired or found is None or found.status == "running":
                    raise EngineCallTimedOut(
                        f"the session's worker did not answer within {self._timeout:g} s: try again", call=call_id
                    )
                continue  # answered meanwhile: read it
            woken.clear()
            await wait_set(woken, min(left + 0.05, CHECK_POLL))


Handler = Callable[[SessionRef, Hosted, dict[str, Any]], Awaitable[dict[str, Any]]]


class CallRunner:
    """The worker side: take the calls of the sessions this worker hosts, make them, record the answers."""

    def __init__(
        self,
        manager: ConnectionManager,
        hosted: HostedSessions,
        tasks: TaskGroup,
        *,
        call_timeout: float,
    ) -> None:
        self._manager = manager
        self._hosted = hosted
        self._tasks = tasks
        self._call_timeout = call_timeout
        self._handlers: dict[str, Handler] = {
            "presence": self._presence,
            "read": self._read,
            "check": self._check,
            "picture": self._picture,
            "block": self._block,
        }
        self._handlers.update(group_call_handlers(self._bounded))  # groups: services/group_calls.py
        # chats and presence (issue 14)
        self._handlers.update(chat=self._chat, subscribe=self._subscribe, available=self._available)

    def notified(self, payload: str | None) -> None:
        """A NOTIFY on the calls channel: run the call it names if ours; None (reconnected): look for missed ones."""
        if payload is None:
            self._tasks.spawn(self._sweep(), name="calls.sweep")
            return
        client, _, rest = payload.partition("/")
        session, _, call = rest.rpartition("/")
        ref = SessionRef(client, session)
        hosted = self._hosted.get(ref)
        if hosted is not None and call.isdigit():
            self._tasks.spawn(self._run(ref, hosted, int(call)), name="calls.run")

    async def _sweep(self) -> None:
        for ref, hosted in list(self._hosted.items()):
            try:
                ids = await self._manager.execute_transaction(ref.client_id, partial(_pending, hosted.session_row_id))
            except Exception as exc:  # the database away: the callers time out and try again
                log.warning("calls.sweep_failed", session=str(ref), error=repr(exc))
                continue
            for call_id in ids:
                await self._run(ref, hosted, call_id)

    async def _run(self, ref: SessionRef, hosted: Hosted, call_id: int) -> None:
        try:
            call = await self._manager.execute_transaction(
                ref.client_id, lambda tx: engine_calls.claim(tx.connection, call_id, hosted.session_row_id)
            )
            if call is None:
                return  # taken, answered or too late
            result: dict[str, Any] | None = None
            error_code = error = None
            handler = self._handlers.get(call.kind)
            try:
                if handler is None:
                    raise EngineError(f"unknown call {call.kind!r}")
                result = await handler(ref, hosted, call.args)
            except EngineError as exc:
                error_code, error = exc.code, exc.message
            except Exception as exc:  # a bug, not WhatsApp's answer: the caller hears it now, not at its deadline
                log.error(
                    "calls.crashed", session=str(ref), call=call_id, kind=call.kind, error=repr(exc), exc_info=exc
                )
                error_code, error = "internal_error", "the worker failed to make this call; it has been logged"
            # what WhatsApp answered (a group's subject, a contact's name) may hold what PostgreSQL refuses
            answer = None if result is None else storable_json(result)
            said = storable_or_none(error)
            finish = partial(self._finish, ref=ref, call_id=call_id, result=answer, code=error_code, error=said)
            await self._manager.execute_transaction(ref.client_id, finish)
        except Exception as exc:  # the caller times out
            log.warning("calls.failed", session=str(ref), call=call_id, error=repr(exc))

    async def _finish(
        self,
        tx: Transaction,
        *,
        ref: SessionRef,
        call_id: int,
        result: dict[str, Any] | None,
        code: str | None,
        error: str | None,
    ) -> None:
        await engine_calls.finish(tx.connection, call_id, result=result, error_code=code, error=error)
        await notify.notify(tx.connection, notify.CALLS_DONE, f"{ref.client_id}/{call_id}")

    async def _bounded(self, name: str, awaitable: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(awaitable, self._call_timeout)
        except TimeoutError as exc:
            raise EngineError(f"the engine did not answer the {name} call in {self._call_timeout:g} s") from exc

    # -- the calls ------------------------------------------------------------------------------------

    async def _presence(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        presence = Presence(args["presence"])
        await self._bounded("presence", hosted.engine.send_presence(ref, str(args["to"]), presence))
        return {"presence": presence.value, "to": args["to"]}

    async def _read(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        keys = tuple(MessageKey(id=str(k["id"]), from_me=False, sender_jid=k.get("sender")) for k in args["keys"])
        await self._bounded("read", hosted.engine.mark_read(ref, str(args["chat"]), keys))
        return {"read": [key.id for key in keys]}

    async def _check(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        answers = []
        learned = []
        for number in args["numbers"]:
            lookup = await self._bounded("resolve", hosted.engine.resolve(ref, str(number)))
            learned.append(outbound.Recipient(str(number), lookup.on_whatsapp, lookup.jid, lookup.lid))
            answers.append({"number": number, "onWhatsApp": lookup.on_whatsapp, "jid": lookup.jid, "lid": lookup.lid})

        async def remember(tx: Transaction) -> dict[str, Contact | None]:
            await outbound.remember_recipients(tx.connection, hosted.session_row_id, learned, RECIPIENT_TTL)
            merges: list[ContactUpdate] = []
            known = await contacts.learn_answers(tx.connection, hosted.session_row_id, learned, merges)
            await announce(tx, ref.session_id, merges)
            return known

        known = await self._manager.execute_transaction(ref.client_id, remember)
        for answer in answers:
            contact = known.get(answer["number"])
            answer["contactId"] = None if contact is None else contact.id
        return {"numbers": answers}

    async def _picture(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        picture = await self._bounded("picture", hosted.engine.profile_picture(ref, str(args["jid"])))
        expires = None if picture.expires_at is None else picture.expires_at.isoformat()
        return {"url": picture.url, "id": picture.picture_id, "expiresAt": expires}

    async def _block(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        blocked = bool(args["blocked"])
        await self._bounded("block", hosted.engine.set_blocked(ref, str(args["jid"]), blocked))
        return {"jid": args["jid"], "blocked": blocked}

    # -- chats and presence (issue 14) -----------------------------------------------------------------

    async def _chat(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        state = chat_state_of(args)
        await self._bounded("chat", hosted.engine.change_chat(ref, str(args["chat"]), state))
        return {"chat": args["chat"], **state.changes()}

    async def _subscribe(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        await self._bounded("subscribe", hosted.engine.subscribe_presence(ref, str(args["jid"])))
        return {"subscribed": args["jid"]}

    async def _available(self, ref: SessionRef, hosted: Hosted, args: dict[str, Any]) -> dict[str, Any]:
        available = bool(args["available"])
        await self._bounded("available", hosted.engine.set_available(ref, available))
        return {"presence": "available" if available else "unavailable"}


async def _pending(session_row: str, tx: Transaction) -> list[int]:
    return await engine_calls.pending(tx.connection, session_row)


RECIPIENT_TTL = 86_400.0  # seconds WhatsApp's answer about a number is trusted (as the outbox's)


def chat_jid_of(recipient_key: str, stored: str | None) -> str:
    """The JID of a chat: the one its messages were stored with, else a group's or a number's own."""
    if stored:
        return stored
    return recipient_key if "@" in recipient_key or recipient_key.endswith(GROUP_SERVER) else phone_jid(recipient_key)
