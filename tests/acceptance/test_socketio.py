"""Socket.IO on /whatsapp with the real JavaScript socket.io-client (tests/js), over websocket and polling."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket as net
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.support import ADMIN, ADMIN_KEY, api_client, client_schemas, new_client, running_app
from tests.support.retention import prune_events_before
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.services.worker import Worker
from zapgate.settings import Settings

JS = Path(__file__).resolve().parents[1] / "js"
PEER = JS / "sio_peer.mjs"
ARRIVAL = 30.0  # seconds to wait for something that must come (generous: a loaded 2-core machine)
ABSENCE = 1.0  # seconds of silence that show something does not come
TRANSPORTS = ["websocket", "polling"]

Message = dict[str, Any]


class Peer:
    """One `node sio_peer.mjs` process: commands go to its stdin, what it sees comes back as JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self._inbox: list[Message] = []
        self._arrived = asyncio.Event()
        self._eof = False
        self._stderr = bytearray()
        self._ids = itertools.count(1)
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._read_stderr())]

    async def _read(self) -> None:
        assert self._proc.stdout is not None
        async for line in self._proc.stdout:
            self._inbox.append(json.loads(line))
            self._arrived.set()
        self._eof = True
        self._arrived.set()

    async def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        self._stderr += await self._proc.stderr.read()

    async def take(self, match: Callable[[Message], bool], what: str, within: float = ARRIVAL) -> Message:
        """Remove and return the first message (in arrival order) that `match`es, waiting for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            for index, message in enumerate(self._inbox):
                if match(message):
                    return self._inbox.pop(index)
            if self._eof:
                pytest.fail(f"the peer exited before {what}; stderr:\n{self._stderr.decode()}\nsaw: {self._inbox}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                pytest.fail(f"no {what} within {within} s; saw: {self._inbox}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                pass

    async def connected(self) -> Message:
        """The outcome of the handshake: a `connect` or a `connect_error` message."""
        return await self.take(lambda m: m["kind"] in ("connect", "connect_error"), "handshake outcome")

    def _send(self, command: Message) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write((json.dumps(command) + "\n").encode())

    async def call(self, event: str, *args: Any) -> Message:
        """Emit `event` with `args` and an ack callback; return the ack's first argument."""
        command_id = next(self._ids)
        self._send({"op": "emit", "id": command_id, "event": event, "args": list(args)})
        ack = await self.take(
            lambda m: m["kind"] in ("ack", "ack_timeout") and m["id"] == command_id, f"ack of {event}"
        )
        assert ack["kind"] == "ack", ack
        assert len(ack["args"]) == 1, ack
        result: Message = ack["args"][0]
        return result

    def emit(self, event: str, *args: Any) -> None:
        """Emit `event` without an ack."""
        self._send({"op": "emit", "id": next(self._ids), "event": event, "args": list(args), "ack": False})

    async def event(self, name: str, within: float = ARRIVAL) -> Message:
        """The next `name` event's body."""
        message = await self.take(lambda m: m["kind"] == "event" and m["event"] == name, f"{name!r} event", within)
        assert len(message["args"]) == 1, message
        body: Message = message["args"][0]
        return body

    async def events(self, name: str, count: int, within: float = ARRIVAL) -> list[Message]:
        """The next `count` `name` events' bodies."""
        return [await self.event(name, within) for _ in range(count)]

    async def quiet(self, seconds: float = ABSENCE) -> list[Message]:
        """Wait `seconds`; return (and drop) every event and disconnect that arrived unasked meanwhile."""
        await asyncio.sleep(seconds)
        unasked = [m for m in self._inbox if m["kind"] in ("event", "disconnect")]
        self._inbox = [m for m in self._inbox if m not in unasked]
        return unasked

    def pause(self) -> None:
        """Stop the node process (it reads nothing until `resume`)."""
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._proc.send_signal(signal.SIGCONT)

    async def close(self) -> None:
        if self._proc.returncode is None:
            self._proc.send_signal(signal.SIGCONT)
            assert self._proc.stdin is not None
            self._proc.stdin.close()  # the peer disconnects and exits
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


