"""A raw Server-Sent Events reader (the wire format, parsed by hand, not by a library under test)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class SseMessage:
    """One dispatched event, or a comment line (`comment` set)."""

    id: str | None = None
    event: str | None = None
    data_lines: list[str] = field(default_factory=list)
    comment: str | None = None
    retry: str | None = None

    @property
    def data(self) -> Any:
        return json.loads("\n".join(self.data_lines))


async def read_sse(response: httpx.Response) -> AsyncIterator[SseMessage]:
    """Yield the messages of an open text/event-stream response, comments included."""
    current = SseMessage()
    buffer = ""
    async for chunk in response.aiter_text():
        buffer += chunk
        while True:
            cut = min((i for i in (buffer.find("\r\n"), buffer.find("\n"), buffer.find("\r")) if i >= 0), default=-1)
            if cut < 0 or (buffer[cut] == "\r" and cut == len(buffer) - 1):
                break  # no line yet, or a CR whose LF may come with the next chunk
            line = buffer[:cut]
            buffer = buffer[cut + (2 if buffer.startswith("\r\n", cut) else 1) :]
            if line == "":
                if current.data_lines or current.event or current.id:
                    yield current
                current = SseMessage()
            elif line.startswith(":"):
                yield SseMessage(comment=line[1:].strip())
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    current.data_lines.append(value)
                elif name in ("id", "event", "retry"):
                    setattr(current, name, value)


async def next_events(stream: AsyncIterator[SseMessage], count: int) -> list[SseMessage]:
    """The next `count` events of `stream` (comments skipped)."""
    got: list[SseMessage] = []
    async for message in stream:
        if message.comment is None:
            got.append(message)
            if len(got) == count:
                break
    return got
