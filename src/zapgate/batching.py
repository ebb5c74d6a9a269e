"""Group commit: requests that arrive while one is being written are written together, in one transaction.

No timer: the first request of a key runs at once; the requests that arrive for that key while it runs
wait for it and then run together (at most `limit` at a time), so a lone request waits for nothing and a
busy key pays one transaction, one set of round trips and one commit for many requests.

With `concurrency` above 1, up to that many runs of a key are under way at once: once `more_at` requests wait
while fewer run, they start one; the others wait for the first run to end. A run spends most of its time waiting
for the database (round trips, the commit's flush), and another one meanwhile keeps the process and the server
busy; `more_at` spares a run for a request or two (a transaction each would cost more than it saves).
Runs of one key then end in any order: only requests that were never under way at the same time keep theirs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")


class GroupCommit(Generic[K, I, R]):
    """Run the concurrent requests of one key together through `run(key, items)`.

    `run` answers one result or exception per item, in order; if it raises, every item of that run fails
    with the exception. A caller that gives up (is cancelled) before its item is taken is left out; once
    taken, the item is run with the others (its result is dropped), as a request whose answer was lost.
    """

    def __init__(
        self,
        run: Callable[[K, list[I]], Awaitable[list[R | Exception]]],
        *,
        limit: int,
        name: str,
        concurrency: int = 1,
        more_at: int = 1,
    ) -> None:
        if concurrency < 1 or more_at < 1:
            raise ValueError("concurrency and more_at must be at least 1")
        self._run = run
        self._limit = limit
        self._name = name
        self._concurrency = concurrency
        self._more_at = more_at
        self._waiting: dict[K, list[tuple[I, asyncio.Future[R]]]] = {}
        self._running: dict[K, set[asyncio.Task[None]]] = {}
        self.runs = 0  # how many times `run` was called (for tests and benchmarks)

    async def submit(self, key: K, item: I) -> R:
        """Run `item` with the other requests of `key`; return its result or raise its exception."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.setdefault(key, [])
        waiting.append((item, future))
        running = self._running.setdefault(key, set())
        if not running or (len(running) < self._concurrency and len(waiting) >= self._more_at):
            running.add(asyncio.create_task(self._drain(key), name=f"{self._name}.{key}"))
        return await future

    async def close(self) -> None:
        """Wait for the runs in progress (and the requests waiting for them)."""
        while self._running:
            runs = [task for tasks in self._running.values() for task in tasks]
            await asyncio.gather(*runs, return_exceptions=True)

    async def _drain(self, key: K) -> None:
        batch: list[tuple[I, asyncio.Future[R]]] = []
        running = self._running[key]
        try:
            while waiting := self._waiting.get(key):
                taken, self._waiting[key] = waiting[: self._limit], waiting[self._limit :]
                batch = [(item, future) for item, future in taken if not future.done()]
                if not batch:
                    continue
                self.runs += 1
                try:
                    results = await self._run(key, [item for item, _ in batch])
                except Exception as exc:
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                batch = []
        except BaseException:  # cancelled (shutdown): nobody is left waiting forever
            left = [] if len(running) > 1 else self._waiting.pop(key, [])  # else another run takes them
            for _, future in [*batch, *left]:
                if not future.done():
                    future.cancel()
            raise
        finally:
            task = asyncio.current_task()
            running.difference_update([task] if task is not None else [])
            if not running and self._running.get(key) is running:
                del self._running[key]
                if not self._waiting.get(key):
                    self._waiting.pop(key, None)
