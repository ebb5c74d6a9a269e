"""Sandbox mail is collected whatever happened to the session's hosting (issue 16: texts left in a mailbox)."""

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from tests.support.waiting import eventually
from zapgate import metrics
from zapgate.db.manager import ConnectionManager
from zapgate.engines.base import SessionRef
from zapgate.services.clients import ClientService
from zapgate.services.sessions import SessionService
from zapgate.services.worker import Worker

PHONE_A, PHONE_B = "5511999990001", "5511999990002"


@pytest.fixture
async def sessions(manager: ConnectionManager) -> AsyncIterator[SessionService]:
    await ClientService(manager).create("acme")
    service = SessionService(manager, default_engine="sandbox")
    yield service
    await service.close()


def _worker(manager: ConnectionManager, database_url: str) -> Worker:
    return Worker(manager, database_url, ("sandbox",), capacity=5, lease_ttl=3, qr_timeout=5, poll_interval=0.2)


async def _connect(sessions: SessionService, session_id: str, phone: str) -> None:
    await sessions.create("acme", session_id)

    async def showing_qr() -> bool:
        return (await sessions.get("acme", session_id)).session.qr_code is not None

    await eventually(showing_qr, within=10.0)
    await sessions.sandbox_scan("acme", session_id, phone)
    await eventually(lambda: _status_is(sessions, session_id, "connected"), within=10.0)


async def _status_is(sessions: SessionService, session_id: str, status: str) -> bool:
    return str((await sessions.get("acme", session_id)).session.status) == status


async def _received(manager: ConnectionManager, session_id: str, body: str) -> bool:
    async with manager.engine.connect() as conn:
        found = await conn.scalar(
            text(
                "SELECT count(*) FROM client_acme.messages m JOIN client_acme.sessions s ON s.id = m.session_id "
                "WHERE s.session_id = :sid AND m.direction = 'inbound' AND m.content = :body"
            ),
            {"sid": session_id, "body": body},
        )
    return bool(found)


def _stuck_reports() -> float:
    return metrics.REGISTRY.get_sample_value("zapgate_sandbox_stuck_mail_total") or 0.0


async def test_a_lease_held_on_a_session_nothing_hosts_is_released_and_its_mail_collected(
    manager: ConnectionManager, sessions: SessionService, database_url: str
) -> None:
    """A worker claimed bob, then neither started him nor released him (the start failed, and so did the release,
    on a pool exhausted by a busy machine): its renewals held bob's lease for ever, bob still "connected" from his
    last host, and his mailbox was never collected. The worker releases such a lease; bob is started again."""
    first = _worker(manager, database_url)
    await first.start()
    try:
        await _connect(sessions, "alice", PHONE_A)
        await _connect(sessions, "bob", PHONE_B)
    finally:
        await first.close()  # both released, as by a worker that stopped
    second = _worker(manager, database_url)
    # as left by a claim whose start and release failed: bob leased to the second worker, hosted by nothing
    async with manager.registry_transaction() as conn:
        await conn.execute(
            text(
                "UPDATE placements SET worker_id = :w, lease_expires_at = now() + interval '3 seconds' "
                "WHERE client_id = 'acme' AND session_id = 'bob'"
            ),
            {"w": second.worker_id},
        )
    await second.start()
    try:
        await eventually(lambda: _status_is(sessions, "alice", "connected"), within=10.0)
        await sessions.send_text("acme", "alice", PHONE_B, "for bob, wherever he is")
        await eventually(lambda: _received(manager, "bob", "for bob, wherever he is"), within=15.0)
        assert second.hosted.get(SessionRef("acme", "bob")) is not None
    finally:
        await second.close()


async def test_mail_left_uncollected_is_reported_and_a_session_its_engine_lost_is_started_again(
    manager: ConnectionManager, sessions: SessionService, database_url: str
) -> None:
    """Whatever the cause, mail that waits in the mailbox of a session leased to a worker, handed out to no one,
    past the bound is reported; when the worker hosts the session but its engine does not (nothing collects
    its mail), the session is started again and the mail collected."""
    worker = Worker(
        manager,
        database_url,
        ("sandbox",),
        capacity=5,
        lease_ttl=3,
        qr_timeout=5,
        poll_interval=0.2,
        stuck_mail_after=2.0,
    )
    await worker.start()
    try:
        await _connect(sessions, "alice", PHONE_A)
        await _connect(sessions, "bob", PHONE_B)
        bob = SessionRef("acme", "bob")
        reported = _stuck_reports()
        worker.engine("sandbox").abandon(bob)  # the engine forgets bob; the worker still hosts him, "connected"
        assert bob in worker.hosted
        await sessions.send_text("acme", "alice", PHONE_B, "for bob, whom his engine forgot")
        await eventually(lambda: _received(manager, "bob", "for bob, whom his engine forgot"), within=20.0)
        assert worker.engine("sandbox").hosts(bob)
        assert _stuck_reports() > reported
    finally:
        await worker.close()
