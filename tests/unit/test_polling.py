"""When the outbox next looks at a session's queue: the back-off, wake-ups, held messages."""

from __future__ import annotations

import pytest

from zapgate.domain.polling import IdleBackoff, QueueWatch

BACKOFF = IdleBackoff(first=1.0, cap=30.0)


def test_an_idle_queue_is_looked_at_after_a_doubling_wait_up_to_the_cap() -> None:
    watch = QueueWatch()
    now, waits = 0.0, []
    for _ in range(8):
        assert watch.due(now)
        watch.looked(now, BACKOFF, found=False)
        waits.append(watch.due_at - now)
        now = watch.due_at
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


@pytest.mark.parametrize(
    ("wait", "found", "held_until", "spread", "due_at"),
    [
        (16.0, True, None, 1.0, 101.0),  # messages found: the back-off starts again
        (16.0, False, None, 1.0, 130.0),  # doubled, up to the cap
        (16.0, False, None, 0.75, 122.5),  # spread: never later than the back-off
        (16.0, False, 105.0, 1.0, 105.0),  # a held message falls due first
        (16.0, False, 190.0, 1.0, 130.0),  # the back-off comes first
        (16.0, False, 90.0, 1.0, 100.0),  # due already: at once
        (0.0, False, None, 1.0, 101.0),  # after a wake-up: from the first step
    ],
)
def test_the_next_look(wait: float, found: bool, held_until: float | None, spread: float, due_at: float) -> None:
    watch = QueueWatch(due_at=0.0, wait=wait)
    watch.looked(100.0, BACKOFF, found=found, held_until=held_until, spread=spread)
    assert watch.due_at == due_at
    assert not watch.due(due_at - 0.001) and watch.due(due_at)


def test_a_wake_up_makes_the_queue_due_now_and_restarts_the_back_off() -> None:
    watch = QueueWatch()
    watch.looked(0.0, BACKOFF, found=False)
    watch.looked(1.0, BACKOFF, found=False)
    assert watch.due_at == 3.0
    watch.wake()
    assert watch.due(1.5)
    watch.looking()
    watch.looked(2.0, BACKOFF, found=False)
    assert watch.due_at == 3.0  # the first step again


def test_a_wake_up_during_a_look_is_not_lost() -> None:
    watch = QueueWatch()
    watch.looking()
    watch.wake()  # e.g. a message committed after the look's claim: its notification arrives now
    watch.looked(5.0, BACKOFF, found=False)
    assert watch.due(5.0)
    watch.looking()
    watch.looked(6.0, BACKOFF, found=False)
    assert watch.due_at == 7.0
