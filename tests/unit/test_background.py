"""Background loops: an event wait that times out, and a cancellation that is never lost."""

from __future__ import annotations

import asyncio

import pytest

from zapgate.background import Deadline, TaskGroup, wait_set


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


async def test_a_deadline_bounds_each_await_with_one_timer_and_times_out_a_slow_one() -> None:
    deadline = Deadline(0.05)
    loop = asyncio.get_running_loop()
    armed = 0
    call_at = loop.call_at

    def counting(when: float, callback: object, *args: object, **kwargs: object) -> asyncio.TimerHandle:
        nonlocal armed
        armed += getattr(callback, "__self__", None) is deadline  # the deadline's timers, not the sleeps'
        return call_at(when, callback, *args, **kwargs)  # type: ignore[arg-type]

    loop.call_at = counting  # type: ignore[method-assign]
    try:
        for _ in range(100):  # quick awaits: one timer for all, not one each
            assert await deadline.bound(asyncio.sleep(0, result="ok")) == "ok"
        assert armed == 1
        await deadline.bound(asyncio.sleep(0.03))  # the timer fires during a later await: set again for its end
        await deadline.bound(asyncio.sleep(0.03))
        with pytest.raises(TimeoutError):  # still running 0.05 s after it began
            await deadline.bound(asyncio.sleep(1))
        assert await deadline.bound(asyncio.sleep(0, result="again")) == "again"  # usable after a timeout
    finally:
        loop.call_at = call_at  # type: ignore[method-assign]
        deadline.close()


async def test_a_task_cancelled_during_a_bounded_await_stays_cancelled() -> None:
    deadline = Deadline(5.0)
    started = asyncio.Event()

    async def waiting() -> None:
        started.set()
        await deadline.bound(asyncio.sleep(10))

    task = asyncio.create_task(waiting())
    await started.wait()
    task.cancel()  # not the deadline's own cancellation: it must not turn into a TimeoutError
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline.close()
