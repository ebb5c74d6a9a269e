"""The worker against an engine that behaves as WhatsApp does where the sandbox is kinder: its own message ids,
receipts that overtake their sends, numbers that are not on WhatsApp, the ninth digit, errors that may pass
and errors that will not, restrictions, stops that never return, connections that do not come back, and
inbound traffic that could poison a store. Real PostgreSQL, a real worker, the sandbox engine scripted.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from structlog.testing import capture_logs

from tests.support.waiting import eventually
from zapgate.db import groups as group_records
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.domain.chats import SeenPresence
from zapgate.domain.content import Location, MessageKey, Quote
from zapgate.domain.groups import GroupAction, GroupInfo, GroupParticipant
from zapgate.domain.pacing import Pacing
from zapgate.domain.phones import jid_user
from zapgate.domain.records import MessageStatus
from zapgate.domain.sessions import SessionStatus
from zapgate.engines import registry
from zapgate.engines.base import (
    EngineError,
    EngineEvent,
    GroupChanged,
    InboundMessage,
    JidLookup,
    Notice,
    NoticeKind,
    Presence,
    PresenceSeen,
    Receipt,
    Restricted,
    SendRejected,
    SendResult,
    SessionRef,
    StartRequest,
    StatusChanged,
)
from zapgate.engines.registry import EngineContext
from zapgate.engines.sandbox import SandboxEngine
from zapgate.services import outbox
from zapgate.services.clients import ClientService
from zapgate.services.engine_calls import EngineCalls
from zapgate.services.groups import GroupService
from zapgate.services.outbox import OutboxPolicy
from zapgate.services.recorder import Recorder
from zapgate.services.sessions import SessionService
from zapgate.services.worker import Worker, WorkerOptions

PHONE_A, PHONE_B = "5511999990001", "5511999990002"


@dataclass
class Script:
    """What the scripted engine does beyond the sandbox."""

    overtake: bool = False  # a delivered receipt comes back before the send returns
    not_on_whatsapp: set[str] = field(default_factory=set)
    accounts: dict[str, str] = field(default_factory=dict)  # number → the JID WhatsApp answers
    errors: dict[str, list[EngineError]] = field(default_factory=dict)  # number → errors its sends raise, in turn
    hangs: Counter[str] = field(default_factory=Counter)  # number → how many of its next sends never return
    stop_hangs: set[str] = field(default_factory=set)  # session ids whose stop never returns
    start_hangs: set[str] = field(default_factory=set)  # session ids whose start hangs once the session is made
    resolves: Counter[str] = field(default_factory=Counter)
    sent: list[tuple[str, str, str]] = field(default_factory=list)  # (session, to, text)
    presences: list[tuple[str, str, Presence]] = field(default_factory=list)  # (session, to, presence)
    engines: list[Scripted] = field(default_factory=list)
    groups: dict[str, GroupInfo] = field(default_factory=dict)  # group JID → what WhatsApp answers about it


class Scripted(SandboxEngine):
    """The sandbox, with WhatsApp's own ids and answers as the script says."""

    def __init__(self, context: EngineContext, script: Script) -> None:
        super().__init__(context.on_event, context.sandbox_network())
        self.script = script
        self.report: Callable[[EngineEvent], None] = context.on_event
        script.engines.append(self)

    async def resolve(self, ref: SessionRef, phone_number: str) -> JidLookup:
        self.script.resolves[phone_number] += 1
        if phone_number in self.script.not_on_whatsapp:
            return JidLookup(phone_number=phone_number, on_whatsapp=False)
        jid = self.script.accounts.get(phone_number, f"{phone_number}@s.whatsapp.net")
        return JidLookup(phone_number=phone_number, on_whatsapp=True, jid=jid, lid=f"9{phone_number}@lid")

    async def send_text(self, ref: SessionRef, to: str, text: str, message_id: str) -> SendResult:
        self._hosted(ref)
        pending = self.script.errors.get(jid_user(to))
        if pending:
            raise pending.pop(0)
        if self.script.hangs[jid_user(to)] > 0:
            self.script.hangs[jid_user(to)] -= 1
            await asyncio.Event().wait()  # WhatsApp never answers this one
        self.script.sent.append((ref.session_id, to, text))
        wa_id = "WA" + message_id  # WhatsApp makes its own id (whatsmeow through neonize 0.5.2 does)
        now = datetime.now(UTC)
        if self.script.overtake:
            self.report(
                Receipt(ref=ref, message_ids=(wa_id,), status=MessageStatus.DELIVERED, chat_jid=to, timestamp=now)
            )
            await asyncio.sleep(0)
        return SendResult(message_id=wa_id, timestamp=now, to=to)

    async def send_presence(self, ref: SessionRef, to: str, presence: Presence) -> None:
        self.script.presences.append((ref.session_id, to, presence))

    async def group_info(self, ref: SessionRef, group: str) -> GroupInfo:
        self._hosted(ref)
        return self.script.groups[group]

    async def start(self, request: StartRequest) -> None:
        await super().start(request)
        if request.ref.session_id in self.script.start_hangs:
            await asyncio.Event().wait()  # a start stuck after the engine took the session (a slow network)

    async def stop(self, ref: SessionRef) -> None:
        if ref.session_id in self.script.stop_hangs:
            await asyncio.Event().wait()  # a Go client stuck in its QR loop
        await super().stop(ref)


