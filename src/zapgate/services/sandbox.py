"""The sandbox network in PostgreSQL: the phone directory and mailboxes shared by every worker (and the API)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection

from sqlalchemy import delete, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from zapgate.db import notify
from zapgate.db.manager import ConnectionManager
from zapgate.db.tables import sandbox_mail, sandbox_phones
from zapgate.engines.base import SessionRef
from zapgate.engines.sandbox import Mail, PhoneInUse

MAIL_LEASE = 10.0  # seconds handed-out mail waits for its acknowledgement before it is handed out again
DIRECTORY_TTL = 1.0  # seconds a snapshot of the phone directory is used (a lookup per send would dominate)


class PostgresSandboxNetwork:
    """`SandboxNetwork` over the registry tables `sandbox_phones` and `sandbox_mail`."""

    def __init__(self, manager: ConnectionManager, wake: asyncio.Event | None = None) -> None:
        self._manager = manager
        self._wake = wake or asyncio.Event()
        self._directory: dict[str, SessionRef] = {}
        self._directory_read = float("-inf")  # when the snapshot was taken (monotonic seconds)

    async def link(self, phone: str, ref: SessionRef) -> None:
        self._directory_read = float("-inf")
        stmt = (
            pg_insert(sandbox_phones)
            .values(phone=phone, client_id=ref.client_id, session_id=ref.session_id)
            .on_conflict_do_nothing(index_elements=[sandbox_phones.c.phone])
        )
        async with self._manager.registry_transaction() as conn:
            await conn.execute(stmt)
            row = (
                await conn.execute(
                    select(sandbox_phones.c.client_id, sandbox_phones.c.session_id).where(
                        sandbox_phones.c.phone == phone
                    )
                )
            ).one()
        if (row.client_id, row.session_id) != (ref.client_id, ref.session_id):
            raise PhoneInUse(f"sandbox phone {phone} is already linked to another session")

    async def unlink(self, phone: str, ref: SessionRef) -> None:
        self._directory_read = float("-inf")
        async with self._manager.registry_transaction() as conn:
            await conn.execute(
                delete(sandbox_phones).where(
                    sandbox_phones.c.phone == phone,
                    sandbox_phones.c.client_id == ref.client_id,
                    sandbox_phones.c.session_id == ref.session_id,
                )
            )

    async def linked_session(self, phone: str) -> SessionRef | None:
        # the directory is small and read on every send: one snapshot of it serves DIRECTORY_TTL seconds
        if time.monotonic() - self._directory_read > DIRECTORY_TTL:
            async with self._manager.registry_transaction() as conn:
                rows = await conn.execute(
                    select(sandbox_phones.c.phone, sandbox_phones.c.client_id, sandbox_phones.c.session_id)
                )
                self._directory = {row.phone: SessionRef(row.client_id, row.session_id) for row in rows}
            self._directory_read = time.monotonic()
        return self._directory.get(phone)

    async def post(self, address: str, mail: Mail) -> None:
        async with self._manager.registry_transaction() as conn:
            await conn.execute(insert(sandbox_mail).values(address=address, envelope=mail))
            await notify.notify(conn, notify.SANDBOX, address)

    async def collect(self, addresses: Collection[str]) -> list[tuple[int, str, Mail]]:
        if not addresses:
            return []
        waiting = (
            select(sandbox_mail.c.id)
            .where(
                sandbox_mail.c.address.in_(list(addresses)),
                or_(sandbox_mail.c.taken_until.is_(None), sandbox_mail.c.taken_until < func.now()),
            )
            .order_by(sandbox_mail.c.id)
            .limit(1000)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(sandbox_mail)
            .where(sandbox_mail.c.id.in_(waiting.scalar_subquery()))
            .values(taken_until=func.now() + text("make_interval(secs => :lease)").bindparams(lease=MAIL_LEASE))
            .returning(sandbox_mail.c.id, sandbox_mail.c.address, sandbox_mail.c.envelope)
        )
        async with self._manager.registry_transaction() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(row.id, row.address, dict(row.envelope)) for row in sorted(rows, key=lambda r: r.id)]

    async def ack(self, mail_ids: Collection[int]) -> None:
        if not mail_ids:
            return
        async with self._manager.registry_transaction() as conn:
            await conn.execute(delete(sandbox_mail).where(sandbox_mail.c.id.in_(list(mail_ids))))

    async def wait_for_mail(self, at_most: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), at_most)
        self._wake.clear()
