"""The audit log: every mutating call of a client (who, what, when, outcome), in the client's schema.

Entries are written in batches in the background (one transaction per client per round), so auditing costs
a send a queue append rather than a transaction of its own; `close()` writes what is left.

What a caller sent is in an entry (a path, a session id), so an entry is made storable when it is recorded
(no NUL byte, no lone surrogate), and a batch the database refuses is written again entry by entry: the
entry it refuses alone is dropped (logged) after a few rounds, and never holds the client's other entries
back. While the database is away, every entry waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import replace

from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.domain.ids import ClientId, row_id
from zapgate.domain.ids import client_id as valid_client_id
from zapgate.domain.ids import session_id as valid_session_id
from zapgate.domain.records import AuditEntry
from zapgate.domain.storable import storable, storable_json, storable_or_none
from zapgate.errors import DatabaseUnavailable, InvalidRequest
from zapgate.log import get_logger
from zapgate.services.messages import Page, page_limit

log = get_logger(__name__)

MAX_BACKLOG = 100_000  # entries kept while the database is away
MAX_TRIES = 3  # rounds an entry that the database refuses alone is tried before it is dropped


class AuditLog:
    """Records and lists audit entries."""

    def __init__(self, manager: ConnectionManager, *, flush_every: float = 0.2) -> None:
        self._manager = manager
        self._flush_every = flush_every
        self._pending: list[tuple[ClientId, AuditEntry, int]] = []  # (client, entry, failed tries alone)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0

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
        self._pending.append((valid_client_id(client), _storable(entry), 0))
        self._wake.set()

    async def flush(self) -> None:
        """Write every pending entry now (those of a client whose write fails stay pending)."""
        batch, self._pending = self._pending, []
        by_client: dict[ClientId, list[tuple[AuditEntry, int]]] = defaultdict(list)
        for client, entry, tries in batch:
            by_client[client].append((entry, tries))
        for client, entries in by_client.items():
            try:
                await self._write(client, [entry for entry, _ in entries])
            except DatabaseUnavailable as exc:  # nothing is wrong with the entries: they all wait
                log.warning("audit.write_failed", client=client, entries=len(entries), error=repr(exc))
                self._pending[:0] = [(client, entry, tries) for entry, tries in entries]
            except Exception as exc:
                log.warning("audit.write_failed", client=client, entries=len(entries), error=repr(exc))
                await self._write_one_by_one(client, entries)

    async def _write(self, client: ClientId, entries: list[AuditEntry]) -> None:
        async def work(tx: Transaction) -> None:
            await tx.audit.append_many(entries)

        await self._manager.execute_transaction(client, work)
        self.written += len(entries)

    async def _write_one_by_one(self, client: ClientId, entries: list[tuple[AuditEntry, int]]) -> None:
        for index, (entry, tries) in enumerate(entries):
            try:
                await self._write(client, [entry])
            except DatabaseUnavailable:
                self._pending[:0] = [(client, e, t) for e, t in entries[index:]]
                return
            except Exception as exc:
                if tries + 1 < MAX_TRIES:
                    self._pending.append((client, entry, tries + 1))
                    continue
                self.dropped += 1
                log.error("audit.entry_dropped", client=client, action=entry.action, error=repr(exc))

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


def _storable(entry: AuditEntry) -> AuditEntry:
    """`entry` with every text from outside made storable (a NUL byte in a path or a session id fails a batch)."""
    texts = (entry.actor, entry.action, entry.outcome, entry.session_id or "")
    detail = storable_json(entry.detail)
    if detail == entry.detail and all(storable(text) is text for text in texts):
        return entry  # the usual case, at every call: nothing to change, no copy
    return replace(
        entry,
        actor=storable(entry.actor),
        action=storable(entry.action),
        outcome=storable(entry.outcome),
        session_id=storable_or_none(entry.session_id),
        detail=detail,
    )
