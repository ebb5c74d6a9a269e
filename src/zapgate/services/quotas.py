"""Client quotas: read and change them (admin API), and admit creations against them (sessions, webhooks).

Creations count inside their own transaction, after taking the client's registry row
(`db.quotas.lock_client`): two creations at once cannot both take the last place. Lowering a quota keeps
what exists and refuses what is new; narrowing a client's engines stops its sessions on the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db import notify, placements
from zapgate.db import quotas as store
from zapgate.db import webhooks as webhook_store
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.domain.ids import client_id as valid_client_id
from zapgate.domain.quotas import KNOWN_ENGINES, QuotaOverrides, Quotas, effective, engine_names
from zapgate.errors import ClientNotFound, EngineNotAllowed, EngineNotOffered, InvalidRequest, QuotaExceeded
from zapgate.log import get_logger
from zapgate.settings import Settings

log = get_logger(__name__)

MAX_QUOTA = 1_000_000  # the largest quota that may be set
DEFAULT_QUOTAS = Quotas(max_sessions=100, max_webhooks=100, engines=KNOWN_ENGINES)
_FIELDS = ("max_sessions", "max_webhooks", "engines")


def default_quotas(settings: Settings) -> Quotas:
    """The deployment's quotas, as configured."""
    return Quotas(
        max_sessions=settings.max_sessions_per_client,
        max_webhooks=settings.max_webhooks_per_client,
        engines=settings.offered_engines,
    )


@dataclass(frozen=True, slots=True)
class QuotaView:
    """A client's quotas as they apply, its own overrides, and what it holds now."""

    client_id: str
    quotas: Quotas
    overrides: QuotaOverrides
    sessions: int
    webhooks: int


@dataclass(frozen=True, slots=True)
class QuotaChanges:
    """Overrides to set; `fields` names those given (a given None returns that one to the default)."""

    fields: frozenset[str]
    max_sessions: int | None = None
    max_webhooks: int | None = None
    engines: Sequence[str] | None = None


class QuotaService:
    """Read, change and enforce client quotas."""

    def __init__(self, manager: ConnectionManager, defaults: Quotas = DEFAULT_QUOTAS) -> None:
        self._manager = manager
        self.defaults = defaults

    # -- enforcement, inside the caller's transaction ----------------------------------------------------

    def check_offered(self, engine: str) -> None:
        """Refuse an engine this deployment does not run (EngineNotOffered)."""
        if engine not in self.defaults.engines:
            raise EngineNotOffered(
                f"engine: {engine!r} is not offered here; expected one of {', '.join(self.defaults.engines)}",
                engine=engine,
                field="engine",
            )

    async def quotas_in(self, conn: AsyncConnection, client: str) -> Quotas:
        """Return the quotas that apply to `client` (on the caller's connection)."""
        return effective(self.defaults, await store.overrides(conn, client))

    async def check_engine(self, conn: AsyncConnection, client: str, engine: str) -> None:
        """Refuse an engine the deployment does not run (422) or the client may not use (403)."""
        self.check_offered(engine)
        if engine not in (await self.quotas_in(conn, client)).engines:
            raise EngineNotAllowed(f"engine {engine!r} is not enabled for this client", engine=engine)

    async def admit_session(self, tx: Transaction, client: str, engine: str) -> None:
        """Refuse one more session of `client` on `engine` when over its quota or not allowed that engine."""
        self.check_offered(engine)
        await store.lock_client(tx.connection, client)
        quotas = await self.quotas_in(tx.connection, client)
        if engine not in quotas.engines:
            raise EngineNotAllowed(f"engine {engine!r} is not enabled for this client", engine=engine)
        if await tx.session.count() >= quotas.max_sessions:
            raise QuotaExceeded(
                f"a client may hold {quotas.max_sessions} sessions: delete one, or ask for a higher quota",
                quota="sessions",
                limit=quotas.max_sessions,
            )

    async def admit_webhook(self, conn: AsyncConnection, client: str) -> None:
        """Refuse one more webhook of `client` when it holds its quota."""
        await store.lock_client(conn, client)
        quotas = await self.quotas_in(conn, client)
        if await webhook_store.count_webhooks(conn) >= quotas.max_webhooks:
            raise QuotaExceeded(
                f"a client may hold {quotas.max_webhooks} webhooks: delete one, or ask for a higher quota",
                quota="webhooks",
                limit=quotas.max_webhooks,
            )

    async def quotas(self, client: str) -> Quotas:
        """Return the quotas that apply to `client`."""
        async with self._manager.registry_transaction() as conn:
            return await self.quotas_in(conn, valid_client_id(client))

    # -- the admin API ------------------------------------------------------------------------------------

    async def get(self, client: str) -> QuotaView:
        """Return `client`'s quotas and usage; raise ClientNotFound."""
        cid = valid_client_id(client)
        await self._require_client(cid)

        async def work(tx: Transaction) -> QuotaView:
            return await self._view(tx, cid)

        return await self._manager.execute_transaction(cid, work)

    async def update(self, client: str, changes: QuotaChanges) -> QuotaView:
        """Set some of `client`'s own quotas; sessions on engines it may no longer use are stopped."""
        cid = valid_client_id(client)
        values = _checked(changes)
        await self._require_client(cid)

        async def work(tx: Transaction) -> tuple[QuotaView, list[str]]:
            await store.lock_client(tx.connection, cid)
            await store.store(tx.connection, cid, values)
            view = await self._view(tx, cid)
            stopped = []
            for session in await tx.session.find_many():
                if session.engine in view.quotas.engines:
                    continue
                placement = await placements.get(tx.connection, cid, session.session_id)
                if placement is not None and placement.desired == "running":
                    await placements.want(tx.connection, cid, session.session_id, desired="stopped")
                    await notify.notify(tx.connection, notify.PLACEMENTS, f"{cid}/{session.session_id}")
                    stopped.append(session.session_id)
            return view, stopped

        view, stopped = await self._manager.execute_transaction(cid, work)
        log.info("client.quotas_changed", client_id=cid, fields=sorted(values), sessions_stopped=len(stopped))
        return view

    async def _require_client(self, cid: str) -> None:
        async with self._manager.registry_transaction() as conn:
            if not await store.lock_client(conn, cid):
                raise ClientNotFound(f"client {cid!r} not found", client_id=cid)

    async def _view(self, tx: Transaction, cid: str) -> QuotaView:
        own = await store.overrides(tx.connection, cid) or QuotaOverrides()
        return QuotaView(
            client_id=cid,
            quotas=effective(self.defaults, own),
            overrides=own,
            sessions=await tx.session.count(),
            webhooks=await webhook_store.count_webhooks(tx.connection),
        )


def _checked(changes: QuotaChanges) -> dict[str, Any]:
    """Return the columns to store for `changes`; raise InvalidRequest naming a bad field."""
    values: dict[str, Any] = {}
    for name in _FIELDS:
        if name not in changes.fields:
            continue
        value = getattr(changes, name)
        field = {"max_sessions": "maxSessions", "max_webhooks": "maxWebhooks"}.get(name, name)
        if value is None:
            values[name] = None
        elif name == "engines":
            try:
                values[name] = list(engine_names(value))
            except ValueError as exc:
                raise InvalidRequest(f"engines: {exc}", field="engines") from exc
        elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_QUOTA:
            raise InvalidRequest(f"{field}: a whole number from 0 to {MAX_QUOTA}", field=field)
        else:
            values[name] = value
    if not changes.fields & set(_FIELDS):
        raise InvalidRequest("nothing to change: give maxSessions, maxWebhooks or engines")
    return values
