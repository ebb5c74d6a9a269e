"""The in-memory request limits: a token bucket per key, a failure window per address."""

import pytest

from zapgate.domain.limits import FailureWindows, TokenBuckets


def test_a_key_makes_its_burst_then_its_rate() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.take("k", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k", 0.0) == pytest.approx(0.5)  # one token comes every 1/rate seconds
    assert buckets.take("k", 0.25) == pytest.approx(0.25)
    assert buckets.take("k", 0.5) == 0.0
    assert buckets.take("other", 0.5) == 0.0  # each key its own bucket
    assert [buckets.take("k", 100.0) for _ in range(4)][-1] > 0  # refilled to the burst, no further


def test_buckets_forget_every_key_rather_than_grow_without_bound() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=2)
    buckets.take("a", 0.0)
    buckets.take("b", 0.0)
    assert buckets.take("a", 0.0) > 0
    buckets.take("c", 0.0)  # a third key: the table starts afresh
    assert buckets.take("a", 0.0) == 0.0


def test_an_address_is_refused_after_its_failures_until_the_window_ends() -> None:
    windows = FailureWindows(max_failures=3, window=60.0)
    assert [windows.fail("1.2.3.4", t) for t in (0.0, 1.0, 2.0)] == [False, False, True]
    assert windows.blocked("1.2.3.4", 2.0) == pytest.approx(58.0)
    assert windows.blocked("5.6.7.8", 2.0) == 0.0
    assert windows.blocked("1.2.3.4", 60.0) == 0.0  # the window opened at the first failure is over
    assert windows.fail("1.2.3.4", 61.0) is False  # a new window
    assert windows.blocked("1.2.3.4", 61.0) == 0.0


def test_failures_spread_over_windows_never_block() -> None:
    windows = FailureWindows(max_failures=2, window=10.0)
    for t in (0.0, 11.0, 22.0, 33.0):
        assert windows.fail("a", t) is False
        assert windows.blocked("a", t) == 0.0


def test_the_failure_table_is_bounded() -> None:
    windows = FailureWindows(max_failures=1, window=10.0, max_addresses=2)
    windows.fail("a", 0.0)
    windows.fail("b", 0.0)
    windows.fail("c", 20.0)  # a and b expired: pruned, c kept
    assert windows.blocked("c", 20.0) > 0
