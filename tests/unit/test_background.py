"""Background loops: an event wait that times out, and a cancellation that is never lost."""

from __future__ import annotations

import asyncio

import pytest

from zapgate.background import TaskGroup, wait_set


async def test_wait_set_says_whether_the_event_came_within_the_time() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_set(event, 5.0) is True
    assert await wait_set(event, 0.0) is True  # already set: no wait at all


@pytest.mark.parametrize("steps", [0, 1, 2, 3])
async def test_a_loop_cancelled_just_after_its_event_was_set_stops(steps: int) -> None:
    # asyncio.wait_for(event.wait(), ...) returns normally when this happens on Python 3.11: such a loop (the
    # outbox's) went on after its worker closed, sending from a database that the test had dropped
    wake = asyncio.Event()
    laps = 0

    async def loop() -> None:
        nonlocal laps
        while True:
            wake.clear()
            laps += 1
            await wait_set(wake, 30.0)

    tasks = TaskGroup("test")
    running = tasks.spawn(loop(), name="loop")
    await asyncio.sleep(0.01)
    wake.set()
    for _ in range(steps):
        await asyncio.sleep(0)  # the cancellation lands at each point of the wake-up in turn
    await tasks.close(grace=1.0)
    assert running.cancelled(), f"the loop outlived its cancellation (lap {laps})"
