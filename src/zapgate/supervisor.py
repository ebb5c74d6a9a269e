"""Worker processes started by `zapgate serve`: restarted when they die, stopped on exit, and dying with it.

A worker must never outlive its `serve` (it would run beside the next one's, then against a database that is
gone). Three ties, from the strongest: on Linux the kernel sends the worker SIGTERM when the thread that
started it ends (PR_SET_PDEATHSIG, armed by the worker at start); everywhere the worker checks that its parent
is still the supervisor that started it (`ParentWatch`) and stops, with a hard deadline; and a starting
`serve` terminates the workers an earlier one left on this machine and database (`reap_orphans`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

import psutil

from zapgate.log import get_logger

log = get_logger(__name__)

RESTART_BACKOFF_MAX = 30.0  # seconds between restarts of a worker that keeps dying
STOP_GRACE = 15.0  # seconds a worker gets to stop before it is killed
# a worker that drained itself to be replaced (too many abandoned engine clients) exits with this code
# (services/worker.py EXIT_TO_BE_REPLACED): replaced at once, not counted as a crash
EXIT_TO_BE_REPLACED = 75
SUPERVISOR_PID_VARIABLE = "ZAPGATE_SUPERVISOR_PID"  # set in a worker's environment by the serve that started it
ORPHAN_EXIT_DEADLINE = 10.0  # seconds an orphaned worker gets to stop cleanly before it exits regardless
PARENT_CHECK_INTERVAL = 1.0  # seconds between checks that the supervisor still lives
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


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
        # every worker is started from this thread, which lives until stop(): a worker's parent-death signal
        # fires when the thread that forked it ends, so a worker started from a short-lived thread would die
        for index in range(self._count):
            self._spawn(index)
        while not self._stop.wait(0.5):
            for index, child in enumerate(self._children):
                if child is None:
                    if time.monotonic() >= self._next_start[index] and not self._stop.is_set():
                        self._spawn(index)  # restart after its backoff
                    continue
                if child.poll() is None:
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
                    self._spawn(index)
                    continue
                self._failures[index] += 1
                delay = min(RESTART_BACKOFF_MAX, 0.5 * 2 ** (self._failures[index] - 1))
                log.warning("worker.died", index=index, pid=child.pid, code=child.returncode, restart_in_s=delay)
                self._next_start[index] = now + delay
                self._children[index] = None


def worker_environment(database_url: str) -> dict[str, str]:
    """Return the environment a worker runs with: ours, pointed at the same database."""
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url
    env[SUPERVISOR_PID_VARIABLE] = str(os.getpid())
    return env


def die_with_parent() -> bool:
    """Ask the kernel to send this process SIGTERM when its parent ends (Linux); return whether it could."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


class ParentWatch:
    """Tell when the supervisor that started this worker is gone (its parent changed), on every OS."""

    def __init__(self, supervisor_pid: int) -> None:
        self.supervisor_pid = supervisor_pid

    @property
    def orphaned(self) -> bool:
        """True once this process's parent is no longer its supervisor (re-parented to init or a subreaper)."""
        return os.getppid() != self.supervisor_pid

    def exit_after(self, deadline: float = ORPHAN_EXIT_DEADLINE) -> None:
        """Exit the process in `deadline` seconds, whatever it is doing (a clean stop may wait on a lost database)."""

        def hard_exit() -> None:
            log.error("worker.orphan_exit", reason="the supervisor is gone and the clean stop took too long")
            os._exit(1)

        timer = threading.Timer(deadline, hard_exit)
        timer.daemon = True
        timer.start()


def reap_orphans(database_url: str, grace: float = 5.0) -> list[int]:
    """Terminate the workers an earlier `serve` on this machine left running on `database_url`; return their pids.

    A worker is an orphan when its environment names a supervisor (SUPERVISOR_PID_VARIABLE) that is no
    longer its parent. Workers of other databases, of live supervisors and standalone ones are left alone.
    """
    orphans = []
    me = os.getpid()
    for process in psutil.process_iter(["pid", "ppid", "cmdline"]):
        try:
            if process.info["pid"] == me or "worker" not in (process.info["cmdline"] or ()):
                continue
            env = process.environ()
            supervisor = env.get(SUPERVISOR_PID_VARIABLE)
            if supervisor is None or env.get("DATABASE_URL") != database_url:
                continue
            if supervisor.isdigit() and int(supervisor) == process.info["ppid"] and psutil.pid_exists(int(supervisor)):
                continue  # its serve still runs (another one on the same database)
            process.terminate()
            orphans.append(process)
        except psutil.Error:  # gone meanwhile, or not ours to read
            continue
    if orphans:
        log.warning("worker.orphans_terminated", pids=[p.pid for p in orphans])
        _, alive = psutil.wait_procs(orphans, timeout=grace)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
    return [p.pid for p in orphans]
