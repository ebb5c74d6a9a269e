"""The event hub: fans each client's event log out to this process's subscribers (SSE, Socket.IO).

The event log in the client's schema is the truth; NOTIFY only says "client X has new events". Per client
with subscribers, the hub keeps a *feed*: one reader that fetches new events once per wake-up into a ring
buffer. Subscribers pull from it at their own pace with a cursor of their own; one that falls behind the
buffer (slow, stalled, or resuming from an old `Last-Event-ID`) reads the gap from the database instead, so
it never holds anyone else up and never misses an event. Events of a client commit in id order (see
`EventRepository`), so "everything after id N" has no gap.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field

from zapgate.db.manager import ConnectionManager
from zapgate.db.notify import EVENTS, Listener
from zapgate.domain.ids import ClientId, client_id, client_of_schema
from zapgate.domain.records import Event
from zapgate.log import get_logger

log = get_logger(__name__)

FETCH = 500  # events read per query


class _Feed:
    """The recent events of one client, fetched once for all of its subscribers."""

    def __init__(self, manager: ConnectionManager, client: ClientId, head: int, size: int) -> None:
        self.client = client
        self.subscribers = 0
        self.head = head  # the newest id fetched
        self.floor = head  # the buffer holds every event with floor < id <= head
        self._buffer: deque[Event] = deque()
        self._ids: deque[int] = deque()
        self._size = size
        self._manager = manager
        self._changed = asyncio.Event()
        self._dirty = False
        self._task: asyncio.Task[None] | None = None

    def changed(self) -> asyncio.Event:
        """The event set at the next change of `head` (capture it before looking at the buffer)."""
        return self._changed

    def covers(self, cursor: int) -> bool:
        """Whether the buffer holds every event after `cursor`."""
        return cursor >= self.floor

    def after(self, cursor: int, limit: int) -> list[Event]:
        """The buffered events after `cursor` (requires `covers(cursor)`), oldest first."""
        start = bisect.bisect_right(self._ids, cursor)
        return [self._buffer[i] for i in range(start, min(len(self._buffer), start + limit))]

    def poke(self) -> None:
        """Note that the log may have grown; fetch it unless a fetch is on its way."""
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._refresh(), name=f"events.feed.{self.client}")

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._changed.set()

    async def _refresh(self) -> None:
        while self._dirty:
            self._dirty = False
            try:
                await self._fetch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: the next wake-up (or reconnect) retries
                log.warning("events.fetch_failed", client=self.client, error=repr(exc))
                return

    async def _fetch(self) -> None:
        conn = await self._manager.get_connection(self.client)
        while True:
            batch = await conn.event.list_after(self.head, limit=FETCH)
            if not batch:
                return
            for event in batch:
                self._buffer.append(event)
                self._ids.append(event.id)
            while len(self._buffer) > self._size:
                self._buffer.popleft()
                self.floor = self._ids.popleft()
            self.head = batch[-1].id
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()
            if len(batch) < FETCH:
                return


@dataclass
class Subscription:
    """One subscriber's view of a client's events: a cursor and the sessions it wants."""

    client: ClientId
    cursor: int
    sessions: set[str] | None = None  # None: every session of the client
    _hub: EventHub | None = field(default=None, repr=False)

    def wants(self, event: Event) -> bool:
        """Whether this subscriber receives `event`."""
        return self.sessions is None or event.session_id in self.sessions

    async def next_batch(self, limit: int = FETCH) -> list[Event]:
        """Wait for the next events after the cursor that this subscriber wants; advance the cursor.

        Returns an empty list only when the subscription or the hub is closed.
        """
        hub = self._hub
        if hub is None or hub.closed:
            return []
        feed = hub.feed(self.client)
        while True:
            changed = feed.changed()
            if feed.covers(self.cursor):
                batch = feed.after(self.cursor, limit)
            else:
                conn = await hub.manager.get_connection(self.client)
                batch = await conn.event.list_after(self.cursor, limit=limit)
            if batch:
                self.cursor = batch[-1].id
                wanted = [event for event in batch if self.wants(event)]
                if wanted:
                    return wanted
                continue
            await changed.wait()
            if hub.closed or self._hub is None:
                return []

    async def events(self) -> AsyncIterator[Event]:
        """Every event this subscriber wants, as it comes (until the hub closes)."""
        while batch := await self.next_batch():
            for event in batch:
                yield event

    def close(self) -> None:
        """Stop following the client's events."""
        if self._hub is not None:
            self._hub.release(self.client)
            self._hub = None


class EventHub:
    """Per process: follows the event logs of the clients that have subscribers here."""

    def __init__(self, manager: ConnectionManager, database_url: str, *, buffer: int = 2048) -> None:
        self.manager = manager
        self.closed = False
        self._buffer = buffer
        self._feeds: dict[ClientId, _Feed] = {}
        self._listener = Listener(database_url, (EVENTS,), on_notify=self._notified)
        self.published = 0  # notifications seen (for metrics)

    async def start(self) -> None:
        """Start listening for new events."""
        await self._listener.start()

    async def close(self) -> None:
        """Stop listening; subscribers waiting for events are cancelled."""
        self.closed = True
        await self._listener.close()
        for feed in self._feeds.values():
            feed.close()
        self._feeds.clear()

    async def subscribe(
        self, client: str, *, after: int | None = None, sessions: Collection[str] | None = None
    ) -> Subscription:
        """Follow `client`'s events after id `after` (None: from now on) for `sessions` (None: all)."""
        cid = client_id(client)
        feed = self._feeds.get(cid)
        if feed is None:
            conn = await self.manager.get_connection(cid)
            head = await conn.event.last_id()
            feed = self._feeds.get(cid)  # another subscriber may have made it meanwhile
            if feed is None:
                feed = self._feeds[cid] = _Feed(self.manager, cid, head, self._buffer)
                feed.poke()  # whatever committed between last_id and LISTEN
        feed.subscribers += 1
        cursor = feed.head if after is None else max(0, after)
        return Subscription(cid, cursor, None if sessions is None else set(sessions), self)

    @contextlib.asynccontextmanager
    async def subscription(
        self, client: str, *, after: int | None = None, sessions: Collection[str] | None = None
    ) -> AsyncIterator[Subscription]:
        """`subscribe`, closed on exit."""
        sub = await self.subscribe(client, after=after, sessions=sessions)
        try:
            yield sub
        finally:
            sub.close()

    async def head(self, client: str) -> int:
        """The id of `client`'s newest event (a cursor meaning "from now on")."""
        cid = client_id(client)
        if (feed := self._feeds.get(cid)) is not None:
            return feed.head
        conn = await self.manager.get_connection(cid)
        return await conn.event.last_id()

    def feed(self, client: ClientId) -> _Feed:
        return self._feeds[client]

    def release(self, client: ClientId) -> None:
        feed = self._feeds.get(client)
        if feed is None:
            return
        feed.subscribers -= 1
        if feed.subscribers <= 0:
            feed.close()
            del self._feeds[client]

    def subscriber_count(self) -> int:
        """How many subscriptions this process serves."""
        return sum(feed.subscribers for feed in self._feeds.values())

    def _notified(self, channel: str, payload: str | None) -> None:
        if payload is None:  # (re)connected: anything may have been missed
            for feed in self._feeds.values():
                feed.poke()
            return
        self.published += 1
        client = client_of_schema(payload)
        found = self._feeds.get(client) if client is not None else None
        if found is not None:
            found.poke()