@pytest.fixture
def script() -> Iterator[Script]:
    original = registry.spec("sandbox")
    made = Script()
    registry.register(replace(original, build=lambda context: Scripted(context, made)))
    try:
        yield made
    finally:
        registry.register(original)


@pytest.fixture
async def sessions(manager: ConnectionManager) -> SessionService:
    await ClientService(manager).create("acme")
    return SessionService(manager, default_engine="sandbox")


WorkerFactory = Callable[..., Any]


@pytest.fixture
async def start_worker(manager: ConnectionManager, database_url: str, script: Script) -> AsyncIterator[WorkerFactory]:
    started: list[Worker] = []

    async def start(**options: Any) -> Worker:
        worker_kwargs = {k: options.pop(k) for k in ("session_timeout", "lease_ttl") if k in options}
        worker = Worker(
            manager,
            database_url,
            ("sandbox",),
            capacity=5,
            qr_timeout=30,
            poll_interval=0.1,
            options=WorkerOptions(**options),
            **worker_kwargs,
        )
        await worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await worker.close()


async def connect(sessions: SessionService, session_id: str, phone: str) -> None:
    await sessions.create("acme", session_id)

    async def has_qr() -> bool:
        return (await sessions.get("acme", session_id)).session.qr_code is not None

    await eventually(has_qr)
    await sessions.sandbox_scan("acme", session_id, phone)
    await eventually(lambda: _status_is(sessions, session_id, "connected"))


async def _status_is(sessions: SessionService, session_id: str, status: str) -> bool:
    return (await sessions.get("acme", session_id)).session.status == status


async def events(manager: ConnectionManager, kind: str | None = None) -> list[dict[str, Any]]:
    db = await manager.get_connection("acme")
    return [e.payload for e in await db.event.list_after(limit=100_000) if kind is None or e.type == kind]


async def message(manager: ConnectionManager, message_id: str) -> Any:
    db = await manager.get_connection("acme")
    return await db.message.find_unique(message_id)


async def test_receipts_name_whatsapps_ids_and_none_that_overtake_their_sends_is_lost(
    manager: ConnectionManager, sessions: SessionService, script: Script, start_worker: WorkerFactory
) -> None:
    script.overtake = True
    await start_worker()
    await connect(sessions, "alice", PHONE_A)
    accepted = await asyncio.gather(
        *(sessions.send_text("acme", "alice", f"55219888{n % 7:05d}", f"m{n}") for n in range(200))
    )
    ours = {a.message_id for a in accepted}

    async def all_delivered() -> bool:
        found = [await message(manager, i) for i in ours]
        return all(m is not None and m.status == "delivered" for m in found)

    await eventually(all_delivered, within=30)
    for message_id in list(ours)[:20]:
        row = await message(manager, message_id)
        assert row.message_id == message_id and row.wa_message_id == "WA" + message_id  # ours stays the public id
    steps: dict[str, list[str]] = {}
    for payload in await events(manager, "message-status"):
        assert payload["whatsappMessageId"] == "WA" + payload["messageId"]
        steps.setdefault(payload["messageId"], []).append(payload["status"])
    assert set(steps) == ours
    assert all(statuses == ["sent", "delivered"] for statuses in steps.values()), steps


async def test_a_number_not_on_whatsapp_fails_for_good_and_the_messages_behind_it_go(
    manager: ConnectionManager, sessions: SessionService, script: Script, start_worker: WorkerFactory
) -> None:
    script.not_on_whatsapp = {"5521900000000"}
    await start_worker()
    await connect(sessions, "alice", PHONE_A)
    nowhere = [await sessions.send_text("acme", "alice", "5521900000000", f"x{i}") for i in range(3)]
    fine = await sessions.send_text("acme", "alice", "5521911111111", "fine")
    await eventually(lambda: _has_status(manager, fine.message_id, "sent"))
    for accepted in nowhere:
        await eventually(lambda accepted=accepted: _has_status(manager, accepted.message_id, "failed"))
        row = await message(manager, accepted.message_id)
        assert row.error_code == "not_on_whatsapp" and row.wa_message_id is None
    failed = [p for p in await events(manager, "message-status") if p["status"] == "failed"]
    assert {p["messageId"] for p in failed} == {a.message_id for a in nowhere}
    assert all(p["reason"] == "not_on_whatsapp" for p in failed)
    assert script.resolves["5521900000000"] == 1  # asked once, then cached
    assert [to for _, to, _ in script.sent] == ["5521911111111@s.whatsapp.net"]
    async with manager.engine.connect() as conn:
        cached = (await conn.execute(text("SELECT phone_number, on_whatsapp, lid FROM client_acme.recipients"))).all()
    assert sorted(cached) == [("5521900000000", False, None), ("5521911111111", True, "95521911111111@lid")]