PeerFactory = Callable[..., Awaitable[Peer]]


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with tests/js installed (./run test runs `npm ci` for it)."""
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not installed: the Socket.IO tests drive the JavaScript socket.io-client")
    if not (JS / "node_modules" / "socket.io-client").is_dir():
        pytest.fail("tests/js is not installed: run `npm ci --prefix tests/js` (./run test does)")
    return found


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(database_url) as http:
        yield http


async def start_peer(node: str, base_url: str, key: str | None, transport: str, **options: Any) -> Peer:
    """Start `node sio_peer.mjs` connecting to `base_url` with `key` over `transport` (see the script's options)."""
    config = {"url": base_url, "apiKey": key, "transports": [transport], **options}
    proc = await asyncio.create_subprocess_exec(
        node,
        str(PEER),
        json.dumps(config),
        cwd=JS,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Peer(proc)


@pytest.fixture
async def peers(api: httpx.AsyncClient, node: str) -> AsyncIterator[PeerFactory]:
    """Start socket.io-client peers against the app; each is stopped (before the app) at the end."""
    made: list[Peer] = []
    base_url = str(api.base_url).rstrip("/")

    async def connect(
        key: str | None,
        transport: str = "websocket",
        *,
        headers: dict[str, str] | None = None,
        namespace: str | None = None,
        refused: bool = False,
    ) -> Peer:
        peer = await start_peer(node, base_url, key, transport, headers=headers, namespace=namespace)
        made.append(peer)
        if not refused:
            outcome = await peer.connected()
            assert outcome["kind"] == "connect", outcome
            assert outcome["transport"] == transport
        return peer

    yield connect
    await asyncio.gather(*(peer.close() for peer in made))


def key_of(headers: dict[str, str]) -> str:
    return headers["X-API-Key"]


async def append(manager: ConnectionManager, client: str, session: str, n: int, start: int = 0) -> None:
    """Write `n` message-received events for `session` ({"n": start ...}) to `client`'s event log."""

    async def work(tx: Transaction) -> None:
        await tx.event.append_many([("message-received", session, {"n": start + i}) for i in range(n)])

    await manager.execute_transaction(client, work)


async def create_session(api: httpx.AsyncClient, headers: dict[str, str], session: str) -> None:
    created = await api.post("/whatsapp/session", headers=headers, json={"sessionId": session})
    assert created.status_code == 201, created.text


def assert_refusal(ack: Message, status: int, code: str | None = None) -> Message:
    """Check a refused command's ack; return its error."""
    assert ack["ok"] is False, ack
    error: Message = ack["error"]
    assert error["status"] == status, ack
    assert error["detail"] and isinstance(error["errors"], list), ack
    if code is not None:
        assert error["code"] == code, ack
    return error


# -- the handshake ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_handshake_without_a_clients_key_is_refused_with_the_reason(
    api: httpx.AsyncClient, peers: PeerFactory, transport: str
) -> None:
    acme = await new_client(api, "acme")
    for key in (None, "", "zg_wrong", "Bearer " + key_of(acme), ADMIN_KEY):
        peer = await peers(key, transport, refused=True)
        outcome = await peer.connected()
        assert outcome == {
            "kind": "connect_error",
            "message": "missing or wrong API key",
            "data": {"code": "unauthorized", "status": 401},
        }, key
        assert await peer.quiet(0.2) == []
    # the key in a header, for clients that can set one
    for headers in ({"X-API-Key": key_of(acme)}, {"Authorization": "Bearer " + key_of(acme)}):
        await peers(None, transport, headers=headers)
    # no other namespace is served, not even with a key
    stray = await peers(key_of(acme), transport, namespace="/", refused=True)
    assert (await stray.connected())["kind"] == "connect_error"


async def test_any_origin_may_open_a_socket(api: httpx.AsyncClient) -> None:
    origin = "https://app.example.com"
    response = await api.get("/socket.io/", params={"EIO": "4", "transport": "polling"}, headers={"Origin": origin})
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == origin
    assert response.text.startswith("0{")  # an Engine.IO open packet
    # and the API beside it still answers
    assert (await api.get("/health")).status_code == 200


async def test_the_app_stops_with_sockets_connected(clear_zapgate_env: None, database_url: str, node: str) -> None:
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url, default_engine="sandbox")
    async with running_app(settings, database_url) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as http:
            acme = await new_client(http, "acme")
            await create_session(http, acme, "s1")
        peer = await start_peer(node, base_url, key_of(acme), "websocket")
        try:
            assert (await peer.connected())["kind"] == "connect"
            assert (await peer.call("join-session", {"sessionId": "s1"}))["ok"] is True
        except BaseException:
            await peer.close()
            raise
    # the app stopped (its pumps and subscriptions closed, within running_app's deadline); the peer noticed
    try:
        assert (await peer.take(lambda m: m["kind"] == "disconnect", "disconnect"))["reason"] == "transport close"
    finally:
        await peer.close()


