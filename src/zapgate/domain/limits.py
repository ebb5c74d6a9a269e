"""Request limits kept in memory, as pure bookkeeping: callers pass the time (monotonic seconds).

`TokenBuckets` meters requests per key: each key may make `burst` at once, then `rate` a second.
`FailureWindows` counts failures per address: after `max_failures` within `window` seconds of the first,
the address is refused until that window ends. Both forget entries when they hold too many (an attacker
with many keys or addresses resets them rather than exhausting memory).
"""

from __future__ import annotations


class TokenBuckets:
    """A token bucket per key; `take` answers 0 (go) or the seconds until a token is there."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("expected rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self._max_keys = max_keys
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, when counted]

    def take(self, key: str, now: float) -> float:
        """Take one token of `key`'s bucket; return 0.0, or how many seconds to wait when it has none."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._buckets.clear()
            self._buckets[key] = [self.burst - 1.0, now]
            return 0.0
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate


class FailureWindows:
    """Failures per address in a window that opens at the first; too many and the address waits it out."""

    def __init__(self, max_failures: int, window: float, *, max_addresses: int = 10_000) -> None:
        if max_failures < 1 or window <= 0:
            raise ValueError("expected max_failures >= 1 and window > 0")
        self.max_failures = max_failures
        self.window = window
        self._max_addresses = max_addresses
        self._failures: dict[str, tuple[float, int]] = {}  # address -> (window opened, failures in it)

    def blocked(self, address: str, now: float) -> float:
        """Return how many seconds `address` is still refused for (0.0: it is not)."""
        entry = self._failures.get(address)
        if entry is None:
            return 0.0
        opened, count = entry
        left = opened + self.window - now
        if left <= 0:
            del self._failures[address]
            return 0.0
        return left if count >= self.max_failures else 0.0

    def fail(self, address: str, now: float) -> bool:
        """Count a failure of `address`; return True when it is the one that makes the address refused."""
        entry = self._failures.get(address)
        if entry is None or entry[0] + self.window <= now:
            if entry is None and len(self._failures) >= self._max_addresses:
                self._prune(now)
            entry = (now, 0)
        count = entry[1] + 1
        self._failures[address] = (entry[0], count)
        return count == self.max_failures

    def _prune(self, now: float) -> None:
        self._failures = {a: e for a, e in self._failures.items() if e[0] + self.window > now}
        if len(self._failures) >= self._max_addresses:
            self._failures.clear()
