"""What a worker knows of each session it hosts, shared by its parts (leases, recorder, outbox)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from zapgate.db.outbound import Recipient
from zapgate.db.placements import Placement
from zapgate.domain.pacing import Pacing
from zapgate.domain.sessions import SessionStatus
from zapgate.engines.base import Engine, Receipt, SessionRef


@dataclass
class Hosted:
    """One session this worker hosts: its placement, engine, status and send state."""

    placement: Placement
    session_row_id: str
    started_generation: int
    engine: Engine
    pacing: Pacing
    status: SessionStatus = SessionStatus.CREATED
    last_active: float = field(default_factory=time.monotonic)
    status_since: float = field(default_factory=time.monotonic)  # when `status` was last entered
    started_at: float = field(default_factory=time.monotonic)  # when the engine was last told to start it
    ever_connected: bool = False  # connected since that start (pairing is over)
    sending: bool = False
    in_flight: bool = False  # a batch is being sent: its receipts may overtake its record
    deferred: list[Receipt] = field(default_factory=list)  # receipts held until the batch in flight is recorded
    recipients: dict[str, tuple[Recipient, float]] = field(default_factory=dict)  # number → (answer, expiry)

    def enter(self, status: SessionStatus) -> None:
        """Record that the session is now in `status`."""
        if status is not self.status:
            self.status = status
            self.status_since = time.monotonic()


HostedSessions = dict[SessionRef, Hosted]
