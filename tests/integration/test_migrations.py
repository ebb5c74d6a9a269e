"""Client schemas match the models, whether created new or upgraded from the previous revision."""

from typing import Any

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, select, text

from tests.support.databases import plain_url
from zapgate.db import migrate
from zapgate.db import sandbox as sandbox_store
from zapgate.db.manager import ConnectionManager
from zapgate.db.tables import registry_metadata, sandbox_owners, tenant_metadata
from zapgate.domain.ids import REGISTRY_SCHEMA, SchemaName
from zapgate.services.clients import ClientService

EXPRESSION_INDEXES = {"ix_events_message_status": "((payload ->> 'messageId'::text))"}


def _diff(sync_conn: Connection, metadata: Any) -> list[Any]:
    opts: dict[str, Any] = {
        "compare_type": True,
        "compare_server_default": True,
        # Alembic cannot compare indexes on expressions: those are checked in pg_indexes below
        "include_object": lambda obj, name, kind, reflected, other: kind != "index" or name not in EXPRESSION_INDEXES,
    }
    if metadata.schema is not None:  # the registry names its schema; client tables do not
        opts["include_schemas"] = True
        opts["include_name"] = lambda name, kind, parent: (
            (kind != "schema" or name == metadata.schema) and (name != "alembic_version")
        )
    context = MigrationContext.configure(sync_conn, opts=opts)
    return list(compare_metadata(context, metadata))


async def _schema_diff(manager: ConnectionManager, schema: str, metadata: Any) -> list[Any]:
    async with manager.engine.begin() as conn:
        await conn.execute(text("SELECT set_config('search_path', :s, true)"), {"s": schema})
        return await conn.run_sync(_diff, metadata)


async def _columns(url: str, schema: str) -> dict[str, list[str]]:
    admin = await asyncpg.connect(plain_url(url))
    try:
        rows = await admin.fetch(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = $1 "
            "ORDER BY table_name, ordinal_position",
            schema,
        )
    finally:
        await admin.close()
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["table_name"], []).append(row["column_name"])
    return found


async def test_a_new_client_schema_matches_the_models(manager: ConnectionManager, database_url: str) -> None:
    await manager.get_connection("fresh")
    assert await _schema_diff(manager, "client_fresh", tenant_metadata) == []
    admin = await asyncpg.connect(plain_url(database_url))
    try:
        for name, expression in EXPRESSION_INDEXES.items():
            definition = await admin.fetchval(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = 'client_fresh' AND indexname = $1", name
            )
            assert definition is not None and expression in definition, (name, definition)
    finally:
        await admin.close()
    columns = await _columns(database_url, "client_fresh")
    # the seed's fields first, then what hosting sessions added
    assert columns["sessions"][:7] == ["id", "session_id", "client_id", "status", "qr_code", "created_at", "updated_at"]
    assert columns["messages"][:9] == [
        "id",
        "session_id",
        "contact_id",
        "message_id",
        "content",
        "type",
        "direction",
        "status",
        "timestamp",
    ]
    health = await manager.check_single_connection("fresh")
    assert health and health.revision == migrate.head_revision(migrate.TENANT)


async def test_the_registry_matches_its_models(manager: ConnectionManager) -> None:
    assert await _schema_diff(manager, "zapgate", registry_metadata) == []


async def test_the_messages_of_a_session_newest_first_use_the_index(manager: ConnectionManager) -> None:
    db = await manager.get_connection("acme")
    session = await db.session.create(session_id="s", client_id="acme")
    async with manager.engine.begin() as conn:
        await conn.execute(text("SELECT set_config('search_path', 'client_acme', true)"))
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            row[0]
            for row in await conn.execute(
                text("EXPLAIN SELECT * FROM messages WHERE session_id = :s ORDER BY timestamp DESC, id DESC LIMIT 50"),
                {"s": session.id},
            )
        )
    assert "ix_messages_session_id_timestamp" in plan
    assert "Sort" not in plan