# -- the seed's flow --------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_seeds_flow_over_socketio(
    api: httpx.AsyncClient, peers: PeerFactory, manager: ConnectionManager, database_url: str, transport: str
) -> None:
    acme = await new_client(api, "acme")
    await create_session(api, acme, "user123")
    socket = await peers(key_of(acme), transport)
    joined = await socket.call("join-session", {"sessionId": "user123"})
    assert joined["ok"] is True and joined["sessionId"] == "user123", joined
    assert joined["session"]["sessionId"] == "user123" and joined["session"]["sandbox"] is True
    assert isinstance(joined["lastEventId"], int)

    worker = Worker(manager, database_url, ("sandbox",), qr_timeout=30, poll_interval=0.2)
    await worker.start()
    try:
        first = await socket.event("status-change")
        assert first["sessionId"] == "user123" and first["type"] == "status-change" and first["eventId"] > 0
        qr = await socket.event("qr-code")
        assert qr["sessionId"] == "user123" and qr["qr"] and qr["qrDataUrl"].startswith("data:image/png")
        assert qr["eventId"] > first["eventId"]

        scan = await api.post(
            "/whatsapp/sandbox/sessions/user123/scan", headers=acme, json={"phoneNumber": "5511999990001"}
        )
        assert scan.status_code == 202, scan.text
        while (change := await socket.event("status-change"))["status"] != "connected":
            pass
        assert change["phoneNumber"] == "5511999990001"

        # send-message: the same validation and answer as POST /whatsapp/send
        sent = await socket.call(
            "send-message", {"sessionId": "user123", "to": "5511999999999", "message": "Olá! Como posso ajudar?"}
        )
        assert sent["ok"] is True, sent
        assert sent.keys() == {"ok", "messageId", "sessionId", "status", "timestamp", "replayed"}
        assert sent["status"] == "pending" and sent["sessionId"] == "user123" and sent["replayed"] is False
        assert sent["messageId"].startswith("3EB0")
        statuses = []
        while "read" not in statuses:
            update = await socket.event("message-status")
            assert update["messageId"] == sent["messageId"] and update["sessionId"] == "user123"
            statuses.append(update["status"])
        assert statuses[0] == "sent" and statuses == sorted(statuses, key=["sent", "delivered", "read"].index)

        # a text from a phone arrives as message-received
        inbound = {"sessionId": "user123", "from": "447700900123", "message": "hello there"}
        assert (await api.post("/whatsapp/sandbox/inbound", headers=acme, json=inbound)).status_code == 202
        received = await socket.event("message-received")
        assert received["sessionId"] == "user123" and received["text"] == "hello there"
        assert received["from"] == "447700900123"

        # any kind, in the shape of POST /whatsapp/messages
        place = {"latitude": -23.5505, "longitude": -46.6333, "name": "Sé"}
        typed = await socket.call(
            "send-message", {"sessionId": "user123", "to": "447700900123", "type": "location", "location": place}
        )
        assert typed["ok"] is True and typed["status"] == "pending", typed
        one = await api.get(f"/whatsapp/messages/{typed['messageId']}", headers=acme)
        assert one.json()["message"] == {"type": "location", "location": place}
        bad = await socket.call(
            "send-message", {"sessionId": "user123", "to": "447700900123", "type": "poll", "poll": {}}
        )
        assert_refusal(bad, 422, "validation_failed")

        listed = await socket.call("get-sessions")
        assert [(s["sessionId"], s["status"]) for s in listed["sessions"]] == [("user123", "connected")]
    finally:
        await worker.close()
    assert [m for m in await socket.quiet(0) if m["kind"] == "disconnect"] == []


async def test_send_message_is_idempotent_with_a_key(api: httpx.AsyncClient, peers: PeerFactory) -> None:
    acme = await new_client(api, "acme")
    await create_session(api, acme, "s1")
    socket = await peers(key_of(acme))
    body = {"sessionId": "s1", "to": "5511999999999", "message": "once", "idempotencyKey": "order-42"}
    first, again = await socket.call("send-message", body), await socket.call("send-message", body)
    assert first["ok"] is True and again["ok"] is True
    assert again["messageId"] == first["messageId"] and again["replayed"] is True
    assert_refusal(await socket.call("send-message", {**body, "message": "other"}), 422, "idempotency_key_reused")

    # each send is in the audit log, as over REST
    async def audited() -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = (await api.get("/whatsapp/audit", headers=acme)).json()["entries"]
        return [e for e in entries if e["detail"].get("transport") == "socket.io"]

    for _ in range(100):
        if len(entries := await audited()) == 3:
            break
        await asyncio.sleep(0.05)
    assert [(e["action"], e["outcome"], e["sessionId"]) for e in reversed(entries)] == [
        ("message.send", "ok", "s1"),
        ("message.send", "ok", "s1"),
        ("message.send", "idempotency_key_reused", "s1"),
    ]
    assert all(e["actor"] == key_of(acme)[:10] for e in entries)


async def test_get_sessions_lists_the_clients_sessions_only(api: httpx.AsyncClient, peers: PeerFactory) -> None:
    acme, globex = await new_client(api, "acme"), await new_client(api, "globex")
    for sid in ("b", "a"):
        await create_session(api, acme, sid)
    await create_session(api, globex, "g")
    acme_socket, globex_socket = await peers(key_of(acme)), await peers(key_of(globex))
    listed = await acme_socket.call("get-sessions", {})
    assert listed == {"ok": True, **(await api.get("/whatsapp/sessions", headers=acme)).json()}
    assert [s["sessionId"] for s in listed["sessions"]] == ["b", "a"]
    assert [s["sessionId"] for s in (await globex_socket.call("get-sessions"))["sessions"]] == ["g"]


