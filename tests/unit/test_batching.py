"""GroupCommit: concurrent requests of a key run together, each answered on its own."""

import asyncio

import pytest

from zapgate.batching import GroupCommit


class Recorder:
    """A `run` that records its batches, answers each item with its double, and fails items < 0."""

    def __init__(self, delay: float = 0.01) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.delay = delay
        self.fail_next: Exception | None = None

    async def __call__(self, key: str, items: list[int]) -> list[int | Exception]:
        self.batches.append((key, list(items)))
        await asyncio.sleep(self.delay)
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        return [ValueError(f"bad {i}") if i < 0 else i * 2 for i in items]


async def test_a_lone_request_runs_at_once_and_later_ones_run_together() -> None:
    run = Recorder()
    group: GroupCommit[str, int, int] = GroupCommit(run, limit=100, name="test")
    assert await group.submit("a", 1) == 2
    results = await asyncio.gather(*(group.submit("a", n) for n in range(10)))
    assert results == [n * 2 for n in range(10)]
    assert run.batches == [("a", [1]), ("a", list(range(10)))]
    assert group.runs == 2


async def test_requests_arriving_during_a_run_wait_for_it_then_run_together() -> None:
    run = Recorder(delay=0.05)
    group: GroupCommit[str, int, int] = GroupCommit(run, limit=100, name="test")
    first = asyncio.create_task(group.submit("a", 0))
    await asyncio.sleep(0.01)  # the first run is in progress
    later = [asyncio.create_task(group.submit("a", n)) for n in range(1, 6)]
    assert await asyncio.gather(first, *later) == [0, 2, 4, 6, 8, 10]
    assert run.batches == [("a", [0]), ("a", [1, 2, 3, 4, 5])]


async def test_keys_run_apart_and_batches_respect_the_limit() -> None:
    run = Recorder()
    group: GroupCommit[str, int, int] = GroupCommit(run, limit=3, name="test")
    await asyncio.gather(*(group.submit(key, n) for n in range(7) for key in ("a", "b")))
    assert [items for key, items in run.batches if key == "a"] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [items for key, items in run.batches if key == "b"] == [[0, 1, 2], [3, 4, 5], [6]]


async def test_each_item_gets_its_own_exception_and_a_failed_run_fails_only_its_items() -> None:
    run = Recorder()
    group: GroupCommit[str, int, int] = GroupCommit(run, limit=100, name="test")
    results = await asyncio.gather(*(group.submit("a", n) for n in (1, -1, 2)), return_exceptions=True)
    assert results[0] == 2 and results[2] == 4
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad -1"

    run.fail_next = ConnectionError("database away")
    with pytest.raises(ConnectionError):
        await group.submit("a", 5)
    assert await group.submit("a", 6) == 12  # the next run is not affected


async def test_a_caller_that_gave_up_before_its_run_is_left_out() -> None:
    run = Recorder(delay=0.05)
    group: GroupCommit[str, int, int] = GroupCommit(run, limit=100, name="test")
    first = asyncio.create_task(group.submit("a", 1))
    await asyncio.sleep(0.01)
    gone = asyncio.create_task(group.submit("a", 2))
    kept = asyncio.create_task(group.submit("a", 3))
    await asyncio.sleep(0)
    gone.cancel()
    assert await first == 2 and await kept == 6
    assert run.batches == [("a", [1]), ("a", [3])]


async def test_close_waits_for_the_runs_in_progress() -> None:
    run = Recorder(delay=0.05)
    group: GroupCommit[str, int, int] = GroupCommit(run, limit=100, name="test")
    pending = [asyncio.create_task(group.submit("a", n)) for n in range(3)]
    await asyncio.sleep(0)
    await group.close()
    assert all(task.done() for task in pending) and [t.result() for t in pending] == [0, 2, 4]


async def test_with_concurrency_a_second_run_starts_while_the_first_is_under_way_and_no_more() -> None:
    run = Recorder(delay=0.05)
    group: GroupCommit[str, int, int] = GroupCommit(run, limit=100, name="test", concurrency=2)
    first = asyncio.create_task(group.submit("a", 0))
    await asyncio.sleep(0.01)  # the first run is under way: the next request starts a second one at once
    second = asyncio.create_task(group.submit("a", 1))
    await asyncio.sleep(0.01)
    assert run.batches == [("a", [0]), ("a", [1])]
    later = [asyncio.create_task(group.submit("a", n)) for n in range(2, 6)]  # two runs under way: these wait
    await asyncio.sleep(0.01)
    assert len(run.batches) == 2
    assert await asyncio.gather(first, second, *later) == [0, 2, 4, 6, 8, 10]
    assert run.batches[2:] == [("a", [2, 3, 4, 5])]  # taken together by the first run to end
    await group.close()
    assert group.runs == 3


async def test_with_concurrency_a_cancelled_run_leaves_the_waiting_requests_to_the_other() -> None:
    run = Recorder(delay=0.05)
    group: GroupCommit[str, int, int] = GroupCommit(run, limit=100, name="test", concurrency=2)
    first = asyncio.create_task(group.submit("a", 0))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(group.submit("a", 1))
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(group.submit("a", 2))
    await asyncio.sleep(0)
    runs = [task for task in asyncio.all_tasks() if task.get_name() == "test.a"]
    assert len(runs) == 2
    runs[0].cancel()  # one of the two runs is cancelled (its own request with it)
    results = await asyncio.gather(first, second, waiting, return_exceptions=True)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 1
    assert results[2] == 4  # the other run took it
    await group.close()


async def test_with_concurrency_another_run_starts_only_once_enough_requests_wait() -> None:
    run = Recorder(delay=0.05)
    group: GroupCommit[str, int, int] = GroupCommit(run, limit=100, name="test", concurrency=2, more_at=3)
    first = asyncio.create_task(group.submit("a", 0))  # nothing runs: it starts at once, alone
    await asyncio.sleep(0.01)
    later = [asyncio.create_task(group.submit("a", n)) for n in (1, 2)]
    await asyncio.sleep(0.01)
    assert run.batches == [("a", [0])]  # two wait: fewer than 3, they wait for the run under way
    later.append(asyncio.create_task(group.submit("a", 3)))
    await asyncio.sleep(0.01)
    assert run.batches == [("a", [0]), ("a", [1, 2, 3])]  # the third one starts the second run, for all three
    assert await asyncio.gather(first, *later) == [0, 2, 4, 6]
    await group.close()


def test_concurrency_and_more_at_are_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit(Recorder(), limit=10, name="test", concurrency=0)
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit(Recorder(), limit=10, name="test", concurrency=2, more_at=0)
