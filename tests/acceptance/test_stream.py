"""GET /whatsapp/stream over real HTTP with a raw SSE reader: events, resume, isolation, heartbeats, slow readers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import h11
import httpx
import pytest

from tests.acceptance.sse import SseMessage, next_events, read_sse
from tests.acceptance.support import (
    ADMIN,
    ADMIN_KEY,
    api_client,
    assert_problem,
    client_schemas,
    new_client,
    running_app,
)
from tests.support.retention import prune_events_before
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.services.worker import Worker
from zapgate.settings import Settings


@pytest.fixture
async def api(clear_zapgate_env: None, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(database_url, sse_heartbeat=0.3) as http:
        yield http


@contextlib.asynccontextmanager
async def stream(
    api: httpx.AsyncClient, headers: dict[str, str], **params: str
) -> AsyncIterator[AsyncIterator[SseMessage]]:
    async with api.stream("GET", "/whatsapp/stream", headers=headers, params=params, timeout=30) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield read_sse(response)


async def append(manager: ConnectionManager, client: str, session: str, n: int, start: int = 0) -> None:
    async def work(tx: Transaction) -> None:
        await tx.event.append_many([("message-received", session, {"n": start + i}) for i in range(n)])

    await manager.execute_transaction(client, work)


async def test_the_session_lifecycle_streams_as_events(
    api: httpx.AsyncClient, manager: ConnectionManager, database_url: str
) -> None:
    acme = await new_client(api, "acme")
    worker = Worker(manager, database_url, ("sandbox",), qr_timeout=30, poll_interval=0.2)
    await worker.start()
    try:
        async with stream(api, acme) as events:
            created = await api.post("/whatsapp/session", headers=acme, json={"sessionId": "user123"})
            assert created.status_code == 201
            first: list[SseMessage] = []
            while not first or first[-1].event != "qr-code":
                first += await asyncio.wait_for(next_events(events, 1), 20)
            assert first[0].event == "status-change" and first[0].data["sessionId"] == "user123"
            assert [m.data["status"] for m in first[:-1]][-1] == "qr"
            qr = first[-1]
            assert qr.data["sessionId"] == "user123" and qr.data["qr"] and qr.data["qrDataUrl"].startswith("data:")
            assert qr.id == str(qr.data["eventId"]) and qr.data["type"] == "qr-code"
            scan = await api.post(
                "/whatsapp/sandbox/sessions/user123/scan", headers=acme, json={"phoneNumber": "5511999990001"}
            )
            assert scan.status_code == 202
            async for message in events:
                if message.event == "status-change" and message.data["status"] == "connected":
                    assert message.data["phoneNumber"] == "5511999990001"
                    break
    finally:
        await worker.close()


async def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(
    api: httpx.AsyncClient, manager: ConnectionManager
) -> None:
    acme = await new_client(api, "acme")
    async with stream(api, acme) as events:
        await append(manager, "acme", "s1", 10)
        got = await asyncio.wait_for(next_events(events, 4), 10)
    last = got[-1].id
    assert last is not None
    await append(manager, "acme", "s1", 5, start=10)  # while disconnected
    async with stream(api, {**acme, "Last-Event-ID": last}) as events:
        rest = await asyncio.wait_for(next_events(events, 11), 10)
    assert [m.data["n"] for m in got + rest] == list(range(15))
    ids = [int(m.id or 0) for m in got + rest]
    assert ids == sorted(set(ids))
    # the same by query parameter, as a browser's first connection would
    async with stream(api, acme, lastEventId=str(ids[12])) as events:
        assert [m.data["n"] for m in await asyncio.wait_for(next_events(events, 2), 10)] == [13, 14]


async def test_streams_are_isolated_by_client_and_session(api: httpx.AsyncClient, manager: ConnectionManager) -> None:
    acme, globex = await new_client(api, "acme"), await new_client(api, "globex")
    for headers in (acme, globex):
        for sid in ("one", "two"):
            assert (await api.post("/whatsapp/session", headers=headers, json={"sessionId": sid})).status_code == 201
    async with (
        stream(api, acme) as acme_all,
        stream(api, acme, sessionId="two") as acme_two,
        stream(api, globex) as globex_all,
    ):
        await append(manager, "acme", "one", 2)
        await append(manager, "globex", "one", 1, start=100)
        await append(manager, "acme", "two", 2, start=10)
        assert [m.data["n"] for m in await asyncio.wait_for(next_events(acme_all, 4), 10)] == [0, 1, 10, 11]
        assert [m.data["n"] for m in await asyncio.wait_for(next_events(acme_two, 2), 10)] == [10, 11]
        only = await asyncio.wait_for(next_events(globex_all, 1), 10)
        assert only[0].data["n"] == 100
        with pytest.raises(TimeoutError):  # and nothing of acme's follows
            await asyncio.wait_for(next_events(globex_all, 1), 1.0)


async def test_heartbeats_keep_an_idle_stream_alive(api: httpx.AsyncClient) -> None:
    acme = await new_client(api, "acme")
    async with stream(api, acme) as events:
        pings = 0
        async for message in events:
            assert message.comment is not None  # nothing happens, only pings
            pings += 1
            if pings == 3:
                break


async def test_a_stalled_reader_delays_no_one(api: httpx.AsyncClient, manager: ConnectionManager) -> None:
    acme = await new_client(api, "acme")
    async with stream(api, acme) as stalled, stream(api, acme) as reader:
        await append(manager, "acme", "s", 1, start=-1)
        assert len(await asyncio.wait_for(next_events(stalled, 1), 10)) == 1  # then it stops reading
        for batch in range(10):
            await append(manager, "acme", "s", 300, start=batch * 300)
        got = await asyncio.wait_for(next_events(reader, 3001), 60)
        assert [m.data["n"] for m in got] == list(range(-1, 3000))
        # the stalled reader, reading again, gets everything in order
        late = await asyncio.wait_for(next_events(stalled, 3000), 60)
        assert [m.data["n"] for m in late] == list(range(3000))


async def test_bad_stream_requests(api: httpx.AsyncClient) -> None:
    acme, globex = await new_client(api, "acme"), await new_client(api, "globex")
    assert (await api.post("/whatsapp/session", headers=acme, json={"sessionId": "mine"})).status_code == 201
    assert_problem(await api.get("/whatsapp/stream"), 401)
    assert_problem(await api.get("/whatsapp/stream", headers=globex, params={"sessionId": "mine"}), 404)
    assert_problem(await api.get("/whatsapp/stream", headers=acme, params={"sessionId": "a b"}), 422)
    assert_problem(await api.get("/whatsapp/stream", headers={**acme, "Last-Event-ID": "x1"}), 422)
    assert_problem(await api.get("/whatsapp/stream", headers=acme, params={"lastEventId": "-3"}), 422)


# -- hardening: revocation, caps, stalled readers --------------------------------------------------------


def _settings(database_url: str, **extra: Any) -> Settings:
    return Settings(
        admin_key=ADMIN_KEY, database_url=database_url, default_engine="sandbox", sse_heartbeat=0.3, **extra
    )


async def _rest_of(events: AsyncIterator[SseMessage]) -> list[SseMessage]:
    """Every event until the stream ends (comments skipped)."""
    return [message async for message in events if message.comment is None]


@pytest.mark.parametrize("revoke", ["rotate", "delete"])
async def test_revoking_a_key_ends_its_streams_in_every_api_process(
    clear_zapgate_env: None, database_url: str, manager: ConnectionManager, revoke: str
) -> None:
    settings = _settings(database_url)
    async with (
        running_app(settings, database_url) as one_url,
        running_app(settings, database_url) as two_url,
        httpx.AsyncClient(base_url=one_url) as one,
        httpx.AsyncClient(base_url=two_url) as two,
    ):
        acme = await new_client(one, "acme")
        globex = await new_client(one, "globex")
        async with stream(two, acme) as acme_events, stream(two, globex) as globex_events:
            await append(manager, "acme", "s1", 1)
            assert [m.data["n"] for m in await asyncio.wait_for(next_events(acme_events, 1), 10)] == [0]
            if revoke == "rotate":
                assert (await one.post("/admin/clients/acme/rotate-key", headers=ADMIN)).status_code == 200
            else:
                assert (await one.delete("/admin/clients/acme", headers=ADMIN)).status_code == 204
            # process two ends the stream at once, saying why; nothing of acme's is streamed after
            ended = await asyncio.wait_for(_rest_of(acme_events), 10)
            assert [(m.event, m.id) for m in ended] == [("error", None)], ended
            assert ended[0].data["code"] == "key_revoked"
            # another client's stream goes on
            await append(manager, "globex", "g", 1, start=7)
            assert [m.data["n"] for m in await asyncio.wait_for(next_events(globex_events, 1), 10)] == [7]
        assert_problem(await two.get("/whatsapp/stream", headers=acme), 401)
        if revoke == "delete":
            # nothing made the dropped schema again
            assert await client_schemas(database_url) == ["client_globex"]


async def test_a_key_holds_at_most_max_streams_per_key(clear_zapgate_env: None, database_url: str) -> None:
    async with api_client(database_url, sse_heartbeat=0.3, max_streams_per_key=2) as api:
        acme, globex = await new_client(api, "acme"), await new_client(api, "globex")
        async with stream(api, acme), stream(api, acme):
            refused = assert_problem(await api.get("/whatsapp/stream", headers=acme), 429, "too_many_connections")
            assert "ZAPGATE_MAX_STREAMS_PER_KEY" in refused["detail"]
            async with stream(api, globex):  # per key: another client's key is not counted
                pass
        async with stream(api, acme), stream(api, acme):  # closed streams are counted no more
            pass


async def _stalled_reader(base_url: str, key: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw HTTP/1.1 connection to /whatsapp/stream with a tiny receive window, which the test then stops reading."""
    url = httpx.URL(base_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window stays small
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (url.host, url.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(f"GET /whatsapp/stream HTTP/1.1\r\nHost: {url.host}\r\nX-API-Key: {key}\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


def _event_ids(raw: bytes) -> list[int]:
    """The ids of the complete events in a raw (chunked) SSE response."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.receive_data(raw)
    text = ""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            break
        if isinstance(event, h11.Data):
            text += bytes(event.data).decode()
        elif event in (h11.NEED_DATA, h11.PAUSED) or isinstance(event, h11.ConnectionClosed):
            break
    blocks = text.replace("\r\n", "\n").split("\n\n")[:-1]  # the last one may be cut
    return [int(line[4:]) for block in blocks for line in block.split("\n") if line.startswith("id: ")]


async def test_a_stalled_reader_is_dropped_past_its_backlog_and_resumes(
    clear_zapgate_env: None, database_url: str, manager: ConnectionManager
) -> None:
    async with api_client(database_url, sse_heartbeat=0.3, stream_backlog_bytes=64 * 1024, stall_timeout=1) as api:
        acme = await new_client(api, "acme")
        reader, writer = await _stalled_reader(str(api.base_url), acme["X-API-Key"])
        try:
            await asyncio.sleep(0.5)  # subscribed
            body = "x" * 1000
            for batch in range(4):  # ~2 MB: far more than the reader's window and the bound
                await append_texts(manager, "acme", "s", 500, body, start=batch * 500)
            await asyncio.sleep(3)  # nobody reads meanwhile
            raw = b""
            with contextlib.suppress(ConnectionError):
                while chunk := await asyncio.wait_for(reader.read(65536), 10):  # dropped: the read ends
                    raw += chunk
        finally:
            writer.close()
        ids = _event_ids(raw)
        assert 0 < len(ids) < 2000, len(ids)  # it got some, then the connection was dropped
        async with stream(api, {**acme, "Last-Event-ID": str(ids[-1])}) as events:
            rest = await asyncio.wait_for(next_events(events, 2000 - len(ids)), 30)
        assert [m.data["n"] for m in rest] == list(range(len(ids), 2000))


async def append_texts(manager: ConnectionManager, client: str, session: str, n: int, text: str, start: int) -> None:
    async def work(tx: Transaction) -> None:
        await tx.event.append_many([("message-received", session, {"n": start + i, "text": text}) for i in range(n)])

    await manager.execute_transaction(client, work)


async def test_a_resume_from_pruned_events_is_told_of_the_gap_then_goes_on(
    api: httpx.AsyncClient, manager: ConnectionManager
) -> None:
    acme = await new_client(api, "acme")
    await append(manager, "acme", "s1", 10)
    ids = [e.id for e in await (await manager.get_connection("acme")).event.list_after(limit=100)]
    await prune_events_before(manager, "acme", ids[6])  # retention took the first six

    async with stream(api, {**acme, "Last-Event-ID": str(ids[2])}) as events:
        got = await asyncio.wait_for(next_events(events, 5), 10)
    gap, rest = got[0], got[1:]
    assert gap.event == "gap" and gap.id is None
    assert gap.data == {"requestedLastEventId": ids[2], "oldestEventId": ids[6]}
    assert [m.data["n"] for m in rest] == [6, 7, 8, 9]
    # from an id retention has not reached: no gap
    async with stream(api, acme, lastEventId=str(ids[7])) as events:
        assert [(m.event, m.data["n"]) for m in await asyncio.wait_for(next_events(events, 2), 10)] == [
            ("message-received", 8),
            ("message-received", 9),
        ]
