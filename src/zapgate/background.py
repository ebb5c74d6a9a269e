"""Background tasks with an owner: a reference is kept, failures are logged, shutdown cancels and waits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from zapgate.log import get_logger

log = get_logger(__name__)

T = TypeVar("T")


class TaskGroup:
    """Own a set of long-lived background tasks."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Start `coro` as a task that is logged if it fails and cancelled by `close()`."""
        task = asyncio.create_task(coro, name=f"{self._name}.{name}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task.failed", task=task.get_name(), error=repr(exc), exc_info=exc)

    async def close(self, grace: float = 5.0) -> None:
        """Cancel every task and wait up to `grace` seconds for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, running = await asyncio.wait(tasks, timeout=grace)
            if running:
                log.error("tasks.not_stopped", group=self._name, tasks=sorted(task.get_name() for task in running))


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait at most `seconds` for `event`; return whether it is set.

    Loops wait with this, not `asyncio.wait_for(event.wait(), timeout)`: on Python 3.11 that returns normally
    when it is cancelled just after the event was set, and the loop outlives the `close()` that cancelled it.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


class Deadline:
    """Bound each of one task's awaits, taken one at a time, by `seconds`: with one timer for all of them.

    `asyncio.timeout` arms a timer for each await and cancels it after; at thousands of engine calls a second that
    was a measurable part of a worker's CPU (issue 13). This timer is set for the first await; when it fires during
    a later one, it is set again for that one's end. An await still running `seconds` after it began is cancelled,
    and raises TimeoutError, as under `asyncio.timeout`. `close()` when done.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._began = 0.0  # loop time the running await began (0.0: none runs)
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False

    async def bound(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable` for at most `seconds` (TimeoutError after)."""
        # the loop is asked for once: on Python 3.11 each asking (current_task() without it too) calls getpid()
        loop = self._loop = self._loop or asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None or self._began:
            raise RuntimeError("Deadline.bound: one await at a time, in a task")
        self._task, self._began, self._expired = task, loop.time(), False
        cancelling = task.cancelling()
        if self._timer is None:
            self._timer = loop.call_at(self._began + self._seconds, self._fire)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._expired and task.uncancel() <= cancelling:
                raise TimeoutError from None  # our cancellation, not the task's own
            raise
        finally:
            self._began = 0.0

    def close(self) -> None:
        """Drop the timer (no await runs any more)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        if not self._began or self._task is None:
            return  # between two awaits: the next one sets the timer again
        due = self._began + self._seconds
        loop = self._loop
        assert loop is not None
        if loop.time() < due:  # set for an await that ended: this one has time left
            self._timer = loop.call_at(due, self._fire)
            return
        self._expired = True
        self._task.cancel()
