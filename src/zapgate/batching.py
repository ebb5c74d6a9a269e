"""Group commit: requests that arrive while one is being written are written together, in one transaction.

No timer: the first request of a key runs at once; the requests that arrive for that key while it runs
wait for it and then run together (at most `limit` at a time), so a lone request waits for nothing and a
busy key pays one transaction, one set of round trips and one commit for many requests.
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

    def __init__(self, run: Callable[[K, list[I]], Awaitable[list[R | Exception]]], *, limit: int, name: str) -> None:
        self._run = run
        self._limit = limit
        self._name = name
        self._waiting: dict[K, list[tuple[I, asyncio.Future[R]]]] = {}
        self._running: dict[K, asyncio.Task[None]] = {}
        self.runs = 0  # how many times `run` was called (for tests and benchmarks)

    async def submit(self, key: K, item: I) -> R:
        """Run `item` with the other requests of `key`; return its result or raise its exception."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append((item, future))
        if key not in self._running:
            self._running[key] = asyncio.create_task(self._drain(key), name=f"{self._name}.{key}")
        return await future

    async def close(self) -> None:
        """Wait for the runs in progress (and the requests waiting for them)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _drain(self, key: K) -> None:
        batch: list[tuple[I, asyncio.Future[R]]] = []
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
            for _, future in [*batch, *self._waiting.get(key, [])]:
                if not future.done():
                    future.cancel()
            self._waiting.pop(key, None)
            raise
        finally:
            self._running.pop(key, None)
            if not self._waiting.get(key):
                self._waiting.pop(key, None)
