"""What the health and metrics endpoints report: readiness (database, workers) and the merged metrics."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from zapgate import metrics
from zapgate.db import placements
from zapgate.db.manager import ConnectionManager


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the gateway can do its work, with what was checked."""

    ready: bool
    checks: dict[str, Any] = field(default_factory=dict)


class Observability:
    """Readiness and metrics of the gateway as a whole, seen from an API process."""

    def __init__(self, manager: ConnectionManager, *, lease_ttl: float) -> None:
        self._manager = manager
        self._alive_within = 2 * lease_ttl  # a worker is alive if its heartbeat (every ttl/3) is this recent
        self.process = f"api-{socket.gethostname()}-{os.getpid()}"

    async def readiness(self) -> Readiness:
        """Ready when the database answers and at least one worker is alive to host sessions."""
        if not await self._manager.check_health():
            return Readiness(False, {"database": "unreachable", "workers": "unknown"})
        async with self._manager.registry_transaction() as conn:
            alive = await placements.live_workers(conn, self._alive_within)
        if not alive:
            reason = "no live worker: sessions cannot run (start `zapgate worker`, or serve with ZAPGATE_WORKERS >= 1)"
            return Readiness(False, {"database": "ok", "workers": reason})
        return Readiness(True, {"database": "ok", "workers": f"{len(alive)} alive"})

    async def metrics_text(self) -> bytes:
        """This process's metrics merged with every live worker's and the registry's view, as Prometheus text."""
        async with self._manager.registry_transaction() as conn:
            by_status = await placements.sessions_by_status(conn)
            alive = await placements.live_workers(conn, self._alive_within)
        return metrics.merged_text(metrics.process_text(), self.process, alive, by_status)
