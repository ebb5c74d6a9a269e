"""Worker processes started by `zapgate serve`: restarted when they die, stopped on exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from zapgate.log import get_logger

log = get_logger(__name__)

RESTART_BACKOFF_MAX = 30.0  # seconds between restarts of a worker that keeps dying
STOP_GRACE = 15.0  # seconds a worker gets to stop before it is killed
# a worker that drained itself to be replaced (too many abandoned engine clients) exits with this code
# (services/worker.py EXIT_TO_BE_REPLACED): replaced at once, not counted as a crash
EXIT_TO_BE_REPLACED = 75


class WorkerSupervisor:
    """Keep `count` `zapgate worker` processes running."""

    def __init__(self, count: int, env: Mapping[str, str], command: Sequence[str] | None = None) -> None:
        self._count = count
        self._env = dict(env)
        self._command = list(command or [sys.executable, "-m", "zapgate", "worker"])
        self.replaced = 0  # workers that asked to be replaced and were
        self._children: list[subprocess.Popen[bytes] | None] = [None] * count
        self._failures = [0] * count
        self._next_start = [0.0] * count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    @property
    def pids(self) -> list[int]:
        """The process ids of the running workers."""
        return [child.pid for child in self._children if child is not None and child.poll() is None]

    def start(self) -> None:
        """Start the workers and watch them."""
        for index in range(self._count):
            self._spawn(index)
        self._thread.start()

    def stop(self) -> None:
        """Stop the workers (SIGTERM, then SIGKILL after STOP_GRACE seconds)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        running = [child for child in self._children if child is not None and child.poll() is None]
        for child in running:
            child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in running:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker.killed", pid=child.pid)
                child.kill()
                child.wait()

    def _spawn(self, index: int) -> None:
        child = subprocess.Popen(
            self._command,
            env=self._env,
            stdin=subprocess.DEVNULL,
        )
        self._children[index] = child
        log.info("worker.spawned", index=index, pid=child.pid)

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            for index, child in enumerate(self._children):
                if child is None or child.poll() is None:
                    if child is not None and self._failures[index] and time.monotonic() > self._next_start[index] + 60:
                        self._failures[index] = 0  # it stayed up a minute: forgive
                    continue
                now = time.monotonic()
                if now < self._next_start[index]:
                    continue
                if child.returncode == EXIT_TO_BE_REPLACED:
                    log.info("worker.replaced", index=index, pid=child.pid)
                    self.replaced += 1
                    self._children[index] = None
                    self._respawn(index)
                    continue
                self._failures[index] += 1
                delay = min(RESTART_BACKOFF_MAX, 0.5 * 2 ** (self._failures[index] - 1))
                log.warning("worker.died", index=index, pid=child.pid, code=child.returncode, restart_in_s=delay)
                self._next_start[index] = now + delay
                self._children[index] = None
                threading.Timer(delay, self._respawn, args=(index,)).start()

    def _respawn(self, index: int) -> None:
        if not self._stop.is_set() and self._children[index] is None:
            self._spawn(index)


def worker_environment(database_url: str) -> dict[str, str]:
    """Return the environment a worker runs with: ours, pointed at the same database."""
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url
    return env
