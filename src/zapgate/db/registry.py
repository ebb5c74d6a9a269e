"""The registry repository: clients and their hashed API keys, in schema `zapgate`."""

from __future__ import annotations

from sqlalchemy import delete, func, insert, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db.tables import api_keys, clients
from zapgate.domain.ids import ClientId, new_id
from zapgate.domain.records import Client


class ClientRegistry:
    """Statements on the registry, run on a connection from `ConnectionManager.registry_transaction()`."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def insert_client(self, client: ClientId) -> Client | None:
        """Register `client`; return None if it already exists."""
        stmt = (
            pg_insert(clients)
            .values(client_id=client)
            .on_conflict_do_nothing(index_elements=[clients.c.client_id])
            .returning(clients.c.client_id, clients.c.created_at)
        )
        row = (await self._conn.execute(stmt)).one_or_none()
        return None if row is None else Client(client_id=row.client_id, created_at=row.created_at)

    async def get_client(self, client: ClientId) -> Client | None:
        """Return `client` with its key prefixes, or None."""
        found = await self.list_clients(only=client)
        return found[0] if found else None

    async def list_clients(self, only: ClientId | None = None) -> list[Client]:
        """Return every client (or only `only`) with the prefixes of its keys, by id."""
        prefixes = func.array_agg(aggregate_order_by(api_keys.c.prefix, api_keys.c.created_at)).filter(
            api_keys.c.prefix.is_not(None)
        )
        stmt = (
            select(clients.c.client_id, clients.c.created_at, prefixes.label("prefixes"))
            .select_from(clients.outerjoin(api_keys, api_keys.c.client_id == clients.c.client_id))
            .group_by(clients.c.client_id, clients.c.created_at)
            .order_by(clients.c.client_id)
        )
        if only is not None:
            stmt = stmt.where(clients.c.client_id == only)
        rows = (await self._conn.execute(stmt)).all()
        return [
            Client(client_id=row.client_id, created_at=row.created_at, key_prefixes=tuple(row.prefixes or ()))
            for row in rows
        ]

    async def delete_client(self, client: ClientId) -> bool:
        """Remove `client` and its keys from the registry; return whether it existed."""
        result = await self._conn.execute(
            delete(clients).where(clients.c.client_id == client).returning(clients.c.client_id)
        )
        return result.one_or_none() is not None

    async def add_key(self, client: ClientId, key_hash: str, prefix: str) -> None:
        """Store a new key (its hash and display prefix) for `client`."""
        await self._conn.execute(
            insert(api_keys).values(id=new_id(), client_id=client, key_hash=key_hash, prefix=prefix)
        )

    async def delete_keys(self, client: ClientId) -> int:
        """Revoke every key of `client`; return how many there were."""
        result = await self._conn.execute(delete(api_keys).where(api_keys.c.client_id == client))
        return int(result.rowcount)

    async def client_for_key(self, key_hash: str) -> ClientId | None:
        """Return the client owning the key with this hash, or None."""
        value = await self._conn.scalar(select(api_keys.c.client_id).where(api_keys.c.key_hash == key_hash))
        return None if value is None else ClientId(str(value))

    async def key_hashes(self, client: ClientId) -> set[str]:
        """Return the hashes of `client`'s keys (empty when the client does not exist)."""
        rows = await self._conn.execute(select(api_keys.c.key_hash).where(api_keys.c.client_id == client))
        return {str(row.key_hash) for row in rows}

    async def count(self) -> int:
        """Return how many clients are registered."""
        return int(await self._conn.scalar(select(func.count()).select_from(clients)) or 0)
