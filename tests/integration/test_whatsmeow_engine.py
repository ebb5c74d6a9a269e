"""The whatsmeow engine against the real neonize library, offline: keystores, serialisation, events, policies."""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from tests.support.databases import plain_url
from tests.support.neonize import EVENT_TO_INT, FakeGo
from tests.support.neonize import Fed as _Fed
from tests.support.neonize import jid as _jid
from tests.support.neonize import message as _message
from tests.support.neonize import source as _source
from zapgate.db.keystore import KEYSTORE_CONNECTION_LIMIT, drop_keystore, provision_keystore
from zapgate.db.manager import ConnectionManager
from zapgate.domain.records import MessageStatus
from zapgate.domain.sessions import SessionStatus
from zapgate.engines.base import (
    EngineError,
    EngineEvent,
    EngineFailure,
    InboundMessage,
    NotConnected,
    Notice,
    NoticeKind,
    Presence,
    QrCode,
    Receipt,
    SessionRef,
    StartMode,
    StartRequest,
    StatusChanged,
    StopTimedOut,
    UnknownSession,
)
from zapgate.engines.whatsmeow import _GATE, DeviceProps, WhatsmeowEngine, pb, wa

history = importlib.import_module("neonize.proto.waHistorySync.WAWebProtobufsHistorySync_pb2")

# offline the dial fails at once here because DNS has no answer; a refused proxy is set in case whatsmeow
# honours it where DNS does answer (not shown here: on this machine the DNS failure comes first)
FAST_FAIL = {"HTTPS_PROXY": "http://127.0.0.1:9"}


@pytest.fixture(autouse=True)
def _dial_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in FAST_FAIL.items():
        monkeypatch.setenv(key, value)


async def _until(predicate: Any, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _statuses(events: list[EngineEvent], ref: SessionRef | None = None) -> list[SessionStatus]:
    return [e.status for e in events if isinstance(e, StatusChanged) and (ref is None or e.ref == ref)]


# -- keystores: one role per client, no role reads another's keys ----------------------------------------


async def test_three_clients_get_isolated_keystores(manager: ConnectionManager, database_url: str) -> None:
    clients = ["alpha", "beta", "gamma"]
    dsns: dict[str, str] = {}
    async with manager.engine.begin() as conn:
        for cid in clients:
            await conn.execute(text("INSERT INTO zapgate.clients (client_id) VALUES (:c)"), {"c": cid})
            dsns[cid] = await provision_keystore(conn, cid, database_url)
    try:
        async with manager.engine.begin() as conn:  # provisioning again keeps the password
            assert await provision_keystore(conn, "alpha", database_url) == dsns["alpha"]
        assert all(d.startswith("postgres://") and "search_path=wm_" in d for d in dsns.values())

        events: list[EngineEvent] = []
        engine = WhatsmeowEngine(events.append, dsns.__getitem__, reconnect_attempts=0)
        refs = [SessionRef(cid, "main") for cid in clients]
        for ref in refs:
            await engine.start(StartRequest(ref, StartMode.QR))
        await _until(lambda: all(SessionStatus.FAILED in _statuses(events, r) for r in refs))
        await engine.close()

        admin = await asyncpg.connect(plain_url(database_url))
        try:
            for cid in clients:
                rows = await admin.fetch(
                    "SELECT c.relname, pg_get_userbyid(c.relowner) AS owner FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'",
                    f"wm_{cid}",
                )
                names = {r["relname"] for r in rows}
                assert "whatsmeow_device" in names and "whatsmeow_version" in names
                assert len([n for n in names if n.startswith("whatsmeow_")]) >= 15
                assert {r["owner"] for r in rows} == {dsns[cid].split("//")[1].split(":")[0]}
                role = dsns[cid].split("//")[1].split(":")[0]
                limit = await admin.fetchval("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1", role)
                assert limit == KEYSTORE_CONNECTION_LIMIT
            # nothing of whatsmeow's landed outside the keystores
            stray = await admin.fetchval(
                "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'whatsmeow%' AND schemaname NOT LIKE 'wm\\_%'"
            )
            assert stray == 0
        finally:
            await admin.close()

        for cid in clients:
            own = await asyncpg.connect(dsns[cid])
            try:
                assert await own.fetchval("SELECT count(*) FROM whatsmeow_version") >= 1
                for other in clients:
                    if other == cid:
                        continue
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await own.fetch(f"SELECT * FROM wm_{other}.whatsmeow_device")  # test-made name
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await own.execute(f"CREATE TABLE wm_{other}.intruder (x int)")  # test-made name
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await own.fetch("SELECT * FROM zapgate.keystores")
            finally:
                await own.close()
    finally:
        async with manager.engine.begin() as conn:
            for cid in clients:
                await drop_keystore(conn, cid)
    admin = await asyncpg.connect(plain_url(database_url))
    try:
        assert await admin.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'wm\\_%'") == 0
        assert await admin.fetchval("SELECT count(*) FROM zapgate.keystores") == 0
        roles = [dsns[c].split("//")[1].split(":")[0] for c in clients]
        assert await admin.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)", roles) == 0
    finally:
        await admin.close()