async def test_whatsapps_answer_about_a_number_is_trusted_for_the_ttl_from_when_it_was_asked(
    manager: ConnectionManager, sessions: SessionService, script: Script, start_worker: WorkerFactory
) -> None:
    """Each send from the cache used to start the answer's TTL again: a number sent to every day was never asked
    about again (one that left WhatsApp kept being sent to)."""
    await start_worker(outbox=OutboxPolicy(recipient_ttl=3.0))
    await connect(sessions, "alice", PHONE_A)
    number = "5521911111111"

    async def send(body: str) -> None:
        accepted = await sessions.send_text("acme", "alice", number, body)
        await eventually(lambda: _has_status(manager, accepted.message_id, "sent"))

    await send("first")
    asked = time.monotonic()
    assert script.resolves[number] == 1
    await asyncio.sleep(max(0.0, asked + 1.5 - time.monotonic()))
    await send("within the TTL")  # from the cache
    assert script.resolves[number] == 1
    await asyncio.sleep(max(0.0, asked + 3.5 - time.monotonic()))
    await send("past it")  # asked 3.5 s ago, used 2 s ago: asked again
    assert script.resolves[number] == 2


async def test_brazils_ninth_digit_is_whatever_whatsapp_answers(
    manager: ConnectionManager, sessions: SessionService, script: Script, start_worker: WorkerFactory
) -> None:
    script.accounts = {"5531912345678": "553112345678@s.whatsapp.net"}  # registered before the ninth digit
    await start_worker()
    await connect(sessions, "alice", PHONE_A)
    accepted = await sessions.send_text("acme", "alice", "+55 31 91234-5678", "oi")
    await eventually(lambda: _has_status(manager, accepted.message_id, "sent"))
    row = await message(manager, accepted.message_id)
    assert row.chat_jid == "553112345678@s.whatsapp.net"
    assert script.sent == [("alice", "553112345678@s.whatsapp.net", "oi")]  # never a digit added or dropped by us


async def test_errors_that_may_pass_are_retried_up_to_the_cap_holding_back_only_their_chat(
    manager: ConnectionManager,
    sessions: SessionService,
    script: Script,
    start_worker: WorkerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox, "RETRY_BASE", 0.3)
    script.errors = {"5521922222222": [EngineError("server busy"), EngineError("server busy"), EngineError("busy")]}
    await start_worker(outbox=OutboxPolicy(max_attempts=3))
    await connect(sessions, "alice", PHONE_A)
    doomed = await sessions.send_text("acme", "alice", "5521922222222", "first")
    behind = await sessions.send_text("acme", "alice", "5521922222222", "second")
    other = await sessions.send_text("acme", "alice", "5521933333333", "to someone else")
    await eventually(lambda: _has_status(manager, other.message_id, "sent"))
    assert (await message(manager, doomed.message_id)).status == "pending"  # still being retried
    await eventually(lambda: _has_status(manager, behind.message_id, "sent"))
    failed = await message(manager, doomed.message_id)
    assert failed.status == "failed" and failed.error_code == "too_many_attempts" and failed.attempts == 3
    # the other chat did not wait; the same chat kept its order
    texts = [t for _, _, t in script.sent]
    assert texts == ["to someone else", "second"]


async def test_a_send_that_never_returns_is_given_up_after_the_call_timeout_and_tried_again(
    manager: ConnectionManager,
    sessions: SessionService,
    script: Script,
    start_worker: WorkerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox, "RETRY_BASE", 0.3)
    script.hangs["5521922222222"] = 1
    await start_worker(outbox=OutboxPolicy(call_timeout=0.5))
    await connect(sessions, "alice", PHONE_A)
    began = time.monotonic()
    stuck = await sessions.send_text("acme", "alice", "5521922222222", "first")
    other = await sessions.send_text("acme", "alice", "5521933333333", "to someone else")
    await eventually(lambda: _has_status(manager, stuck.message_id, "sent"))
    assert time.monotonic() - began >= 0.5 + 0.3  # the timeout, then the retry's wait
    sent = await message(manager, stuck.message_id)
    assert sent.attempts == 1 and sent.error is None  # the second attempt went out
    # the batch went on once the hung send was given up; the hung one went out on its next attempt
    assert [t for _, _, t in script.sent] == ["to someone else", "first"]
    assert (await message(manager, other.message_id)).status in {"sent", "delivered", "read"}


async def test_a_restriction_fails_the_message_with_its_reason_and_an_error_event(
    manager: ConnectionManager, sessions: SessionService, script: Script, start_worker: WorkerFactory
) -> None:
    script.errors = {"5521944444444": [Restricted("WhatsApp answered 463", code=463)]}
    await start_worker()
    await connect(sessions, "alice", PHONE_A)
    accepted = await sessions.send_text("acme", "alice", "5521944444444", "hello")
    await eventually(lambda: _has_status(manager, accepted.message_id, "failed"))
    assert (await message(manager, accepted.message_id)).error_code == "restricted"
    errors = [p for p in await events(manager, "error") if p["code"] == "restricted"]
    assert errors and errors[0]["details"]["messageId"] == accepted.message_id


