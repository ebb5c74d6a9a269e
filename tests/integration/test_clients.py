"""Clients: registered with a key shown once and stored hashed, re-keyed, deleted with all their data."""

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.support.databases import plain_url
from tests.unit.test_ids import BAD_CLIENT_IDS
from zapgate.db.manager import ConnectionManager
from zapgate.db.registry import ClientRegistry
from zapgate.errors import AuthenticationFailed, ClientExists, ClientNotFound, InvalidClientId
from zapgate.services.clients import ClientService, hash_key
from zapgate.services.sessions import SessionService


async def _fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(plain_url(url))
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def test_create_list_authenticate(manager: ConnectionManager, database_url: str) -> None:
    service = ClientService(manager)
    assert await service.count() == 0
    issued = await service.create("acme")
    assert issued.api_key.startswith("zg_") and len(issued.api_key) > 40
    assert issued.client.key_prefixes == (issued.api_key[:10],)

    stored = await _fetch(database_url, "SELECT key_hash, prefix FROM zapgate.api_keys")
    assert [(r["key_hash"], r["prefix"]) for r in stored] == [(hash_key(issued.api_key), issued.api_key[:10])]
    assert issued.api_key not in str([dict(r) for r in stored])  # only the hash and a prefix are kept
    schemas = await _fetch(database_url, "SELECT nspname FROM pg_namespace WHERE nspname = 'client_acme'")
    assert len(schemas) == 1  # its schema is ready at once

    await service.create("beta")
    assert [c.client_id for c in await service.list()] == ["acme", "beta"]
    assert (await service.get("acme")).key_prefixes == (issued.api_key[:10],)
    assert await service.authenticate(issued.api_key) == "acme"
    for wrong in [None, "", "zg_nope", issued.api_key + "x", issued.api_key.upper(), "x" * 500]:
        with pytest.raises(AuthenticationFailed):
            await service.authenticate(wrong)

    with pytest.raises(ClientExists):
        await service.create("acme")
    with pytest.raises(ClientNotFound):
        await service.get("nobody")


async def test_rotate_key_revokes_the_old_ones(manager: ConnectionManager) -> None:
    service = ClientService(manager)
    first = await service.create("acme")
    second = await service.rotate_key("acme")
    assert second.api_key != first.api_key
    assert await service.authenticate(second.api_key) == "acme"
    with pytest.raises(AuthenticationFailed):
        await service.authenticate(first.api_key)
    assert (await service.get("acme")).key_prefixes == (second.api_key[:10],)
    with pytest.raises(ClientNotFound):
        await service.rotate_key("nobody")


async def test_delete_drops_the_schema_and_every_row(manager: ConnectionManager, database_url: str) -> None:
    service = ClientService(manager)
    issued = await service.create("acme")
    db = await manager.get_connection("acme")
    await db.session.create(session_id="s", client_id="acme")
    await service.create("keep")

    await service.delete("acme")
    assert [c.client_id for c in await service.list()] == ["keep"]
    assert await _fetch(database_url, "SELECT 1 FROM pg_namespace WHERE nspname = 'client_acme'") == []
    assert await _fetch(database_url, "SELECT 1 FROM zapgate.api_keys WHERE client_id = 'acme'") == []
    assert len(await _fetch(database_url, "SELECT 1 FROM pg_namespace WHERE nspname = 'client_keep'")) == 1
    with pytest.raises(AuthenticationFailed):
        await service.authenticate(issued.api_key)
    with pytest.raises(ClientNotFound):
        await service.delete("acme")

    # the id can be registered again, and starts empty
    await service.create("acme")
    assert await (await manager.get_connection("acme")).session.find_many() == []


@pytest.mark.parametrize("bad", BAD_CLIENT_IDS)
async def test_bad_client_ids_change_nothing(manager: ConnectionManager, database_url: str, bad: str) -> None:
    service = ClientService(manager)
    for call in (service.create, service.rotate_key, service.delete, service.get):
        with pytest.raises(InvalidClientId):
            await call(bad)
    assert await service.count() == 0
    assert await _fetch(database_url, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'client%'") == []


async def test_nothing_but_creating_a_client_makes_its_schema(database_url: str) -> None:
    async with ConnectionManager(database_url, pool_size=3, registered_only=True) as manager:
        await manager.migrate_registry()
        service = ClientService(manager)
        sessions = SessionService(manager, default_engine="sandbox")
        await service.create("acme")
        await sessions.create("acme", "s1")
        # a socket or stream of acme's, open in another process, still holds acme's handle when it is deleted
        other = ClientService(manager)
        await other.delete("acme")
        for late in (sessions.list("acme"), sessions.get("acme", "s1"), manager.get_connection("acme")):
            with pytest.raises(ClientNotFound):
                await late
        # never registered: refused the same way
        with pytest.raises(ClientNotFound):
            await manager.get_connection("nobody")
        assert await _fetch(database_url, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'client_%'") == []
        # creating it again makes it again
        await service.create("acme")
        assert await sessions.list("acme") == []


async def test_a_lookup_that_began_before_a_rotation_does_not_cache_the_revoked_key(
    manager: ConnectionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients = ClientService(manager, key_cache_ttl=3600)
    old = (await clients.create("acme")).api_key
    looked_up, rotated = asyncio.Event(), asyncio.Event()
    lookup = ClientRegistry.client_for_key

    async def slow_lookup(self: ClientRegistry, digest: str) -> Any:
        found = await lookup(self, digest)  # the key is still valid here ...
        looked_up.set()
        await rotated.wait()  # ... and revoked before the answer is used
        return found

    monkeypatch.setattr(ClientRegistry, "client_for_key", slow_lookup)
    racing = asyncio.create_task(clients.authenticate(old))
    await looked_up.wait()
    monkeypatch.setattr(ClientRegistry, "client_for_key", lookup)
    await clients.rotate_key("acme")
    rotated.set()
    assert await racing == "acme"  # it began before the revocation: this one answer may pass
    with pytest.raises(AuthenticationFailed):
        await clients.authenticate(old)  # but the revoked key was not remembered