# -- who gets which events --------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_leave_session_stops_its_events(
    api: httpx.AsyncClient, peers: PeerFactory, manager: ConnectionManager, transport: str
) -> None:
    acme = await new_client(api, "acme")
    await create_session(api, acme, "s1")
    socket = await peers(key_of(acme), transport)
    assert (await socket.call("join-session", {"sessionId": "s1"}))["ok"] is True
    await append(manager, "acme", "s1", 3)
    assert [e["n"] for e in await socket.events("message-received", 3)] == [0, 1, 2]
    assert await socket.call("leave-session", {"sessionId": "s1"}) == {"ok": True, "sessionId": "s1"}
    await append(manager, "acme", "s1", 3, start=3)
    assert await socket.quiet() == []
    # joining again starts from now
    assert (await socket.call("join-session", {"sessionId": "s1"}))["ok"] is True
    await append(manager, "acme", "s1", 1, start=6)
    assert (await socket.event("message-received"))["n"] == 6


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_sockets_get_their_clients_joined_sessions_only(
    api: httpx.AsyncClient, peers: PeerFactory, manager: ConnectionManager, transport: str
) -> None:
    acme, globex = await new_client(api, "acme"), await new_client(api, "globex")
    for headers in (acme, globex):
        for sid in ("one", "two"):
            await create_session(api, headers, sid)
    await create_session(api, acme, "acme-only")
    acme_both = await peers(key_of(acme), transport)
    acme_two = await peers(key_of(acme), transport)
    acme_none = await peers(key_of(acme), transport)
    globex_one = await peers(key_of(globex), transport)
    for sid in ("one", "two"):
        assert (await acme_both.call("join-session", {"sessionId": sid}))["ok"] is True
    assert (await acme_two.call("join-session", {"sessionId": "two"}))["ok"] is True
    assert (await globex_one.call("join-session", {"sessionId": "one"}))["ok"] is True
    # another client's session does not exist for globex: the same answer as an unknown id
    theirs = assert_refusal(await globex_one.call("join-session", {"sessionId": "acme-only"}), 404)
    unknown = assert_refusal(await globex_one.call("join-session", {"sessionId": "nobody"}), 404)
    assert theirs["code"] == unknown["code"] == "session_not_found"
    assert theirs["detail"] == unknown["detail"].replace("nobody", "acme-only")
    for _ in range(2):
        await globex_one.event("error")

    await append(manager, "acme", "one", 2)
    await append(manager, "globex", "one", 1, start=100)
    await append(manager, "acme", "two", 2, start=10)
    await append(manager, "acme", "acme-only", 1, start=50)
    both = await acme_both.events("message-received", 4)
    assert [(e["sessionId"], e["n"]) for e in both] == [("one", 0), ("one", 1), ("two", 10), ("two", 11)]
    assert [e["eventId"] for e in both] == sorted(e["eventId"] for e in both)
    assert [e["n"] for e in await acme_two.events("message-received", 2)] == [10, 11]
    assert [(e["sessionId"], e["n"]) for e in await globex_one.events("message-received", 1)] == [("one", 100)]
    for socket in (acme_both, acme_two, acme_none, globex_one):
        assert await socket.quiet() == []


async def test_a_stalled_socket_delays_no_one(
    api: httpx.AsyncClient, peers: PeerFactory, manager: ConnectionManager
) -> None:
    acme = await new_client(api, "acme")
    await create_session(api, acme, "s")
    stalled, reader = await peers(key_of(acme)), await peers(key_of(acme))
    for socket in (stalled, reader):
        assert (await socket.call("join-session", {"sessionId": "s"}))["ok"] is True
    stalled.pause()
    try:
        for batch in range(4):
            await append(manager, "acme", "s", 500, start=batch * 500)
        got = await reader.events("message-received", 2000, within=60)
        assert [e["n"] for e in got] == list(range(2000))
    finally:
        stalled.resume()
    late = await stalled.events("message-received", 2000, within=60)
    assert [e["n"] for e in late] == list(range(2000))