async def test_a_hostile_client_id_never_reaches_sql(manager: ConnectionManager, database_url: str) -> None:
    from zapgate.errors import InvalidClientId

    async with manager.engine.begin() as conn:
        with pytest.raises(InvalidClientId):
            await provision_keystore(conn, 'x"; DROP SCHEMA zapgate CASCADE; --', database_url)
        with pytest.raises(InvalidClientId):
            await drop_keystore(conn, "Robert'); --")


# -- serialisation: Go's global maps survive concurrent starts, stops and queries -----------------------


@pytest.mark.slow
def test_concurrent_starts_and_stops_never_abort_the_process() -> None:
    script = Path(__file__).with_name("whatsmeow_stress.py")
    env = {**os.environ, **FAST_FAIL, "STRESS_SESSIONS": "100", "STRESS_ROUNDS": "10"}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.startswith("ok rounds=10 sessions=100")
    assert time.perf_counter() - started < 60


# -- reconnection policy ----------------------------------------------------------------------------------


async def test_a_failed_dial_is_retried_with_backoff_then_fails(tmp_path: Path) -> None:
    events: list[EngineEvent] = []
    engine = WhatsmeowEngine(events.append, lambda c: str(tmp_path / f"{c}.db"), reconnect_attempts=2, backoff_base=0.2)
    ref = SessionRef("acme", "s1")
    started = time.perf_counter()
    await engine.start(StartRequest(ref, StartMode.QR))
    await _until(lambda: not engine.hosts(ref))
    assert time.perf_counter() - started >= 0.2 + 0.4  # backoff_base * 2**n, n = 0, 1
    S = SessionStatus
    assert _statuses(events) == [S.CONNECTING, S.DISCONNECTED, S.CONNECTING, S.DISCONNECTED, S.CONNECTING, S.FAILED]
    failures = [e for e in events if isinstance(e, EngineFailure)]
    assert [f.retryable for f in failures] == [True, True, False]
    assert all(f.code == "connect_failed" and "dial" in f.message for f in failures)
    await engine.close()


async def test_offline_sends_lookups_and_pairing_codes_raise_not_connected(tmp_path: Path) -> None:
    events: list[EngineEvent] = []
    engine = WhatsmeowEngine(events.append, lambda c: str(tmp_path / f"{c}.db"), reconnect_attempts=1, backoff_base=30)
    ref = SessionRef("acme", "s1")
    await engine.start(StartRequest(ref, StartMode.PAIRING_CODE, phone_number="5511999999999"))
    await _until(lambda: SessionStatus.DISCONNECTED in _statuses(events))
    assert engine.hosts(ref)
    with pytest.raises(NotConnected) as sent:
        await engine.send_text(ref, "5511988887777@s.whatsapp.net", "hi", "3EB0AAAA")
    assert sent.value.retryable
    with pytest.raises(NotConnected):
        await engine.resolve(ref, "5511988887777")
    with pytest.raises(NotConnected):
        await engine.request_pairing_code(ref, "5511999999999")
    with pytest.raises(UnknownSession):
        await engine.send_text(SessionRef("acme", "nope"), "1@s.whatsapp.net", "hi", "x")
    started = time.perf_counter()
    await engine.stop(ref)  # interrupts the 30 s backoff
    assert time.perf_counter() - started < 5
    # a stop on request reports no status of its own (the worker records why it stopped the session)
    assert SessionStatus.STOPPED not in _statuses(events) and not engine.hosts(ref)
    await engine.close()


async def test_restoring_a_jid_without_stored_keys_fails_instead_of_crashing(tmp_path: Path) -> None:
    events: list[EngineEvent] = []
    engine = WhatsmeowEngine(events.append, lambda c: str(tmp_path / f"{c}.db"), reconnect_attempts=0)
    ref = SessionRef("acme", "s1")
    await engine.start(StartRequest(ref, StartMode.RESTORE, jid="5511999999999:7@s.whatsapp.net"))
    await _until(lambda: not engine.hosts(ref))
    assert _statuses(events) == [SessionStatus.CONNECTING, SessionStatus.FAILED]
    assert [e.code for e in events if isinstance(e, EngineFailure)] == ["keys_not_found"]
    await engine.close()


# -- event translation through the entry points Go calls ----------------------------------------------


