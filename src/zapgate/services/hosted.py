"""What a worker knows of each session it hosts, shared by its parts (leases, recorder, outbox)."""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.db.outbound import Recipient, pending_count
from zapgate.db.placements import Placement
from zapgate.domain.ids import client_id, session_id
from zapgate.domain.pacing import Pacing
from zapgate.domain.polling import QueueWatch
from zapgate.domain.sessions import SessionStatus
from zapgate.engines.base import Engine, Receipt, SessionRef
from zapgate.errors import InvalidRequest
from zapgate.log import get_logger

log = get_logger(__name__)


@dataclass
class Hosted:
    """One session this worker hosts: its placement, engine, status and send state."""

    placement: Placement
    session_row_id: str
    started_generation: int
    engine: Engine
    pacing: Pacing
    status: SessionStatus = SessionStatus.CREATED
    claimed_at: float = 0.0  # monotonic seconds when its claim committed (a renewal begun before may not know it)
    last_active: float = field(default_factory=time.monotonic)
    status_since: float = field(default_factory=time.monotonic)  # when `status` was last entered
    started_at: float = field(default_factory=time.monotonic)  # when the engine was last told to start it
    ever_connected: bool = False  # connected since that start (pairing is over)
    sending: bool = False  # a sender runs for it (the outbox starts no second one)
    queue: QueueWatch = field(default_factory=QueueWatch)  # when the outbox next looks at its pending sends
    in_flight: bool = False  # a batch is being sent: its receipts may overtake its record
    deferred: list[Receipt] = field(default_factory=list)  # receipts held until the batch in flight is recorded
    recipients: RecipientCache = field(default_factory=lambda: RecipientCache())  # WhatsApp's answers by number

    def enter(self, status: SessionStatus) -> None:
        """Record that the session is now in `status`."""
        if status is not self.status:
            self.status = status
            self.status_since = time.monotonic()


HostedSessions = dict[SessionRef, Hosted]

RECIPIENTS_KEPT = 10_000  # answers a session keeps in memory (the database keeps them all: `recipients`)


class RecipientCache:
    """WhatsApp's answers about the numbers a session sends to, each trusted until its expiry, least recently used
    dropped past RECIPIENTS_KEPT.

    An answer expires when it was asked plus the TTL, however often it is used meanwhile: a number sent to every
    day used to be trusted for ever. And the cache used to keep every number a session ever sent to, for the
    life of the worker: a session sending to a million numbers held some 300 MB.
    """

    def __init__(self) -> None:
        self._answers: OrderedDict[str, tuple[Recipient, float]] = OrderedDict()

    def get(self, number: str, now: float) -> Recipient | None:
        """The answer about `number` if it has not expired at `now` (monotonic seconds)."""
        known = self._answers.get(number)
        if known is None:
            return None
        if known[1] <= now:
            del self._answers[number]
            return None
        self._answers.move_to_end(number)
        return known[0]

    def put(self, number: str, answer: Recipient, expires: float) -> None:
        """Keep `answer` about `number` until `expires` (monotonic seconds)."""
        self._answers[number] = (answer, expires)
        self._answers.move_to_end(number)
        while len(self._answers) > RECIPIENTS_KEPT:
            self._answers.popitem(last=False)

    def __len__(self) -> int:
        return len(self._answers)


@functools.lru_cache(maxsize=4096)  # a busy worker is told of the same few sessions thousands of times a second
def named_session(payload: str | None) -> SessionRef | None:
    """Return the session a notification's payload names ("client/session"), or None if it names none."""
    client, slash, session = (payload or "").partition("/")
    if not slash:
        return None
    try:
        return SessionRef(client_id(client), session_id(session))
    except InvalidRequest:
        return None


async def queue_depth(manager: ConnectionManager, hosted: HostedSessions) -> int:
    """Return how many outbound messages of the hosted sessions wait to be sent (clients away are skipped)."""
    rows: dict[str, list[str]] = {}
    for ref, one in hosted.items():
        if one.session_row_id:
            rows.setdefault(ref.client_id, []).append(one.session_row_id)
    depth = 0
    for client, session_rows in rows.items():

        async def count(tx: Transaction, session_rows: list[str] = session_rows) -> int:
            return await pending_count(tx.connection, session_rows)

        try:
            depth += await manager.execute_transaction(client, count)
        except Exception as exc:  # a client deleted meanwhile, the database away: next round
            log.debug("worker.measure_failed", client=client, error=repr(exc))
    return depth