async def test_a_schema_at_the_previous_revision_upgrades_and_keeps_its_rows(
    manager: ConnectionManager, database_url: str
) -> None:
    schema = SchemaName("client_legacy")
    async with manager.engine.begin() as conn:
        await migrate.upgrade_schema(conn, schema, migrate.TENANT, target="0001")
    async with manager.engine.begin() as conn:
        assert await migrate.current_revision(conn, schema) == "0001"
        await conn.execute(text("SELECT set_config('search_path', 'client_legacy', true)"))
        await conn.execute(text("INSERT INTO sessions (id, session_id, client_id) VALUES ('row1', 'old', 'legacy')"))
    assert "events" not in await _columns(database_url, "client_legacy")

    # first use by the manager upgrades it
    db = await manager.get_connection("legacy")
    old = await db.session.find_unique("old")
    assert old is not None and old.status == "disconnected"
    event = await db.event.append(type="status-change", session_id="old", payload={"status": "qr"})
    assert event.id >= 1
    assert await _schema_diff(manager, "client_legacy", tenant_metadata) == []
    async with manager.engine.begin() as conn:
        assert await migrate.current_revision(conn, schema) == migrate.head_revision(migrate.TENANT)


async def test_new_and_upgraded_schemas_are_identical(manager: ConnectionManager, database_url: str) -> None:
    await manager.get_connection("made_new")
    async with manager.engine.begin() as conn:
        await migrate.upgrade_schema(conn, SchemaName("client_made_old"), migrate.TENANT, target="0001")
    await manager.get_connection("made_old")
    admin = await asyncpg.connect(plain_url(database_url))
    try:
        query = """
            SELECT c.relname, c.relkind, pg_get_indexdef(i.indexrelid) AS idx, con.conname,
                   pg_get_constraintdef(con.oid) AS condef
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_index i ON i.indexrelid = c.oid
            LEFT JOIN pg_constraint con ON con.conrelid = c.oid
            WHERE n.nspname = $1 ORDER BY 1, 4
        """
        new = [
            tuple(str(v).replace("client_made_new", "S") for v in r)
            for r in await admin.fetch(query, "client_made_new")
        ]
        old = [
            tuple(str(v).replace("client_made_old", "S") for v in r)
            for r in await admin.fetch(query, "client_made_old")
        ]
    finally:
        await admin.close()
    assert new == old
    assert len(new) > 10


def _downgrade(sync_conn: Connection, schema: str, target: str, location: Any = migrate.TENANT) -> None:
    """Take `schema` down to `target` with alembic (zapgate itself only ever upgrades)."""
    config = Config()
    config.set_main_option("script_location", str(location))
    script = ScriptDirectory.from_config(config)
    sync_conn.execute(text("SELECT set_config('search_path', :s, true)"), {"s": schema})

    def downgrade(rev: Any, context: Any) -> Any:
        return script._downgrade_revs(target, rev)

    with EnvironmentContext(config, script, fn=downgrade, destination_rev=target) as env:
        env.configure(connection=sync_conn, transactional_ddl=True)
        with env.begin_transaction():
            env.run_migrations()


async def test_the_media_revision_goes_down_and_up_again(manager: ConnectionManager, database_url: str) -> None:
    schema = SchemaName("client_media")
    await manager.get_connection("media")
    storage = (
        "SELECT attstorage::text FROM pg_attribute"
        " WHERE attrelid = 'client_media.media_chunks'::regclass AND attname = 'data'"
    )
    async with manager.engine.begin() as conn:
        # media is compressed already: its chunks are stored out of line, uncompressed (range reads fetch slices)
        assert await conn.scalar(text(storage)) == "e"
        await conn.run_sync(_downgrade, schema, "0006")
    async with manager.engine.begin() as conn:
        assert await migrate.current_revision(conn, schema) == "0006"
    assert {"media", "media_chunks"}.isdisjoint(await _columns(database_url, schema))

    async with manager.engine.begin() as conn:
        await migrate.upgrade_schema(conn, schema, migrate.TENANT)
    assert await _schema_diff(manager, schema, tenant_metadata) == []
    async with manager.engine.begin() as conn:
        assert await conn.scalar(text(storage)) == "e"


async def test_the_sandbox_owners_revision_makes_each_linking_client_its_numbers_owner(
    manager: ConnectionManager,
) -> None:
    await ClientService(manager).create("acme")
    registry = REGISTRY_SCHEMA
    async with manager.engine.begin() as conn:
        await conn.run_sync(_downgrade, registry, "r0013", migrate.REGISTRY)
    async with manager.registry_transaction() as conn:
        await sandbox_store.link(conn, "5511999990001", "acme", "alice")
    async with manager.engine.begin() as conn:
        await migrate.upgrade_schema(conn, registry, migrate.REGISTRY)
    assert await _schema_diff(manager, registry, registry_metadata) == []
    async with manager.registry_transaction() as conn:
        owners = (await conn.execute(select(sandbox_owners.c.phone, sandbox_owners.c.client_id))).all()
    assert [tuple(row) for row in owners] == [("5511999990001", "acme")]