# -- resume -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_join_with_last_event_id_resumes_with_no_gap_and_no_duplicate(
    api: httpx.AsyncClient, peers: PeerFactory, manager: ConnectionManager, transport: str
) -> None:
    acme = await new_client(api, "acme")
    for sid in ("s1", "s2"):
        await create_session(api, acme, sid)
    first = await peers(key_of(acme), transport)
    assert (await first.call("join-session", {"sessionId": "s1"}))["ok"] is True
    await append(manager, "acme", "s1", 10)
    got = (await first.events("message-received", 10))[:4]  # say it saw four, then went away
    await first.close()
    await append(manager, "acme", "s1", 5, start=10)  # while disconnected

    second = await peers(key_of(acme), transport)
    resumed = await second.call("join-session", {"sessionId": "s1", "lastEventId": got[-1]["eventId"]})
    assert resumed["ok"] is True and resumed["lastEventId"] == got[-1]["eventId"]
    rest = await second.events("message-received", 11)
    assert [e["n"] for e in got + rest] == list(range(15))
    ids = [e["eventId"] for e in got + rest]
    assert ids == sorted(set(ids))
    assert await second.quiet() == []

    # on a socket that already follows another session, a replay of one session duplicates nothing else
    assert (await second.call("join-session", {"sessionId": "s2"}))["ok"] is True
    await append(manager, "acme", "s2", 2, start=100)
    assert [e["n"] for e in await second.events("message-received", 2)] == [100, 101]
    replay = await second.call("join-session", {"sessionId": "s1", "lastEventId": ids[12]})
    assert replay["ok"] is True
    assert [(e["sessionId"], e["n"]) for e in await second.events("message-received", 2)] == [("s1", 13), ("s1", 14)]
    assert await second.quiet() == []
    await append(manager, "acme", "s2", 1, start=102)
    await append(manager, "acme", "s1", 1, start=15)
    after = await second.events("message-received", 2)
    assert [(e["sessionId"], e["n"]) for e in after] == [("s2", 102), ("s1", 15)]
    assert await second.quiet() == []

    # a plain join's lastEventId is where a later resume picks up
    third = await peers(key_of(acme), transport)
    mark = (await third.call("join-session", {"sessionId": "s1"}))["lastEventId"]
    assert mark == after[-1]["eventId"]
    await append(manager, "acme", "s1", 1, start=16)
    assert (await third.event("message-received"))["n"] == 16


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_join_from_pruned_events_is_told_of_the_gap_then_goes_on(
    api: httpx.AsyncClient, peers: PeerFactory, manager: ConnectionManager, transport: str
) -> None:
    acme = await new_client(api, "acme")
    await create_session(api, acme, "s1")
    await append(manager, "acme", "s1", 10)
    ids = [e.id for e in await (await manager.get_connection("acme")).event.list_after(types=["message-received"])]
    await prune_events_before(manager, "acme", ids[6])  # retention took the first six

    peer = await peers(key_of(acme), transport)
    joined = await peer.call("join-session", {"sessionId": "s1", "lastEventId": ids[2]})
    assert joined["ok"] is True
    assert joined["gap"] == {"requestedLastEventId": ids[2], "oldestEventId": ids[6]}
    first = await peer.take(lambda m: m["kind"] == "event", "the first event")
    assert first["event"] == "gap"
    assert first["args"] == [{"sessionId": "s1", "requestedLastEventId": ids[2], "oldestEventId": ids[6]}]
    assert [e["n"] for e in await peer.events("message-received", 4)] == [6, 7, 8, 9]
    assert await peer.quiet() == []

    # from an id retention has not reached: no gap
    other = await peers(key_of(acme), transport)
    joined = await other.call("join-session", {"sessionId": "s1", "lastEventId": ids[7]})
    assert joined["ok"] is True and "gap" not in joined
    assert [e["n"] for e in await other.events("message-received", 2)] == [8, 9]
    assert await other.quiet() == []


# -- bad input --------------------------------------------------------------------------------------------

TOO_LONG = "x" * 4097

# (event, arguments, status, code, a field the errors name or None)
BAD_COMMANDS: list[tuple[str, list[Any], int, str, str | None]] = [
    ("join-session", [{}], 422, "validation_failed", "sessionId"),
    ("join-session", [{"sessionId": "a b"}], 422, "validation_failed", "sessionId"),
    ("join-session", [{"sessionId": "x" * 65}], 422, "validation_failed", "sessionId"),
    ("join-session", [{"sessionId": 7}], 422, "validation_failed", "sessionId"),
    ("join-session", [{"sessionId": "mine", "surprise": 1}], 422, "validation_failed", "surprise"),
    ("join-session", [{"sessionId": "mine", "lastEventId": -1}], 422, "validation_failed", "lastEventId"),
    ("join-session", ["mine"], 422, "validation_failed", "body"),
    ("join-session", [], 422, "validation_failed", "body"),
    ("join-session", [{"sessionId": "nobody"}], 404, "session_not_found", None),
    ("join-session", [{"sessionId": "theirs"}], 404, "session_not_found", None),
    ("send-message", [{"sessionId": "mine", "to": "123", "message": "x"}], 422, "invalid_phone_number", None),
    ("send-message", [{"sessionId": "mine", "to": "5511999999999", "message": TOO_LONG}], 422, "validation_failed",
     "message"),
    ("send-message", [{"sessionId": "mine", "to": "5511999999999", "message": ""}], 422, "validation_failed",
     "message"),
    ("send-message", [{"sessionId": "mine", "to": "5511999999999"}], 422, "validation_failed", "message"),
    ("send-message", [{"sessionId": "mine", "to": "5511999999999", "message": "x", "extra": True}], 422,
     "validation_failed", "extra"),
    ("send-message", ["hello"], 422, "validation_failed", "body"),
    ("send-message", [[1, 2]], 422, "validation_failed", "body"),
    ("send-message", [{"sessionId": "theirs", "to": "5511999999999", "message": "x"}], 404, "session_not_found",
     None),
    ("send-message", [{"sessionId": "gone", "to": "5511999999999", "message": "x"}], 409, "session_not_connected",
     None),
    ("send-message", [{}, {}], 422, "invalid_request", None),
    ("leave-session", [{"sessionId": "mine"}], 404, "not_found", None),
    ("leave-session", [{"session": "mine"}], 422, "validation_failed", "sessionId"),
    ("get-sessions", [{"all": True}], 422, "validation_failed", "all"),
    ("frobnicate", [{}], 422, "invalid_request", None),
]  # fmt: skip


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_bad_input_is_answered_and_the_socket_stays_up(
    api: httpx.AsyncClient, peers: PeerFactory, transport: str
) -> None:
    acme, globex = await new_client(api, "acme"), await new_client(api, "globex")
    for sid in ("mine", "gone"):
        await create_session(api, acme, sid)
    await create_session(api, globex, "theirs")
    assert (await api.post("/whatsapp/sessions/gone/logout", headers=acme)).status_code == 202
    socket = await peers(key_of(acme), transport)
    for event, args, status, code, fieldname in BAD_COMMANDS:
        error = assert_refusal(await socket.call(event, *args), status, code)
        if fieldname is not None:
            assert fieldname in [e["field"] for e in error["errors"]], (event, args, error)
        assert "globex" not in json.dumps(error)
        announced = await socket.event("error")
        assert announced == {"event": event, **error}, (event, args)
        # and the socket still works
        assert (await socket.call("get-sessions"))["ok"] is True
    # without an ack callback, the error event alone answers
    socket.emit("send-message", {"sessionId": "mine", "to": "123", "message": "x"})
    assert (await socket.event("error"))["code"] == "invalid_phone_number"
    assert (await socket.call("join-session", {"sessionId": "mine"}))["ok"] is True
    assert (await socket.call("leave-session", {"sessionId": "mine"}))["ok"] is True
    assert await socket.quiet() == []  # no stray event, no disconnect


