"""The ASGI application: `create_app(settings, database_url)`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from zapgate import __version__
from zapgate.api import console, problems, realtime
from zapgate.api.connections import Connections
from zapgate.api.guard import RequestGuard
from zapgate.api.request_id import RequestIdMiddleware
from zapgate.api.routes import admin, health, retention, webhooks, whatsapp
from zapgate.db import notify
from zapgate.db.manager import ConnectionManager
from zapgate.db.notify import Listener
from zapgate.heap import freeze_startup_objects
from zapgate.log import get_logger
from zapgate.services.audit import AuditLog
from zapgate.services.clients import ClientService
from zapgate.services.events import EventHub
from zapgate.services.messages import MessageService
from zapgate.services.observability import Observability
from zapgate.services.sessions import SessionService
from zapgate.services.webhooks import WebhookService, webhook_policy
from zapgate.settings import Settings

log = get_logger(__name__)

NO_CLIENT_HINT = (
    "no client yet: create one with `zapgate clients create ID`, "
    "or POST /admin/clients with the admin key (ZAPGATE_ADMIN_KEY)"
)

DESCRIPTION = """
A self-hosted, multi-tenant WhatsApp gateway.

Every `/whatsapp` route takes the client's API key in `X-API-Key` (or `Authorization: Bearer <key>`);
`/admin` routes take `ZAPGATE_ADMIN_KEY`. Errors are `application/problem+json`.
"""


def create_app(settings: Settings, database_url: str) -> FastAPI:
    """Build the application; its lifespan opens the pool, migrates the registry and closes both."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager = ConnectionManager(
            database_url,
            pool_size=settings.db_pool_size,
            pool_timeout=settings.db_pool_timeout,
            health_interval=settings.db_health_interval,
            idle_timeout=settings.db_idle_timeout,
            registered_only=True,
        )
        await manager.start()
        try:
            await manager.migrate_registry()
            clients = ClientService(manager, key_cache_ttl=settings.key_cache_ttl)
            if await clients.count() == 0:
                log.warning("clients.none", hint=NO_CLIENT_HINT)
            app.state.manager = manager
            app.state.clients = clients
            app.state.sessions = SessionService(
                manager,
                default_engine=settings.default_engine,
                send_rate=settings.send_rate,
                send_burst=settings.send_burst,
                coalesce_wakeups=True,
            )
            app.state.messages = MessageService(manager)
            app.state.webhooks = WebhookService(manager, policy=webhook_policy(settings))
            app.state.observability = Observability(manager, lease_ttl=settings.lease_ttl)
            app.state.events = hub = EventHub(manager, database_url)
            app.state.audit = audit = AuditLog(manager)
            app.state.connections = connections = Connections(clients, per_key=settings.max_streams_per_key)
            revocations = Listener(database_url, (notify.KEYS,), on_notify=lambda _c, p: connections.revoked(p))
            await revocations.start()
            await hub.start()
            await audit.start()
            freeze_startup_objects()
            try:
                yield
            finally:
                await sockets.close()
                await connections.close()
                await hub.close()
                await revocations.close()
                await app.state.sessions.close()
                await audit.close()
        finally:
            await manager.close()

    app = FastAPIOffline(
        title="zapgate",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        static_url="/docs/static",
        redoc_url=None,
    )
    app.state.settings = settings
    problems.install(app)
    app.add_middleware(RequestGuard)
    app.add_middleware(RequestIdMiddleware)  # outermost: the guard's answers and its audit carry the id too
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(retention.router)
    app.include_router(whatsapp.router)
    app.include_router(webhooks.router)
    problems.document(app)
    sockets = realtime.mount(app)  # Socket.IO at /socket.io, namespace /whatsapp
    console.mount(app)  # the web console: its page at /, its files at /console/
    return app