async def test_events_translate_into_engine_events() -> None:
    events: list[EngineEvent] = []
    engine = WhatsmeowEngine(events.append, lambda c: ":memory:")
    engine._loop = asyncio.get_running_loop()
    ref = SessionRef("acme", "s1")
    fed = _Fed(engine, StartRequest(ref, StartMode.QR, qr_timeout=30))
    phone, lid = _jid("5511988887777"), _jid("123456789012345", "lid")

    fed.me(_jid("5511999999999", device=7), _jid("99887766", "lid"))
    fed.event(pb.Connected(status=True))
    fed.event(_message(_source(lid, lid, alt=phone), wa.Message(conversation="olá")))
    extended = wa.Message(extendedTextMessage=wa.ExtendedTextMessage(text="see https://example.com"))
    fed.event(_message(_source(phone, phone, alt=lid, from_me=True), extended, "3EB0EXT"))
    image = wa.Message(imageMessage=wa.ImageMessage(caption="a cat"))
    group = _jid("120363000000000000", "g.us")
    fed.event(_message(_source(group, lid, alt=phone, group=True), image, "3EB0IMG"))
    audio = wa.Message(ephemeralMessage=wa.FutureProofMessage(message=wa.Message(audioMessage=wa.AudioMessage())))
    fed.event(_message(_source(phone, phone), audio, "3EB0AUD"))
    fed.event(_message(_source(phone, phone), wa.Message(protocolMessage=wa.ProtocolMessage()), "3EB0PROTO"))
    for kind in (pb.Receipt.DELIVERED, pb.Receipt.READ, pb.Receipt.PLAYED, pb.Receipt.RETRY):
        fed.event(
            pb.Receipt(MessageSource=_source(phone, phone), MessageIDs=["A", "B"], Timestamp=1_790_000_001, Type=kind)
        )
    await asyncio.sleep(0.05)

    connected = events[0]
    assert connected == StatusChanged(
        ref,
        SessionStatus.CONNECTED,
        jid="5511999999999:7@s.whatsapp.net",
        phone_number="5511999999999",
        lid="99887766@lid",
    )
    inbound = [e for e in events if isinstance(e, InboundMessage)]
    assert [(m.type, m.text, m.chat_jid, m.chat_lid) for m in inbound] == [
        ("text", "olá", "5511988887777@s.whatsapp.net", "123456789012345@lid"),
        ("text", "see https://example.com", "5511988887777@s.whatsapp.net", "123456789012345@lid"),
        ("image", "[image] a cat", "120363000000000000@g.us", None),
        ("audio", "[audio]", "5511988887777@s.whatsapp.net", None),
    ]
    first, mine, in_group = inbound[0], inbound[1], inbound[2]
    assert first.sender_jid == "5511988887777@s.whatsapp.net" and not first.from_me and first.push_name == "Ana"
    assert first.timestamp.timestamp() == 1_790_000_000 and first.message_id == "3EB0MSG"
    assert mine.from_me
    assert in_group.is_group and in_group.sender_jid == "5511988887777@s.whatsapp.net"
    receipts = [e for e in events if isinstance(e, Receipt)]
    assert [r.status for r in receipts] == [MessageStatus.DELIVERED, MessageStatus.READ, MessageStatus.PLAYED]
    assert receipts[0].message_ids == ("A", "B") and receipts[0].chat_jid == "5511988887777@s.whatsapp.net"


