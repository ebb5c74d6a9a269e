"""Engine calls in a client's schema: an API process asks, the session's worker answers.

Statements for the transaction of a `ConnectionManager` (its search_path names the client's schema).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db.tables import engine_calls


@dataclass(frozen=True, slots=True)
class Call:
    """One engine call and, once answered, its outcome."""

    id: int
    session_row: str
    kind: str
    args: dict[str, Any]
    status: str  # pending, running, done, failed, expired
    result: dict[str, Any] | None
    error_code: str | None
    error: str | None
    deadline: datetime


def _call(row: Any) -> Call:
    return Call(
        row.id,
        row.session_id,
        row.kind,
        dict(row.args),
        row.status,
        row.result,
        row.error_code,
        row.error,
        row.deadline,
    )


async def insert(conn: AsyncConnection, session_row: str, kind: str, args: dict[str, Any], deadline: datetime) -> int:
    """Queue a call for the session's worker; return its id."""
    stmt = (
        engine_calls.insert()
        .values(session_id=session_row, kind=kind, args=args, deadline=deadline)
        .returning(engine_calls.c.id)
    )
    return int((await conn.execute(stmt)).scalar_one())


async def claim(conn: AsyncConnection, call_id: int, session_row: str) -> Call | None:
    """Take a pending call of the session whose deadline has not passed (None: taken, answered or late)."""
    stmt = (
        update(engine_calls)
        .where(
            engine_calls.c.id == call_id,
            engine_calls.c.session_id == session_row,
            engine_calls.c.status == "pending",
            engine_calls.c.deadline > func.now(),
        )
        .values(status="running")
        .returning(engine_calls)
    )
    row = (await conn.execute(stmt)).one_or_none()
    return None if row is None else _call(row)


async def pending(conn: AsyncConnection, session_row: str) -> list[int]:
    """The ids of the session's calls still waiting for a worker (after a missed wake-up)."""
    stmt = (
        select(engine_calls.c.id)
        .where(engine_calls.c.session_id == session_row, engine_calls.c.status == "pending")
        .order_by(engine_calls.c.id)
    )
    return [int(row.id) for row in await conn.execute(stmt)]


async def finish(
    conn: AsyncConnection,
    call_id: int,
    *,
    result: dict[str, Any] | None = None,
    error_code: str | None = None,
    error: str | None = None,
) -> None:
    """Record a running call's answer: its result, or why it failed."""
    await conn.execute(
        update(engine_calls)
        .where(engine_calls.c.id == call_id, engine_calls.c.status == "running")
        .values(
            status="failed" if error_code else "done",
            result=result,
            error_code=error_code,
            error=error,
            finished_at=func.now(),
        )
    )


async def outcome(conn: AsyncConnection, call_id: int) -> Call | None:
    """The call as it stands."""
    row = (await conn.execute(select(engine_calls).where(engine_calls.c.id == call_id))).one_or_none()
    return None if row is None else _call(row)


async def expire(conn: AsyncConnection, call_id: int) -> bool:
    """Give up on a call no worker took in time (so none takes it later); return whether it was still pending."""
    result = await conn.execute(
        update(engine_calls)
        .where(engine_calls.c.id == call_id, engine_calls.c.status == "pending")
        .values(status="expired", finished_at=func.now())
    )
    return bool(result.rowcount)


async def prune(conn: AsyncConnection, before: datetime) -> int:
    """Delete answered or expired calls older than `before`; return how many."""
    result = await conn.execute(
        engine_calls.delete().where(engine_calls.c.created_at < before, engine_calls.c.status != "pending")
    )
    return int(result.rowcount or 0)
