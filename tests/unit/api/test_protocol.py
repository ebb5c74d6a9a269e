"""HttpProtocol: uvicorn's httptools protocol writing a response's head and body at once, over real sockets; and
its transport's order of writes, close and abort."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from zapgate.api.protocol import HOLD_LIMIT, HttpProtocol, JoiningTransport

pytestmark = pytest.mark.timeout(60)


class Recorder:
    """A real transport's writes, recorded on their way to it (all else passes through)."""

    def __init__(self, transport: Any, calls: list[tuple[str, bytes]]) -> None:
        self._transport = transport
        self._calls = calls

    def write(self, data: bytes) -> None:
        self._calls.append(("write", bytes(data)))
        self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        lines = [bytes(line) for line in lines]
        self._calls.append(("writelines", b"|".join(lines)))
        self._transport.writelines(lines)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


CALLS: list[tuple[str, bytes]] = []


class RecordingProtocol(HttpProtocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(Recorder(transport, CALLS))


RELEASE: asyncio.Event | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b'{"ok":true}'
    if scope["path"] == "/big":
        body = b"x" * (3 * HOLD_LIMIT)
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        assert RELEASE is not None
        await RELEASE.wait()  # the head must reach the client before the body exists
        await send({"type": "http.response.body", "body": b"later", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def served() -> AsyncIterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, http=RecordingProtocol, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            assert not task.done(), task
            await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def test_a_responses_head_and_body_go_out_in_one_write() -> None:
    CALLS.clear()
    async with served() as url, httpx.AsyncClient(base_url=url) as client:
        for _ in range(3):  # one connection, kept alive
            answer = await client.get("/json")
            assert answer.status_code == 200 and answer.json() == {"ok": True}
    assert [kind for kind, _ in CALLS] == ["writelines"] * 3
    head, body = CALLS[0][1].split(b"|")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n") and body == b'{"ok":true}'


async def test_a_large_body_is_written_as_it_comes_after_its_head() -> None:
    CALLS.clear()
    async with served() as url, httpx.AsyncClient(base_url=url) as client:
        answer = await client.get("/big")
    assert answer.content == b"x" * (3 * HOLD_LIMIT)
    assert [kind for kind, _ in CALLS] == ["writelines"]
    head, body = CALLS[0][1].split(b"|")
    assert head.startswith(b"HTTP/1.1 200") and body == answer.content


async def test_a_head_whose_body_comes_later_reaches_the_client_first() -> None:
    global RELEASE
    RELEASE = asyncio.Event()
    CALLS.clear()
    async with served() as url, httpx.AsyncClient(base_url=url) as client:
        async with client.stream("GET", "/stream") as answer:
            # the head arrived (httpx answered) while the app still waits to write the body
            assert answer.status_code == 200 and not RELEASE.is_set()
            assert [kind for kind, _ in CALLS] == ["write"] and CALLS[0][1].startswith(b"HTTP/1.1 200")
            RELEASE.set()
            assert await answer.aread() == b"later"


class Fake:
    """A transport that records what reaches it."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, lines: Any) -> None:
        self.calls.append(("writelines", list(lines)))

    def close(self) -> None:
        self.closing = True
        self.calls.append("close")

    def abort(self) -> None:
        self.closing = True
        self.calls.append("abort")

    def is_closing(self) -> bool:
        return self.closing

    def set_protocol(self, protocol: Any) -> None:
        self.calls.append(("set_protocol", protocol))

    def get_write_buffer_size(self) -> int:
        return 100


async def test_writes_keep_their_order_and_close_writes_what_is_held_first() -> None:
    fake = Fake()
    joined = JoiningTransport(fake, asyncio.get_running_loop())
    joined.write(b"head")
    assert fake.calls == [] and joined.get_write_buffer_size() == 104
    joined.write(b"body")
    joined.write(b"more")
    joined.writelines([b"a", b"b"])
    joined.write(b"last")
    joined.close()
    assert fake.calls == [
        ("writelines", [b"head", b"body"]),
        ("writelines", [b"more", b"a", b"b"]),
        ("write", b"last"),
        "close",
    ]
    await asyncio.sleep(0)  # the end of the turn finds nothing held, and a closed transport
    assert fake.calls[-1] == "close"


async def test_what_is_held_is_written_at_the_end_of_the_turn_and_dropped_by_an_abort() -> None:
    fake = Fake()
    joined = JoiningTransport(fake, asyncio.get_running_loop())
    joined.write(b"head")
    await asyncio.sleep(0)
    assert fake.calls == [("write", b"head")]
    joined.write(b"x" * (HOLD_LIMIT + 1))  # too large to hold: written at once
    assert fake.calls[-1] == ("write", b"x" * (HOLD_LIMIT + 1))
    joined.write(b"never")
    joined.abort()
    await asyncio.sleep(0)
    assert fake.calls[-1] == "abort" and ("write", b"never") not in fake.calls


async def test_a_protocol_taking_over_writes_after_what_was_written_before_it() -> None:
    fake = Fake()
    joined = JoiningTransport(fake, asyncio.get_running_loop())
    joined.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    joined.set_protocol(other := object())  # type: ignore[arg-type]
    assert fake.calls == [("write", b"HTTP/1.1 101 Switching Protocols\r\n\r\n"), ("set_protocol", other)]