async def test_what_whatsapp_sends_arrives_faithfully_through_neonizes_entry_point() -> None:
    events: list[EngineEvent] = []
    engine = WhatsmeowEngine(events.append, lambda c: ":memory:")
    engine._loop = asyncio.get_running_loop()
    ref = SessionRef("acme", "s1")
    fed = _Fed(engine, StartRequest(ref, StartMode.QR, qr_timeout=30))
    phone, lid = _jid("5511988887777"), _jid("123456789012345", "lid")
    group, status = _jid("120363000000000000", "g.us"), _jid("status", "broadcast")
    text = wa.Message(conversation="oi")

    fed.event(_message(_source(lid, _jid("123456789012345", "lid", 3), alt=phone), text, "3EB0DM"))
    fed.event(_message(_source(lid, _jid("99887766", "lid"), alt=phone, from_me=True), text, "3EB0MINE"))
    fed.event(_message(_source(group, lid, alt=phone, group=True), text, "3EB0GRP"))
    fed.event(_message(_source(status, lid, alt=phone, group=True), text, "3EB0STORY"))
    odd = _message(_source(phone, phone), wa.Message(conversation="a\x00XXXb"), "3EB0ODD").SerializePartialToString()
    fed.raw(odd.replace(b"XXX", b"\xed\xa0\x80"), EVENT_TO_INT[pb.Message])
    info = _message(_source(lid, lid, alt=phone), text, "3EB0BAD").Info
    fed.event(
        pb.UndecryptableMessage(
            Info=info, IsUnavailable=False, DecryptFailMode=pb.UndecryptableMessage.DECRYPT_FAIL_SHOW
        )
    )
    sync = history.HistorySync(syncType=history.HistorySync.INITIAL_BOOTSTRAP, progress=10, chunkOrder=1)
    sync.conversations.add(ID="5511988887777@s.whatsapp.net")
    fed.event(pb.HistorySync(Data=sync))
    kinds = [pb.Receipt.DELIVERED, pb.Receipt.READ, pb.Receipt.PLAYED, pb.Receipt.READ_SELF, pb.Receipt.SERVER_ERROR]
    for kind in kinds:
        source = _source(lid, lid, alt=phone)
        fed.event(pb.Receipt(MessageSource=source, MessageIDs=["3EB0A"], Timestamp=1_790_000_001, Type=kind))
    await asyncio.sleep(0.05)

    inbound = {m.message_id: m for m in events if isinstance(m, InboundMessage)}
    phone_jid, lid_jid = "5511988887777@s.whatsapp.net", "123456789012345@lid"
    dm, mine, in_group, story = inbound["3EB0DM"], inbound["3EB0MINE"], inbound["3EB0GRP"], inbound["3EB0STORY"]
    assert (dm.chat_jid, dm.chat_lid, dm.sender_jid, dm.sender_lid, dm.from_me) == (
        phone_jid,
        lid_jid,
        phone_jid,
        lid_jid,
        False,
    )
    assert (mine.chat_jid, mine.chat_lid, mine.from_me) == (phone_jid, lid_jid, True)
    assert (in_group.chat_jid, in_group.sender_jid, in_group.sender_lid, in_group.is_group) == (
        "120363000000000000@g.us",
        phone_jid,
        lid_jid,
        True,
    )
    assert (story.chat_jid, story.sender_jid, story.is_group) == ("status@broadcast", phone_jid, False)
    assert inbound["3EB0ODD"].text == "a\x00\ud800b"
    notices = [e for e in events if isinstance(e, Notice)]
    assert [n.kind for n in notices] == [NoticeKind.UNDECRYPTABLE, NoticeKind.HISTORY_SYNC]
    assert notices[0].details["messageId"] == "3EB0BAD" and notices[0].details["decryptFailMode"] == "show"
    assert notices[1].details == {
        "syncType": "initial_bootstrap",
        "progress": 10,
        "chunkOrder": 1,
        "conversations": 1,
        "messages": 0,
    }
    receipts = [e for e in events if isinstance(e, Receipt)]
    assert [r.status for r in receipts] == [MessageStatus.DELIVERED, MessageStatus.READ, MessageStatus.PLAYED]
    assert all((r.message_ids, r.chat_jid, r.sender_jid) == (("3EB0A",), phone_jid, phone_jid) for r in receipts)


async def test_qr_codes_then_timeout_and_logged_out_and_drops() -> None:
    events: list[EngineEvent] = []
    engine = WhatsmeowEngine(events.append, lambda c: ":memory:")
    engine._loop = asyncio.get_running_loop()
    ref = SessionRef("acme", "s1")
    fed = _Fed(engine, StartRequest(ref, StartMode.QR, qr_timeout=30, max_qr_codes=3))
    before = time.time()
    for n in range(4):
        fed.qr(f"2@code{n},key,key,key")
    await asyncio.sleep(0.05)
    codes = [e for e in events if isinstance(e, QrCode)]
    assert [(c.code, c.sequence) for c in codes] == [(f"2@code{n},key,key,key", n + 1) for n in range(3)]
    # whatsmeow's own lifetimes (qrchan.go:90-93), not the request's qr_timeout
    lifetimes = [round(c.expires_at.timestamp() - before) for c in codes]
    assert lifetimes == [60, 20, 20]
    assert _statuses(events) == [SessionStatus.QR, SessionStatus.QR_TIMEOUT]
    assert fed.session.halt == "qr_timeout" and fed.session.terminal

    events.clear()
    paired = _Fed(engine, StartRequest(SessionRef("acme", "s2"), StartMode.QR))
    paired.qr("2@only")
    paired.event(
        pb.PairStatus(ID=_jid("5511999999999", device=3), BusinessName="", Platform="", Status=pb.PairStatus.SUCCESS)
    )
    paired.event(pb.LoggedOut(OnConnect=False, Reason=pb.ConnectFailureReason.LOGGED_OUT))
    paired.event(pb.Disconnected(status=True))  # after a final status nothing more is said
    await asyncio.sleep(0.05)
    assert [(s.status, s.reason, s.jid) for s in events if isinstance(s, StatusChanged)] == [
        (SessionStatus.QR, None, None),
        (SessionStatus.CONNECTING, "paired", "5511999999999:3@s.whatsapp.net"),
        (SessionStatus.LOGGED_OUT, "logged_out", None),
    ]
    assert paired.session.halt == "logged_out"

    await engine.close()


