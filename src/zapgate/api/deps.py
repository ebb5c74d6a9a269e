"""Dependencies shared by the routes: the services of the running app and the credentials of a request.

All are coroutines: FastAPI runs a plain `def` dependency in a worker thread, a hand-off that costs more
than the lookup itself.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from zapgate.db.manager import ConnectionManager
from zapgate.errors import AuthenticationFailed, PermissionDenied
from zapgate.services.audit import AuditLog
from zapgate.services.clients import ClientService, admin_key_matches, key_display_prefix
from zapgate.services.events import EventHub
from zapgate.services.messages import MessageService
from zapgate.services.sessions import SessionService
from zapgate.services.webhooks import WebhookService
from zapgate.settings import Settings


async def get_settings(request: Request) -> Settings:
    """Return the settings the app was built with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_manager(request: Request) -> ConnectionManager:
    """Return the app's ConnectionManager."""
    manager: ConnectionManager = request.app.state.manager
    return manager


async def get_client_service(request: Request) -> ClientService:
    """Return the app's ClientService."""
    service: ClientService = request.app.state.clients
    return service


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
    settings: Annotated[Settings, Depends(get_settings)],
    key: Annotated[str | None, Depends(presented_key)],
) -> None:
    """Let the request through only with the admin key."""
    if settings.admin_key is None:
        raise PermissionDenied("the admin API is disabled: set ZAPGATE_ADMIN_KEY to enable it")
    if not admin_key_matches(settings.admin_key.get_secret_value(), key):
        raise AuthenticationFailed("missing or wrong admin key")


async def get_session_service(request: Request) -> SessionService:
    """Return the app's SessionService."""
    service: SessionService = request.app.state.sessions
    return service


async def client_of_request(
    request: Request,
    clients: Annotated[ClientService, Depends(get_client_service)],
    key: Annotated[str | None, Depends(presented_key)],
) -> str:
    """Return the client whose API key the request carries (401 otherwise); noted for the audit log."""
    client = await clients.authenticate(key)
    request.state.client_id = client
    request.state.actor = key_display_prefix(key or "")
    return client


async def get_event_hub(request: Request) -> EventHub:
    """Return the app's EventHub."""
    hub: EventHub = request.app.state.events
    return hub


async def get_message_service(request: Request) -> MessageService:
    """Return the app's MessageService."""
    service: MessageService = request.app.state.messages
    return service


async def get_audit_log(request: Request) -> AuditLog:
    """Return the app's AuditLog."""
    audit: AuditLog = request.app.state.audit
    return audit


async def get_webhook_service(request: Request) -> WebhookService:
    """Return the app's WebhookService."""
    service: WebhookService = request.app.state.webhooks
    return service


Manager = Annotated[ConnectionManager, Depends(get_manager)]
Sessions = Annotated[SessionService, Depends(get_session_service)]
Clients = Annotated[ClientService, Depends(get_client_service)]
Events = Annotated[EventHub, Depends(get_event_hub)]
AppSettings = Annotated[Settings, Depends(get_settings)]
Messages = Annotated[MessageService, Depends(get_message_service)]
Audit = Annotated[AuditLog, Depends(get_audit_log)]
Webhooks = Annotated[WebhookService, Depends(get_webhook_service)]
