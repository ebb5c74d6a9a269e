"""The API's request limits: a request rate per API key, and a lock-out of addresses guessing admin keys or
signed media links.

Both live in memory, per API process: a send must not pay a database round trip to be metered (a bucket
costs about a microsecond), so with N API processes behind a balancer a key may make up to N times the rate.
The lock-out counts the direct peer's address (run uvicorn with --proxy-headers behind a trusted proxy), and
refuses even the right key from a locked-out address until its window ends: otherwise a guess that
succeeds would stand out from the refusals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from zapgate.domain.limits import FailureWindows, TokenBuckets
from zapgate.errors import TooManyRequests
from zapgate.services.clients import hash_key
from zapgate.settings import Settings


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """The limits of one API process; `requests` is None when the request rate is off."""

    requests: TokenBuckets | None
    admin_failures: FailureWindows
    link_failures: FailureWindows  # signed media links refused per address (public: no key to meter)

    def meter(self, key: str | None) -> None:
        """Count a request made with `key`; raise TooManyRequests when the key is over its rate.

        Called by the route dependency and by the send fast path alike (api/hotpath.py), after the key
        authenticated and before the request is attributed: a flood writes no audit rows.
        """
        if self.requests is None:
            return
        wait = self.requests.take(hash_key(key or ""), time.monotonic())
        if wait > 0:
            raise TooManyRequests(
                f"this API key makes at most {self.requests.rate:g} requests a second", retry_after=wait
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiLimits:
        """Build the limits as configured."""
        requests = None
        if settings.request_rate > 0:
            requests = TokenBuckets(settings.request_rate, settings.request_burst)
        return cls(
            requests,
            FailureWindows(settings.admin_max_failures, settings.admin_failure_window),
            FailureWindows(settings.admin_max_failures, settings.admin_failure_window),
        )


def address_of(connection: HTTPConnection) -> str:
    """The address a request came from (the direct peer, or what --proxy-headers made of it)."""
    return connection.client.host if connection.client is not None else "unknown"
