"""Where a worker's outbox looks for pending messages: at the session a notification names, at idle sessions
rarely, at held messages when they fall due; and a lease renewal that no busy pool can hold up.

Real PostgreSQL, a real worker, sandbox sessions. Claims are counted by wrapping `outbound.claim_pending_many`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from tests.support.databases import plain_url
from tests.support.waiting import eventually
from zapgate.db import notify, outbound
from zapgate.db.manager import ConnectionManager
from zapgate.domain.phones import jid_user
from zapgate.engines import registry
from zapgate.engines.base import EngineError, SendResult, SessionRef
from zapgate.engines.registry import EngineContext
from zapgate.engines.sandbox import SandboxEngine
from zapgate.services import outbox
from zapgate.services.clients import ClientService
from zapgate.services.outbox import OutboxPolicy
from zapgate.services.sessions import SessionService
from zapgate.services.worker import Worker, WorkerOptions

PHONE_BASE = 5511988000000  # + n: the phone linked to session s<n>
RECIPIENT = "5521977770000"


@pytest.fixture
async def sessions(manager: ConnectionManager) -> SessionService:
    await ClientService(manager).create("acme")
    return SessionService(manager, default_engine="sandbox")


@pytest.fixture
def claims(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every claim of pending messages, counted by session row id."""
    counted: Counter[str] = Counter()
    claim = outbound.claim_pending_many

    async def counting(conn: Any, asks: list[tuple[str, int]]) -> Any:
        counted.update(session_row for session_row, _ in asks)
        return await claim(conn, asks)

    monkeypatch.setattr(outbound, "claim_pending_many", counting)
    return counted


@pytest.fixture
async def start_worker(manager: ConnectionManager, database_url: str) -> AsyncIterator[Callable[..., Any]]:
    started: list[Worker] = []

    async def start(*, poll_interval: float, idle_poll_max: float, lease_ttl: float = 10.0) -> Worker:
        worker = Worker(
            manager,
            database_url,
            ("sandbox",),
            capacity=60,
            qr_timeout=30,
            lease_ttl=lease_ttl,
            poll_interval=poll_interval,
            options=WorkerOptions(outbox=OutboxPolicy(idle_poll_max=idle_poll_max)),
        )
        await worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await worker.close()


async def connect_many(sessions: SessionService, count: int) -> list[str]:
    """Create and link `count` sandbox sessions at once; return their ids."""
    ids = [f"s{n}" for n in range(count)]

    # each look is a transaction on the pool the worker uses too: 50 sessions looked at every 0.05 s (the default)
    # starve the worker of connections on a busy machine, and it then shows no QR code within the time
    async def one(n: int, sid: str) -> None:
        await sessions.create("acme", sid)
        await eventually(lambda: _qr_shown(sessions, sid), every=0.5)
        await sessions.sandbox_scan("acme", sid, str(PHONE_BASE + n))
        await eventually(lambda: _status_is(sessions, sid, "connected"), every=0.5)

    await asyncio.gather(*(one(n, sid) for n, sid in enumerate(ids)))
    return ids


async def _qr_shown(sessions: SessionService, sid: str) -> bool:
    return (await sessions.get("acme", sid)).session.qr_code is not None


async def _status_is(sessions: SessionService, sid: str, status: str) -> bool:
    return (await sessions.get("acme", sid)).session.status == status


async def _session_rows(manager: ConnectionManager) -> dict[str, str]:
    async with manager.engine.connect() as conn:
        return dict((await conn.execute(text("SELECT session_id, id FROM client_acme.sessions"))).all())


async def _left_pending(manager: ConnectionManager, message_id: str) -> bool:
    db = await manager.get_connection("acme")
    found = await db.message.find_unique(message_id)
    return found is not None and found.status != "pending"


async def _sent_within(manager: ConnectionManager, message_id: str, within: float) -> float:
    """Wait until the message left `pending`; return the seconds it took."""
    began = time.monotonic()
    await eventually(lambda: _left_pending(manager, message_id), within=within)
    return time.monotonic() - began


async def _send_unannounced(sessions: SessionService, monkeypatch: pytest.MonkeyPatch, session: str, body: str) -> str:
    """Accept a text with its NOTIFY suppressed (as if the notification were lost); return its id."""
    with monkeypatch.context() as patch:

        async def silent(*_args: Any) -> None:
            return None

        patch.setattr(notify, "notify_many", silent)
        accepted = await sessions.send_text("acme", session, RECIPIENT, body)
    return accepted.message_id


async def test_idle_sessions_cost_a_few_claims_not_one_per_session_per_poll(
    manager: ConnectionManager, sessions: SessionService, start_worker: Any, claims: Counter[str]
) -> None:
    await start_worker(poll_interval=0.5, idle_poll_max=4.0)
    ids = await connect_many(sessions, 50)
    await asyncio.sleep(4.0)  # past the first steps of the back-off (0.5, 1, 2 s)
    before = sum(claims.values())
    await asyncio.sleep(6.0)
    during = sum(claims.values()) - before
    # one look per session every 0.5 s (the poll) would be 600; the back-off's cap of 4 s allows ~75-100
    assert during <= 2.5 * len(ids), during
    rows = await _session_rows(manager)
    assert {rows[sid] for sid in ids} <= set(claims)  # every idle session is still looked at