async def test_an_engines_answer_postgresql_would_refuse_is_stored_made_storable_and_holds_nothing_back(
    manager: ConnectionManager, sessions: SessionService, script: Script, start_worker: WorkerFactory
) -> None:
    # what an engine answers comes from outside (whatsmeow's error texts, WhatsApp's ids): a NUL byte or a lone
    # surrogate in it would fail the statement that records the whole batch, and the batch would be sent again
    script.errors = {"5521944444444": [SendRejected("refused\x00 by \ud800 WhatsApp")]}
    await start_worker()
    await connect(sessions, "alice", PHONE_A)
    refused = await sessions.send_text("acme", "alice", "5521944444444", "refused")
    fine = await sessions.send_text("acme", "alice", "5521988887777", "fine")
    await eventually(lambda: _has_status(manager, refused.message_id, "failed"))
    await eventually(lambda: _has_status(manager, fine.message_id, "sent"))
    assert (await message(manager, refused.message_id)).error == "refused by \ufffd WhatsApp"
    assert [t for _, _, t in script.sent] == ["fine"]  # sent once: its batch was recorded


async def test_paced_sends_type_first_and_new_numbers_wait_past_the_daily_cap(
    manager: ConnectionManager, sessions: SessionService, script: Script, start_worker: WorkerFactory
) -> None:
    pacing = Pacing(typing_ms_per_char=1, typing_max_ms=40, pause_min_ms=5, pause_max_ms=10, first_contacts_per_day=2)
    await start_worker(pacing={"sandbox": pacing})
    await connect(sessions, "alice", PHONE_A)
    engine = script.engines[0]
    wrote_first = "5521955555555"
    engine.report(
        InboundMessage(
            ref=SessionRef("acme", "alice"),
            message_id="IN1",
            chat_jid=f"{wrote_first}@s.whatsapp.net",
            chat_lid=None,
            sender_jid=f"{wrote_first}@s.whatsapp.net",
            type="text",
            text="hi, it's me",
            timestamp=datetime.now(UTC),
        )
    )
    await eventually(lambda: message(manager, "IN1"))
    new = [await sessions.send_text("acme", "alice", f"552196666666{i}", f"new {i}") for i in range(3)]
    known = await sessions.send_text("acme", "alice", wrote_first, "reply")
    await eventually(lambda: _has_status(manager, known.message_id, "sent"))
    await eventually(lambda: _has_status(manager, new[1].message_id, "sent"))
    held = await message(manager, new[2].message_id)
    assert held.status == "pending" and held.error_code == "first_contact_cap"
    notice = [p for p in await events(manager, "message-status") if p.get("reason") == "first_contact_cap"]
    assert notice and notice[0]["messageId"] == new[2].message_id and notice[0]["status"] == "pending"
    assert notice[0]["contactId"] == held.contact_id  # its contact named, as in every message event
    sent_to = [to for _, to, _ in script.sent]
    assert [to for _, to, presence in script.presences if presence is Presence.COMPOSING] == sent_to  # typed first


async def test_a_stop_that_never_returns_abandons_the_client_and_the_worker_keeps_serving(
    manager: ConnectionManager, sessions: SessionService, script: Script, start_worker: WorkerFactory
) -> None:
    script.stop_hangs = {"stuck", "stuck2"}
    worker = await start_worker(engine_timeout=0.5, max_abandoned=1, lease_ttl=1.5)
    await connect(sessions, "ok", PHONE_A)
    await connect(sessions, "stuck", PHONE_B)
    await sessions.stop("acme", "stuck")
    await eventually(lambda: _status_is(sessions, "stuck", "stopped"))
    assert worker.abandoned == 1 and not worker.exhausted.is_set()
    assert SessionRef("acme", "stuck") not in worker.hosted
    async with manager.engine.connect() as conn:
        lease = await conn.scalar(
            text("SELECT worker_id FROM zapgate.placements WHERE session_id = 'stuck' AND client_id = 'acme'")
        )
    assert lease is None  # released: another worker may take it
    # the others are served: sends go, leases are renewed
    before = await _lease_of(manager, "ok")
    accepted = await sessions.send_text("acme", "ok", "5521977777777", "still here")
    await eventually(lambda: _has_status(manager, accepted.message_id, "sent"))
    await eventually(lambda: _lease_later(manager, "ok", before))
    # past the bound the worker drains and asks to be replaced
    await connect(sessions, "stuck2", "5511999990003")
    await sessions.stop("acme", "stuck2")
    await eventually(lambda: _true(worker.exhausted.is_set()))
    assert worker.abandoned == 2


async def test_a_start_cut_off_by_the_bound_leaves_nothing_hosted_in_the_engine(
    sessions: SessionService, script: Script, start_worker: WorkerFactory
) -> None:
    # a start that took the session in the engine and then hung: failed at the bound, and stopped in the engine,
    # where it would otherwise stay hosted and never collect its mail (issue 16)
    script.start_hangs.add("alice")
    await start_worker(engine_timeout=0.5)
    await sessions.create("acme", "alice")
    await eventually(lambda: _status_is(sessions, "alice", "failed"))
    engine = script.engines[0]
    await eventually(lambda: _not_hosted(engine, SessionRef("acme", "alice")))


