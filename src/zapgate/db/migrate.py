"""Alembic migrations of one schema at a time, run on a connection we hand in (no env.py, no alembic.ini).

Each schema's `alembic_version` table lives in that schema: the migration transaction sets a local
`search_path`, so the same revision files build the registry and every client's schema.
"""

from __future__ import annotations

import asyncio
import functools
import io
import weakref
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateSchema

from zapgate.domain.ids import SchemaName

MIGRATIONS = Path(__file__).parent / "migrations"
TENANT = MIGRATIONS / "tenant"
REGISTRY = MIGRATIONS / "registry"

# first key of the two-key advisory lock that serialises migrations of one schema across processes
_MIGRATION_LOCK_SPACE = 0x5A47  # "ZG"

_SET_SEARCH_PATH = text("SELECT set_config('search_path', :schema, true)")


@functools.cache
def _scripts(location: Path) -> tuple[Config, ScriptDirectory]:
    config = Config()
    config.set_main_option("script_location", str(location))
    return config, ScriptDirectory.from_config(config)


def head_revision(location: Path) -> str:
    """Return the newest revision in `location`."""
    head = _scripts(location)[1].get_current_head()
    assert head is not None
    return head


async def current_revision(conn: AsyncConnection, schema: SchemaName) -> str | None:
    """Return `schema`'s revision, or None if the schema or its version table does not exist yet."""
    await conn.execute(_SET_SEARCH_PATH, {"schema": schema})
    exists = await conn.scalar(
        text("SELECT to_regclass('alembic_version') IS NOT NULL AND current_schema() = :schema"),
        {"schema": schema},
    )
    if not exists:
        return None
    revision = await conn.scalar(text("SELECT version_num FROM alembic_version"))
    return None if revision is None else str(revision)


async def upgrade_schema(conn: AsyncConnection, schema: SchemaName, location: Path, target: str = "head") -> None:
    """Create `schema` if needed and migrate it to `target`, inside the caller's transaction.

    An advisory lock keyed on the schema makes concurrent first uses (threads, processes, hosts) wait for
    one another instead of racing on CREATE SCHEMA / CREATE TABLE.
    """
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(:space, hashtext(:schema))"),
        {"space": _MIGRATION_LOCK_SPACE, "schema": schema},
    )
    await conn.execute(CreateSchema(schema, if_not_exists=True))
    await conn.execute(_SET_SEARCH_PATH, {"schema": schema})
    if target == "head" and not await conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL")):
        # a new schema: run every revision as the one script alembic renders for it, in one round trip
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.execute(install_script(location))
        return
    # alembic's `op` and `context` are process-wide proxies: two migrations interleaving on one event loop
    # would send each other's DDL to the wrong connection, so this process runs one at a time
    async with _alembic_lock():
        await conn.run_sync(_run_alembic, location, target)


_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _alembic_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _LOCKS.get(loop)
    if lock is None:
        lock = _LOCKS[loop] = asyncio.Lock()
    return lock


@functools.cache
def install_script(location: Path) -> str:
    """Return the SQL that alembic renders (offline mode) to take an empty schema to head.

    It names no schema: it runs wherever the transaction's search_path points.
    """
    config, script = _scripts(location)
    buffer = io.StringIO()

    def upgrade(rev: Any, context: Any) -> Any:
        return script._upgrade_revs("head", rev)

    with EnvironmentContext(config, script, fn=upgrade, as_sql=True, starting_rev=None, destination_rev="head") as env:
        env.configure(dialect_name="postgresql", output_buffer=buffer, transactional_ddl=False)
        with env.begin_transaction():
            env.run_migrations()
    return buffer.getvalue()


def _run_alembic(sync_conn: Connection, location: Path, target: str) -> None:
    config, script = _scripts(location)

    def upgrade(rev: Any, context: Any) -> Any:
        return script._upgrade_revs(target, rev)

    with EnvironmentContext(config, script, fn=upgrade, destination_rev=target) as env:
        env.configure(connection=sync_conn, transactional_ddl=True)
        with env.begin_transaction():
            env.run_migrations()
