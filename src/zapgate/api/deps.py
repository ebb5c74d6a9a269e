"""Dependencies shared by the routes: the services of the running app and the credentials of a request.

All are coroutines: FastAPI runs a plain `def` dependency in a worker thread, a hand-off that costs more
than the lookup itself.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request

from zapgate.api.limits import ApiLimits, address_of
from zapgate.db.manager import ConnectionManager
from zapgate.errors import AuthenticationFailed, PermissionDenied, TooManyFailures
from zapgate.log import get_logger
from zapgate.services.audit import AuditLog
from zapgate.services.chats import ChatActions
from zapgate.services.clients import ClientService, admin_key_matches, key_display_prefix
from zapgate.services.events import EventHub
from zapgate.services.messages import MessageService
from zapgate.services.quotas import QuotaService
from zapgate.services.sessions import SessionService
from zapgate.services.webhooks import WebhookService
from zapgate.settings import Settings

T = TypeVar("T")
log = get_logger(__name__)


def from_state(name: str, kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A dependency returning the running app's `app.state.<name>` (set by the lifespan), typed `kind`."""

    async def dependency(request: Request) -> T:
        value = getattr(request.app.state, name)
        assert isinstance(value, kind)
        return value

    dependency.__name__ = f"app_{name}"
    return dependency


get_settings = from_state("settings", Settings)


def _limits(request: Request) -> ApiLimits:
    limits = request.app.state.limits
    assert isinstance(limits, ApiLimits)
    return limits


get_client_service = from_state("clients", ClientService)


def key_in_headers(x_api_key: str | None, authorization: str | None) -> str | None:
    """Return the key carried in `X-API-Key` or `Authorization: Bearer` (None when neither has one)."""
    if x_api_key:
        return x_api_key.strip()
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


async def presented_key(
    x_api_key: Annotated[str | None, Header(description="An API key (or use Authorization: Bearer).")] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str | None:
    """Return the key a request carries in `X-API-Key` or `Authorization: Bearer`."""
    return key_in_headers(x_api_key, authorization)


async def require_admin(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    key: Annotated[str | None, Depends(presented_key)],
) -> None:
    """Let the request through only with the admin key; an address that kept guessing waits (429)."""
    if settings.admin_key is None:
        raise PermissionDenied("the admin API is disabled: set ZAPGATE_ADMIN_KEY to enable it")
    failures = _limits(request).admin_failures
    address, now = address_of(request), time.monotonic()
    wait = failures.blocked(address, now)
    if wait > 0:
        raise TooManyFailures("too many wrong admin keys from this address: try again later", retry_after=wait)
    if not admin_key_matches(settings.admin_key.get_secret_value(), key):
        if key is not None:  # a guess (no key at all guesses nothing)
            log.warning("admin.key_refused", address=address, path=request.url.path)
            if failures.fail(address, now):
                log.warning("admin.address_locked_out", address=address, seconds=failures.window)
        raise AuthenticationFailed("missing or wrong admin key")


async def require_metrics_key(
    settings: Annotated[Settings, Depends(get_settings)],
    key: Annotated[str | None, Depends(presented_key)],
) -> None:
    """Let a scrape through with the metrics key (ZAPGATE_METRICS_KEY), or with none when none is set."""
    if settings.metrics_key is not None and not admin_key_matches(settings.metrics_key.get_secret_value(), key):
        raise AuthenticationFailed("missing or wrong metrics key (ZAPGATE_METRICS_KEY)")


async def client_of_request(
    request: Request,
    clients: Annotated[ClientService, Depends(get_client_service)],
    key: Annotated[str | None, Depends(presented_key)],
) -> str:
    """Return the client whose API key the request carries (401 otherwise); noted for the audit log."""
    client = await clients.authenticate(key)
    _limits(request).meter(key)  # refused before it is attributed: a flood writes no audit rows
    request.state.client_id = client
    request.state.actor = key_display_prefix(key or "")
    return client


Manager = Annotated[ConnectionManager, Depends(from_state("manager", ConnectionManager))]
Sessions = Annotated[SessionService, Depends(from_state("sessions", SessionService))]
Clients = Annotated[ClientService, Depends(get_client_service)]
Events = Annotated[EventHub, Depends(from_state("events", EventHub))]
AppSettings = Annotated[Settings, Depends(get_settings)]
Messages = Annotated[MessageService, Depends(from_state("messages", MessageService))]
Audit = Annotated[AuditLog, Depends(from_state("audit", AuditLog))]
Webhooks = Annotated[WebhookService, Depends(from_state("webhooks", WebhookService))]
Quotas = Annotated[QuotaService, Depends(from_state("quotas", QuotaService))]
Chats = Annotated[ChatActions, Depends(from_state("chats", ChatActions))]
