"""Clients (tenants): registration, API keys (shown once, stored hashed) and removal with all their data."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from zapgate.db import notify
from zapgate.db.keystore import drop_keystore
from zapgate.db.manager import ConnectionManager
from zapgate.db.registry import ClientRegistry
from zapgate.domain.ids import ClientId, client_id
from zapgate.domain.media import StoreName
from zapgate.domain.records import Client
from zapgate.errors import AuthenticationFailed, ClientExists, ClientNotFound, InvalidClientId
from zapgate.log import get_logger
from zapgate.media.store import MediaStore

log = get_logger(__name__)

KEY_PREFIX = "zg_"
_DISPLAY_PREFIX_LENGTH = 10  # characters of a key kept in clear to tell keys apart


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A client together with an API key that is shown this once and never again."""

    client: Client
    api_key: str


def hash_key(api_key: str) -> str:
    """Return the stored form of an API key (keys are 256-bit random, so a plain SHA-256 suffices)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def key_display_prefix(key: str) -> str:
    """The first characters of `key`, kept in clear to tell keys apart (in listings and the audit log)."""
    return key[:_DISPLAY_PREFIX_LENGTH]


def _new_key() -> tuple[str, str, str]:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key), key_display_prefix(key)


class ClientService:
    """Create, list, re-key and delete clients; authenticate API keys.

    With `key_cache_ttl` > 0, keys that authenticated are remembered that many seconds (a send then costs
    no registry round trip). Revoking keys (rotate, delete) announces it on `zapgate_keys`; every API
    process forgets its cache then (`forget_keys`), and whenever its listener reconnects.
    """

    def __init__(
        self, manager: ConnectionManager, *, key_cache_ttl: float = 0.0, media: MediaStore | None = None
    ) -> None:
        self._manager = manager
        self._media = media
        self._key_cache_ttl = key_cache_ttl
        self._known_keys: dict[str, tuple[ClientId, float]] = {}
        # bumped by every revocation: a lookup that began before one may have read a key it revoked since,
        # and must not put it back into the cache
        self._keys_epoch = 0

    def forget_keys(self) -> None:
        """Drop the remembered keys (some were revoked)."""
        self._keys_epoch += 1
        self._known_keys.clear()

    def revoked(self, client: str | None) -> None:
        """Keys of `client` (None: of anyone) were revoked, or it was deleted: forget what this process knows.

        Its schema handle goes too, so the next use checks the registry again (a deleted client's schema is
        never made again: see ConnectionManager's `registered_only`).
        """
        self.forget_keys()
        if client is not None:
            with contextlib.suppress(InvalidClientId):
                self._manager.forget(client_id(client))

    async def live_keys(self, client: str) -> set[str]:
        """Return the hashes of `client`'s keys that still authenticate (none once it is deleted)."""
        async with self._manager.registry_transaction() as conn:
            return await ClientRegistry(conn).key_hashes(client_id(client))

    async def create(self, client: str) -> IssuedKey:
        """Register `client`, create its schema and return its first API key."""
        cid = client_id(client)
        key, digest, prefix = _new_key()
        async with self._manager.registry_transaction() as conn:
            registry = ClientRegistry(conn)
            created = await registry.insert_client(cid)
            if created is None:
                raise ClientExists(f"client {cid!r} already exists", client_id=cid)
            await registry.add_key(cid, digest, prefix)
        try:
            await self._manager.get_connection(cid)
        except BaseException:
            async with self._manager.registry_transaction() as conn:
                await ClientRegistry(conn).delete_client(cid)
            raise
        log.info("client.created", client_id=cid)
        return IssuedKey(Client(cid, created.created_at, (prefix,)), key)

    async def list(self) -> list[Client]:
        """Return every registered client, by id."""
        async with self._manager.registry_transaction() as conn:
            return await ClientRegistry(conn).list_clients()

    async def get(self, client: str) -> Client:
        """Return one client; raise ClientNotFound if it is not registered."""
        cid = client_id(client)
        async with self._manager.registry_transaction() as conn:
            found = await ClientRegistry(conn).get_client(cid)
        if found is None:
            raise ClientNotFound(f"client {cid!r} not found", client_id=cid)
        return found

    async def count(self) -> int:
        """Return how many clients are registered."""
        async with self._manager.registry_transaction() as conn:
            return await ClientRegistry(conn).count()

    async def rotate_key(self, client: str) -> IssuedKey:
        """Revoke every key of `client` and return a new one."""
        cid = client_id(client)
        key, digest, prefix = _new_key()
        async with self._manager.registry_transaction() as conn:
            registry = ClientRegistry(conn)
            found = await registry.get_client(cid)
            if found is None:
                raise ClientNotFound(f"client {cid!r} not found", client_id=cid)
            revoked = await registry.delete_keys(cid)
            await registry.add_key(cid, digest, prefix)
            await notify.notify(conn, notify.KEYS, cid)
        self.forget_keys()
        log.info("client.key_rotated", client_id=cid, revoked=revoked)
        return IssuedKey(Client(cid, found.created_at, (prefix,)), key)

    async def delete(self, client: str) -> None:
        """Remove `client`, its keys and its schema with all its data."""
        cid = client_id(client)
        async with self._manager.registry_transaction() as conn:
            if not await ClientRegistry(conn).delete_client(cid):
                raise ClientNotFound(f"client {cid!r} not found", client_id=cid)
            await drop_keystore(conn, cid)  # its WhatsApp keys (whatsmeow's role and schema) go too
            await self._manager.drop_client_schema(cid, conn)
            await notify.notify(conn, notify.KEYS, cid)
        self.forget_keys()
        self._manager.forget(cid)
        if self._media is not None and self._media.name != StoreName.POSTGRES:
            await self._media.delete_client(cid)  # the schema's media rows and chunks went with it; a bucket's now
        log.info("client.deleted", client_id=cid)

    async def ensure_schema(self, client: str) -> None:
        """Create or migrate `client`'s schema to the newest revision."""
        await self._manager.get_connection(client)

    async def authenticate(self, api_key: str | None) -> ClientId:
        """Return the client owning `api_key`; raise AuthenticationFailed for a missing or unknown key."""
        if not api_key or not api_key.startswith(KEY_PREFIX) or len(api_key) > 200:
            raise AuthenticationFailed("missing or invalid API key")
        digest = hash_key(api_key)
        known = self._known_keys.get(digest)
        now = time.monotonic()
        if known is not None and known[1] > now:
            return known[0]
        epoch = self._keys_epoch
        async with self._manager.registry_transaction() as conn:
            owner = await ClientRegistry(conn).client_for_key(digest)
        if owner is None:
            raise AuthenticationFailed("missing or invalid API key")
        if self._key_cache_ttl > 0 and epoch == self._keys_epoch:  # else: revoked meanwhile, perhaps this key
            if len(self._known_keys) >= 10_000:
                self._known_keys.clear()
            self._known_keys[digest] = (owner, now + self._key_cache_ttl)
        return owner


def admin_key_matches(expected: str, given: str | None) -> bool:
    """Compare an admin key in constant time."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
