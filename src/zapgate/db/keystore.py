"""Keystores: where whatsmeow keeps each client's WhatsApp keys, isolated per client.

whatsmeow creates its tables at the first connect and looks them up in `information_schema` without a schema
filter, so one superuser connection would give only the first client tables. Each client therefore gets a
login role of its own owning schema `wm_<client>` (not `client_<client>`: the client's schema is Alembic's and
must hold only our tables, and the key role needs no privilege on the client's data). No role can read
another's keys. Roles and schemas are created by the server-side functions of registry revision r0002, which
receive the client id as a bound parameter and quote names on the server (quote_ident): nothing here formats
a name into SQL. Passwords are random and kept in `zapgate.keystores`, so any worker can rebuild the DSN.
"""

from __future__ import annotations

import secrets

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.domain.ids import client_id

KEYSTORE_SCHEMA_PREFIX = "wm_"
_URL_KEPT_QUERY = ("host", "port")  # where the server is; every other option is the pool's business

_FIND = text("SELECT role_name, password FROM zapgate.keystores WHERE client_id = :cid")
_PROVISION = text("SELECT zapgate.keystore_provision(:cid, :password)")
_REMEMBER = text(
    "INSERT INTO zapgate.keystores (client_id, role_name, password) VALUES (:cid, :role, :password) "
    "ON CONFLICT (client_id) DO UPDATE SET role_name = EXCLUDED.role_name, password = EXCLUDED.password"
)
_DROP = text("SELECT zapgate.keystore_drop(:cid)")
_FORGET = text("DELETE FROM zapgate.keystores WHERE client_id = :cid")


def keystore_schema(client: str) -> str:
    """Return the schema that holds `client`'s whatsmeow tables."""
    return KEYSTORE_SCHEMA_PREFIX + client_id(client)


def keystore_dsn(server_url: str, role: str, password: str, schema: str) -> str:
    """Return the libpq URL whatsmeow uses: `role` on `server_url`'s database, tables in `schema`."""
    url = make_url(server_url)
    query = {key: url.query[key] for key in _URL_KEPT_QUERY if key in url.query}
    query.update({"sslmode": "disable", "search_path": schema})
    return url.set(drivername="postgres", username=role, password=password, query=query).render_as_string(
        hide_password=False
    )


async def provision_keystore(conn: AsyncConnection, client_id_: str, server_url: str) -> str:
    """Make sure `client_id_` has its key role and schema, and return the DSN whatsmeow must use for it.

    Idempotent: an existing keystore keeps its password (live sessions keep working); the role and schema
    are recreated if someone removed them. The client must be registered (`zapgate.clients`).
    """
    cid = client_id(client_id_)
    row = (await conn.execute(_FIND, {"cid": cid})).first()
    password = str(row.password) if row is not None else secrets.token_hex(24)
    role = str(await conn.scalar(_PROVISION, {"cid": cid, "password": password}))
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
