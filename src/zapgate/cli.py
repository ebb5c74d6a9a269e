"""The `zapgate` command: serve, migrate and manage clients. Thin calls into services."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from pydantic import ValidationError

from zapgate import __version__
from zapgate.errors import InvalidRequest, ZapgateError
from zapgate.log import configure_logging, get_logger
from zapgate.settings import Settings, describe_settings_error

if TYPE_CHECKING:
    from zapgate.supervisor import ParentWatch

T = TypeVar("T")


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"zapgate: {message}", err=True)
    sys.exit(code)


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{name: value for name, value in overrides.items() if value is not None})
    except ValidationError as exc:
        _fail(describe_settings_error(exc), 2)


def _database(settings: Settings) -> AbstractContextManager[str]:
    from zapgate.db.embedded import open_database

    if settings.database_url is None:
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _fail(f"ZAPGATE_DATA_DIR: cannot create {settings.data_dir}: {exc.strerror}", 2)
    return open_database(settings.database_url, settings.data_dir)


def _run_with_services(settings: Settings, action: Callable[[Any], Awaitable[T]], *, sessions: bool = False) -> T:
    """Open the database, run `action(service)` and close everything; errors become one line.

    The service is the ClientService, or with `sessions` the SessionService.
    """
    from zapgate.db.manager import ConnectionManager
    from zapgate.services.clients import ClientService
    from zapgate.services.quotas import QuotaService, default_quotas
    from zapgate.services.sessions import SessionService

    async def main(url: str) -> T:
        async with ConnectionManager(
            url, pool_size=2, pool_timeout=settings.db_pool_timeout, registered_only=True
        ) as manager:
            await manager.migrate_registry()
            if sessions:
                quotas = QuotaService(manager, default_quotas(settings))
                return await action(SessionService(manager, default_engine=settings.default_engine, quotas=quotas))
            return await action(ClientService(manager))

    try:
        with _database(settings) as url:
            return asyncio.run(main(url))
    except InvalidRequest as exc:
        _fail(exc.message, 2)
    except ZapgateError as exc:
        _fail(exc.message, 1)


def _run_fast(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop, as `serve` runs the API, where uvloop exists (README "Performance")."""
    if sys.platform == "win32":  # uvloop has no Windows build
        return asyncio.run(main)
    import uvloop

    return uvloop.run(main)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)  # a requested stop is a clean stop


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="zapgate")
def main() -> None:
    """zapgate: a self-hosted, multi-tenant WhatsApp gateway."""


@main.command()
@click.option("--host", default=None, help="Address to listen on [ZAPGATE_HOST, default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on [ZAPGATE_PORT, default 8000].")
def serve(host: str | None, port: int | None) -> None:
    """Run the API and ZAPGATE_WORKERS workers (and, when DATABASE_URL is unset, an embedded PostgreSQL)."""
    _serve(_settings(host=host, port=port))


@main.command()
@click.option("--host", default=None, help="Address to listen on [ZAPGATE_HOST, default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on [ZAPGATE_PORT, default 8000].")
def api(host: str | None, port: int | None) -> None:
    """Run the API alone, without workers (`serve` with ZAPGATE_WORKERS=0): run `zapgate worker` elsewhere."""
    _serve(_settings(host=host, port=port, workers=0))


def _serve(settings: Settings) -> None:
    import uvicorn

    from zapgate.api.app import create_app
    from zapgate.api.protocol import HttpProtocol

    configure_logging(settings.log_level, settings.log_format)
    # uvicorn re-raises SIGTERM after its graceful shutdown: turn it into SystemExit so that the embedded
    # PostgreSQL is left (and stopped) on the way out instead of the process dying on the spot
    signal.signal(signal.SIGTERM, _exit_on_signal)
    from zapgate.supervisor import WorkerSupervisor, reap_orphans, worker_environment

    # uvloop and httptools: measured beside h11 + asyncio and granian (benchmarks/http_servers.py, README)
    server: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "asyncio" if sys.platform == "win32" else "uvloop",  # uvloop has no Windows build
        "http": HttpProtocol,  # httptools, with a response's head and body written at once (api/protocol.py)
        "log_config": None,
        "access_log": settings.log_level == "debug",
        "timeout_graceful_shutdown": 10,
    }
    try:
        with _database(settings) as url:
            reap_orphans(url)  # workers an earlier serve left (killed where no parent-death signal exists)
            app: Any  # the app, or the import string of its factory for several processes
            if settings.api_processes == 1:
                app = create_app(settings, url)
            else:
                # several processes accept on one socket, bound here; uvicorn restarts one that dies. Each builds
                # its app (and runs its lifespan: pool, listeners, Socket.IO) from the environment, as a worker does
                os.environ["DATABASE_URL"] = url
                app = "zapgate.api.app:app_from_environment"
                server.update(factory=True, workers=settings.api_processes)
            supervisor = WorkerSupervisor(settings.workers, worker_environment(url))
            supervisor.start()
            try:
                uvicorn.run(app, **server)
            finally:
                supervisor.stop()
    except ZapgateError as exc:
        _fail(exc.message)