# -- hardening: revocation, caps, hostile input ----------------------------------------------------------


class Closed(Exception):
    """The server closed the WebSocket."""


class RawSocket:
    """Engine.IO/Socket.IO over a WebSocket framed by hand: hostile frames, and a peer that stops reading.

    Nothing reads for it in the background, and its receive window is tiny, so once the test stops reading,
    the server's writes back up at once.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._ids = itertools.count(1)

    @classmethod
    async def open(cls, base_url: str, key: str) -> RawSocket:
        url = httpx.URL(base_url)
        sock = net.socket(net.AF_INET, net.SOCK_STREAM)
        sock.setsockopt(net.SOL_SOCKET, net.SO_RCVBUF, 4096)  # before connecting: the window stays small
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (url.host, url.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        nonce = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {url.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {nonce}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        raw = cls(reader, writer)
        assert (await raw.recv()).startswith("0{")  # Engine.IO open
        await raw.send("40/whatsapp," + json.dumps({"apiKey": key}))
        assert (await raw.recv()).startswith("40/whatsapp,{"), "the namespace refused the key"
        return raw

    async def send(self, text: str) -> None:
        data = text.encode()
        mask = os.urandom(4)
        size = len(data)
        head = bytes([0x81]) + (
            bytes([0x80 | size])
            if size < 126
            else bytes([0x80 | 126]) + struct.pack("!H", size)
            if size < 65536
            else bytes([0x80 | 127]) + struct.pack("!Q", size)
        )
        self.writer.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        await self.writer.drain()

    async def recv(self) -> str:
        """The next text frame (a close frame or the end of the connection raises Closed)."""
        try:
            first, second = await self.reader.readexactly(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            data = await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise Closed from exc
        if first & 0x0F == 0x8:
            raise Closed
        return data.decode()

    async def send_raw(self, payload: str) -> int:
        """Send an event frame with an ack id; `payload` is the JSON array after it, verbatim."""
        ack = next(self._ids)
        await self.send(f"42/whatsapp,{ack}{payload}")
        return ack

    async def ack(self, ack: int, within: float = 10.0) -> Message:
        """The ack `ack`'s first argument (events met meanwhile are skipped; pings answered)."""
        prefix = f"43/whatsapp,{ack}["
        while True:
            frame = await asyncio.wait_for(self.recv(), within)
            if frame == "2":
                await self.send("3")
            elif frame.startswith(prefix):
                args = json.loads(frame[len(prefix) - 1 :])
                # an ack with nothing in it (the socket's client was deleted under it) answers nothing: not ok
                answer: Message = args[0] if args else {"ok": False, "empty": True}
                return answer

    async def frames_until_closed(self, within: float = 30.0) -> list[str]:
        """Every frame until the server closes the connection."""
        frames: list[str] = []
        with contextlib.suppress(Closed):
            while True:
                frames.append(await asyncio.wait_for(self.recv(), within))
        return frames

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2)


