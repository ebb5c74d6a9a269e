"""The hot statements, run on asyncpg's own connection inside the transaction of SQLAlchemy's connection.

A statement through SQLAlchemy's `AsyncConnection.execute` pays, on top of asyncpg's work, the compilation of
its bound parameters, a greenlet switch into the sync API and back, and a result proxy with its metadata. Once
per request that is nothing; the send path runs its statements for every batch of every session. The
statements a send runs on every message (accept, claim, record, events) use `driver(conn)` instead: the same
pooled connection, in the same transaction, with the same type codecs (SQLAlchemy set jsonb's up on connect).
Every transaction of the manager begins here too (`begin`: BEGIN and its search_path on the driver, handed to
SQLAlchemy to end): that took a manager transaction from 547 to 394 us of CPU (`benchmarks/transactions.py`).

Rows are asyncpg's records: read them here, into db's own types, and never hand them out. Errors are asyncpg's:
`db/errors.py` translates them as it translates SQLAlchemy's, and the manager raises the translation.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection


def autocommit(conn: AsyncConnection) -> asyncpg.Connection:
    """Return the asyncpg connection under `conn`, checked out with no transaction begun: each statement run on
    it is a transaction of its own (one round trip, no BEGIN or COMMIT)."""
    raw = None if conn.sync_connection is None else conn.sync_connection.connection.driver_connection
    if not isinstance(raw, asyncpg.Connection) or raw.is_in_transaction():
        raise RuntimeError("autocommit(): no asyncpg connection outside of a transaction")
    return raw


def driver(conn: AsyncConnection) -> asyncpg.Connection:
    """Return the asyncpg connection under `conn`, whose transaction has begun (a statement ran on it).

    Raises RuntimeError on a connection with no transaction begun: a statement on the driver would then run
    outside of any, committed on its own.
    """
    raw = None if conn.sync_connection is None else conn.sync_connection.connection.driver_connection
    if not isinstance(raw, asyncpg.Connection) or not raw.is_in_transaction():
        raise RuntimeError("driver(): no asyncpg connection with a transaction begun")
    return raw


async def begin(
    conn: AsyncConnection, schema: str, *, discard_plans: bool = False, generic_plans: bool = False
) -> None:
    """Begin the transaction of `conn` (from `engine.begin()`, before any statement) with its search_path set to
    `schema`; with `discard_plans`, drop the connection's cached plans first (db/manager.py); with `generic_plans`,
    its statements run on their cached generic plans (PostgreSQL's plan_cache_mode, for this transaction only).

    SQLAlchemy would send the same two statements, the second through its own execution (a greenlet, the
    statement's compilation, a result): measured on this machine, about 150 us of CPU more per transaction than
    asyncpg alone (issue 13), and every send runs in one. The schema is a bound parameter, as it always was: no
    SQL is built from a client's id. The transaction is handed to SQLAlchemy's asyncpg adapter as the one it
    began: its statements run in it, and it ends it (commit, or rollback, also when this fails).
    """
    # SQLAlchemy's AsyncAdapt_asyncpg_connection: `_transaction` is the asyncpg transaction it ends (SQLAlchemy 2.x)
    adapter: Any = None if conn.sync_connection is None else conn.sync_connection.connection.dbapi_connection
    raw = getattr(adapter, "driver_connection", None)
    if not isinstance(raw, asyncpg.Connection) or getattr(adapter, "_transaction", False) is not None:
        raise RuntimeError("begin(): not an asyncpg connection with no transaction begun")
    adapter._transaction = _Begun(raw)  # from now on: whatever happens, SQLAlchemy ends it (ROLLBACK at worst)
    await raw.execute("DISCARD PLANS; BEGIN" if discard_plans else "BEGIN")
    await raw.execute(_GENERIC_PLANS if generic_plans else _SEARCH_PATH, schema)


_SEARCH_PATH = "SELECT set_config('search_path', $1, true)"  # for this transaction only
_GENERIC_PLANS = "SELECT set_config('search_path', $1, true), set_config('plan_cache_mode', 'force_generic_plan', true)"


class _Begun:
    """A transaction begun with BEGIN on asyncpg's connection, for SQLAlchemy's adapter to commit or roll back (it
    calls these as it calls an asyncpg Transaction's)."""

    __slots__ = ("_raw",)

    def __init__(self, raw: asyncpg.Connection) -> None:
        self._raw = raw

    async def commit(self) -> None:
        await self._raw.execute("COMMIT")

    async def rollback(self) -> None:
        await self._raw.execute("ROLLBACK")
