"""PostgreSQL LISTEN/NOTIFY: wake-ups between processes (the rows themselves are the truth).

Publishing goes through the caller's transaction (`pg_notify` is delivered at commit); listening needs a
connection of its own, outside the pool, since a listening connection cannot be shared.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Iterable

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.background import wait_set
from zapgate.db.driver import autocommit
from zapgate.log import get_logger

log = get_logger(__name__)

OUTBOUND = "zapgate_outbound"  # payload: "client/session" with new pending messages
PLACEMENTS = "zapgate_placements"  # payload: "client/session" whose desired state changed
SANDBOX = "zapgate_sandbox"  # payload: the address that got mail
CALLS = "zapgate_calls"  # payload: "client/session/call id" of an engine call to make
SANDBOX_DIRECTORY = "zapgate_sandbox_directory"  # payload: a sandbox number linked or unlinked
CHANNELS = (OUTBOUND, PLACEMENTS, SANDBOX, CALLS, SANDBOX_DIRECTORY)  # what workers listen to
CALLS_DONE = "zapgate_calls_done"  # payload: "client/call id" of an engine call answered (API processes listen)
EVENTS = "zapgate_events"  # payload: the schema of a client with new events (API processes listen)
KEYS = "zapgate_keys"  # payload: a client whose API keys were revoked (API processes forget cached keys)
WEBHOOKS = "zapgate_webhooks"  # payload: the schema of a client whose webhooks or deliveries changed

_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


async def notify(conn: AsyncConnection, channel: str, payload: str = "") -> None:
    """Queue a notification on `channel`; it is delivered when `conn`'s transaction commits."""
    if channel not in (*CHANNELS, EVENTS, KEYS, WEBHOOKS, CALLS_DONE):
        raise ValueError(f"unknown channel {channel!r}")
    await conn.execute(_NOTIFY, {"channel": channel, "payload": payload[:7000]})


async def notify_now(conn: AsyncConnection, channel: str, payloads: Collection[str]) -> None:
    """Send one notification on `channel` per payload (each once) now, in a statement of its own: `conn` is
    checked out with no transaction begun (one round trip where a transaction would take three)."""
    _check(channel)
    if payloads:
        await autocommit(conn).execute(_NOTIFY_NOW, channel, sorted({p[:7000] for p in payloads}))


def _check(channel: str) -> None:
    if channel not in (*CHANNELS, EVENTS, KEYS, WEBHOOKS, CALLS_DONE):
        raise ValueError(f"unknown channel {channel!r}")


async def notify_many(conn: AsyncConnection, channel: str, payloads: Collection[str]) -> None:
    """Queue one notification on `channel` per payload (each once), delivered when `conn`'s transaction commits."""
    _check(channel)
    if payloads:
        await conn.execute(_NOTIFY_MANY, {"channel": channel, "payloads": sorted({p[:7000] for p in payloads})})


def libpq_url(url: str) -> str:
    """Return `url` in the form asyncpg connects with (no SQLAlchemy driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    """One connection listening on our channels; each channel wakes an asyncio.Event.

    It reconnects by itself after the server goes away, and wakes everyone then (they may have missed
    notifications, so they look at the rows again). `on_notify(channel, payload)` is called for each
    notification, and with `payload=None` after each (re)connection.
    """

    def __init__(
        self,
        url: str,
        channels: Iterable[str] = CHANNELS,
        *,
        retry_every: float = 1.0,
        on_notify: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self._url = libpq_url(url)
        self._channels = tuple(channels)
        self._events = {channel: asyncio.Event() for channel in self._channels}
        self._retry_every = retry_every
        self._on_notify = on_notify
        self._task: asyncio.Task[None] | None = None

    def event(self, channel: str) -> asyncio.Event:
        """The event that `channel`'s notifications set (clear it before looking at the rows)."""
        return self._events[channel]

    async def start(self) -> None:
        """Connect and listen (retrying in the background if the server is away)."""
        self._task = asyncio.create_task(self._run(), name="db.listener")

    async def close(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _received(self, conn: object, pid: int, channel: str, payload: str) -> None:
        if self._on_notify is not None:
            self._on_notify(channel, payload)
        self._events[channel].set()

    def _wake_all(self) -> None:
        for channel, event in self._events.items():
            event.set()
            if self._on_notify is not None:
                self._on_notify(channel, None)

    async def _run(self) -> None:
        while True:
            try:
                conn = await asyncpg.connect(self._url, server_settings={"application_name": "zapgate-listener"})
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("db.listener_unavailable", error=str(exc))
                await asyncio.sleep(self._retry_every)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
            try:
                for channel in self._channels:
                    await conn.add_listener(channel, self._received)
                self._wake_all()
                while not lost.is_set():
                    await wait_set(lost, 5.0)
                    if not lost.is_set() and conn.is_closed():
                        lost.set()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("db.listener_lost", error=str(exc))
            finally:
                with contextlib.suppress(Exception):
                    await conn.close()
            self._wake_all()
            await asyncio.sleep(self._retry_every)


class Coalescer:
    """Sends notifications after their transactions committed, many in one statement.

    NOTIFY inside a transaction serialises commits on the server's notification queue; a busy API process
    instead hands its wake-ups here, and one statement every `delay` seconds announces all of them (each
    payload once). Listeners look at the rows when woken, so a late or lost wake-up delays work, it loses
    none: workers also look on their own every poll interval.
    """

    def __init__(
        self,
        send: Callable[[str, Collection[str]], Awaitable[None]],
        channel: str,
        *,
        delay: float = 0.002,
    ) -> None:
        self._send = send  # (channel, payloads): ConnectionManager.notify
        self._channel = channel
        self._delay = delay
        self._payloads: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def wake(self, payload: str) -> None:
        """Announce `payload` on the channel soon."""
        self._payloads.add(payload[:7000])
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush(), name=f"notify.{self._channel}")

    async def close(self) -> None:
        """Send what is waiting."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task

    async def _flush(self) -> None:
        await asyncio.sleep(self._delay)
        while self._payloads:
            payloads, self._payloads = self._payloads, set()
            try:
                await self._send(self._channel, payloads)
                self.sent += 1
            except Exception as exc:  # the workers' own polling finds the rows
                log.warning("db.notify_failed", channel=self._channel, error=repr(exc))
                return


_NOTIFY_MANY = text("SELECT pg_notify(:channel, p) FROM unnest(CAST(:payloads AS text[])) AS p")
_NOTIFY_NOW = "SELECT pg_notify($1, p) FROM unnest(CAST($2 AS text[])) AS p"
