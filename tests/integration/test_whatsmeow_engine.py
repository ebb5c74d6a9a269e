"""The whatsmeow engine against the real neonize library, offline: keystores, serialisation, events, policies."""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from tests.support.databases import plain_url
from zapgate.db.keystore import drop_keystore, provision_keystore
from zapgate.db.manager import ConnectionManager
from zapgate.domain.records import MessageStatus
from zapgate.domain.sessions import SessionStatus
from zapgate.engines.base import (
    EngineEvent,
    EngineFailure,
    InboundMessage,
    NotConnected,
    Notice,
    NoticeKind,
    QrCode,
    Receipt,
    SessionRef,
    StartMode,
    StartRequest,
    StatusChanged,
    UnknownSession,
)
from zapgate.engines.whatsmeow import WhatsmeowEngine, _Session, pb, wa

# imported through the engine first: neonize's own import leaks a popen, which the engine's import absorbs
EVENT_TO_INT: dict[Any, int] = importlib.import_module("neonize.events").EVENT_TO_INT
history = importlib.import_module("neonize.proto.waHistorySync.WAWebProtobufsHistorySync_pb2")

# offline the dial fails at once here because DNS has no answer; a refused proxy is set in case whatsmeow
# honours it where DNS does answer (not shown here: on this machine the DNS failure comes first)
FAST_FAIL = {"HTTPS_PROXY": "http://127.0.0.1:9"}


@pytest.fixture(autouse=True)
def _dial_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in FAST_FAIL.items():
        monkeypatch.setenv(key, value)


def _jid(user: str, server: str = "s.whatsapp.net", device: int = 0) -> pb.JID:
    return pb.JID(User=user, Server=server, Device=device, RawAgent=0, Integrator=0)


def _empty_jid() -> pb.JID:
    return pb.JID(User="", Server="", Device=0, RawAgent=0, Integrator=0)


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


class _Fed:
    """A session's neonize client, fed events the way Go delivers them."""

    def __init__(self, engine: WhatsmeowEngine, request: StartRequest) -> None:
        self.session = _Session(request=request, dsn=":memory:")
        self.client = engine._new_client(self.session, restore=False)

    def event(self, message: Any) -> None:
        self.raw(message.SerializePartialToString(), EVENT_TO_INT[type(message)])

    def raw(self, data: bytes, code: int) -> None:
        buffer = ctypes.create_string_buffer(data, len(data))
        self.client.event.execute(1, ctypes.addressof(buffer), len(data), code)

    def me(self, jid: pb.JID, lid: pb.JID) -> None:
        data = pb.Device(JID=jid, LID=lid, Platform="", BussinessName="", PushName="", Initialized=True)
        raw = data.SerializePartialToString()
        buffer = ctypes.create_string_buffer(raw, len(raw))
        self.client.event.execute(1, ctypes.addressof(buffer), len(raw), 0)

    def qr(self, code: str) -> None:
        buffer = ctypes.create_string_buffer(code.encode())
        self.client._NewClient__onQr(1, ctypes.addressof(buffer))


def _source(chat: pb.JID, sender: pb.JID, *, alt: pb.JID | None = None, from_me: bool = False, group: bool = False):
    return pb.MessageSource(
        Chat=chat,
        Sender=sender,
        IsFromMe=from_me,
        IsGroup=group,
        SenderAlt=alt if alt is not None and not from_me else _empty_jid(),
        RecipientAlt=alt if alt is not None and from_me else _empty_jid(),
        BroadcastListOwner=_empty_jid(),
    )


def _message(source: pb.MessageSource, content: wa.Message, message_id: str = "3EB0MSG") -> pb.Message:
    info = pb.MessageInfo(MessageSource=source, ID=message_id, Pushname="Ana", Timestamp=1_790_000_000_000)
    return pb.Message(Info=info, Message=content)


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
        ref, SessionStatus.CONNECTED, jid="5511999999999:7@s.whatsapp.net", phone_number="5511999999999"
    )
    inbound = [e for e in events if isinstance(e, InboundMessage)]
    assert [(m.type, m.text, m.chat_jid, m.chat_lid) for m in inbound] == [
        ("text", "olá", "5511988887777@s.whatsapp.net", "123456789012345@lid"),
        ("text", "see https://example.com", "5511988887777@s.whatsapp.net", "123456789012345@lid"),
        ("image", "a cat", "120363000000000000@g.us", None),
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
    assert all(29 <= c.expires_at.timestamp() - before <= 31 for c in codes)
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

    dropped = _Fed(engine, StartRequest(SessionRef("acme", "s3"), StartMode.QR))
    dropped.event(pb.Disconnected(status=True))
    await asyncio.sleep(0.05)
    assert dropped.session.halt == "disconnected"  # the session thread then applies the reconnection policy
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
