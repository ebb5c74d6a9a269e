"""Worker processes: sessions survive a worker killed with SIGKILL; `serve` keeps its workers alive."""

import asyncio
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.acceptance.support import ADMIN_KEY, ServeFactory, WorkerProcesses, clean_environ
from tests.support.waiting import eventually
from zapgate.db.manager import ConnectionManager
from zapgate.db.placements import get as get_placement
from zapgate.services.clients import ClientService
from zapgate.services.sessions import SessionService


@pytest.fixture
async def workers(database_url: str, tmp_path: Path) -> AsyncIterator[WorkerProcesses]:
    processes = WorkerProcesses(database_url, tmp_path)
    yield processes
    await processes.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_worker_killed_mid_flight_loses_and_duplicates_nothing(
    database_url: str, workers: WorkerProcesses
) -> None:
    first, second = await workers.start(), await workers.start()
    async with ConnectionManager(database_url, pool_size=5) as manager:
        await manager.migrate_registry()
        await ClientService(manager).create("acme")
        sessions = SessionService(manager, default_engine="sandbox")
        db = await manager.get_connection("acme")

        async def connected(session_id: str) -> bool:
            return (await sessions.get("acme", session_id)).session.status == "connected"

        for session_id, phone in (("alice", "5511999990001"), ("bob", "5511999990002")):
            await sessions.create("acme", session_id)
            await eventually(lambda sid=session_id: _has_qr(sessions, sid), every=0.1)
            await sessions.sandbox_scan("acme", session_id, phone)
            await eventually(lambda sid=session_id: connected(sid), every=0.1)

        async with manager.registry_transaction() as conn:
            placement = await get_placement(conn, "acme", "alice")
        assert placement is not None and placement.worker_id is not None
        host_pid = int(placement.worker_id.split("-")[-2])
        victim = first if first.pid == host_pid else second
        assert victim.pid == host_pid

        accepted = []
        for i in range(500):
            message = await sessions.send_text("acme", "alice", "5511999990002", f"message {i}")
            accepted.append(message.message_id)
            if i == 100:
                os.kill(host_pid, signal.SIGKILL)  # mid-flight: some sent, some not recorded, most pending
        await victim.wait()
        assert victim.returncode == -signal.SIGKILL

        alice_row = (await sessions.get("acme", "alice")).session.id
        bob_row = (await sessions.get("acme", "bob")).session.id

        async def all_out() -> bool:
            rows = await db.message.find_many(session_id=alice_row, direction="outbound", limit=1000)
            return len(rows) == 500 and all(m.status in ("sent", "delivered", "read") for m in rows)

        await eventually(all_out, within=90, every=0.1)
        await eventually(lambda: _inbound_count(db, bob_row, 500), within=30, every=0.1)

        # bob knows each message by WhatsApp's id (the sandbox, like WhatsApp, sends under ids of its own; a resend
        # of a message keeps its id there, so its recipient stores it once)
        rows = await db.message.find_many(session_id=alice_row, direction="outbound", limit=1000)
        wa_ids = {m.message_id: m.wa_message_id for m in rows}
        assert set(wa_ids) == set(accepted) and None not in wa_ids.values()
        inbound = await db.message.find_many(session_id=bob_row, direction="inbound", limit=1000)
        assert sorted(m.message_id for m in inbound) == sorted(wa_ids.values())  # every one arrived, once
        events = await db.event.list_after(session_id="alice", types=["message-status"], limit=100_000)
        sent_events = Counter(e.payload["messageId"] for e in events if e.payload["status"] == "sent")
        assert set(sent_events) == set(accepted) and set(sent_events.values()) == {1}
        received = await db.event.list_after(session_id="bob", types=["message-received"], limit=100_000)
        assert Counter(e.payload["messageId"] for e in received) == Counter(wa_ids.values())
        # alice now runs on the surviving worker
        async with manager.registry_transaction() as conn:
            moved = await get_placement(conn, "acme", "alice")
        assert moved is not None and moved.worker_id is not None and str(host_pid) not in moved.worker_id


async def _has_qr(sessions: SessionService, session_id: str) -> bool:
    return (await sessions.get("acme", session_id)).session.qr_code is not None


async def _inbound_count(db: Any, session_row: str, count: int) -> bool:
    return len(await db.message.find_many(session_id=session_row, direction="inbound", limit=1000)) >= count


@pytest.mark.slow
async def test_serve_keeps_its_workers_alive_and_stops_them(
    database_url: str, serve_process: ServeFactory, tmp_path: Path
) -> None:
    env = clean_environ(DATABASE_URL=database_url, ZAPGATE_ADMIN_KEY=ADMIN_KEY, ZAPGATE_WORKERS="2")
    serve = serve_process(env=env)
    await serve.start()
    await serve.wait_healthy()
    parent = psutil.Process(serve.pid)

    def workers() -> list[psutil.Process]:
        found = []
        for child in parent.children():
            try:
                if child.status() != psutil.STATUS_ZOMBIE and "worker" in " ".join(child.cmdline()):
                    found.append(child)
            except psutil.Error:  # gone (or a zombie) meanwhile
                continue
        return found

    await eventually(lambda: _count(workers, 2), every=0.1)
    first = workers()
    first[0].kill()
    await eventually(lambda: _replaced(workers, first[0].pid), within=20, every=0.1)
    pids = [p.pid for p in workers()]
    assert await serve.stop() == 0
    await asyncio.sleep(0.5)
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


async def _count(workers: Callable[[], list[psutil.Process]], n: int) -> bool:
    return len(workers()) == n


async def _replaced(workers: Callable[[], list[psutil.Process]], dead: int) -> bool:
    current = workers()
    return len(current) == 2 and dead not in [p.pid for p in current]


@pytest.mark.slow
async def test_workers_die_with_a_serve_that_was_killed(database_url: str, serve_process: ServeFactory) -> None:
    env = clean_environ(DATABASE_URL=database_url, ZAPGATE_ADMIN_KEY=ADMIN_KEY, ZAPGATE_WORKERS="2")
    serve = serve_process(env=env)
    await serve.start()
    await serve.wait_healthy()
    parent = psutil.Process(serve.pid)

    def workers() -> list[psutil.Process]:
        return [p for p in parent.children() if _alive(p) and "worker" in " ".join(p.cmdline())]

    await eventually(lambda: _count(workers, 2), every=0.1)
    orphans = workers()
    os.kill(serve.pid, signal.SIGKILL)  # no chance to stop them: they must notice by themselves
    try:
        await eventually(lambda: _true(not any(_alive(p) for p in orphans)), within=15, every=0.1)
    finally:
        for process in orphans:  # never leave them running against the test's dropped database
            if _alive(process):
                process.kill()


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


async def _true(value: bool) -> bool:
    return value
