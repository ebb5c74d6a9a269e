"""The ConnectionManager: one bounded pool for every client, each transaction bound to its client's schema.

The seed's API in Python:

    handle = await manager.get_connection("acme")           # schema client_acme created + migrated on first use
    messages = await handle.message.find_many(session_id=s.id, include_contact=True)
    session = await manager.execute_transaction("acme", lambda tx: tx.session.create(...))
    health = await manager.check_single_connection("acme")

A schema is never formatted into SQL: it is bound as a parameter of `set_config('search_path', $1, true)`,
which lasts until the end of the transaction, so a pooled connection never carries a schema to its next user.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.schema import DropSchema

from zapgate import metrics
from zapgate.background import TaskGroup
from zapgate.db import driver, migrate, notify
from zapgate.db.errors import should_retry_transaction, translate
from zapgate.db.repositories import Repositories
from zapgate.domain.ids import REGISTRY_SCHEMA, ClientId, SchemaName, client_id, schema_for
from zapgate.errors import ClientNotFound, DatabaseError, ZapgateError
from zapgate.log import get_logger

T = TypeVar("T")
log = get_logger(__name__)

_SELECT_ONE = text("SELECT 1")
_AUTOVACUUM = text("SELECT current_setting('autovacuum')")
_LOCK_CLIENT = text(f"SELECT 1 FROM {REGISTRY_SCHEMA}.clients WHERE client_id = :client FOR KEY SHARE")  # a constant
TRANSACTION_ATTEMPTS = 3  # runs of a transaction that lost a deadlock before the error reaches the caller
RECYCLE_AFTER = 1800  # seconds a pooled connection lives before it is replaced
# seconds a pooled connection keeps the query plans it cached (see ConnectionManager._transaction)
PLANS_KEPT_FOR = 30.0


def _plans_due(conn: AsyncConnection) -> bool:
    """Whether the connection's cached query plans are PLANS_KEPT_FOR seconds old: its next transaction drops them
    as it begins (`driver.begin`).

    Every statement is a prepared statement, and after five runs PostgreSQL keeps a generic plan for it on that
    connection, planned for the tables as they were then. A plan made while a client's tables were nearly empty
    stays until ANALYZE replaces the statistics: with autovacuum off, or behind a fast-growing table, never. One
    such plan (recording a batch of sends) read every message of the session on each run (PostgreSQL 15, autovacuum
    off): PostgreSQL's CPU per send rose from 0.42 to 0.69 ms over a minute of load (issue 13). The statements stay
    prepared; only their plans are made again, for the tables as they are now (one round trip per connection and
    PLANS_KEPT_FOR).
    """
    now = time.monotonic()
    since = conn.info.setdefault("plans_since", now)
    if now - since < PLANS_KEPT_FOR:
        return False
    conn.info["plans_since"] = now
    return True


def async_url(url: str) -> str:
    """Return `url` with the asyncpg driver named (postgres:// and postgresql:// are accepted)."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


@dataclass(frozen=True, slots=True)
class ClientHealth:
    """The answer of `check_single_connection`: truthy when the client's schema answers at the newest revision."""

    client_id: str
    schema: str
    healthy: bool
    latency_ms: float
    revision: str | None
    error: str | None = None

    def __bool__(self) -> bool:
        return self.healthy


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """How the shared pool is used right now."""

    size: int
    checked_out: int
    idle: int
    handles: int
    healthy: bool
    health_check_failures: int


class _TransactionExecutor:
    """Runs repository operations inside one open transaction."""

    def __init__(self, manager: ConnectionManager, conn: AsyncConnection, schema: SchemaName) -> None:
        self._manager, self._conn, self._schema = manager, conn, schema

    async def run(self, op: str, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            result = await fn(self._conn)
        except BaseException as exc:
            self._manager._log_operation(op, self._schema, started, exc)
            _reraise(exc)
        self._manager._log_operation(op, self._schema, started, None)
        return result


class _AutocommitExecutor:
    """Runs each repository operation in a transaction of its own."""

    def __init__(self, manager: ConnectionManager, handle: ClientConnection) -> None:
        self._manager, self._handle = manager, handle

    async def run(self, op: str, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        self._handle.touch()
        async with self._manager._transaction(self._handle.schema, op) as conn:
            return await fn(conn)


class Transaction(Repositories):
    """The `tx` of `execute_transaction`: the client's repositories, all in one transaction."""

    def __init__(self, manager: ConnectionManager, conn: AsyncConnection, schema: SchemaName) -> None:
        super().__init__(_TransactionExecutor(manager, conn, schema))
        self.connection = conn
        self.schema = schema


class ClientConnection(Repositories):
    """The handle `get_connection` returns: the client's repositories, each call its own transaction."""

    def __init__(self, manager: ConnectionManager, client: ClientId) -> None:
        super().__init__(_AutocommitExecutor(manager, self))
        self.client_id = client
        self.schema = schema_for(client)
        self.last_used = time.monotonic()

    def touch(self) -> None:
        """Mark the handle as used now (idle handles are evicted)."""
        self.last_used = time.monotonic()


def _reraise(exc: BaseException) -> NoReturn:
    """Raise the zapgate error for `exc` (chained to it), or `exc` itself when it is not a database error."""
    translated = translate(exc)
    if translated is None:
        raise exc
    raise translated from exc


class ConnectionManager:
    """Serve every client's schema from one bounded pool; check the server's health and evict idle handles."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 20,
        pool_timeout: float = 30.0,
        health_interval: float = 30.0,
        idle_timeout: float = 300.0,
        connect_timeout: float = 10.0,
        registered_only: bool = False,
    ) -> None:
        """With `registered_only`, a client's schema is created (or migrated) only while the client is in the
        registry: a deleted client's schema is never made again by a late request, socket or worker."""
        self.pool_size = pool_size
        self._registered_only = registered_only
        self.health_interval = health_interval
        self.idle_timeout = idle_timeout
        self._engine: AsyncEngine = create_async_engine(
            async_url(url),
            poolclass=AsyncAdaptedQueuePool,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=pool_timeout,
            # a server process caches the catalog of every schema it touched; renewing connections
            # now and then bounds that memory when thousands of clients share the pool
            pool_recycle=RECYCLE_AFTER,
            # no pre-ping: it costs a round trip per transaction; a connection found dead invalidates the
            # whole pool (SQLAlchemy), and the health check reconnects after an outage
            connect_args={
                "timeout": connect_timeout,
                "server_settings": {"application_name": "zapgate"},
            },
        )
        # Lease renewals get a connection of their own: behind a busy shared pool (one transaction per send batch,
        # per receipt, per client measured) a renewal would wait its turn until the lease ran out, and every
        # session of the worker would move. pool_size=1 and lazy: only a worker ever connects it; pre-ping
        # replaces the connection a database restart killed before a renewal fails on it.
        self._lease_engine: AsyncEngine = create_async_engine(
            async_url(url),
            poolclass=AsyncAdaptedQueuePool,
            pool_size=1,
            max_overflow=0,
            pool_timeout=pool_timeout,
            pool_recycle=RECYCLE_AFTER,
            pool_pre_ping=True,
            connect_args={
                "timeout": connect_timeout,
                "server_settings": {"application_name": "zapgate-leases"},
            },
        )
        self._connect_timeout = connect_timeout
        self._handles: dict[ClientId, ClientConnection] = {}
        self._ready: set[ClientId] = set()
        self._preparing: dict[ClientId, asyncio.Future[None]] = {}
        self._tasks = TaskGroup("db")
        self._healthy = True
        self._health_failures = 0
        self._down_since: float | None = None

    @property
    def engine(self) -> AsyncEngine:
        """The shared SQLAlchemy engine (for the registry and for tests)."""
        return self._engine

    @property
    def healthy(self) -> bool:
        """False from a failed health check until the next one that succeeds."""
        return self._healthy

    async def start(self) -> None:
        """Start the health check and the eviction of idle handles; report the pool in the metrics."""
        metrics.track_pool(self)
        self._tasks.spawn(self._health_loop(), name="health")
        self._tasks.spawn(self._eviction_loop(), name="evict")

    async def close(self) -> None:
        """Stop the background tasks and close every pooled connection."""
        await self._tasks.close()
        await self._engine.dispose()
        await self._lease_engine.dispose()

    async def __aenter__(self) -> ConnectionManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the seed's API -------------------------------------------------------------------------------

    async def get_connection(self, client: str) -> ClientConnection:
        """Return the handle of `client`, creating and migrating its schema on first use."""
        cid = client_id(client)
        await self._ensure_schema(cid)
        handle = self._handles.get(cid)
        if handle is None:
            handle = self._handles[cid] = ClientConnection(self, cid)
        handle.touch()
        return handle

    async def execute_transaction(
        self, client: str, fn: Callable[[Transaction], Awaitable[T]], *, generic_plans: bool = False
    ) -> T:
        """Run `fn(tx)` in one transaction in `client`'s schema; roll everything back if it raises.

        `generic_plans`: its statements run on the plans PostgreSQL cached for them on the connection, never
        planned again for their values (`driver.begin`): for statements that run many times a second, whose best
        plan does not depend on their values, and that PostgreSQL would otherwise plan at every run.
        """
        cid = client_id(client)
        await self._ensure_schema(cid)
        if (handle := self._handles.get(cid)) is not None:
            handle.touch()
        schema = schema_for(cid)
        for attempt in range(TRANSACTION_ATTEMPTS):
            try:
                async with self._transaction(schema, "transaction", generic_plans=generic_plans) as conn:
                    return await fn(Transaction(self, conn, schema))
            except DatabaseError as exc:
                # PostgreSQL chose this transaction as a deadlock's victim: nothing of it stayed, run it again
                if attempt + 1 == TRANSACTION_ATTEMPTS or not should_retry_transaction(exc):
                    raise
                log.info("db.transaction_retried", schema=schema, attempt=attempt + 1, error=str(exc))
        raise AssertionError("unreachable")

    async def check_single_connection(self, client: str) -> ClientHealth:
        """Check that `client`'s schema answers and is at the newest revision (never creates it)."""
        cid = client_id(client)
        schema = schema_for(cid)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._connect_timeout), self._engine.connect() as conn:
                async with conn.begin():
                    revision = await migrate.current_revision(conn, schema)
        except Exception as exc:
            error = translate(exc) or exc
            return ClientHealth(cid, schema, False, _ms(started), None, str(error) or type(error).__name__)
        head = migrate.head_revision(migrate.TENANT)
        if revision is None:
            return ClientHealth(cid, schema, False, _ms(started), None, "schema not created yet")
        problem = None if revision == head else f"schema at revision {revision}, expected {head}"
        return ClientHealth(cid, schema, problem is None, _ms(started), revision, problem)

    # -- administration -------------------------------------------------------------------------------

    async def migrate_registry(self) -> None:
        """Create and migrate the registry schema `zapgate`."""
        await self._migrate(REGISTRY_SCHEMA, migrate.REGISTRY)

    @asynccontextmanager
    async def registry_transaction(self) -> AsyncIterator[AsyncConnection]:
        """Open a transaction whose unqualified names resolve in the registry schema."""
        async with self._transaction(REGISTRY_SCHEMA, "registry") as conn:
            yield conn

    async def notify(self, channel: str, payloads: Collection[str]) -> None:
        """Send notifications on `channel` now, in a statement of their own (no transaction around it)."""
        started = time.perf_counter()
        try:
            async with self._engine.connect() as conn:
                await notify.notify_now(conn, channel, payloads)
        except BaseException as exc:
            self._log_operation("notify", REGISTRY_SCHEMA, started, exc)
            _reraise(exc)

    @asynccontextmanager
    async def lease_transaction(self) -> AsyncIterator[AsyncConnection]:
        """Open a registry transaction on the connection kept for lease renewals, outside the shared pool."""
        async with self._transaction(REGISTRY_SCHEMA, "leases", self._lease_engine) as conn:
            yield conn

    async def drop_client_schema(self, client: str, conn: AsyncConnection | None = None) -> None:
        """Drop `client`'s schema and everything in it, and forget its handle."""
        cid = client_id(client)
        statement = DropSchema(schema_for(cid), cascade=True, if_exists=True)
        if conn is None:
            async with self._transaction(schema_for(cid), "drop_schema") as own:
                await own.execute(statement)
        else:
            await conn.execute(statement)
        self.forget(cid)

    def forget(self, client: str) -> None:
        """Drop what this process remembers of `client` (its handle and that its schema is ready)."""
        cid = ClientId(client)
        self._handles.pop(cid, None)
        self._ready.discard(cid)

    async def autovacuum_on(self) -> bool:
        """Whether the server runs autovacuum (`SHOW autovacuum`)."""
        async with self._engine.connect() as conn:
            return str((await conn.execute(_AUTOVACUUM)).scalar_one()).lower() == "on"

    async def check_health(self) -> bool:
        """Run one health check now; update `healthy` and return it."""
        try:
            try:
                await self._ping()
            except Exception:
                # the first connection may have died with the server: SQLAlchemy has now invalidated the
                # pool, so a second attempt tells a dead server from a stale connection
                await self._ping()
        except Exception as exc:
            self._health_failures += 1
            if self._healthy:
                self._down_since = time.monotonic()
                log.error("db.unhealthy", error=str(translate(exc) or exc) or type(exc).__name__)
            self._healthy = False
            return False
        if not self._healthy:
            down_for = time.monotonic() - (self._down_since or time.monotonic())
            log.info("db.recovered", down_for_s=round(down_for, 3))
            self._healthy = True
        return True

    async def _ping(self) -> None:
        async with asyncio.timeout(self._connect_timeout), self._engine.connect() as conn:
            await conn.execute(_SELECT_ONE)

    def pool_status(self) -> PoolStatus:
        """Describe the pool's use right now."""
        pool = self._engine.pool
        assert isinstance(pool, AsyncAdaptedQueuePool)
        return PoolStatus(
            size=pool.size(),
            checked_out=pool.checkedout(),
            idle=pool.checkedin(),
            handles=len(self._handles),
            healthy=self._healthy,
            health_check_failures=self._health_failures,
        )

    def evict_idle(self, now: float | None = None) -> list[str]:
        """Evict handles unused for `idle_timeout` seconds; return their client ids."""
        cutoff = (time.monotonic() if now is None else now) - self.idle_timeout
        evicted = [cid for cid, handle in self._handles.items() if handle.last_used < cutoff]
        for cid in evicted:
            self.forget(cid)
        if evicted:
            log.info("db.handles_evicted", count=len(evicted), remaining=len(self._handles))
        return list(evicted)

    # -- internals ------------------------------------------------------------------------------------

    @asynccontextmanager
    async def _transaction(
        self, schema: SchemaName, op: str, engine: AsyncEngine | None = None, *, generic_plans: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        started = time.perf_counter()
        try:
            async with (engine or self._engine).begin() as conn:
                await driver.begin(conn, schema, discard_plans=_plans_due(conn), generic_plans=generic_plans)
                yield conn
        except BaseException as exc:
            self._log_operation(op, schema, started, exc)
            _reraise(exc)
        self._log_operation(op, schema, started, None)

    def _log_operation(self, op: str, schema: str, started: float, exc: BaseException | None) -> None:
        duration_ms = _ms(started)
        if exc is None:
            log.debug("db.operation", op=op, schema=schema, duration_ms=duration_ms, outcome="ok")
        elif isinstance(exc, asyncio.CancelledError):
            log.info("db.operation", op=op, schema=schema, duration_ms=duration_ms, outcome="cancelled")
        elif _is_refusal(exc):
            # the caller's own mistake (a taken key, an unknown id): whoever handles it reports it
            log.info("db.operation", op=op, schema=schema, duration_ms=duration_ms, outcome="error", error=repr(exc))
        else:
            log.warning(
                "db.operation",
                op=op,
                schema=schema,
                duration_ms=duration_ms,
                outcome="error",
                error=repr(exc),
            )

    async def _ensure_schema(self, cid: ClientId) -> None:
        if cid in self._ready:
            return
        pending = self._preparing.get(cid)
        if pending is None:
            pending = self._preparing[cid] = asyncio.get_running_loop().create_future()
            try:
                await self._migrate(schema_for(cid), migrate.TENANT, client=cid if self._registered_only else None)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: waiters, if any, get it from their own await
                raise
            else:
                self._ready.add(cid)
                pending.set_result(None)
            finally:
                del self._preparing[cid]
        else:
            await asyncio.shield(pending)

    async def _migrate(self, schema: SchemaName, location: Any, *, client: ClientId | None = None) -> None:
        started = time.perf_counter()
        head = migrate.head_revision(location)
        try:
            async with self._engine.begin() as conn:
                if await migrate.current_revision(conn, schema) == head:
                    return
            async with self._engine.begin() as conn:
                # the row stays locked until the schema is made: a delete of the client waits, then drops it
                if client is not None and (await conn.execute(_LOCK_CLIENT, {"client": client})).first() is None:
                    raise ClientNotFound(f"client {client!r} not found", client_id=client)
                await migrate.upgrade_schema(conn, schema, location)
        except BaseException as exc:
            self._log_operation("migrate", schema, started, exc)
            _reraise(exc)
        log.info("db.migrated", schema=schema, revision=head, duration_ms=_ms(started))

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            await self.check_health()

    async def _eviction_loop(self) -> None:
        while True:
            await asyncio.sleep(min(max(self.idle_timeout / 5, 0.05), 60.0))
            self.evict_idle()


def _is_refusal(exc: BaseException) -> bool:
    error = translate(exc) or exc
    return isinstance(error, ZapgateError) and not isinstance(error, DatabaseError)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
