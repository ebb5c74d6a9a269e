"""The audit log: every mutating call of a client (who, what, when, outcome), in the client's schema.

Entries are written in batches in the background (one transaction per client per round), so auditing costs
a send a queue append rather than a transaction of its own; `close()` writes what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.domain.ids import ClientId, row_id
from zapgate.domain.ids import client_id as valid_client_id
from zapgate.domain.ids import session_id as valid_session_id
from zapgate.domain.records import AuditEntry
from zapgate.errors import InvalidRequest
from zapgate.log import get_logger
from zapgate.services.messages import Page, page_limit

log = get_logger(__name__)

MAX_BACKLOG = 100_000  # entries kept while the database is away


class AuditLog:
    """Records and lists audit entries."""

    def __init__(self, manager: ConnectionManager, *, flush_every: float = 0.2) -> None:
        self._manager = manager
        self._flush_every = flush_every
        self._pending: list[tuple[ClientId, AuditEntry]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.written = 0

    async def start(self) -> None:
        """Start writing entries in the background."""
        self._task = asyncio.create_task(self._run(), name="audit.writer")

    async def close(self) -> None:
        """Write what is pending and stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    def record(self, client: str, entry: AuditEntry) -> None:
        """Queue `entry` for `client`'s log (written within `flush_every` seconds)."""
        if len(self._pending) >= MAX_BACKLOG:
            log.error("audit.backlog_full", dropped=self._pending[0][1].action)
            del self._pending[0]
        self._pending.append((valid_client_id(client), entry))
        self._wake.set()

    async def flush(self) -> None:
        """Write every pending entry now (those of a client whose write fails stay pending)."""
        batch, self._pending = self._pending, []
        by_client: dict[ClientId, list[AuditEntry]] = defaultdict(list)
        for client, entry in batch:
            by_client[client].append(entry)
        for client, entries in by_client.items():

            async def work(tx: Transaction, entries: list[AuditEntry] = entries) -> None:
                await tx.audit.append_many(entries)

            try:
                await self._manager.execute_transaction(client, work)
                self.written += len(entries)
            except Exception as exc:
                log.warning("audit.write_failed", client=client, entries=len(entries), error=repr(exc))
                self._pending[:0] = [(client, entry) for entry in entries]

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._flush_every)
            await self.flush()
            if self._pending:  # some failed: try again later
                await asyncio.sleep(1.0)
                self._wake.set()

    async def list(
        self,
        client: str,
        *,
        session: str | None = None,
        action: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[AuditEntry]:
        """The client's audit entries, newest first, a page at a time."""
        db = await self._manager.get_connection(valid_client_id(client))
        limit = page_limit(limit)
        before = None
        if cursor is not None:
            before = row_id(cursor)
            if before is None:
                raise InvalidRequest("cursor: not a cursor this listing returned (use nextCursor as given)")
        found = await db.audit.find_many(
            session_id=None if session is None else valid_session_id(session),
            action=action,
            before_id=before,
            limit=limit + 1,
        )
        items = found[:limit]
        more = len(found) > limit and items[-1].id is not None
        return Page(items, str(items[-1].id) if more else None)