async def test_go_waits_until_a_message_is_stored_before_whatsapp_hears_it_was_received() -> None:
    # whatsmeow acknowledges a message when the event handler returns: it must not return before the
    # worker stored it (the event's ack), or a crash in between would lose the message for good
    events: list[EngineEvent] = []
    engine = WhatsmeowEngine(events.append, lambda c: ":memory:")
    engine._loop = asyncio.get_running_loop()
    fed = _Fed(engine, StartRequest(SessionRef("acme", "s1"), StartMode.QR, qr_timeout=30))
    phone = _jid("5511988887777")
    returned = threading.Event()

    def deliver_from_go_thread() -> None:
        fed.event(_message(_source(phone, phone), wa.Message(conversation="hold me")))
        returned.set()

    thread = threading.Thread(target=deliver_from_go_thread)
    thread.start()
    await _until(lambda: any(isinstance(e, InboundMessage) for e in events))
    await asyncio.sleep(0.2)
    assert not returned.is_set()  # Go is still held: nothing acknowledged to WhatsApp yet
    inbound = next(e for e in events if isinstance(e, InboundMessage))
    assert inbound.ack is not None
    inbound.ack()  # the worker stored it
    await asyncio.to_thread(returned.wait, 5)
    assert returned.is_set()
    thread.join(5)


async def test_a_key_role_cannot_hold_more_connections_than_its_limit(
    manager: ConnectionManager, database_url: str
) -> None:
    # neonize leaks a pool per connection attempt: the role's limit keeps them from taking the whole server
    async with manager.engine.begin() as conn:
        await conn.execute(text("INSERT INTO zapgate.clients (client_id) VALUES ('acme')"))
        dsn = await provision_keystore(conn, "acme", database_url, connection_limit=1)
    try:
        first = await asyncpg.connect(dsn)
        try:
            with pytest.raises(asyncpg.TooManyConnectionsError):
                await asyncpg.connect(dsn)
        finally:
            await first.close()
    finally:
        async with manager.engine.begin() as conn:
            await drop_keystore(conn, "acme")


# -- the Go boundary, with a stand-in for the Go library behind neonize's real Python client ----------------


@pytest.fixture
def fake_go(monkeypatch: pytest.MonkeyPatch) -> Any:
    made: list[FakeGo] = []

    def install(**kwargs: Any) -> FakeGo:
        fake = FakeGo(**kwargs)
        monkeypatch.setattr(importlib.import_module("neonize.client"), "gocode", fake)
        made.append(fake)
        return fake

    yield install
    for fake in made:
        fake.shut_down()


def _gate_is_free(seconds: float = 2.0) -> bool:
    """Whether a Stop (exclusive) could take the gate now: False if someone holds it and never lets go."""
    taken = threading.Event()

    def take() -> None:
        _GATE.acquire_exclusive()
        _GATE.release_exclusive()
        taken.set()

    threading.Thread(target=take, daemon=True).start()
    return taken.wait(seconds)


async def test_a_stop_that_never_returns_abandons_the_client(fake_go: Any) -> None:
    fake = fake_go(stop_hangs=True)
    events: list[EngineEvent] = []
    engine = WhatsmeowEngine(events.append, lambda c: ":memory:", stop_timeout=0.5)
    ref = SessionRef("acme", "s1")
    await engine.start(StartRequest(ref, StartMode.QR))
    await asyncio.to_thread(fake.delivered_me.wait, 5)

    started = time.perf_counter()
    with pytest.raises(StopTimedOut):
        await engine.stop(ref)
    assert time.perf_counter() - started < 2
    assert not engine.hosts(ref) and engine.abandoned_clients == 1
    assert _gate_is_free()  # the stuck Stop's exclusive hold was given back
    # what the stuck client still delivers is not reported
    fake.push(_message(_source(_jid("5511988887777"), _jid("5511988887777")), wa.Message(conversation="late")))
    await asyncio.sleep(0.3)
    assert not any(isinstance(e, InboundMessage) for e in events)
    # the session can start again at once, and the count falls when the stuck client finally lets go
    await engine.start(StartRequest(ref, StartMode.QR))
    assert engine.hosts(ref)
    fake.release.set()
    await _until(lambda: engine.abandoned_clients == 0)
    await engine.close()


