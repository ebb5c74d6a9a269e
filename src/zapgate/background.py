"""Background tasks with an owner: a reference is kept, failures are logged, shutdown cancels and waits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from zapgate.log import get_logger

log = get_logger(__name__)


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