async def test_a_send_is_claimed_for_its_session_alone_and_goes_at_once(
    manager: ConnectionManager, sessions: SessionService, start_worker: Any, claims: Counter[str]
) -> None:
    await start_worker(poll_interval=0.25, idle_poll_max=30.0)
    ids = await connect_many(sessions, 20)
    await asyncio.sleep(6.0)  # the idle sessions' back-off is past 3 s now: each looks at most once below
    before = Counter(claims)
    took = []
    for n in range(10):
        accepted = await sessions.send_text("acme", ids[0], RECIPIENT, f"hello {n}")
        took.append(await _sent_within(manager, accepted.message_id, within=10))
    rows = await _session_rows(manager)
    looked = {sid: claims[rows[sid]] - before[rows[sid]] for sid in ids}
    assert looked[ids[0]] >= 10
    # before, every notification made every session look: 10 claims each
    assert max(looked[sid] for sid in ids[1:]) <= 2, looked
    assert max(took) < 3.0, took  # at once, not after a back-off (30 s)


async def test_a_lost_notification_delays_a_send_by_the_back_off_cap_at_most(
    manager: ConnectionManager,
    sessions: SessionService,
    start_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await start_worker(poll_interval=0.25, idle_poll_max=2.0)
    [sid] = await connect_many(sessions, 1)
    await asyncio.sleep(5.0)  # idle long enough to look only every 2 s
    message_id = await _send_unannounced(sessions, monkeypatch, sid, "no one was told")
    assert await _sent_within(manager, message_id, within=10) < 2.0 + 1.0


async def test_a_notification_that_names_no_session_wakes_every_session(
    manager: ConnectionManager,
    sessions: SessionService,
    start_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    await start_worker(poll_interval=0.25, idle_poll_max=30.0)
    ids = await connect_many(sessions, 3)
    await asyncio.sleep(4.0)
    waiting = [await _send_unannounced(sessions, monkeypatch, sid, f"to {sid}") for sid in ids]
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        await conn.execute("SELECT pg_notify($1, $2)", notify.OUTBOUND, "not a session name")
    finally:
        await conn.close()
    for message_id in waiting:  # not after the back-off (30 s)
        assert await _sent_within(manager, message_id, within=10) < 5.0


class Flaky(SandboxEngine):
    """The sandbox, whose first send to each number in `flaky` fails with an error that may pass."""

    def __init__(self, context: EngineContext, failures: list[float], sends: list[float]) -> None:
        super().__init__(context.on_event, context.sandbox_network())
        self.failures, self.sends = failures, sends

    async def send_text(self, ref: SessionRef, to: str, text: str, message_id: str) -> SendResult:
        if jid_user(to) == RECIPIENT and not self.failures:
            self.failures.append(time.monotonic())
            raise EngineError("server busy")  # retryable: tried again at next_attempt_at
        result = await super().send_text(ref, to, text, message_id)
        self.sends.append(time.monotonic())
        return result


@pytest.fixture
def flaky() -> Iterator[tuple[list[float], list[float]]]:
    original = registry.spec("sandbox")
    failures: list[float] = []
    sends: list[float] = []
    registry.register(replace(original, build=lambda context: Flaky(context, failures, sends)))
    try:
        yield failures, sends
    finally:
        registry.register(original)


async def test_a_message_held_for_its_next_attempt_goes_when_due_without_a_notification(
    manager: ConnectionManager,
    sessions: SessionService,
    start_worker: Any,
    flaky: tuple[list[float], list[float]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures, sends = flaky
    monkeypatch.setattr(outbox, "RETRY_BASE", 0.5)  # the second attempt is due 0.5 s after the first
    await start_worker(poll_interval=4.0, idle_poll_max=30.0)  # the back-off alone would look after 3-4 s
    [sid] = await connect_many(sessions, 1)
    accepted = await sessions.send_text("acme", sid, RECIPIENT, "second time lucky")
    await eventually(lambda: _left_pending(manager, accepted.message_id), within=15)
    assert len(failures) == 1 and sends
    assert sends[0] - failures[0] < 2.5, sends[0] - failures[0]
    db = await manager.get_connection("acme")
    found = await db.message.find_unique(accepted.message_id)
    assert found is not None and found.attempts == 1


async def test_leases_are_renewed_while_every_pooled_connection_is_busy(
    manager: ConnectionManager, sessions: SessionService, start_worker: Any, database_url: str
) -> None:
    worker = await start_worker(poll_interval=0.25, idle_poll_max=30.0, lease_ttl=1.5)
    [sid] = await connect_many(sessions, 1)
    watcher = await asyncpg.connect(plain_url(database_url))  # outside the pool being held
    try:
        query = "SELECT lease_expires_at, lease_expires_at > clock_timestamp() FROM zapgate.placements"
        async with AsyncExitStack() as held:
            for _ in range(manager.pool_size):
                await held.enter_async_context(manager.engine.connect())
            assert manager.pool_status().idle == 0
            first: datetime = (await watcher.fetchrow(query))[0]
            await asyncio.sleep(4.0)  # more than two lease TTLs with no pooled connection free
            later, alive = await watcher.fetchrow(query)
        assert alive and later > first
    finally:
        await watcher.close()
    assert SessionRef("acme", sid) in worker.hosted  # never lost, never moved
    assert await _status_is(sessions, sid, "connected")
