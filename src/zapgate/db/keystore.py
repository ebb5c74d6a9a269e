"""Keystores: where whatsmeow keeps each client's WhatsApp keys, isolated per client.

whatsmeow creates its tables at the first connect and looks them up in `information_schema` without a schema
filter, so one superuser connection would give only the first client tables. Each client therefore gets a
login role of its own owning schema `wm_<client>` (not `client_<client>`: the client's schema is Alembic's and
must hold only our tables, and the key role needs no privilege on the client's data). No role can read
another's keys. Roles and schemas are created by the server-side functions of registry revision r0002, which
receive the client id as a bound parameter and quote names on the server (quote_ident): nothing here formats
a name into SQL. Passwords are random and kept in `zapgate.keystores`, so any worker can rebuild the DSN.

Each key role gets a CONNECTION LIMIT: neonize opens a PostgreSQL pool for every connection attempt and
every device-store check and never closes it (goneonize/main.go:58-64, :2377-2384), so one client's leaked
pools could otherwise take every connection the server has.
"""

from __future__ import annotations

import secrets

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.domain.ids import client_id

KEYSTORE_SCHEMA_PREFIX = "wm_"
# connections one client's key role may hold: a live session uses 1-2 and each of neonize's leaked pools
# keeps up to 2 idle (database/sql's default), so 10 sessions with a few reconnections each fit, while a
# runaway client cannot exhaust max_connections (100 by default)
KEYSTORE_CONNECTION_LIMIT = 32
_URL_KEPT_QUERY = ("host", "port")  # where the server is; every other option is the pool's business
# TLS settings lib/pq (whatsmeow's driver) understands: kept from DATABASE_URL so keys travel as securely
_URL_TLS_QUERY = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "sslsni", "sslinline")
_ASYNCPG_SSL = {"true": "require", "false": "disable"}  # asyncpg's `ssl=` spelling of sslmode

_FIND = text("SELECT role_name, password FROM zapgate.keystores WHERE client_id = :cid")
_PROVISION = text("SELECT zapgate.keystore_provision(:cid, :password)")
_REMEMBER = text(
    "INSERT INTO zapgate.keystores (client_id, role_name, password) VALUES (:cid, :role, :password) "
    "ON CONFLICT (client_id) DO UPDATE SET role_name = EXCLUDED.role_name, password = EXCLUDED.password"
)
# the role name and limit travel as bound values into transaction-local settings and are quoted on the server
_LIMIT_ARGS = text(
    "SELECT set_config('zapgate.keystore_role', :role, true), set_config('zapgate.keystore_limit', :limit, true)"
)
_LIMIT = text(
    "DO $$ BEGIN EXECUTE 'ALTER ROLE ' || quote_ident(current_setting('zapgate.keystore_role')) "
    "|| ' CONNECTION LIMIT ' || current_setting('zapgate.keystore_limit')::int; END $$"
)
_DROP = text("SELECT zapgate.keystore_drop(:cid)")
_FORGET = text("DELETE FROM zapgate.keystores WHERE client_id = :cid")


def keystore_schema(client: str) -> str:
    """Return the schema that holds `client`'s whatsmeow tables."""
    return KEYSTORE_SCHEMA_PREFIX + client_id(client)


def keystore_dsn(server_url: str, role: str, password: str, schema: str) -> str:
    """Return the libpq URL whatsmeow uses: `role` on `server_url`'s database, tables in `schema`.

    TLS settings of `server_url` are kept (asyncpg's `ssl=` becomes `sslmode`); without any, `sslmode=disable`
    (lib/pq would otherwise insist on TLS, which a local server often lacks).
    """
    url = make_url(server_url)
    query = {key: url.query[key] for key in (*_URL_KEPT_QUERY, *_URL_TLS_QUERY) if key in url.query}
    if "sslmode" not in query:
        ssl = url.query.get("ssl")
        ssl = ssl if isinstance(ssl, str) or ssl is None else ssl[-1]
        query["sslmode"] = _ASYNCPG_SSL.get(ssl.lower(), ssl) if ssl else "disable"
    query["search_path"] = schema
    return url.set(drivername="postgres", username=role, password=password, query=query).render_as_string(
        hide_password=False
    )


async def provision_keystore(
    conn: AsyncConnection,
    client_id_: str,
    server_url: str,
    *,
    connection_limit: int = KEYSTORE_CONNECTION_LIMIT,
) -> str:
    """Make sure `client_id_` has its key role and schema, and return the DSN whatsmeow must use for it.

    Idempotent: an existing keystore keeps its password (live sessions keep working); the role and schema
    are recreated if someone removed them. The role may hold at most `connection_limit` connections (-1: no
    limit). The client must be registered (`zapgate.clients`).
    """
    cid = client_id(client_id_)
    row = (await conn.execute(_FIND, {"cid": cid})).first()
    password = str(row.password) if row is not None else secrets.token_hex(24)
    role = str(await conn.scalar(_PROVISION, {"cid": cid, "password": password}))
    await conn.execute(_LIMIT_ARGS, {"role": role, "limit": str(int(connection_limit))})
    await conn.execute(_LIMIT)
    if row is None or row.role_name != role:
        await conn.execute(_REMEMBER, {"cid": cid, "role": role, "password": password})
    return keystore_dsn(server_url, role, password, keystore_schema(cid))


async def drop_keystore(conn: AsyncConnection, client_id_: str) -> None:
    """Delete `client_id_`'s keys: its schema `wm_<client>`, its role (ending its connections) and its row."""
    cid = client_id(client_id_)
    await conn.execute(_DROP, {"cid": cid})
    await conn.execute(_FORGET, {"cid": cid})


async def forget_device(conn: AsyncConnection, client_id_: str, jid: str) -> bool:
    """Delete one linked device's keys from `client_id_`'s keystore (whatsmeow's tables cascade from the
    device row); return whether there was one. For a logout that cannot reach WhatsApp.

    Changes the transaction's search_path to the keystore schema: run it in a transaction of its own.
    """
    schema = keystore_schema(client_id_)
    await conn.execute(text("SELECT set_config('search_path', :schema, true)"), {"schema": schema})
    if not await conn.scalar(text("SELECT to_regclass('whatsmeow_device') IS NOT NULL")):
        return False  # whatsmeow never connected for this client
    deleted = await conn.execute(text("DELETE FROM whatsmeow_device WHERE jid = :jid RETURNING jid"), {"jid": jid})
    return deleted.first() is not None