async def test_sessions_claimed_together_start_together_so_one_slow_start_holds_up_no_other(
    sessions: SessionService, script: Script, start_worker: WorkerFactory
) -> None:
    """Issue 16: a worker taking over the sessions of a dead one started them one after the other; on a busy
    machine the last of 44 was connected minutes after its claim. Sessions claimed together now start up to
    HOST_AT_ONCE at a time: a start that hangs (up to the engine bound) holds up none of the others."""
    names = ("s1", "s2", "s3", "s4")
    script.start_hangs.update(names)  # each shows its QR codes, and its start never returns
    for session_id in names:  # placed before any worker runs: claimed in one go
        await sessions.create("acme", session_id)
    await start_worker(engine_timeout=30.0)
    for session_id in names:  # one after the other, only the first would show one within the bound
        await eventually(lambda session_id=session_id: _status_is(sessions, session_id, "qr"), within=5.0)


async def _refuse(manager: ConnectionManager, table: str, check: str) -> None:
    """Make PostgreSQL refuse some of acme's rows of `table`: a value the recorder cannot make storable."""
    async with manager.engine.begin() as conn:
        await conn.execute(text(f"ALTER TABLE client_acme.{table} ADD CONSTRAINT refuses CHECK ({check})"))


async def _not_hosted(engine: Scripted, ref: SessionRef) -> bool:
    return not engine.hosts(ref)


async def test_a_session_that_stays_reconnecting_is_failed_by_the_watchdog(
    manager: ConnectionManager, sessions: SessionService, script: Script, start_worker: WorkerFactory
) -> None:
    await start_worker(reconnect_window=1.0, lease_ttl=1.5)
    await connect(sessions, "alice", PHONE_A)
    ref = SessionRef("acme", "alice")
    script.engines[0].report(StatusChanged(ref, SessionStatus.RECONNECTING, reason="keepalive", code="keepalive"))
    await eventually(lambda: _status_is(sessions, "alice", "reconnecting"))
    await eventually(lambda: _status_is(sessions, "alice", "failed"))
    session = (await sessions.get("acme", "alice")).session
    assert session.status_code == "reconnect_timeout" and "1 s" in (session.last_error or "")
    changes = [p for p in await events(manager, "status-change") if p["status"] == "failed"]
    assert changes[-1]["code"] == "reconnect_timeout" and changes[-1]["previousStatus"] == "reconnecting"


async def test_a_connected_session_is_never_closed_for_being_quiet_but_pairing_is_bounded(
    manager: ConnectionManager, sessions: SessionService, script: Script, start_worker: WorkerFactory
) -> None:
    await start_worker(session_timeout=1.0, lease_ttl=1.5)
    await connect(sessions, "alice", PHONE_A)
    await sessions.create("acme", "never_scanned")
    await eventually(lambda: _status_is(sessions, "never_scanned", "stopped"))
    stopped = [p for p in await events(manager, "status-change") if p["status"] == "stopped"]
    assert "WHATSAPP_SESSION_TIMEOUT" in stopped[-1]["reason"] and stopped[-1]["sessionId"] == "never_scanned"
    await asyncio.sleep(1.5)
    assert await _status_is(sessions, "alice", "connected")


async def test_inbound_is_stored_faithfully_and_cannot_poison_the_store(
    manager: ConnectionManager, sessions: SessionService, script: Script, start_worker: WorkerFactory
) -> None:
    await start_worker()
    await connect(sessions, "alice", PHONE_A)
    ref = SessionRef("acme", "alice")
    engine = script.engines[0]
    now = datetime.now(UTC)

    def inbound(message_id: str, chat: str, text_: str, **extra: Any) -> InboundMessage:
        fields: dict[str, Any] = {"sender_jid": chat, "chat_lid": None, "type": "text", "timestamp": now, **extra}
        return InboundMessage(ref=ref, message_id=message_id, chat_jid=chat, text=text_, **fields)

    sent = await sessions.send_text("acme", "alice", "5521988880000", "from the api")
    await eventually(lambda: _has_status(manager, sent.message_id, "sent"))
    await _refuse(manager, "events", "NOT payload ? 'refuseMe'")  # a value the database still refuses
    for event in (
        inbound("NUL", "5521988881111@s.whatsapp.net", "a\x00b\ud800c", push_name="Jo\x00e"),
        inbound("STORY", "status@broadcast", "my story", sender_jid="5521988882222@s.whatsapp.net"),
        Notice(ref, NoticeKind.HISTORY_SYNC, {"progress": math.nan}),  # NaN: no JSON has it, stored as null
        Notice(ref, NoticeKind.HISTORY_SYNC, {"refuseMe": True}),  # refused: an error event in its place
        inbound("PHONE", "5521988883333@s.whatsapp.net", "sent from the phone", from_me=True),
        inbound(
            "GROUP",
            "120363000000000001@g.us",
            "in a group",
            is_group=True,
            sender_jid="5521988884444@s.whatsapp.net",
            sender_lid="777@lid",
        ),
        inbound("WA" + sent.message_id, "5521988880000@s.whatsapp.net", "from the api", from_me=True),  # echo
        Notice(ref, NoticeKind.UNDECRYPTABLE, {"messageId": "BAD1", "chatJid": "5521988885555@s.whatsapp.net"}),
        inbound("LAST", "5521988886666@s.whatsapp.net", "after all that"),
    ):
        engine.report(event)
    await eventually(lambda: message(manager, "LAST"))
    nul = await message(manager, "NUL")
    assert nul.content == "ab\ufffdc" and nul.direction == "inbound"
    assert await message(manager, "STORY") is None  # stories are not messages unless kept
    phone = await message(manager, "PHONE")
    assert phone.direction == "outbound" and phone.source == "phone" and phone.status == "sent"
    group = await message(manager, "GROUP")
    assert group.sender_jid == "5521988884444@s.whatsapp.net" and group.sender_lid == "777@lid"
    assert await message(manager, "WA" + sent.message_id) is None  # our own send, echoed: stored once
    kinds = [p.get("code") or p.get("notice") for p in await events(manager) if "code" in p or "notice" in p]
    assert "event_not_storable" in kinds and "undecryptable" in kinds
    [synced] = [p for p in await events(manager) if p.get("notice") == "history_sync"]
    assert "progress" in synced and synced["progress"] is None
    received = list(await events(manager, "message-received"))
    assert [p["messageId"] for p in received] == ["NUL", "PHONE", "GROUP", "LAST"]
    assert received[0]["pushName"] == "Joe" and received[1]["source"] == "phone"


