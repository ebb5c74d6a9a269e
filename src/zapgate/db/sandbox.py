"""The sandbox network's registry tables: the phone directory (`sandbox_phones`) and the mailboxes
(`sandbox_mail`). Statements for a registry transaction of the caller's.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db import notify
from zapgate.db.tables import sandbox_mail, sandbox_phones


async def link(conn: AsyncConnection, phone: str, client_id: str, session_id: str) -> tuple[str, str]:
    """Link `phone` to the session unless it is linked already; return the (client, session) it is linked to."""
    await conn.execute(
        pg_insert(sandbox_phones)
        .values(phone=phone, client_id=client_id, session_id=session_id)
        .on_conflict_do_nothing(index_elements=[sandbox_phones.c.phone])
    )
    row = (
        await conn.execute(
            select(sandbox_phones.c.client_id, sandbox_phones.c.session_id).where(sandbox_phones.c.phone == phone)
        )
    ).one()
    return row.client_id, row.session_id


async def unlink(conn: AsyncConnection, phone: str, client_id: str, session_id: str) -> None:
    """Unlink `phone` if it is linked to the session."""
    await conn.execute(
        delete(sandbox_phones).where(
            sandbox_phones.c.phone == phone,
            sandbox_phones.c.client_id == client_id,
            sandbox_phones.c.session_id == session_id,
        )
    )


async def phone_of(conn: AsyncConnection, client_id: str, session_id: str) -> str | None:
    """The phone linked to the session now, or None."""
    stmt = select(sandbox_phones.c.phone).where(
        sandbox_phones.c.client_id == client_id, sandbox_phones.c.session_id == session_id
    )
    return (await conn.execute(stmt.limit(1))).scalar_one_or_none()


async def directory(conn: AsyncConnection) -> dict[str, tuple[str, str]]:
    """Every linked phone with its (client, session)."""
    rows = await conn.execute(select(sandbox_phones.c.phone, sandbox_phones.c.client_id, sandbox_phones.c.session_id))
    return {row.phone: (row.client_id, row.session_id) for row in rows}


async def post(conn: AsyncConnection, address: str, envelope: dict[str, Any]) -> None:
    """Drop mail for `address` and wake whoever collects it (at commit)."""
    await conn.execute(insert(sandbox_mail).values(address=address, envelope=envelope))
    await notify.notify(conn, notify.SANDBOX, address)


async def collect(
    conn: AsyncConnection, addresses: Collection[str], lease: float, limit: int = 1000
) -> list[tuple[int, str, dict[str, Any]]]:
    """Hand out the waiting mail of `addresses` (not handed out, or its lease over) for `lease` seconds,
    oldest first."""
    waiting = (
        select(sandbox_mail.c.id)
        .where(
            sandbox_mail.c.address.in_(list(addresses)),
            or_(sandbox_mail.c.taken_until.is_(None), sandbox_mail.c.taken_until < func.now()),
        )
        .order_by(sandbox_mail.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(sandbox_mail)
        .where(sandbox_mail.c.id.in_(waiting.scalar_subquery()))
        .values(taken_until=func.now() + text("make_interval(secs => :lease)").bindparams(lease=lease))
        .returning(sandbox_mail.c.id, sandbox_mail.c.address, sandbox_mail.c.envelope)
    )
    rows = (await conn.execute(stmt)).all()
    return [(row.id, row.address, dict(row.envelope)) for row in sorted(rows, key=lambda r: r.id)]


async def ack(conn: AsyncConnection, mail_ids: Collection[int]) -> None:
    """Remove delivered mail."""
    await conn.execute(delete(sandbox_mail).where(sandbox_mail.c.id.in_(list(mail_ids))))