@pytest.mark.parametrize("revoke", ["rotate", "delete"])
async def test_revoking_a_key_disconnects_its_sockets_in_every_api_process(
    clear_zapgate_env: None, database_url: str, node: str, manager: ConnectionManager, revoke: str
) -> None:
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url, default_engine="sandbox")
    async with (
        running_app(settings, database_url) as one_url,
        running_app(settings, database_url) as two_url,
        httpx.AsyncClient(base_url=one_url) as one,
    ):
        acme, globex = await new_client(one, "acme"), await new_client(one, "globex")
        await create_session(one, acme, "s1")
        await create_session(one, globex, "g")
        sockets = [await start_peer(node, two_url, key_of(h), "websocket") for h in (acme, globex)]
        acme_socket, globex_socket = sockets
        try:
            for socket_, sid in ((acme_socket, "s1"), (globex_socket, "g")):
                assert (await socket_.connected())["kind"] == "connect"
                assert (await socket_.call("join-session", {"sessionId": sid}))["ok"] is True
            if revoke == "rotate":
                assert (await one.post("/admin/clients/acme/rotate-key", headers=ADMIN)).status_code == 200
            else:
                assert (await one.delete("/admin/clients/acme", headers=ADMIN)).status_code == 204
            # process two tells the socket why, then disconnects it
            error = await acme_socket.event("error", within=10)
            assert error["code"] == "key_revoked" and error["status"] == 401, error
            gone = await acme_socket.take(lambda m: m["kind"] == "disconnect", "disconnect", within=10)
            assert gone["reason"] == "io server disconnect"
            if revoke == "rotate":
                await append(manager, "acme", "s1", 1)
            await append(manager, "globex", "g", 1, start=5)
            assert (await globex_socket.event("message-received"))["n"] == 5  # others go on
            assert [m for m in await acme_socket.quiet() if m["kind"] == "event"] == []
            # the old key opens no new socket
            again = await start_peer(node, two_url, key_of(acme), "websocket")
            sockets.append(again)
            assert (await again.connected())["kind"] == "connect_error"
        finally:
            await asyncio.gather(*(s.close() for s in sockets))
        if revoke == "delete":
            assert await client_schemas(database_url) == ["client_globex"]


async def test_a_deleted_clients_socket_cannot_make_its_schema_again(
    clear_zapgate_env: None, database_url: str, node: str
) -> None:
    settings = Settings(admin_key=ADMIN_KEY, database_url=database_url, default_engine="sandbox")
    async with running_app(settings, database_url) as base_url, httpx.AsyncClient(base_url=base_url) as api:
        acme = await new_client(api, "acme")
        raw = await RawSocket.open(base_url, key_of(acme))
        try:
            # the delete and a command race: whichever comes first, the command is refused or never answered
            deleting = asyncio.create_task(api.delete("/admin/clients/acme", headers=ADMIN))
            answers = []
            with contextlib.suppress(TimeoutError, Closed, ConnectionError):
                for _ in range(20):
                    answers.append(await raw.ack(await raw.send_raw('["get-sessions"]'), within=2))
            assert (await deleting).status_code == 204
        finally:
            await raw.close()
        # answered before the delete, or refused: never served from a schema made again
        oks = [answer["ok"] for answer in answers]
        assert oks == sorted(oks, reverse=True), answers
        assert await client_schemas(database_url) == []


async def test_a_key_holds_at_most_max_streams_per_key_sockets_and_streams(
    clear_zapgate_env: None, database_url: str, node: str
) -> None:
    async with api_client(database_url, max_streams_per_key=2) as api:
        acme = await new_client(api, "acme")
        base_url = str(api.base_url).rstrip("/")
        # one after the other: which of three peers started together connects first is a race
        first = await start_peer(node, base_url, key_of(acme), "websocket")
        assert (await first.connected())["kind"] == "connect"
        second = await start_peer(node, base_url, key_of(acme), "polling")
        assert (await second.connected())["kind"] == "connect"
        third = await start_peer(node, base_url, key_of(acme), "websocket")
        try:
            refused = await third.connected()
            assert refused["kind"] == "connect_error" and refused["data"] == {
                "code": "too_many_connections",
                "status": 429,
            }, refused
            assert (await api.get("/whatsapp/stream", headers=acme)).status_code == 429  # SSE counts too
            await first.close()
            fourth = await start_peer(node, base_url, key_of(acme), "websocket")
            try:
                assert (await fourth.connected())["kind"] == "connect"
            finally:
                await fourth.close()
        finally:
            await asyncio.gather(first.close(), second.close(), third.close())


async def test_a_socket_that_stops_reading_is_disconnected_past_its_backlog(
    clear_zapgate_env: None, database_url: str, node: str, manager: ConnectionManager
) -> None:
    async with api_client(database_url, socket_backlog_events=50, stall_timeout=1) as api:
        acme = await new_client(api, "acme")
        await create_session(api, acme, "s")
        base_url = str(api.base_url).rstrip("/")
        raw = await RawSocket.open(base_url, key_of(acme))
        try:
            joined = await raw.ack(await raw.send_raw('["join-session", {"sessionId": "s"}]'))
            assert joined["ok"] is True
            text = "x" * 4000
            for batch in range(4):  # ~8 MB for a reader that stops reading now

                async def work(tx: Transaction, batch: int = batch) -> None:
                    await tx.event.append_many(
                        [("message-received", "s", {"n": batch * 500 + i, "text": text}) for i in range(500)]
                    )

                await manager.execute_transaction("acme", work)
            await asyncio.sleep(3)  # past the stall timeout, within the grace to read why
            frames = await raw.frames_until_closed()
        finally:
            await raw.close()
        events = [json.loads(f[len("42/whatsapp,") :]) for f in frames if f.startswith("42/whatsapp,")]
        received = [body for name, body in events if name == "message-received"]
        assert 0 < len(received) < 2000, len(received)
        assert [e["n"] for e in received] == list(range(len(received)))
        assert events[-1][0] == "error" and events[-1][1]["code"] == "backlog_exceeded", events[-1]
        assert "41/whatsapp," in frames  # then the disconnect
        # it resumes where it was
        peer = await start_peer(node, base_url, key_of(acme), "websocket")
        try:
            assert (await peer.connected())["kind"] == "connect"
            resumed = await peer.call("join-session", {"sessionId": "s", "lastEventId": received[-1]["eventId"]})
            assert resumed["ok"] is True
            rest = await peer.events("message-received", 2000 - len(received), within=60)
            assert [e["n"] for e in rest] == list(range(len(received), 2000))
        finally:
            await peer.close()