async def test_a_clients_messages_of_a_batch_share_a_transaction_and_one_refused_costs_only_itself(
    manager: ConnectionManager, sessions: SessionService
) -> None:
    """Issue 16: a client's arrived messages (and receipts) of a batch are stored in one transaction; when the
    database refuses one of them (here a CHECK the test adds), the run is stored again one by one, so the
    others are kept, each announced once, and the refused one becomes an `error` event. A location at NaN
    degrees (a protobuf double may carry NaN; jsonb has none) is kept, its latitude null."""
    for session_id in ("alice", "bob"):
        await sessions.create("acme", session_id)
    await _refuse(manager, "messages", "content <> 'REFUSED'")
    recorder = Recorder(manager, {})
    now = datetime.now(UTC)
    acked: list[str] = []

    def inbound(session_id: str, message_id: str, **extra: Any) -> InboundMessage:
        chat = "5521988881111@s.whatsapp.net"
        return InboundMessage(
            ref=SessionRef("acme", session_id),
            message_id=message_id,
            chat_jid=chat,
            chat_lid=None,
            sender_jid=chat,
            text=message_id,
            timestamp=now,
            ack=lambda: acked.append(message_id),
            **{"type": "text", **extra},
        )

    batch: list[EngineEvent] = [
        inbound("alice", "FIRST"),
        inbound("bob", "NAN", type="location", content=Location(latitude=math.nan, longitude=0.0)),  # kept
        inbound("bob", "REFUSED"),
        inbound("bob", "AFTER", quote=Quote(MessageKey(id="FIRST"))),
        inbound("alice", "FIRST"),  # redelivered within the run: stored and announced once
        inbound("ghost", "GONE"),  # a session deleted meanwhile: nothing to keep, the others stay
    ]
    await recorder.store_batch(batch)
    received = [(p["sessionId"], p["messageId"]) for p in await events(manager, "message-received")]
    assert received == [("alice", "FIRST"), ("bob", "NAN"), ("bob", "AFTER")]
    assert await message(manager, "REFUSED") is None
    assert (await message(manager, "NAN")).payload["location"]["latitude"] is None  # no JSON has NaN: null
    errors = await events(manager, "error")
    assert [(e["sessionId"], e["code"], e["details"]["messageId"]) for e in errors] == [
        ("bob", "event_not_storable", "REFUSED")
    ]
    # every one handled: none handed out again
    assert sorted(acked) == ["AFTER", "FIRST", "FIRST", "GONE", "NAN", "REFUSED"]

    acked.clear()  # the same run without the refused one: one transaction, everything stored
    await recorder.store_batch([inbound("alice", "M1"), inbound("bob", "M2"), inbound("alice", "M3")])
    received = [p["messageId"] for p in await events(manager, "message-received")]
    assert received[-3:] == ["M1", "M2", "M3"] and acked == ["M1", "M2", "M3"]


