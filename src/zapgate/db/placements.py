"""Placements: one registry row per session — what its owner wants, and which worker holds its lease."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, TextClause, and_, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db.tables import placements, workers


@dataclass(frozen=True, slots=True)
class Placement:
    """A session as the workers see it."""

    client_id: str
    session_id: str
    engine: str
    desired: str  # running | stopped | logged_out
    mode: str  # qr | pairing_code | restore
    pairing_phone: str | None
    generation: int
    worker_id: str | None
    lease_expires_at: datetime | None


def _placement(row: Row[Any]) -> Placement:
    return Placement(
        client_id=row.client_id,
        session_id=row.session_id,
        engine=row.engine,
        desired=row.desired,
        mode=row.mode,
        pairing_phone=row.pairing_phone,
        generation=row.generation,
        worker_id=row.worker_id,
        lease_expires_at=row.lease_expires_at,
    )


async def insert(
    conn: AsyncConnection,
    client_id: str,
    session_id: str,
    engine: str,
    mode: str,
    pairing_phone: str | None,
    status: str,
) -> None:
    """Place a new session (in `status`, mirrored from then on by the client schema's trigger)."""
    await conn.execute(
        pg_insert(placements).values(
            client_id=client_id,
            session_id=session_id,
            engine=engine,
            mode=mode,
            pairing_phone=pairing_phone,
            status=status,
        )
    )


async def sessions_by_status(conn: AsyncConnection) -> dict[str, int]:
    """How many sessions there are in each status, over every client."""
    stmt = select(placements.c.status, func.count()).group_by(placements.c.status)
    return {str(status or "unknown"): int(count) for status, count in await conn.execute(stmt)}


async def live_workers(conn: AsyncConnection, within: float) -> list[tuple[str, str | None]]:
    """The (worker id, metrics text) of every worker that sent a heartbeat in the last `within` seconds."""
    stmt = (
        select(workers.c.worker_id, workers.c.metrics)
        .where(workers.c.heartbeat_at > func.now() - _seconds(within))
        .order_by(workers.c.worker_id)
    )
    return [(row.worker_id, row.metrics) for row in await conn.execute(stmt)]


async def get(conn: AsyncConnection, client_id: str, session_id: str) -> Placement | None:
    """Return the placement of one session."""
    row = (
        await conn.execute(
            select(placements).where(placements.c.client_id == client_id, placements.c.session_id == session_id)
        )
    ).one_or_none()
    return None if row is None else _placement(row)


async def want(
    conn: AsyncConnection,
    client_id: str,
    session_id: str,
    *,
    desired: str,
    mode: str | None = None,
    pairing_phone: str | None = None,
) -> Placement | None:
    """Change what the owner wants of a session; a new generation makes its worker act on it."""
    values: dict[str, object] = {
        "desired": desired,
        "generation": placements.c.generation + 1,
        "updated_at": func.now(),
    }
    if mode is not None:
        values["mode"] = mode
        values["pairing_phone"] = pairing_phone
    row = (
        await conn.execute(
            update(placements)
            .where(placements.c.client_id == client_id, placements.c.session_id == session_id)
            .values(**values)
            .returning(*placements.c)
        )
    ).one_or_none()
    return None if row is None else _placement(row)


async def lease_alive(conn: AsyncConnection, client_id: str, session_id: str) -> bool:
    """Return whether a worker holds a lease on the session that has not expired."""
    stmt = select(func.count()).where(
        placements.c.client_id == client_id,
        placements.c.session_id == session_id,
        placements.c.worker_id.is_not(None),
        placements.c.lease_expires_at > func.now(),
    )
    return bool((await conn.execute(stmt)).scalar_one())


async def remove(conn: AsyncConnection, client_id: str, session_id: str) -> None:
    """Forget a deleted session (its worker stops it at the next lease renewal)."""
    await conn.execute(
        delete(placements).where(placements.c.client_id == client_id, placements.c.session_id == session_id)
    )


async def claim(
    conn: AsyncConnection,
    worker_id: str,
    engines: Sequence[str],
    room: int,
    lease_ttl: float,
    *,
    waited: float | None = None,
) -> list[Placement]:
    """Take up to `room` sessions that want to run and have no live lease, fairly across clients (with `waited`,
    only those that have waited for a worker longer than that many seconds).

    A client's k-th waiting session (oldest first) takes its turn at (sessions of the client placed now) + k,
    and turns go lowest first (then oldest): one client's queue of waiting sessions cannot keep another
    client's new session waiting, and a client with fewer sessions running gets the next free slot.
    """
    if room <= 0:
        return []
    waiting = or_(placements.c.worker_id.is_(None), placements.c.lease_expires_at < func.now())
    if waited is not None:  # only the sessions that have waited for a worker longer than that
        waiting = and_(waiting, _waiting_since() < func.now() - _seconds(waited))
    placed = (
        select(placements.c.client_id, func.count().label("placed"))
        .where(placements.c.worker_id.is_not(None), placements.c.lease_expires_at >= func.now())
        .group_by(placements.c.client_id)
        .subquery("placed")
    )
    rank = func.row_number().over(partition_by=placements.c.client_id, order_by=placements.c.created_at)
    turns = (
        select(
            placements.c.client_id,
            placements.c.session_id,
            (func.coalesce(placed.c.placed, 0) + rank).label("turn"),
        )
        .select_from(placements.outerjoin(placed, placed.c.client_id == placements.c.client_id))
        .where(placements.c.desired == "running", placements.c.engine.in_(list(engines)), waiting)
        .subquery("turns")
    )
    # the turns are computed unlocked (a window cannot be locked); the rows are locked, and checked again, here
    free = (
        select(placements.c.client_id, placements.c.session_id, turns.c.turn)
        .join(
            turns,
            (turns.c.client_id == placements.c.client_id) & (turns.c.session_id == placements.c.session_id),
        )
        .where(placements.c.desired == "running", waiting)
        .order_by(turns.c.turn, placements.c.created_at)
        .limit(room)
        .with_for_update(of=placements, skip_locked=True)
        .subquery("free")
    )
    stmt = (
        update(placements)
        .where(placements.c.client_id == free.c.client_id, placements.c.session_id == free.c.session_id)
        .values(worker_id=worker_id, lease_expires_at=func.now() + _seconds(lease_ttl))
        .returning(*placements.c, free.c.turn)
    )
    # in turn order (an UPDATE returns its rows in no order): the worker starts them in this order
    rows = sorted(await conn.execute(stmt), key=lambda row: (row.turn, row.created_at))
    return [_placement(row) for row in rows]


async def fair_share(conn: AsyncConnection, worker_id: str, engines: Sequence[str], within: float) -> int:
    """How many more sessions `worker_id` may claim before it hosts more than its share: the sessions of `engines`
    that want to run, over the workers alive in the last `within` seconds (rounded up), less those it holds.

    Claims were first come, first served: the first worker to wake took every session waiting it had room for
    (86-135 of 1,000 per worker in the fleet benchmark). Up to its share, a worker claims at once; past it, only
    sessions that waited longer than a claim round of the others (`claim(waited=...)`): a worker that is full,
    stalled or of another engine cannot keep a session waiting (issue 16).
    """
    wanted = select(func.count()).where(placements.c.desired == "running", placements.c.engine.in_(list(engines)))
    alive = select(func.count()).where(workers.c.heartbeat_at > func.now() - _seconds(within))
    held = select(func.count()).where(placements.c.worker_id == worker_id, placements.c.lease_expires_at > func.now())
    row = (await conn.execute(select(wanted.scalar_subquery(), alive.scalar_subquery(), held.scalar_subquery()))).one()
    sessions, live, mine = int(row[0]), max(1, int(row[1])), int(row[2])
    return max(0, -(-sessions // live) - mine)


def _waiting_since() -> ColumnElement[Any]:
    # a lease that ran out or was let go of (its time is kept), or what the owner last asked (a start, a restart)
    return func.greatest(placements.c.lease_expires_at, placements.c.updated_at)


async def renew(conn: AsyncConnection, worker_id: str, lease_ttl: float) -> list[Placement]:
    """Extend every lease `worker_id` holds; return its placements as they stand now."""
    stmt = (
        update(placements)
        .where(placements.c.worker_id == worker_id)
        .values(lease_expires_at=func.now() + _seconds(lease_ttl))
        .returning(*placements.c)
    )
    return [_placement(row) for row in await conn.execute(stmt)]


async def release(conn: AsyncConnection, worker_id: str, client_id: str, session_id: str) -> None:
    """Give up the lease on one session."""
    await conn.execute(
        update(placements)
        .where(
            placements.c.client_id == client_id,
            placements.c.session_id == session_id,
            placements.c.worker_id == worker_id,
        )
        .values(worker_id=None, lease_expires_at=func.now())  # let go of now: it waits for a worker from now
    )


async def settle(conn: AsyncConnection, client_id: str, session_id: str, desired: str) -> None:
    """Record that a session came to rest (stopped, failed, logged out): no worker should start it."""
    await conn.execute(
        update(placements)
        .where(placements.c.client_id == client_id, placements.c.session_id == session_id)
        .values(desired=desired, worker_id=None, lease_expires_at=None, updated_at=func.now())
    )


async def unplaced(conn: AsyncConnection, engines: Sequence[str]) -> list[Placement]:
    """Return the sessions that want to run but no live worker holds."""
    stmt = select(placements).where(
        placements.c.desired == "running",
        placements.c.engine.in_(list(engines)),
        or_(placements.c.worker_id.is_(None), placements.c.lease_expires_at < func.now()),
    )
    return [_placement(row) for row in await conn.execute(stmt)]


async def free_capacity(conn: AsyncConnection, within: float) -> int:
    """Return how many more sessions the workers alive in the last `within` seconds can host together."""
    alive = (
        select(workers.c.worker_id, workers.c.capacity)
        .where(workers.c.heartbeat_at > func.now() - _seconds(within))
        .subquery()
    )
    capacity = (await conn.execute(select(func.coalesce(func.sum(alive.c.capacity), 0)))).scalar_one()
    hosted = (
        await conn.execute(
            select(func.count())
            .select_from(placements)
            .where(
                placements.c.worker_id.in_(select(alive.c.worker_id)),
                placements.c.lease_expires_at > func.now(),
            )
        )
    ).scalar_one()
    return int(capacity) - int(hosted)


async def heartbeat(
    conn: AsyncConnection, worker_id: str, hostname: str, pid: int, capacity: int, metrics: str | None = None
) -> None:
    """Record that `worker_id` is alive (with its metrics, in Prometheus' text format)."""
    stmt = pg_insert(workers).values(
        worker_id=worker_id, hostname=hostname, pid=pid, capacity=capacity, metrics=metrics
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[workers.c.worker_id],
            set_={"heartbeat_at": func.now(), "capacity": capacity, "metrics": metrics},
        )
    )


async def forget_worker(conn: AsyncConnection, worker_id: str) -> None:
    """Remove a stopping worker and free its leases at once."""
    await conn.execute(
        update(placements)
        .where(placements.c.worker_id == worker_id)
        .values(worker_id=None, lease_expires_at=func.now())
    )
    await conn.execute(delete(workers).where(workers.c.worker_id == worker_id))


def _seconds(value: float) -> TextClause:
    return text("make_interval(secs => :secs)").bindparams(secs=value)