@main.command()
def worker() -> None:
    """Host sessions: claim them, keep their WhatsApp connections, send and receive (`serve` starts these)."""
    from zapgate.supervisor import ParentWatch, die_with_parent

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    watch = None
    if settings.supervisor_pid is not None:
        die_with_parent()  # Linux: SIGTERM when serve's supervising thread ends, whatever killed it
        watch = ParentWatch(settings.supervisor_pid)
        if watch.orphaned:  # serve died before the signal was armed
            _fail("the zapgate serve that started this worker is gone")
    try:
        with _database(settings) as url:
            code, abandoned = _run_fast(_run_worker(settings, url, watch))
    except ZapgateError as exc:
        _fail(exc.message)
    if abandoned:
        # an abandoned Go client runs on a thread that is not a daemon (neonize client.py connect): the
        # interpreter would wait for it for ever; what it holds dies with the process
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


async def _run_worker(settings: Settings, url: str, watch: ParentWatch | None = None) -> tuple[int, int]:
    """Run a worker until SIGTERM/SIGINT, its supervisor's end, or until it drains itself.

    Returns (exit code, clients abandoned).
    """
    from zapgate.db.manager import ConnectionManager
    from zapgate.engines import registry
    from zapgate.heap import freeze_startup_objects
    from zapgate.media.factory import media_store
    from zapgate.services.media import MediaFiles
    from zapgate.services.retention import Pruner, retention_defaults
    from zapgate.services.webhook_dispatcher import WebhookDispatcher, webhook_retry
    from zapgate.services.webhooks import webhook_policy
    from zapgate.services.worker import EXIT_TO_BE_REPLACED, Worker, worker_options

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watching = asyncio.ensure_future(_watch_parent(watch, stop)) if watch is not None else None
    async with ConnectionManager(
        url,
        pool_size=min(settings.db_pool_size, 10),
        pool_timeout=settings.db_pool_timeout,
        health_interval=settings.db_health_interval,
        idle_timeout=settings.db_idle_timeout,
        registered_only=True,
    ) as manager:
        await manager.migrate_registry()
        worker = Worker(
            manager,
            url,
            registry.available(settings.offered_engines),
            capacity=settings.max_sessions,
            lease_ttl=settings.lease_ttl,
            qr_timeout=settings.qr_timeout_ms / 1000,
            max_qr_codes=settings.max_qr_codes,
            session_timeout=settings.session_timeout_ms / 1000,
            options=worker_options(settings),
            media=MediaFiles(
                manager,
                media_store(settings, manager),
                link_ttl=settings.media_link_ttl,
                public_url=settings.public_url,
            ),
        )
        dispatcher = WebhookDispatcher(
            manager,
            url,
            policy=webhook_policy(settings),
            retry=webhook_retry(settings),
            timeout=settings.webhook_timeout,
            concurrency=settings.webhook_concurrency,
            sweep_interval=settings.webhook_sweep_interval,
            worker_id=worker.worker_id,
            client_labels=settings.metrics_client_labels,
        )
        pruner = Pruner(manager, worker.worker_id, retention_defaults(settings), media=worker.media)
        await worker.start()
        await dispatcher.start()
        await pruner.start()
        freeze_startup_objects()
        try:
            await asyncio.wait(
                [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(worker.exhausted.wait())],
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            if watching is not None:
                watching.cancel()
            await pruner.close()
            await dispatcher.close()
            await worker.close()
        # drained: a fresh process (its supervisor, or the orchestrator) takes over
        return (EXIT_TO_BE_REPLACED if worker.exhausted.is_set() else 0), worker.abandoned


async def _watch_parent(watch: ParentWatch, stop: asyncio.Event) -> None:
    """Stop the worker once its supervisor is gone; exit regardless if the clean stop outlasts a deadline."""
    from zapgate.background import wait_set
    from zapgate.supervisor import PARENT_CHECK_INTERVAL

    while not watch.orphaned:
        if await wait_set(stop, PARENT_CHECK_INTERVAL):
            return  # stopping anyway
    get_logger(__name__).warning("worker.orphaned", supervisor_pid=watch.supervisor_pid)
    watch.exit_after()  # a clean stop waits for a database that may have gone with serve
    stop.set()


@main.command()
def migrate() -> None:
    """Migrate the registry and every registered client's schema to the newest revision."""
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)

    async def action(service: Any) -> int:
        clients = await service.list()
        for client in clients:
            await service.ensure_schema(client.client_id)
        return len(clients)

    count = _run_with_services(settings, action)
    click.echo(f"registry and {count} client schema(s) at the newest revision")