async def test_groups_whatsapp_tells_with_unstorable_text_are_stored_cleaned_not_lost(
    manager: ConnectionManager,
    database_url: str,
    sessions: SessionService,
    script: Script,
    start_worker: WorkerFactory,
) -> None:
    # any admin writes a group's subject and description: a NUL or a lone surrogate in them once failed the
    # store of the change (an error event instead of the group-update) and the answer of an info call
    await start_worker()
    await connect(sessions, "alice", PHONE_A)
    ref = SessionRef("acme", "alice")
    engine = script.engines[0]
    jid, now = "120363000000000009@g.us", datetime.now(UTC)
    owner = GroupParticipant(jid="5521988880001@s.whatsapp.net\x00", lid="1\ud800@lid", is_super_admin=True)
    info = GroupInfo(jid=jid, subject="Te\x00am", description="a\ud800b", owner_jid=owner.jid, participants=(owner,))
    for event in (
        GroupChanged(ref, jid, GroupAction.JOINED, now, reason="added", info=info),
        GroupChanged(ref, jid, GroupAction.SUBJECT, now, actor_jid=owner.jid, subject="Ne\x00w"),
        GroupChanged(
            ref, jid, GroupAction.ADD, now, actor_jid=owner.jid, participants=("5521988880002@s.whatsapp.net\x00",)
        ),
    ):
        engine.report(event)
    await eventually(lambda: _has_event(manager, "group-participants"))
    assert "event_not_storable" not in [e.get("code") for e in await events(manager, "error")]
    updates = await events(manager, "group-update")
    assert [(u["action"], u.get("subject")) for u in updates] == [("subject", "New")]
    join = (await events(manager, "group-join"))[0]
    assert join["group"]["subject"] == "Team" and join["group"]["description"] == "a\ufffdb"

    async def read(tx: Transaction) -> group_records.StoredGroup | None:
        row = await tx.session.find_unique("alice")
        assert row is not None
        return await group_records.get_group(tx.connection, row.id, jid)

    stored = await manager.execute_transaction("acme", read)
    assert stored is not None and stored.info.subject == "New"
    members = {p.jid for p in stored.info.participants}
    assert members == {"5521988880001@s.whatsapp.net", "5521988880002@s.whatsapp.net"}

    # asked of WhatsApp through the API: the worker's answer is stored cleaned, and the service reads it back
    calls = EngineCalls(manager, database_url)
    await calls.start()
    try:
        script.groups[jid] = replace(info, subject="Sub\x00ject")
        answered = await GroupService(manager, calls).info("acme", "alice", jid)
    finally:
        await calls.close()
    assert answered["subject"] == "Subject" and answered["description"] == "a\ufffdb"


async def test_a_presence_that_only_repeats_the_last_within_seconds_is_told_once(
    manager: ConnectionManager, sessions: SessionService, script: Script, start_worker: WorkerFactory
) -> None:
    # a phone says "typing" again every few seconds while its user types: each repeat would be an event row
    # and a webhook delivery telling nothing new
    await start_worker()
    await connect(sessions, "alice", PHONE_A)
    ref, engine = SessionRef("acme", "alice"), script.engines[0]
    bob, group = "5521988881111@s.whatsapp.net", "120363000000000001@g.us"
    seen = datetime(2026, 1, 1, tzinfo=UTC)
    told = [
        PresenceSeen(ref, bob, SeenPresence.COMPOSING, chat_jid=bob),
        PresenceSeen(ref, bob, SeenPresence.COMPOSING, chat_jid=bob),  # a repeat: dropped
        PresenceSeen(ref, bob, SeenPresence.COMPOSING, chat_jid=group),  # another chat: told
        PresenceSeen(ref, bob, SeenPresence.COMPOSING, chat_jid=bob),  # a repeat: dropped
        PresenceSeen(ref, bob, SeenPresence.PAUSED, chat_jid=bob),
        PresenceSeen(ref, bob, SeenPresence.COMPOSING, chat_jid=bob),  # a change back: told
        PresenceSeen(ref, bob, SeenPresence.UNAVAILABLE, last_seen=seen),
        PresenceSeen(ref, bob, SeenPresence.UNAVAILABLE, last_seen=seen),  # a repeat: dropped
        PresenceSeen(ref, bob, SeenPresence.UNAVAILABLE, last_seen=seen.replace(hour=1)),  # new last seen: told
        PresenceSeen(ref, "5521988882222@s.whatsapp.net", SeenPresence.COMPOSING, chat_jid=group),  # someone else
    ]
    for event in told:
        engine.report(event)
    engine.report(inbound_text(ref, "LAST", bob, "after the presences"))
    await eventually(lambda: message(manager, "LAST"))
    got = [(p["jid"], p["presence"], p["chatJid"], p["lastSeen"]) for p in await events(manager, "presence")]
    assert got == [
        (bob, "composing", bob, None),
        (bob, "composing", group, None),
        (bob, "paused", bob, None),
        (bob, "composing", bob, None),
        (bob, "unavailable", None, seen.isoformat()),
        (bob, "unavailable", None, seen.replace(hour=1).isoformat()),
        ("5521988882222@s.whatsapp.net", "composing", group, None),
    ]


def inbound_text(ref: SessionRef, message_id: str, chat: str, text_: str) -> InboundMessage:
    return InboundMessage(
        ref=ref,
        message_id=message_id,
        chat_jid=chat,
        text=text_,
        sender_jid=chat,
        chat_lid=None,
        type="text",
        timestamp=datetime.now(UTC),
    )


async def _has_event(manager: ConnectionManager, kind: str) -> bool:
    return bool(await events(manager, kind))


async def test_stories_are_kept_as_their_own_kind_when_asked(
    manager: ConnectionManager, sessions: SessionService, script: Script, start_worker: WorkerFactory
) -> None:
    await start_worker(keep_stories=True)
    await connect(sessions, "alice", PHONE_A)
    story = InboundMessage(
        ref=SessionRef("acme", "alice"),
        message_id="STORY",
        chat_jid="status@broadcast",
        chat_lid=None,
        sender_jid="5521988882222@s.whatsapp.net",
        type="text",
        text="my story",
        timestamp=datetime.now(UTC),
    )
    script.engines[0].report(story)
    stored = await eventually(lambda: message(manager, "STORY"))
    assert stored.type == "story" and stored.sender_jid == "5521988882222@s.whatsapp.net"


async def _has_status(manager: ConnectionManager, message_id: str, status: str) -> bool:
    found = await message(manager, message_id)
    return found is not None and found.status == status


