"""Alembic migrations of one schema at a time, run on a connection we hand in (no env.py, no alembic.ini).

Each schema's `alembic_version` table lives in that schema: the migration transaction sets a local
`search_path`, so the same revision files build the registry and every client's schema.
"""

from __future__ import annotations

import functools
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
    await conn.run_sync(_run_alembic, location, target)


def _run_alembic(sync_conn: Connection, location: Path, target: str) -> None:
    config, script = _scripts(location)

    def upgrade(rev: Any, context: Any) -> Any:
        return script._upgrade_revs(target, rev)

    with EnvironmentContext(config, script, fn=upgrade, destination_rev=target) as env:
        env.configure(connection=sync_conn, transactional_ddl=True)
        with env.begin_transaction():
            env.run_migrations()
