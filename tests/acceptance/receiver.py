"""A real HTTP/1.1 webhook receiver on loopback, scripted per test: answers, failures, delays, silence."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Received:
    """One request the receiver read, and the status it answered (None: it never answered)."""

    path: str
    headers: httpx.Headers
    body: bytes
    status: int | None
    at: float  # time.time() when it arrived

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event_id(self) -> int:
        return int(self.headers["x-zapgate-event-id"])


Reply = tuple[int, dict[str, str], bytes]
Behaviour = Callable[["Received", int], Awaitable[Reply | None]]  # (request, nth request on its path) -> reply


async def ok(request: Received, nth: int) -> Reply | None:
    return 200, {}, b"ok"


class Receiver:
    """Collects requests; `behaviour(path)` decides each answer (None: keep the connection open, never answer)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.behaviours: dict[str, Behaviour] = {}
        self._counts: dict[str, int] = {}
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        self.base_url = ""

    def url(self, path: str, behaviour: Behaviour = ok) -> str:
        """The URL of `path`, answered by `behaviour`."""
        self.behaviours[path] = behaviour
        return self.base_url + path

    def at(self, path: str, *, acknowledged: bool = False) -> list[Received]:
        """The requests to `path` (only those answered 2xx, with `acknowledged`)."""
        return [
            r
            for r in self.requests
            if r.path == path and (not acknowledged or (r.status is not None and 200 <= r.status < 300))
        ]

    async def wait_for(
        self, path: str, count: int, *, within: float = 60.0, acknowledged: bool = True
    ) -> list[Received]:
        """Wait until `path` got `count` requests (answered 2xx by default); return them."""
        async with asyncio.timeout(within):
            while len(found := self.at(path, acknowledged=acknowledged)) < count:
                self._changed.clear()
                await self._changed.wait()
        return found

    async def wait_until(self, check: Callable[[], bool], *, within: float = 60.0) -> None:
        """Wait until `check()` holds (it is asked after each request)."""
        async with asyncio.timeout(within):
            while not check():
                self._changed.clear()
                await self._changed.wait()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                _, target, _ = line.decode("latin-1").split(" ", 2)
                headers = httpx.Headers()
                while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, value = header.decode("latin-1").split(":", 1)
                    headers[name.strip()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                arrived = time.time()
                nth = self._counts[target] = self._counts.get(target, 0) + 1
                behaviour = self.behaviours.get(target, ok)
                reply = await behaviour(Received(target, headers, body, None, arrived), nth)
                if reply is None:
                    self._record(Received(target, headers, body, None, arrived))
                    await asyncio.Event().wait()  # a black hole: the connection stays open, nothing comes back
                    return
                status, extra, payload = reply
                head = f"HTTP/1.1 {status} Whatever\r\nContent-Length: {len(payload)}\r\n"
                head += "".join(f"{name}: {value}\r\n" for name, value in extra.items())
                writer.write(head.encode() + b"\r\n" + payload)
                await writer.drain()
                self._record(Received(target, headers, body, status, arrived))
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            self._handlers.discard(task)
            writer.close()

    def _record(self, request: Received) -> None:
        self.requests.append(request)
        self._changed.set()


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    """A started receiver, closed on exit."""
    receiver = Receiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.close()
