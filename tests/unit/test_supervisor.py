"""The worker supervisor: a worker that drained itself to be replaced is replaced at once; a crash backs off;
workers die with their serve, and a starting serve ends what an earlier one left."""

import os
import subprocess
import sys
import time
from pathlib import Path

from zapgate.supervisor import EXIT_TO_BE_REPLACED, SUPERVISOR_PID_VARIABLE, WorkerSupervisor, reap_orphans


def test_a_worker_that_asks_to_be_replaced_is_replaced_at_once(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    # each start appends a line; the first two ask to be replaced, the third stays up
    script = (
        "import sys, time, pathlib\n"
        f"p = pathlib.Path({str(starts)!r})\n"
        "n = len(p.read_text().splitlines()) if p.exists() else 0\n"
        "p.write_text(p.read_text() + 'x\\n' if p.exists() else 'x\\n')\n"
        f"sys.exit({EXIT_TO_BE_REPLACED}) if n < 2 else time.sleep(60)\n"
    )
    supervisor = WorkerSupervisor(1, {}, command=[sys.executable, "-c", script])
    supervisor.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (starts.exists() and len(starts.read_text().splitlines()) == 3):
            time.sleep(0.05)
        assert supervisor.replaced == 2  # within 10 s: no crash backoff (that would be 0.5 s, then 1 s, ...)
        assert len(supervisor.pids) == 1
    finally:
        supervisor.stop()
    assert len(starts.read_text().splitlines()) == 3


def test_a_starting_serve_terminates_only_the_workers_an_earlier_one_left_on_its_database() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a supervisor that is no longer there
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)", "worker"]

    def start(database_url: str, supervisor: int | None) -> subprocess.Popen[bytes]:
        env = {"DATABASE_URL": database_url}
        if supervisor is not None:
            env[SUPERVISOR_PID_VARIABLE] = str(supervisor)
        return subprocess.Popen(sleeper, env=env)

    orphan = start("postgresql://here/db", gone.pid)
    of_another_database = start("postgresql://elsewhere/db", gone.pid)
    standalone = start("postgresql://here/db", None)
    of_a_live_serve = start("postgresql://here/db", os.getpid())  # its parent is this process: alive
    try:
        reaped = reap_orphans("postgresql://here/db", grace=5)
        assert reaped == [orphan.pid]
        assert orphan.wait(timeout=5) is not None
        assert [p.poll() for p in (of_another_database, standalone, of_a_live_serve)] == [None, None, None]
    finally:
        for process in (orphan, of_another_database, standalone, of_a_live_serve):
            process.kill()
            process.wait()


def test_a_worker_restarted_after_a_crash_is_not_killed_by_its_parent_death_signal(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    # the worker arms the parent-death signal as `zapgate worker` does; the first one crashes at once
    script = (
        "import sys, time, pathlib\n"
        "from zapgate.supervisor import die_with_parent\n"
        "assert die_with_parent()\n"
        f"p = pathlib.Path({str(starts)!r})\n"
        "n = len(p.read_text().splitlines()) if p.exists() else 0\n"
        "p.write_text(p.read_text() + 'x\\n' if p.exists() else 'x\\n')\n"
        "sys.exit(1) if n < 1 else time.sleep(60)\n"
    )
    supervisor = WorkerSupervisor(1, dict(os.environ), command=[sys.executable, "-c", script])
    supervisor.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (starts.exists() and len(starts.read_text().splitlines()) == 2):
            time.sleep(0.05)
        time.sleep(1.5)  # a worker started from a short-lived thread would have been signalled by now
        assert len(starts.read_text().splitlines()) == 2
        assert len(supervisor.pids) == 1
    finally:
        supervisor.stop()