async def test_close_is_bounded_when_stops_hang(fake_go: Any) -> None:
    fake = fake_go(stop_hangs=True)
    engine = WhatsmeowEngine(lambda e: None, lambda c: ":memory:", stop_timeout=0.5)
    for n in range(3):
        await engine.start(StartRequest(SessionRef("acme", f"s{n}"), StartMode.QR))
    await asyncio.to_thread(fake.delivered_me.wait, 5)
    started = time.perf_counter()
    await engine.close()
    assert time.perf_counter() - started < 2
    assert engine.abandoned_clients == 3
    assert not any(engine.hosts(SessionRef("acme", f"s{n}")) for n in range(3))


async def test_calls_into_go_are_bounded(fake_go: Any) -> None:
    fake = fake_go(call_hangs=True)
    engine = WhatsmeowEngine(lambda e: None, lambda c: ":memory:", call_timeout=0.3, stop_timeout=0.5)
    ref = SessionRef("acme", "s1")
    await engine.start(StartRequest(ref, StartMode.QR))
    await asyncio.to_thread(fake.delivered_me.wait, 5)
    await _until(lambda: engine._session(ref) is not None and engine._session(ref).go_live)  # type: ignore[union-attr]
    for call in (engine.logout(ref), engine.send_presence(ref, "5511988887777@s.whatsapp.net", Presence.COMPOSING)):
        started = time.perf_counter()
        with pytest.raises(EngineError) as raised:
            await call
        assert time.perf_counter() - started < 2
        assert raised.value.retryable and not isinstance(raised.value, NotConnected)
        assert _gate_is_free()  # the stuck call's shared hold does not block starts and stops
    fake.release.set()
    await engine.close()


@pytest.mark.slow
async def test_a_slow_start_holds_up_other_sessions_calls_for_a_bounded_time_only(fake_go: Any) -> None:
    fake = fake_go()
    engine = WhatsmeowEngine(lambda e: None, lambda c: ":memory:", stop_timeout=0.5)
    live = SessionRef("acme", "live")
    await engine.start(StartRequest(live, StartMode.QR))
    await asyncio.to_thread(fake.delivered_me.wait, 5)
    await _until(lambda: engine._session(live) is not None and engine._session(live).go_live)  # type: ignore[union-attr]
    await engine.start(StartRequest(SessionRef("acme", "slow"), StartMode.QR))  # its dial hangs
    await asyncio.sleep(0.2)  # the slow start holds the gate now
    started = time.perf_counter()
    await engine.send_presence(live, "5511988887777@s.whatsapp.net", Presence.COMPOSING)
    waited = time.perf_counter() - started
    assert waited < 7.0  # START_GATE_TIMEOUT (5 s), not the dial's minute nor the old 20 s
    fake.release.set()
    await engine.close()


async def test_a_clean_stop_hands_over_every_buffered_event_first(fake_go: Any) -> None:
    fake = fake_go()
    events: list[EngineEvent] = []
    loop = asyncio.get_running_loop()
    stopped_at: list[int] = []

    def store_slowly(event: EngineEvent) -> None:
        events.append(event)
        if isinstance(event, InboundMessage) and event.ack is not None:
            loop.call_later(0.05, event.ack)  # the worker takes a while to store each one

    engine = WhatsmeowEngine(store_slowly, lambda c: ":memory:", stop_timeout=5)
    ref = SessionRef("acme", "s1")
    await engine.start(StartRequest(ref, StartMode.QR))
    await asyncio.to_thread(fake.delivered_me.wait, 5)
    fake.push(pb.Connected(status=True))
    await _until(lambda: SessionStatus.CONNECTED in _statuses(events))
    phone = _jid("5511988887777")
    for n in range(8):
        fake.push(_message(_source(phone, phone), wa.Message(conversation=f"m{n}"), f"3EB0{n}"))
    original_stop = fake.Stop

    def stop(uuid: bytes) -> None:
        stopped_at.append(len([e for e in events if isinstance(e, InboundMessage)]))
        original_stop(uuid)

    fake.Stop = stop  # type: ignore[method-assign]
    await engine.stop(ref)
    assert fake.disconnected.is_set() and fake.dropped == 0
    assert [e.text for e in events if isinstance(e, InboundMessage)] == [f"m{n}" for n in range(8)]
    assert stopped_at[0] == 8  # the first Stop came only after all eight were handed over
    await engine.close()


