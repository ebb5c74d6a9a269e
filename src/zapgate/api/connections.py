"""The realtime connections (SSE streams, Socket.IO sockets) open in this API process, by the API key they
authenticated with.

A connection authenticates once, when it opens; after that only this registry stands between a revoked key
and the events it still receives. Revoking keys (rotation, client deletion) is announced on `zapgate_keys`;
every API process then asks the registry which of that client's keys still authenticate and closes the
connections opened with any other, each with a reason (`key_revoked`). The registry also caps how many
connections one key may hold here (ZAPGATE_MAX_STREAMS_PER_KEY).

It also reaches under ASGI for the one thing ASGI does not give: the connection's transport, to measure
what waits unsent in its socket and to abort a connection whose reader stopped reading (a plain close waits
for the buffer to drain, which a stalled reader never lets happen).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import termios
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zapgate.background import TaskGroup
from zapgate.domain.ids import ClientId
from zapgate.errors import InvalidClientId, TooManyConnections
from zapgate.log import get_logger
from zapgate.services.clients import ClientService

log = get_logger(__name__)

KEY_REVOKED = "key_revoked"  # the reason a connection gets when its key is revoked or its client deleted


@dataclass(eq=False)
class Connection:
    """One open stream or socket: whose it is, and how to ask it to end."""

    client: ClientId
    key_hash: str
    transport: str  # "sse" or "socket.io"
    # called once to end the connection: (code, detail); it tells its peer why, then closes
    close: Callable[[str, str], None] = field(repr=False)
    closing: bool = False

    def end(self, code: str, detail: str) -> None:
        """Ask the connection to end (once)."""
        if not self.closing:
            self.closing = True
            self.close(code, detail)


class Connections:
    """Every realtime connection of this process, by key: capped per key, closed when its key is revoked."""

    def __init__(self, clients: ClientService, *, per_key: int) -> None:
        self._clients = clients
        self._per_key = per_key
        self._by_key: dict[str, set[Connection]] = {}
        self._by_client: dict[ClientId, set[Connection]] = {}
        self._tasks = TaskGroup("connections")

    def open(self, client: ClientId, key_hash: str, transport: str, close: Callable[[str, str], None]) -> Connection:
        """Register a connection; raise TooManyConnections when its key holds as many as it may."""
        held = self._by_key.setdefault(key_hash, set())
        if len(held) >= self._per_key:
            if not held:
                del self._by_key[key_hash]
            log.info("realtime.refused", client_id=client, transport=transport, code="too_many_connections")
            raise TooManyConnections(
                f"this API key holds {len(held)} streams and sockets, as many as it may "
                "(ZAPGATE_MAX_STREAMS_PER_KEY): close one first",
                retry_after=1.0,
            )
        conn = Connection(client, key_hash, transport, close)
        held.add(conn)
        self._by_client.setdefault(client, set()).add(conn)
        return conn

    def release(self, conn: Connection) -> None:
        """Forget a connection that ended."""
        by_key = self._by_key.get(conn.key_hash)
        if by_key is not None:
            by_key.discard(conn)
            if not by_key:
                del self._by_key[conn.key_hash]
        by_client = self._by_client.get(conn.client)
        if by_client is not None:
            by_client.discard(conn)
            if not by_client:
                del self._by_client[conn.client]

    def count(self, client: str | None = None) -> int:
        """How many connections are open here (of `client`)."""
        if client is not None:
            return len(self._by_client.get(ClientId(client), ()))
        return sum(len(held) for held in self._by_client.values())

    def revoked(self, client: str | None) -> None:
        """`zapgate_keys` said `client`'s keys changed (None: a reconnect, anything may have): check them now."""
        self._clients.revoked(client)
        clients = list(self._by_client) if client is None else [ClientId(client)]
        for cid in clients:
            if cid in self._by_client:
                self._tasks.spawn(self._check(cid), name=f"check.{cid}")

    async def _check(self, client: ClientId) -> None:
        try:
            live = await self._clients.live_keys(client)
        except InvalidClientId:
            return
        for conn in list(self._by_client.get(client, ())):
            if conn.key_hash not in live:
                log.info("realtime.revoked", client_id=client, transport=conn.transport)
                conn.end(KEY_REVOKED, "the API key of this connection was revoked (rotated, or its client deleted)")

    async def close(self) -> None:
        """Stop the checks under way (at shutdown)."""
        await self._tasks.close()


def transport_of(send: Any, depth: int = 8) -> asyncio.Transport | None:
    """The asyncio transport under an ASGI `send` callable, or None.

    uvicorn's `send` is a method of an object holding `transport`; middleware wraps it in closures. ASGI has
    no way to abort a connection or see its socket, and a stalled reader needs both.
    """
    seen: set[int] = set()
    todo: list[tuple[Any, int]] = [(send, 0)]
    while todo:
        obj, level = todo.pop()
        if id(obj) in seen or level > depth:
            continue
        seen.add(id(obj))
        transport = getattr(getattr(obj, "__self__", None), "transport", None)
        if isinstance(transport, asyncio.Transport):
            return transport
        for cell in getattr(obj, "__closure__", None) or ():
            with contextlib.suppress(ValueError):  # an empty cell
                if callable(cell.cell_contents):
                    todo.append((cell.cell_contents, level + 1))
        wrapped = getattr(obj, "__wrapped__", None)
        if wrapped is not None:
            todo.append((wrapped, level + 1))
    return None


def unsent_bytes(transport: asyncio.Transport) -> int:
    """Bytes written to `transport` that its peer has not taken yet: in our buffer and in the kernel's."""
    waiting = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):
            queued = array.array("i", [0])
            fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, queued)  # Linux: SIOCOUTQ, unsent in the socket
            waiting += queued[0]
    return waiting
