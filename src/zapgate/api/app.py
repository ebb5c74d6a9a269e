"""The ASGI application: `create_app(settings, database_url)`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from zapgate import __version__
from zapgate.api import console, problems, realtime
from zapgate.api.connections import Connections
from zapgate.api.guard import RequestGuard
from zapgate.api.hotpath import HealthHotPath, SendHotPath
from zapgate.api.limits import ApiLimits
from zapgate.api.request_id import RequestIdMiddleware
from zapgate.api.routes import admin, chats, contacts, groups, health, retention, webhooks, whatsapp
from zapgate.api.routes import media as media_routes
from zapgate.db import notify
from zapgate.db.manager import ConnectionManager
from zapgate.db.notify import Listener
from zapgate.heap import freeze_startup_objects
from zapgate.log import configure_logging, get_logger
from zapgate.media.factory import media_store
from zapgate.services.audit import AuditLog
from zapgate.services.chats import ChatActions
from zapgate.services.clients import ClientService
from zapgate.services.contacts import ContactService
from zapgate.services.engine_calls import EngineCalls
from zapgate.services.events import EventHub
from zapgate.services.groups import GroupService
from zapgate.services.media import MediaFiles
from zapgate.services.media_links import LinkFetcher
from zapgate.services.messages import MessageService
from zapgate.services.observability import Observability
from zapgate.services.quotas import QuotaService, default_quotas
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
            store = media_store(settings, manager)
            clients = ClientService(manager, key_cache_ttl=settings.key_cache_ttl, media=store)
            if await clients.count() == 0:
                log.warning("clients.none", hint=NO_CLIENT_HINT)
            app.state.manager = manager
            app.state.clients = clients
            app.state.quotas = quotas = QuotaService(manager, default_quotas(settings))
            app.state.media = media = MediaFiles(
                manager,
                store,
                fetcher=LinkFetcher(webhook_policy(settings)),
                link_ttl=settings.media_link_ttl,
                public_url=settings.public_url,
            )
            app.state.calls = calls = EngineCalls(manager, database_url, timeout=settings.engine_call_timeout)
            app.state.groups = groups = GroupService(manager, calls)  # groups: api/routes/groups.py
            app.state.sessions = SessionService(
                manager,
                default_engine=settings.default_engine,
                send_rate=settings.send_rate,
                send_burst=settings.send_burst,
                coalesce_wakeups=True,
                quotas=quotas,
                media=media,
                invites=groups.invite_message,
            )
            app.state.messages = MessageService(manager)
            app.state.chats = ChatActions(manager, calls)
            app.state.contacts = ContactService(manager, calls)
            app.state.webhooks = WebhookService(manager, policy=webhook_policy(settings), quotas=quotas)
            app.state.observability = Observability(manager, lease_ttl=settings.lease_ttl)
            app.state.events = hub = EventHub(manager, database_url)
            app.state.audit = audit = AuditLog(manager)
            app.state.connections = connections = Connections(clients, per_key=settings.max_streams_per_key)
            revocations = Listener(database_url, (notify.KEYS,), on_notify=lambda _c, p: connections.revoked(p))
            await revocations.start()
            await hub.start()
            await audit.start()
            await calls.start()
            freeze_startup_objects()
            try:
                yield
            finally:
                await sockets.close()
                await connections.close()
                await hub.close()
                await revocations.close()
                await calls.close()
                await media.close()
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
    app.state.limits = ApiLimits.from_settings(settings)  # per API process: see api/limits.py
    problems.install(app)
    app.add_middleware(SendHotPath)  # inside the guard: limited and audited like every other call
    app.add_middleware(RequestGuard)
    app.add_middleware(HealthHotPath)  # liveness probes: answered before the guard and the routes
    app.add_middleware(RequestIdMiddleware)  # outermost: the guard's answers and its audit carry the id too
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(retention.router)
    app.include_router(media_routes.router)  # before whatsapp's: /whatsapp/messages/upload is not a message id
    app.include_router(media_routes.public)
    app.include_router(whatsapp.router)
    app.include_router(contacts.router)
    app.include_router(webhooks.router)
    app.include_router(groups.router)
    app.include_router(groups.sandbox)
    app.include_router(chats.router)  # chats and presence (issue 14)
    problems.document(app)
    # Socket.IO at /socket.io, namespace /whatsapp; behind several API processes, WebSocket only (README)
    sockets = realtime.mount(app, websocket_only=settings.api_processes > 1)
    console.mount(app)  # the web console: its page at /, its files at /console/
    return app


def app_from_environment() -> FastAPI:
    """Build the app from the environment: one of several API processes of `zapgate serve` (uvicorn's factory).

    `serve` put the database's URL (the embedded server's too) in DATABASE_URL before starting them.
    """
    from_environment: dict[str, Any] = {}  # every field from the environment (mypy sees required arguments)
    settings = Settings(**from_environment)
    configure_logging(settings.log_level, settings.log_format)
    if settings.database_url is None:
        raise RuntimeError("DATABASE_URL is not set: API processes are started by `zapgate serve`")
    return create_app(settings, settings.database_url)