async def test_the_device_store_is_asked_once_per_session(fake_go: Any) -> None:
    fake = fake_go(dial_error=b"dial tcp: lookup web.whatsapp.com: no such host")
    fake.devices = b"5511999999999:7@s.whatsapp.net,Ana,,true"
    events: list[EngineEvent] = []
    engine = WhatsmeowEngine(events.append, lambda c: ":memory:", reconnect_attempts=2, backoff_base=0.01)
    ref = SessionRef("acme", "s1")
    await engine.start(StartRequest(ref, StartMode.RESTORE, jid="5511999999999:7@s.whatsapp.net"))
    await _until(lambda: not engine.hosts(ref))
    assert _statuses(events).count(SessionStatus.CONNECTING) == 3  # three dials...
    assert fake.device_lookups == 1  # ...one device-store check (neonize leaks a pool per check)
    await engine.close()


async def test_the_linked_device_shows_the_deployments_name(fake_go: Any) -> None:
    fake = fake_go(dial_error=b"offline")
    engine = WhatsmeowEngine(lambda e: None, lambda c: ":memory:", reconnect_attempts=0, device_name="Acme Support")
    ref = SessionRef("acme", "s1")
    await engine.start(StartRequest(ref, StartMode.QR))
    await _until(lambda: not engine.hosts(ref))
    props = DeviceProps.FromString(fake.props)  # what Go merges into whatsmeow's DeviceProps (main.go:651)
    assert props.os == "Acme Support"
    await engine.close()


def test_the_bot_tag_is_off_when_the_go_library_loads() -> None:
    # Go copies the environment when the shared library loads: NEONIZE_BOT_TAG must be "off" by then, even
    # if the deployment's environment said otherwise
    script = """
import ctypes, json, os
seen = {}
original = ctypes.CDLL.__init__
def spy(self, name, *args, **kwargs):
    if "neonize" in str(name):
        seen["at_load"] = os.environ.get("NEONIZE_BOT_TAG")
    original(self, name, *args, **kwargs)
ctypes.CDLL.__init__ = spy
import zapgate.engines.whatsmeow
libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_char_p
seen["process"] = libc.getenv(b"NEONIZE_BOT_TAG").decode()
print(json.dumps(seen))
"""
    env = {**os.environ, "NEONIZE_BOT_TAG": "on"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"at_load": "off", "process": "off"}


# -- what WhatsApp says about the connection, fed through neonize's entry point ---------------------------


def _engine_and_fed(events: list[EngineEvent], mode: StartMode = StartMode.QR) -> tuple[WhatsmeowEngine, _Fed]:
    engine = WhatsmeowEngine(events.append, lambda c: ":memory:")
    engine._loop = asyncio.get_running_loop()
    return engine, _Fed(engine, StartRequest(SessionRef("acme", "s1"), mode))


async def test_whatsmeow_reconnects_by_itself_and_the_engine_only_reports_it() -> None:
    events: list[EngineEvent] = []
    engine, fed = _engine_and_fed(events)
    fed.me(_jid("5511999999999", device=7), _jid("99887766", "lid"))
    fed.event(pb.Connected(status=True))
    fed.event(pb.Disconnected(status=True))
    await asyncio.sleep(0.05)
    assert fed.session.halt is None  # the client is left to whatsmeow's own redial
    fed.event(pb.Connected(status=True))
    now = int(time.time())
    fed.event(pb.KeepAliveTimeout(ErrorCount=1, LastSuccess=now - 30))  # not yet a drop
    fed.event(pb.KeepAliveRestored())
    fed.event(pb.KeepAliveTimeout(ErrorCount=8, LastSuccess=now - 200))  # whatsmeow redials without telling
    fed.event(pb.Connected(status=True))
    await asyncio.sleep(0.05)
    changes = [(e.status, e.code) for e in events if isinstance(e, StatusChanged)]
    S = SessionStatus
    assert changes == [
        (S.CONNECTED, None),
        (S.RECONNECTING, "disconnected"),
        (S.CONNECTED, None),
        (S.RECONNECTING, "keepalive_timeout"),
        (S.CONNECTED, None),
    ]
    notices = [(n.kind, dict(n.details)) for n in events if isinstance(n, Notice)]
    last_success = datetime.fromtimestamp(now - 30, UTC).isoformat().replace("+00:00", "Z")
    assert notices[0] == (NoticeKind.KEEPALIVE_TIMEOUT, {"errorCount": 1, "lastSuccess": last_success})
    assert [kind for kind, _ in notices] == [
        NoticeKind.KEEPALIVE_TIMEOUT,
        NoticeKind.KEEPALIVE_RESTORED,
        NoticeKind.KEEPALIVE_TIMEOUT,
    ]
    assert fed.session.halt is None and not fed.session.terminal
    await engine.close()


def _raw(reason: int) -> pb.Node:
    return pb.Node(Tag="failure", Attrs=[pb.NodeAttrs(name="reason", integer=reason)])


