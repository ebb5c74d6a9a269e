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
import heapq
from collections import deque
from collections.abc import AsyncIterator, Collection, Iterable

from zapgate.db.manager import ClientConnection, ConnectionManager
from zapgate.db.notify import EVENTS, Listener
from zapgate.domain.ids import ClientId, client_id, client_of_schema
from zapgate.domain.records import Event
from zapgate.log import get_logger
from zapgate.services.retention import Gap, gap_after

log = get_logger(__name__)

FETCH = 500  # events read per query


class _Feed:
    """The recent events of one client, fetched once for all of its subscribers.

    Events are kept in log order and, per session, in an index of their own: a subscriber that follows one
    session is woken only by that session's events and reads only those, so 200 subscribers of 200 sessions
    cost what 200 events cost, not 200 x 200.
    """

    def __init__(self, manager: ConnectionManager, client: ClientId, head: int, size: int) -> None:
        self.client = client
        self.subscribers = 0
        self.head = head  # the newest id fetched
        self.floor = head  # the buffer holds every event with floor < id <= head
        self._buffer: deque[Event] = deque()
        self._ids: deque[int] = deque()
        self._by_session: dict[str | None, tuple[deque[int], deque[Event]]] = {}
        self._listeners: dict[str | None, set[Subscription]] = {}  # key None: every event
        self._size = size
        self._manager = manager
        self._dirty = False
        self._task: asyncio.Task[None] | None = None

    def covers(self, cursor: int) -> bool:
        """Whether the buffer holds every event after `cursor`."""
        return cursor >= self.floor

    def read(self, cursor: int, sessions: set[str] | None, limit: int) -> tuple[list[Event], int]:
        """The buffered events after `cursor` of `sessions` (None: all), oldest first, and the cursor after
        them (requires `covers(cursor)`)."""
        if sessions is None:
            start = bisect.bisect_right(self._ids, cursor)
            found = [self._buffer[i] for i in range(start, min(len(self._buffer), start + limit))]
        else:
            parts = []
            for session in sessions:
                index = self._by_session.get(session)
                if index is not None:
                    ids, events = index
                    first = bisect.bisect_right(ids, cursor)
                    parts.append([events[i] for i in range(first, min(len(events), first + limit))])
            found = parts[0] if len(parts) == 1 else list(heapq.merge(*parts, key=lambda e: e.id))
        if len(found) >= limit:
            found = found[:limit]
            return found, found[-1].id
        return found, max(cursor, self.head)

    async def connection(self) -> ClientConnection:
        """The client's handle, to read the log itself."""
        return await self._manager.get_connection(self.client)

    def listen(self, sub: Subscription, keys: Iterable[str | None]) -> None:
        for key in keys:
            self._listeners.setdefault(key, set()).add(sub)

    def unlisten(self, sub: Subscription, keys: Iterable[str | None]) -> None:
        for key in keys:
            listeners = self._listeners.get(key)
            if listeners is not None:
                listeners.discard(sub)
                if not listeners:
                    del self._listeners[key]

    def poke(self) -> None:
        """Note that the log may have grown; fetch it unless a fetch is on its way."""
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._refresh(), name=f"events.feed.{self.client}")

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for listeners in self._listeners.values():
            for sub in listeners:
                sub.wake()

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
            touched: set[str | None] = {None}
            for event in batch:
                self._buffer.append(event)
                self._ids.append(event.id)
                ids, events = self._by_session.setdefault(event.session_id, (deque(), deque()))
                ids.append(event.id)
                events.append(event)
                touched.add(event.session_id)
            while len(self._buffer) > self._size:
                oldest = self._buffer.popleft()
                self.floor = self._ids.popleft()
                ids, events = self._by_session[oldest.session_id]
                ids.popleft()
                events.popleft()
                if not ids:
                    del self._by_session[oldest.session_id]
            self.head = batch[-1].id
            for key in touched:
                for sub in self._listeners.get(key, ()):
                    sub.wake()
            if len(batch) < FETCH:
                return


class Subscription:
    """One subscriber's view of a client's events: a cursor and the sessions it wants."""

    def __init__(self, client: ClientId, cursor: int, sessions: set[str] | None, hub: EventHub) -> None:
        self.client = client
        self.cursor = cursor
        self._sessions = sessions
        self._hub: EventHub | None = hub
        self._wake = asyncio.Event()
        hub.feed(client).listen(self, self._keys())

    def _keys(self) -> set[str | None]:
        return {None} if self._sessions is None else set(self._sessions)

    @property
    def sessions(self) -> set[str] | None:
        """The sessions followed (None: every session of the client)."""
        return self._sessions

    @sessions.setter
    def sessions(self, value: Collection[str] | None) -> None:
        feed = self._feed()
        if feed is not None:
            feed.unlisten(self, self._keys())
        self._sessions = None if value is None else set(value)
        if feed is not None:
            feed.listen(self, self._keys())
        self.wake()  # look again with the new set

    def wake(self) -> None:
        self._wake.set()

    def wants(self, event: Event) -> bool:
        """Whether this subscriber receives `event`."""
        return self._sessions is None or event.session_id in self._sessions

    def _feed(self) -> _Feed | None:
        hub = self._hub
        return None if hub is None or hub.closed else hub.feed(self.client)

    async def next_batch(self, limit: int = FETCH) -> list[Event]:
        """Wait for the next events after the cursor that this subscriber wants; advance the cursor.

        Returns an empty list only when the subscription or the hub is closed.
        """
        while (feed := self._feed()) is not None:
            self._wake.clear()
            if feed.covers(self.cursor):
                batch, self.cursor = feed.read(self.cursor, self._sessions, limit)
                if batch:
                    return batch
            else:  # behind the buffer (slow, or resuming from long ago): read the log itself
                conn = await feed.connection()
                found = await conn.event.list_after(self.cursor, limit=limit)
                if found:
                    self.cursor = found[-1].id
                    wanted = [event for event in found if self.wants(event)]
                    if wanted:
                        return wanted
                    continue
            await self._wake.wait()
        return []

    async def events(self) -> AsyncIterator[Event]:
        """Every event this subscriber wants, as it comes (until the hub closes)."""
        while batch := await self.next_batch():
            for event in batch:
                yield event

    def close(self) -> None:
        """Stop following the client's events."""
        hub, self._hub = self._hub, None
        if hub is not None:
            if not hub.closed:
                hub.feed(self.client).unlisten(self, self._keys())
            hub.release(self.client)
        self._wake.set()


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

    async def gap(self, client: str, after: int) -> Gap | None:
        """The gap a resume after event `after` would have (events pruned since), or None (services/retention.py)."""
        return await gap_after(self.manager, client_id(client), after)

    async def latest(self, client: str, session: str, types: Collection[str]) -> Event | None:
        """The newest event of `client`'s `session` with one of `types` (None if there is none)."""
        conn = await self.manager.get_connection(client_id(client))
        return await conn.event.latest(session, list(types))

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
