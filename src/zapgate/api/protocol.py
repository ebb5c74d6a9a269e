"""The HTTP/1.1 protocol the API is served with: uvicorn's httptools protocol, writing each response's head and
body in one send.

uvicorn writes a response's status line and headers as soon as the app sends `http.response.start`, then its
body: two `send` calls and, on TCP, two segments that the client's kernel and the client itself each handle
(with uvloop a write goes out at once when nothing is queued). Here a small write is held until the end of the
event loop's turn, or until the next write, whichever comes first; a body sent in the same turn as its head (a
JSON answer) goes out with it in one `writev`. A head whose body comes later (a stream, Server-Sent Events) is
written at the end of the turn: no later than uvicorn would have, as far as the client can tell.

Measured under wrk on `POST /whatsapp/send` and `GET /health` (README: Performance): one system call and one
segment fewer per response.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HOLD_LIMIT = 4096  # bytes: a response's head (and a short body), never a stream's chunks of any size


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a transport that joins a response's head to its body (the module's doc)."""

    def connection_made(self, transport: Any) -> None:  # uvloop's transports are no asyncio.Transport instances
        super().connection_made(JoiningTransport(transport, self.loop))


class JoiningTransport(asyncio.Transport):
    """A transport that holds one small write until the next write or the end of the loop's turn, then writes
    both at once; everything else is the wrapped transport's. Writes keep their order: nothing passes a held
    write, and closing writes it first."""

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport: asyncio.Transport = transport
        self._loop = loop
        self._held: bytes | None = None

    # -- writing ---------------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))  # one writev with uvloop (and asyncio's selector loop)
        elif len(data) <= HOLD_LIMIT and not self._transport.is_closing():
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        held, self._held = self._held, None
        self._transport.writelines([held, *list_of_data] if held is not None else list_of_data)

    def flush(self) -> None:
        """Write what is held, if anything."""
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    # -- the rest is the wrapped transport's -------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()  # a protocol taking over (a WebSocket's) writes after what was written before it
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()
