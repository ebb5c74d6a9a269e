"""The worker supervisor: a worker that drained itself to be replaced is replaced at once; a crash backs off."""

import sys
import time
from pathlib import Path

from zapgate.supervisor import EXIT_TO_BE_REPLACED, WorkerSupervisor


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