async def _lease_of(manager: ConnectionManager, session_id: str) -> datetime:
    async with manager.engine.connect() as conn:
        return await conn.scalar(  # type: ignore[no-any-return]
            text("SELECT lease_expires_at FROM zapgate.placements WHERE session_id = :s"), {"s": session_id}
        )


async def _lease_later(manager: ConnectionManager, session_id: str, before: datetime) -> bool:
    return await _lease_of(manager, session_id) > before


async def _true(value: bool) -> bool:
    return value


async def test_the_duplicate_window_is_one_batch_sent_but_not_recorded(
    manager: ConnectionManager,
    sessions: SessionService,
    script: Script,
    start_worker: WorkerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A crash after WhatsApp took a batch and before the worker recorded it leaves the batch pending: it is
    # sent again. whatsmeow makes a new id for each send, so on the real engine its recipients get those
    # messages twice. Nothing outside that one batch is sent twice, and nothing is lost.
    from zapgate.db import outbound as queue

    record = queue.record_sends_many
    crashed: list[int] = []

    async def crash_once(conn: Any, sends: Any) -> Any:
        if not crashed:
            crashed.append(sum(len(outcomes) for _, outcomes in sends))
            raise RuntimeError("the worker died here")  # not the database away: that is waited for
        return await record(conn, sends)

    await start_worker()
    await connect(sessions, "alice", PHONE_A)
    first = [await sessions.send_text("acme", "alice", "5521988887777", f"before {i}") for i in range(3)]
    await eventually(lambda: _has_status(manager, first[-1].message_id, "sent"))
    monkeypatch.setattr(queue, "record_sends_many", crash_once)
    batch = await asyncio.gather(*(sessions.send_text("acme", "alice", "5521988887777", f"in {i}") for i in range(50)))
    await eventually(lambda: _all_sent(manager, [a.message_id for a in batch]))
    monkeypatch.setattr(queue, "record_sends_many", record)
    after = await sessions.send_text("acme", "alice", "5521988887777", "after")
    await eventually(lambda: _has_status(manager, after.message_id, "sent"))
    sends = Counter(t for _, _, t in script.sent)
    twice = {t for t, n in sends.items() if n == 2}
    assert crashed and len(twice) == crashed[0]  # exactly the batch in flight at the crash
    assert twice <= {f"in {i}" for i in range(50)} and all(n <= 2 for n in sends.values())
    assert sends["after"] == 1 and all(sends[f"before {i}"] == 1 for i in range(3))
    statuses = Counter(p["messageId"] for p in await events(manager, "message-status") if p["status"] == "sent")
    assert all(n == 1 for n in statuses.values())  # recorded, and announced, once


async def _all_sent(manager: ConnectionManager, ids: list[str]) -> bool:
    return all([await _has_status(manager, i, "sent") for i in ids])


async def test_an_id_too_big_for_an_index_costs_only_its_own_message_and_is_not_retried(
    manager: ConnectionManager, sessions: SessionService
) -> None:
    """An id from outside is indexed (messages.message_id, wa_message_id): past 2,704 bytes PostgreSQL refuses the
    row (program_limit_exceeded), however often it is tried. It used to be a database error, retried 5 times with
    waits, then handed out again by the engine for ever; now it is refused data: the others of its run are
    stored, and it becomes an `error` event."""
    await sessions.create("acme", "alice")
    recorder = Recorder(manager, {})
    now = datetime.now(UTC)
    acked: list[str] = []
    huge = secrets.token_urlsafe(9_000)  # random: a compressed index entry stays over the limit

    def inbound(message_id: str) -> InboundMessage:
        chat = "5521988881111@s.whatsapp.net"
        return InboundMessage(
            ref=SessionRef("acme", "alice"),
            message_id=message_id,
            chat_jid=chat,
            chat_lid=None,
            sender_jid=chat,
            text="hello",
            timestamp=now,
            type="text",
            ack=lambda: acked.append(message_id[:10]),
        )

    started = time.monotonic()
    await recorder.store_batch([inbound("BEFORE"), inbound(huge), inbound("AFTER")])
    assert time.monotonic() - started < 2.0  # no retry waits (0.4 + 0.8 + 1.6 + ... s)
    received = [p["messageId"] for p in await events(manager, "message-received")]
    assert received == ["BEFORE", "AFTER"]
    [error] = await events(manager, "error")
    assert error["code"] == "event_not_storable" and error["details"]["messageId"] == huge
    assert sorted(acked) == sorted(["AFTER", "BEFORE", huge[:10]])  # every one handled: none handed out again


async def test_a_worker_warns_when_the_server_runs_no_autovacuum(
    manager: ConnectionManager, start_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_says = await manager.autovacuum_on()  # the real setting, read from the server
    async with manager.engine.connect() as conn:
        shown = (await conn.execute(text("SELECT setting FROM pg_settings WHERE name = 'autovacuum'"))).scalar_one()
    assert server_says is (shown == "on")

    async def off() -> bool:
        return False

    monkeypatch.setattr(manager, "autovacuum_on", off)
    with capture_logs() as logs:
        await start_worker()
    assert [e for e in logs if e["event"] == "worker.autovacuum_off"]
