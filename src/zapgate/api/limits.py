"""The API's request limits: a request rate per API key, and a lock-out of addresses guessing admin keys.

Both live in memory, per API process: a send must not pay a database round trip to be metered (a bucket
costs about a microsecond), so with N API processes behind a balancer a key may make up to N times the rate.
The lock-out counts the direct peer's address (run uvicorn with --proxy-headers behind a trusted proxy), and
refuses even the right key from a locked-out address until its window ends: otherwise a guess that
succeeds would stand out from the refusals.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from zapgate.domain.limits import FailureWindows, TokenBuckets
from zapgate.settings import Settings


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """The limits of one API process; `requests` is None when the request rate is off."""

    requests: TokenBuckets | None
    admin_failures: FailureWindows

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiLimits:
        """Build the limits as configured."""
        requests = None
        if settings.request_rate > 0:
            requests = TokenBuckets(settings.request_rate, settings.request_burst)
        return cls(requests, FailureWindows(settings.admin_max_failures, settings.admin_failure_window))


def address_of(connection: HTTPConnection) -> str:
    """The address a request came from (the direct peer, or what --proxy-headers made of it)."""
    return connection.client.host if connection.client is not None else "unknown"
