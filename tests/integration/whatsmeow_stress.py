"""Stress neonize's Go core through WhatsmeowEngine: concurrent starts and stops while threads query status.

Run as a script (the test runs it in a subprocess, so a Go abort, exit 134, fails the test instead of pytest).
Offline, every start creates its Go client, writes Go's global maps and fails at the dial.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import threading
import time

from zapgate.engines import whatsmeow
from zapgate.engines.base import EngineEvent, SessionRef, StartMode, StartRequest, StatusChanged
from zapgate.engines.whatsmeow import WhatsmeowEngine

SESSIONS = int(os.environ.get("STRESS_SESSIONS", "100"))
ROUNDS = int(os.environ.get("STRESS_ROUNDS", "10"))
CLIENTS = 5  # sessions share a few keystores (SQLite files here: the store kind is not what is stressed)
STORE = os.environ.get("STRESS_STORE", "")  # e.g. ":memory:" for a throwaway SQLite store per start


class _NoGate(whatsmeow._Gate):
    """The control experiment (STRESS_UNGATED=1): no serialisation at all."""

    def acquire_shared(self) -> None: ...
    def release_shared(self) -> None: ...
    def acquire_exclusive(self) -> None: ...
    def release_exclusive(self) -> None: ...


async def main() -> int:
    if os.environ.get("STRESS_UNGATED"):
        whatsmeow._GATE = _NoGate()
    folder = tempfile.mkdtemp(prefix="zapgate-wm-stress-")
    finals: list[StatusChanged] = []

    def sink(event: EngineEvent) -> None:
        if isinstance(event, StatusChanged) and event.status in ("failed", "stopped"):
            finals.append(event)

    engine = WhatsmeowEngine(sink, lambda cid: STORE or os.path.join(folder, cid + ".db"), reconnect_attempts=0)
    refs = [SessionRef(f"c{i % CLIENTS}", f"s{i}") for i in range(SESSIONS)]
    done = threading.Event()
    queries = [0]

    def query_status() -> None:
        rng = random.Random()
        while not done.is_set():
            engine.is_connected(rng.choice(refs))
            queries[0] += 1

    pollers = [threading.Thread(target=query_status, daemon=True) for _ in range(3)]
    for poller in pollers:
        poller.start()
    started = time.perf_counter()
    for round_no in range(ROUNDS):
        finals.clear()
        await asyncio.gather(*(engine.start(StartRequest(ref, StartMode.QR)) for ref in refs))
        await asyncio.sleep(random.uniform(0, 0.05))
        await asyncio.gather(*(engine.stop(ref) for ref in refs))
        await asyncio.sleep(0.05)  # let the last events land
        hosted = sum(engine.hosts(ref) for ref in refs)
        # every session ended: stopped on request (which reports no status) or failed at the dial first
        stopped_twice = len(finals) - len({event.ref for event in finals})
        if hosted or stopped_twice:
            sys.stderr.write(f"round {round_no}: {hosted} still hosted, {stopped_twice} sessions ended twice\n")
            return 1
    done.set()
    await engine.close()
    elapsed = time.perf_counter() - started
    sys.stdout.write(f"ok rounds={ROUNDS} sessions={SESSIONS} status_queries={queries[0]} seconds={elapsed:.1f}\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