async def test_join_sends_the_current_qr_code_made_before_it(
    api: httpx.AsyncClient, peers: PeerFactory, worker: Worker
) -> None:
    acme = await new_client(api, "acme")
    await create_session(api, acme, "user123")
    for _ in range(200):
        shown = (await api.get("/whatsapp/sessions/user123", headers=acme)).json()
        if shown["qrCode"]:
            break
        await asyncio.sleep(0.1)
    socket_ = await peers(key_of(acme))
    # the seed's client: join, then wait for the QR code (the worker made it before the join)
    socket_.emit("join-session", {"sessionId": "user123"})
    qr = await socket_.event("qr-code", within=3)
    assert qr["sessionId"] == "user123" and qr["qr"] == shown["qrCode"] and qr["eventId"] > 0


async def test_a_frame_larger_than_an_http_body_is_refused(api: httpx.AsyncClient, peers: PeerFactory) -> None:
    acme = await new_client(api, "acme")
    await create_session(api, acme, "s")
    big = await peers(key_of(acme))
    big.emit("send-message", {"sessionId": "s", "to": "5511999999999", "message": "x" * (65 * 1024)})
    gone = await big.take(lambda m: m["kind"] == "disconnect", "disconnect", within=10)
    assert gone["reason"] == "transport close"
    # just under the limit is read (and refused for what it says)
    fits = await peers(key_of(acme))
    answer = await fits.call("send-message", {"sessionId": "s", "to": "5511999999999", "message": "x" * 60_000})
    assert_refusal(answer, 422, "validation_failed")


HUGE = "1" * 400
# hostile values for each event, as raw JSON: huge integers, wrong types, non-ASCII digits
HOSTILE: list[str] = [
    f'["join-session", {{"sessionId": "s", "lastEventId": {HUGE}}}]',
    f'["join-session", {{"sessionId": "s", "lastEventId": -{HUGE}}}]',
    '["join-session", {"sessionId": "s", "lastEventId": 1e400}]',
    '["join-session", {"sessionId": "s", "lastEventId": "١٢٣"}]',
    '["join-session", {"sessionId": "s", "lastEventId": 1.5}]',
    '["join-session", {"sessionId": "s", "lastEventId": [1]}]',
    f'["join-session", {{"sessionId": {HUGE}}}]',
    '["join-session", {"sessionId": "١٢٣"}]',
    '["join-session", null]',
    f'["leave-session", {{"sessionId": {HUGE}}}]',
    '["leave-session", {"sessionId": ["s"]}]',
    f'["get-sessions", {{"x": {HUGE}}}]',
    f'["get-sessions", {HUGE}]',
    f'["send-message", {{"sessionId": "s", "to": {HUGE}, "message": "x"}}]',
    f'["send-message", {{"sessionId": "s", "to": "{HUGE}", "message": "x"}}]',
    '["send-message", {"sessionId": "s", "to": "٥٥١١٩٩٩٩٩٩٩٩٩", "message": "x"}]',
    f'["send-message", {{"sessionId": "s", "to": "5511999999999", "message": {HUGE}}}]',
    f'["send-message", {{"sessionId": "s", "to": "5511999999999", "message": "x", "idempotencyKey": {HUGE}}}]',
    '["send-message", {"sessionId": "s", "to": "5511999999999", "message": "x", "idempotencyKey": 1e400}]',
    f'["send-message", {{"sessionId": {HUGE}, "to": "5511999999999", "message": "x"}}]',
    f'["frobnicate", {HUGE}]',
]


async def test_hostile_values_are_answered_at_once_on_every_event(api: httpx.AsyncClient) -> None:
    acme = await new_client(api, "acme")
    await create_session(api, acme, "s")
    raw = await RawSocket.open(str(api.base_url).rstrip("/"), key_of(acme))
    try:
        for payload in HOSTILE:
            answer = await raw.ack(await raw.send_raw(payload), within=3)
            assert answer["ok"] is False and answer["error"]["status"] in (404, 422), (payload, answer)
            assert len(json.dumps(answer)) < 2000, (payload, answer)  # the value is not echoed back
        assert (await raw.ack(await raw.send_raw('["get-sessions"]')))["ok"] is True  # the socket is fine
    finally:
        await raw.close()