@main.group()
def clients() -> None:
    """Create, list, re-key and delete clients (tenants)."""


def _quiet_settings() -> Settings:
    settings = _settings()
    configure_logging("warning" if settings.log_level in {"debug", "info"} else settings.log_level, settings.log_format)
    return settings


def _print_key(issued: Any, as_json: bool, verb: str) -> None:
    if as_json:
        click.echo(
            json.dumps(
                {
                    "clientId": issued.client.client_id,
                    "createdAt": issued.client.created_at.isoformat(),
                    "apiKey": issued.api_key,
                }
            )
        )
        return
    click.echo(f"client {issued.client.client_id} {verb}")
    click.echo(f"API key (shown only now, store it safely): {issued.api_key}")


@clients.command("create")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def clients_create(client_id: str, as_json: bool) -> None:
    """Register CLIENT_ID, create its schema and print its API key."""
    from zapgate.domain.ids import client_id as valid_client_id

    try:
        valid_client_id(client_id)  # refused before anything starts
    except InvalidRequest as exc:
        _fail(exc.message, 2)
    issued = _run_with_services(_quiet_settings(), lambda service: service.create(client_id))
    _print_key(issued, as_json, "created")


@clients.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def clients_list(as_json: bool) -> None:
    """List the registered clients."""
    found = _run_with_services(_quiet_settings(), lambda service: service.list())
    if as_json:
        rows = [
            {
                "clientId": c.client_id,
                "createdAt": c.created_at.isoformat(),
                "keyPrefixes": list(c.key_prefixes),
            }
            for c in found
        ]
        click.echo(json.dumps(rows))
        return
    if not found:
        click.echo("no clients yet: create one with `zapgate clients create ID`")
        return
    click.echo(f"{'CLIENT':<48}  {'CREATED':<25}  KEYS")
    for c in found:
        created = c.created_at.isoformat(timespec="seconds")
        click.echo(f"{c.client_id:<48}  {created:<25}  {', '.join(p + '…' for p in c.key_prefixes)}")


@clients.command("rotate-key")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def clients_rotate_key(client_id: str, as_json: bool) -> None:
    """Revoke every key of CLIENT_ID and print a new one."""
    from zapgate.domain.ids import client_id as valid_client_id

    try:
        valid_client_id(client_id)
    except InvalidRequest as exc:
        _fail(exc.message, 2)
    issued = _run_with_services(_quiet_settings(), lambda service: service.rotate_key(client_id))
    _print_key(issued, as_json, "has a new key; the old ones no longer work")