@pytest.mark.parametrize(
    ("event", "status", "code", "details"),
    [
        (pb.StreamReplaced(), SessionStatus.FAILED, "stream_replaced", {}),
        (pb.ClientOutdated(), SessionStatus.FAILED, "client_outdated", {}),
        (
            pb.ConnectFailure(Reason=pb.ConnectFailureReason.BAD_USER_AGENT, Message="bad ua", Raw=_raw(409)),
            SessionStatus.FAILED,
            "connect_failure",
            {"reason": 409, "reasonName": "bad_user_agent", "message": "bad ua"},
        ),
        (  # a reason neonize's enum lacks arrives without Reason: the raw stanza still has it
            pb.ConnectFailure(Message="", Raw=_raw(415)),
            SessionStatus.FAILED,
            "connect_failure",
            {"reason": 415, "reasonName": None, "message": None},
        ),
        (
            pb.ConnectFailure(Reason=pb.ConnectFailureReason.MAIN_DEVICE_GONE, Message="", Raw=_raw(403)),
            SessionStatus.LOGGED_OUT,
            "connect_failure",
            {"reason": 403, "reasonName": "main_device_gone", "message": None},
        ),
        (
            pb.LoggedOut(OnConnect=True, Reason=pb.ConnectFailureReason.UNKNOWN_LOGOUT),
            SessionStatus.LOGGED_OUT,
            "logged_out",
            {"reason": 406, "reasonName": "unknown_logout", "onConnect": True},
        ),
    ],
)
async def test_every_reason_whatsapp_gives_surfaces_as_a_code(
    event: Any, status: SessionStatus, code: str, details: dict[str, Any]
) -> None:
    events: list[EngineEvent] = []
    engine, fed = _engine_and_fed(events)
    fed.me(_jid("5511999999999", device=7), _jid("99887766", "lid"))
    fed.event(event)
    await asyncio.sleep(0.05)
    final = [e for e in events if isinstance(e, StatusChanged)][-1]
    assert (final.status, final.code, dict(final.details)) == (status, code, details)
    assert fed.session.terminal and fed.session.halt in ("fatal", "logged_out")
    await engine.close()


async def test_a_temporary_ban_carries_its_code_and_expiry() -> None:
    events: list[EngineEvent] = []
    engine, fed = _engine_and_fed(events)
    fed.me(_jid("5511999999999", device=7), _jid("99887766", "lid"))
    before = datetime.now(UTC)
    fed.event(pb.TemporaryBan(Code=pb.TemporaryBan.SENT_TOO_MANY_SAME_MESSAGE, Expire=3600))
    await asyncio.sleep(0.05)
    final = [e for e in events if isinstance(e, StatusChanged)][-1]
    assert (final.status, final.code) == (SessionStatus.FAILED, "temporary_ban")
    assert final.details["banCode"] == 104 and final.details["banReason"] == "sent_too_many_same_message"
    expires = datetime.fromisoformat(final.details["expiresAt"].replace("Z", "+00:00"))
    assert abs(expires - (before + timedelta(hours=1))) < timedelta(seconds=5)
    await engine.close()


@pytest.mark.parametrize("reason", ["err-scanned-without-multidevice", "err-client-outdated", "error"])
async def test_a_login_error_ends_the_qr_phase_with_its_reason(reason: str) -> None:
    events: list[EngineEvent] = []
    engine, fed = _engine_and_fed(events)
    fed.qr("2@first,key,key,key")
    status = ctypes.create_string_buffer(reason.encode())
    await asyncio.to_thread(fed.client._NewClient__onLoginStatus, 1, ctypes.addressof(status))
    await asyncio.sleep(0.05)
    final = [e for e in events if isinstance(e, StatusChanged)][-1]
    assert (final.status, final.code, dict(final.details)) == (SessionStatus.FAILED, "login_error", {"reason": reason})
    assert fed.session.halt == "fatal"
    await engine.close()


async def test_the_end_of_the_qr_loop_holds_the_gate_only_briefly() -> None:
    # Go only reads its maps right after the QR loop ends, then spins in FetchMe without ever calling back:
    # holding the gate until a start's 20 s cap would stall every send of every session
    events: list[EngineEvent] = []
    engine, fed = _engine_and_fed(events)
    fed.qr("2@first,key,key,key")
    status = ctypes.create_string_buffer(b"timeout")
    await asyncio.to_thread(fed.client._NewClient__onLoginStatus, 1, ctypes.addressof(status))
    started = time.perf_counter()
    assert await asyncio.to_thread(_gate_is_free, 5)
    assert time.perf_counter() - started < 4
    assert _statuses(events)[-1] is SessionStatus.QR_TIMEOUT
    await engine.close()
