"""The sandbox network in PostgreSQL: the phone directory and mailboxes shared by every worker (and the API).

Every call waits for a database that is away rather than fail: a receipt or a message whose post failed
while PostgreSQL restarted would be lost (the mail it answers may be stored and acknowledged meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Collection
from typing import TypeVar

from zapgate.db import sandbox as store
from zapgate.db.manager import ConnectionManager
from zapgate.engines.base import SessionRef
from zapgate.engines.sandbox import Mail, PhoneInUse
from zapgate.services.patience import while_away

T = TypeVar("T")

MAIL_LEASE = 10.0  # seconds handed-out mail waits for its acknowledgement before it is handed out again
DIRECTORY_TTL = 1.0  # seconds a snapshot of the phone directory is used (a lookup per send would dominate)
ESCAPED = "escaped_mail"  # the one key of an envelope that carries its mail as JSON text


def envelope(mail: Mail) -> Mail:
    """Return `mail` as jsonb can store it: jsonb refuses NUL in strings, which texts may hold, so such mail
    travels as JSON text (NUL escaped)."""
    encoded = json.dumps(mail)
    return {ESCAPED: encoded} if "\\u0000" in encoded else mail


def unwrap(stored: Mail) -> Mail:
    """Return the mail an `envelope` carries."""
    escaped = stored.get(ESCAPED)
    return dict(json.loads(escaped)) if isinstance(escaped, str) and len(stored) == 1 else stored


class PostgresSandboxNetwork:
    """`SandboxNetwork` over the registry tables `sandbox_phones` and `sandbox_mail`."""

    def __init__(self, manager: ConnectionManager, wake: asyncio.Event | None = None) -> None:
        self._manager = manager
        self._wake = wake or asyncio.Event()
        self._directory: dict[str, SessionRef] = {}
        self._directory_read = float("-inf")  # when the snapshot was taken (monotonic seconds)

    async def _registry(self, what: str, work: Callable[..., Awaitable[T]]) -> T:
        """Run `work(conn)` in a registry transaction, waiting for a database that is away."""

        async def attempt() -> T:
            async with self._manager.registry_transaction() as conn:
                return await work(conn)

        return await while_away(attempt, event="sandbox.network_waiting", operation=what)

    async def link(self, phone: str, ref: SessionRef) -> None:
        self._directory_read = float("-inf")
        owner = await self._registry("link", lambda conn: store.link(conn, phone, ref.client_id, ref.session_id))
        if owner != (ref.client_id, ref.session_id):
            raise PhoneInUse(f"sandbox phone {phone} is already linked to another session")

    async def unlink(self, phone: str, ref: SessionRef) -> None:
        self._directory_read = float("-inf")
        await self._registry("unlink", lambda conn: store.unlink(conn, phone, ref.client_id, ref.session_id))

    async def linked_phone(self, ref: SessionRef) -> str | None:
        """Return the phone linked to the session now (read now: not from the snapshot), or None."""
        async with self._manager.registry_transaction() as conn:
            return await store.phone_of(conn, ref.client_id, ref.session_id)

    async def linked_session(self, phone: str) -> SessionRef | None:
        # the directory is small and read on every send: one snapshot of it serves DIRECTORY_TTL seconds
        if time.monotonic() - self._directory_read > DIRECTORY_TTL:
            found = await self._registry("directory", store.directory)
            self._directory = {phone: SessionRef(client, session) for phone, (client, session) in found.items()}
            self._directory_read = time.monotonic()
        return self._directory.get(phone)

    async def post(self, address: str, mail: Mail) -> None:
        stored = envelope(mail)
        await self._registry("post", lambda conn: store.post(conn, address, stored))

    async def collect(self, addresses: Collection[str]) -> list[tuple[int, str, Mail]]:
        if not addresses:
            return []
        taken = await self._registry("collect", lambda conn: store.collect(conn, addresses, MAIL_LEASE))
        return [(mail_id, address, unwrap(stored)) for mail_id, address, stored in taken]

    async def ack(self, mail_ids: Collection[int]) -> None:
        if not mail_ids:
            return
        await self._registry("ack", lambda conn: store.ack(conn, mail_ids))

    async def wait_for_mail(self, at_most: float) -> None:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation (the pump's, at close)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(at_most):
                await self._wake.wait()
        self._wake.clear()
