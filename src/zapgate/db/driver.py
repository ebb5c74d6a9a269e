"""The hot statements, run on asyncpg's own connection inside the transaction SQLAlchemy opened.

A statement through SQLAlchemy's `AsyncConnection.execute` pays, on top of asyncpg's work, the compilation of
its bound parameters, a greenlet switch into the sync API and back, and a result proxy with its metadata. Once
per request that is nothing; the send path runs its statements for every batch of every session. The
statements a send runs on every message (claim, record, events) use `driver(conn)` instead: the same pooled
connection, in the same transaction (the manager's `search_path` statement opened it), with the same type
codecs (SQLAlchemy set jsonb's up on connect). Measured under wrk (issue 13, README "Performance"), this moved
the worker's CPU per send by less than the machine's noise: most of the worker's CPU is its own Python.

Rows are asyncpg's records: read them here, into db's own types, and never hand them out. Errors are asyncpg's:
`db/errors.py` translates them as it translates SQLAlchemy's, and the manager raises the translation.
"""

from __future__ import annotations

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
