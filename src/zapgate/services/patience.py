"""Waiting out a database that is away, for what must not be dropped because PostgreSQL briefly went away.

A restart of PostgreSQL (or a failover) takes seconds; what the engines reported meanwhile is waited with and
stored when the database is back, however long it takes. Any other failure is tried a few times, then raised:
a query the database refuses will not pass by waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from zapgate.errors import DatabaseUnavailable
from zapgate.log import get_logger

log = get_logger(__name__)

T = TypeVar("T")

OTHER_ATTEMPTS = 3  # tries of a call that fails for another reason than the database being away
BACKOFF_MAX = 2.0  # seconds: the longest wait between two tries


def database_away(exc: BaseException) -> bool:
    """Return whether `exc` says the database could not be reached (rather than that it refused something)."""
    return isinstance(exc, DatabaseUnavailable) or isinstance(exc.__cause__, OSError | ConnectionError)


async def while_away(
    call: Callable[[], Awaitable[T]], *, event: str, other_attempts: int = OTHER_ATTEMPTS, **context: Any
) -> T:
    """Return `call()`, calling it again while the database is away (for ever) or fails otherwise (up to
    `other_attempts` tries in all). Each failed try is logged as `event` with `context`.
    """
    attempt = 0
    others = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            attempt += 1
            if not database_away(exc):
                others += 1
                if others >= other_attempts:
                    raise
            log.warning(event, attempt=attempt, error=repr(exc), **context)
            await asyncio.sleep(min(0.1 * 2 ** min(attempt, 5), BACKOFF_MAX))
