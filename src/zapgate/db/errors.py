"""Map driver and SQLAlchemy errors to zapgate's error tree, once, at the edge of db/."""

from __future__ import annotations

import asyncpg
from sqlalchemy import exc as sa_exc

from zapgate.errors import (
    DatabaseError,
    DatabaseUnavailable,
    DuplicateRecord,
    InvalidRequest,
    UnstorableData,
    ZapgateError,
)

_UNIQUE_VIOLATION = "23505"
_FOREIGN_KEY_VIOLATION = "23503"
_CHECK_VIOLATION = "23514"
_NOT_NULL_VIOLATION = "23502"
_DATA_EXCEPTION = "22"  # class 22: the value itself is refused (a NUL byte, an invalid encoding, out of range)
# class 54: a value past one of PostgreSQL's limits (an index entry over 2,704 bytes, an array or jsonb too big): the
# same value fails the same way however often it is tried
_PROGRAM_LIMIT = "54"
# class 08 (connection exception) and 57P0x (server shutting down / crashed)
_UNAVAILABLE_PREFIXES = ("08", "57P")


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    # SQLAlchemy's error holds the adapter's, whose cause is asyncpg's; a statement run on the driver's own
    # connection (db/driver.py) raises asyncpg's
    for candidate in (orig, getattr(orig, "__cause__", None), exc):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


_RETRY_WHOLE_TRANSACTION = {"40P01", "40001"}  # deadlock detected, serialization failure


def should_retry_transaction(exc: BaseException) -> bool:
    """Return whether `exc` means: the same transaction, run again from the start, may well succeed."""
    for candidate in (exc, exc.__cause__):
        if candidate is not None and _sqlstate(candidate) in _RETRY_WHOLE_TRANSACTION:
            return True
    return False


def _refused(state: str | None, detail: str, *, lost: bool) -> ZapgateError:
    """The zapgate error for a statement PostgreSQL refused with SQLSTATE `state` (None: no answer came)."""
    if state == _UNIQUE_VIOLATION:
        return DuplicateRecord("a record with this key already exists", detail=detail)
    if state in {_FOREIGN_KEY_VIOLATION, _CHECK_VIOLATION, _NOT_NULL_VIOLATION}:
        return InvalidRequest(f"rejected by the database: {detail}", sqlstate=state)
    if state is not None and state.startswith((_DATA_EXCEPTION, _PROGRAM_LIMIT)):
        # the database's words stay in the log: they may quote the data
        return UnstorableData("the database cannot store this value", sqlstate=state)
    if lost or (state is not None and state.startswith(_UNAVAILABLE_PREFIXES)):
        return DatabaseUnavailable(f"database unavailable: {detail}")
    return DatabaseError(f"database error: {detail}", sqlstate=state)


def translate(exc: BaseException) -> ZapgateError | None:
    """Return the zapgate error for a database failure, or None if `exc` is not one."""
    if isinstance(exc, ZapgateError):
        return None
    if isinstance(exc, sa_exc.TimeoutError):
        return DatabaseError("database pool exhausted: no connection became free in time")
    if isinstance(exc, sa_exc.DBAPIError):
        detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
        lost = exc.connection_invalidated or isinstance(getattr(exc, "orig", None), OSError | ConnectionError)
        return _refused(_sqlstate(exc), detail, lost=lost)
    if isinstance(exc, asyncpg.PostgresError):
        return _refused(exc.sqlstate, (str(exc).strip().splitlines() or [type(exc).__name__])[0], lost=False)
    if isinstance(exc, asyncpg.InterfaceError):  # asyncpg's own: the connection closed or was lost
        return DatabaseUnavailable(f"database unavailable: {exc}")
    if isinstance(exc, OSError | ConnectionError):
        return DatabaseUnavailable(f"database unavailable: {exc}")
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return DatabaseError(f"database error: {exc}")
    return None
