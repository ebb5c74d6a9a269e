"""The client's webhooks, for the API: create, list, change, delete and rotate them; list and redeliver deliveries.

Every call validates its input (with the rules of `domain/webhooks.py`) before it changes anything, and each
change is announced with NOTIFY so that workers look again; the delivery itself is the WebhookDispatcher's
(`services/webhook_dispatcher.py`), in workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db import notify
from zapgate.db import webhooks as store
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.db.notify import WEBHOOKS
from zapgate.domain.ids import ClientId, new_id, schema_for
from zapgate.domain.ids import client_id as valid_client_id
from zapgate.domain.storable import storable_or_none
from zapgate.domain.webhooks import (
    AddressPolicy,
    Delivery,
    Webhook,
    address_refusal,
    checked_secret,
    delivery_cursor,
    delivery_status,
    event_names,
    literal_address,
    new_secret,
    parse_url,
    rotation_overlap,
    session_names,
)
from zapgate.errors import DeliveryNotFound, InvalidRequest, InvalidWebhook, WebhookNotFound
from zapgate.log import get_logger
from zapgate.services.messages import MAX_PAGE, Page
from zapgate.services.quotas import QuotaService
from zapgate.services.webhook_sender import resolve
from zapgate.settings import Settings

log = get_logger(__name__)
T = TypeVar("T")

DEFAULT_OVERLAP = 86_400.0  # seconds the previous secret keeps signing after a rotation
RESOLVE_TIMEOUT = 5.0  # seconds to resolve a webhook's host when it is created or changed


def webhook_policy(settings: Settings) -> AddressPolicy:
    """The destinations webhooks may reach besides the public internet, as configured."""
    return AddressPolicy(allow_loopback=settings.webhook_allow_loopback, allow_private=settings.webhook_allow_private)


@dataclass(frozen=True, slots=True)
class NewWebhook:
    """A webhook to create."""

    url: str
    events: Sequence[str] | None = None  # None: every event
    sessions: Sequence[str] | None = None  # None: every session
    secret: str | None = None  # None: generated
    enabled: bool = True
    description: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookChanges:
    """The fields of a webhook to change (`fields` names those given; a given None means "every")."""

    fields: frozenset[str]
    url: str | None = None
    events: Sequence[str] | None = None
    sessions: Sequence[str] | None = None
    enabled: bool | None = None
    description: str | None = None


class WebhookService:
    """Create, list, change and delete a client's webhooks; list and redeliver their deliveries."""

    def __init__(
        self,
        manager: ConnectionManager,
        *,
        policy: AddressPolicy,
        resolve: bool = True,
        quotas: QuotaService | None = None,
    ) -> None:
        self._manager = manager
        self._quotas = quotas or QuotaService(manager)
        self._policy = policy
        self._resolve = resolve

    async def _check_url(self, url: str) -> str:
        parsed = parse_url(url, self._policy)
        if self._resolve and literal_address(parsed.host) is None:
            # refused now if it points somewhere forbidden; checked again at every delivery (DNS changes)
            try:
                async with asyncio.timeout(RESOLVE_TIMEOUT):
                    found = await resolve(parsed.host, parsed.port)
            except (OSError, TimeoutError):
                found = []  # not resolvable (yet): deliveries will retry and say why
            for candidate in found:
                address = literal_address(candidate)
                kind = None if address is None else address_refusal(address, self._policy)
                if kind is not None:  # the kind, not the address: internal DNS answers stay internal
                    raise InvalidWebhook(f"url: refused destination: {parsed.host} resolves to {kind}", field="url")
        return parsed.url

    async def _run(self, client: str, fn: Any) -> Any:
        cid = valid_client_id(client)

        async def work(tx: Transaction) -> Any:
            result = await fn(tx.connection, cid)
            await notify.notify(tx.connection, WEBHOOKS, schema_for(cid))  # workers look again
            return result

        return await self._manager.execute_transaction(cid, work)

    async def create(self, client: str, new: NewWebhook) -> Webhook:
        """Create a webhook receiving the client's events from now on; its secret is in the result, this once."""
        url = await self._check_url(new.url)
        events = event_names(new.events)
        sessions = session_names(new.sessions)
        secret = new_secret() if new.secret is None else checked_secret(new.secret)

        async def work(conn: Any, cid: ClientId) -> Webhook:
            await self._quotas.admit_webhook(conn, cid)
            created = await store.insert_webhook(
                conn,
                webhook_id=new_id(),
                url=url,
                event_types=events,
                sessions=sessions,
                secret=secret,
                enabled=new.enabled,
                description=storable_or_none(new.description),
            )
            await store.mark_client(conn, cid)
            return created

        created: Webhook = await self._run(client, work)
        log.info("webhook.created", client_id=client, webhook_id=created.id)
        return created

    async def list(self, client: str) -> list[Webhook]:
        """Return the client's webhooks, oldest first."""
        return await _read(self._manager, client, store.list_webhooks)

    async def get(self, client: str, webhook_id: str) -> Webhook:
        """Return one webhook; WebhookNotFound if the client has none with this id."""
        found = await _read(self._manager, client, lambda conn: store.get_webhook(conn, webhook_id))
        if found is None:
            raise _not_found(webhook_id)
        return found

    async def update(self, client: str, webhook_id: str, changes: WebhookChanges) -> Webhook:
        """Change a webhook; re-enabled, it receives the events logged from then on."""
        values: dict[str, Any] = {}
        if "url" in changes.fields:
            if changes.url is None:
                raise InvalidWebhook("url: a URL is expected", field="url")
            values["url"] = await self._check_url(changes.url)
        if "events" in changes.fields:
            values["events"] = event_names(changes.events)
        if "sessions" in changes.fields:
            values["sessions"] = session_names(changes.sessions)
        if "description" in changes.fields:
            values["description"] = storable_or_none(changes.description)  # free text: no NUL reaches the database
        if "enabled" in changes.fields:
            if changes.enabled is None:
                raise InvalidWebhook("enabled: true or false expected", field="enabled")
            values["enabled"] = changes.enabled

        async def work(conn: Any, cid: ClientId) -> Webhook:
            current = await store.get_webhook(conn, webhook_id)
            if current is None:
                raise _not_found(webhook_id)
            if not values:
                return current
            reenabled = values.get("enabled") is True and not current.enabled
            updated = await store.update_webhook(conn, webhook_id, values, from_now_on=reenabled)
            assert updated is not None
            return updated

        updated: Webhook = await self._run(client, work)
        log.info("webhook.updated", client_id=client, webhook_id=webhook_id, fields=sorted(values))
        return updated

    async def delete(self, client: str, webhook_id: str) -> None:
        """Delete a webhook and its deliveries (those pending are not sent)."""

        async def work(conn: Any, cid: ClientId) -> None:
            if not await store.delete_webhook(conn, webhook_id):
                raise _not_found(webhook_id)
            await store.unmark_client_if_none(conn, cid)

        await self._run(client, work)
        log.info("webhook.deleted", client_id=client, webhook_id=webhook_id)

    async def rotate_secret(
        self, client: str, webhook_id: str, *, secret: str | None = None, overlap: float = DEFAULT_OVERLAP
    ) -> Webhook:
        """Give a webhook a new secret; the old one keeps signing too (a second signature) for `overlap` seconds."""
        overlap = rotation_overlap(overlap)
        fresh = new_secret() if secret is None else checked_secret(secret)

        async def work(conn: Any, cid: ClientId) -> Webhook:
            rotated = await store.rotate_secret(conn, webhook_id, fresh, overlap)
            if rotated is None:
                raise _not_found(webhook_id)
            return rotated

        rotated: Webhook = await self._run(client, work)
        log.info("webhook.secret_rotated", client_id=client, webhook_id=webhook_id, overlap_s=overlap)
        return rotated

    async def deliveries(
        self,
        client: str,
        webhook_id: str,
        *,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Delivery]:
        """A webhook's deliveries, newest first, a page at a time (`status`: only those)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit: 1 to {MAX_PAGE} expected")
        wanted = delivery_status(status)
        before = delivery_cursor(cursor)

        async def read(conn: AsyncConnection) -> list[Delivery]:
            if await store.get_webhook(conn, webhook_id) is None:
                raise _not_found(webhook_id)
            return await store.list_deliveries(conn, webhook_id, status=wanted, before_id=before, limit=limit + 1)

        found = await _read(self._manager, client, read)
        items = found[:limit]
        return Page(items, str(items[-1].id) if len(found) > limit else None)

    async def redeliver(self, client: str, webhook_id: str, delivery_id: int) -> Delivery:
        """Queue a delivery's event again, as a new delivery at the end of the webhook's queue."""

        async def work(conn: Any, cid: ClientId) -> Delivery:
            if await store.get_webhook(conn, webhook_id) is None:
                raise _not_found(webhook_id)
            queued = await store.redeliver(conn, webhook_id, delivery_id)
            if queued is None:
                raise DeliveryNotFound(
                    f"delivery {delivery_id} of webhook {webhook_id!r} not found", delivery_id=delivery_id
                )
            return queued

        queued: Delivery = await self._run(client, work)
        log.info("webhook.redelivery", client_id=client, webhook_id=webhook_id, delivery_id=delivery_id)
        return queued


async def _read(manager: ConnectionManager, client: str, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    async def work(tx: Transaction) -> T:
        return await fn(tx.connection)

    return await manager.execute_transaction(valid_client_id(client), work)


def _not_found(webhook_id: str) -> WebhookNotFound:
    shown = webhook_id if len(webhook_id) <= 64 else webhook_id[:61] + "..."
    return WebhookNotFound(f"webhook {shown!r} not found", webhook_id=shown)