@clients.command("delete")
@click.argument("client_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def clients_delete(client_id: str, yes: bool) -> None:
    """Delete CLIENT_ID with its keys and all its data (its schema is dropped)."""
    from zapgate.domain.ids import client_id as valid_client_id

    try:
        valid_client_id(client_id)
    except InvalidRequest as exc:
        _fail(exc.message, 2)
    if not yes and not click.confirm(f"Delete client {client_id} and all its data?", default=False, err=True):
        _fail("aborted, nothing deleted", 1)
    _run_with_services(_quiet_settings(), lambda service: service.delete(client_id))
    click.echo(f"client {client_id} deleted")


@main.group()
def sessions() -> None:
    """Create, inspect and drive sessions (WhatsApp numbers) of a client; pair sandbox sessions."""


def _session_line(session: Any) -> str:
    phone = session.phone_number or "-"
    updated = f"{session.updated_at:%Y-%m-%d %H:%M:%S}"
    return f"{session.session_id:<24}  {session.status:<12}  {session.engine:<9}  {phone:<16}  {updated}"


def _sessions_call(action: Callable[[Any], Awaitable[T]]) -> T:
    return _run_with_services(_quiet_settings(), action, sessions=True)


@sessions.command("create")
@click.argument("client_id")
@click.argument("session_id")
@click.option("--engine", type=click.Choice(["whatsmeow", "sandbox"]), help="Default: ZAPGATE_DEFAULT_ENGINE.")
@click.option("--phone", "phone_number", help="Pair by a code for this number instead of by QR code.")
def sessions_create(client_id: str, session_id: str, engine: str | None, phone_number: str | None) -> None:
    """Create SESSION_ID for CLIENT_ID; a worker starts it (QR code, or pairing code with --phone)."""
    created = _sessions_call(lambda s: s.create(client_id, session_id, engine=engine, phone_number=phone_number))
    click.echo(f"session {created.session_id} created on {created.engine}; a worker starts it now")


@sessions.command("list")
@click.argument("client_id")
def sessions_list(client_id: str) -> None:
    """List CLIENT_ID's sessions."""
    found = _sessions_call(lambda s: s.list(client_id))
    if not found:
        click.echo("no sessions yet: create one with `zapgate sessions create CLIENT SESSION`")
        return
    click.echo(f"{'SESSION':<24}  {'STATUS':<12}  {'ENGINE':<9}  {'PHONE':<16}  UPDATED")
    for session in found:
        click.echo(_session_line(session))


@sessions.command("show")
@click.argument("client_id")
@click.argument("session_id")
def sessions_show(client_id: str, session_id: str) -> None:
    """Show a session; while it shows a QR code, print it to scan from the terminal."""
    import segno

    view = _sessions_call(lambda s: s.get(client_id, session_id))
    session = view.session
    click.echo(_session_line(session))
    if session.last_error:
        click.echo(f"last error: {session.last_error}")
    if session.pairing_code:
        click.echo(f"pairing code: {session.pairing_code}")
    if session.qr_code:
        segno.make(session.qr_code, error="l").terminal(compact=True)
        click.echo(f"QR code valid until {session.qr_expires_at:%H:%M:%S}")


@sessions.command("send")
@click.argument("client_id")
@click.argument("session_id")
@click.argument("to")
@click.argument("text")
def sessions_send(client_id: str, session_id: str, to: str, text: str) -> None:
    """Send TEXT to TO (a phone number with country code, or a JID); prints the message id."""
    accepted = _sessions_call(lambda s: s.send_text(client_id, session_id, to, text))
    click.echo(f"{accepted.message_id} {accepted.status}")


def _session_action(name: str, verb: str, doc: str) -> None:
    @sessions.command(name)
    @click.argument("client_id")
    @click.argument("session_id")
    def command(client_id: str, session_id: str) -> None:
        _sessions_call(lambda s: getattr(s, verb)(client_id, session_id))
        click.echo(f"session {session_id}: {name} requested")

    command.__doc__ = doc


_session_action("restart", "restart", "Start the session again (restored from its keys when linked).")
_session_action("stop", "stop", "Disconnect the session, keeping its keys.")
_session_action("logout", "logout", "Unlink the session from the phone and delete its keys.")
_session_action("delete", "delete", "Delete the session with its contacts and messages.")


@sessions.command("scan")
@click.argument("client_id")
@click.argument("session_id")
@click.argument("phone")
def sessions_scan(client_id: str, session_id: str, phone: str) -> None:
    """Sandbox: a simulated phone with number PHONE scans the session's QR code."""
    _sessions_call(lambda s: s.sandbox_scan(client_id, session_id, phone))
    click.echo(f"the simulated phone {phone} scanned the QR code of {session_id}")


@sessions.command("enter-code")
@click.argument("client_id")
@click.argument("session_id")
@click.argument("code")
def sessions_enter_code(client_id: str, session_id: str, code: str) -> None:
    """Sandbox: the simulated phone types the session's pairing CODE."""
    _sessions_call(lambda s: s.sandbox_enter_code(client_id, session_id, code))
    click.echo(f"the simulated phone entered the pairing code of {session_id}")


@sessions.command("inject")
@click.argument("client_id")
@click.argument("session_id")
@click.argument("sender")
@click.argument("text")
def sessions_inject(client_id: str, session_id: str, sender: str, text: str) -> None:
    """Sandbox: deliver TEXT to the session as if SENDER's phone wrote it."""
    message_id = _sessions_call(lambda s: s.sandbox_inject(client_id, session_id, sender, text))
    click.echo(message_id)
