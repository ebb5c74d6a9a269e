"""When a worker next looks at a session's queue of pending sends: at once when told, rarely when idle.

A worker learns of new messages from NOTIFY, which names the session; a look at a session's queue is a
transaction, so an idle session is not looked at every second. It is looked at again after a back-off
that doubles from the poll interval up to a cap (reset when a message is found or the session is woken),
so a lost notification delays a send by at most the cap. A queue holding messages that are not due yet
(a retry's `next_attempt_at`, a first contact past the daily cap) is looked at again when the first of
them falls due. Times are monotonic seconds; nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IdleBackoff:
    """How long an idle session's queue waits between two looks: `first`, doubled each time, up to `cap`."""

    first: float  # seconds: the poll interval
    cap: float  # seconds: the longest a lost notification can delay a send

    def after(self, wait: float) -> float:
        """Return the wait that follows `wait` when a look found nothing."""
        return min(self.cap, max(self.first, wait * 2))


@dataclass(slots=True)
class QueueWatch:
    """One session's schedule of looks at its queue."""

    due_at: float = 0.0  # monotonic seconds of the next look (0: as soon as it can send)
    wait: float = 0.0  # the back-off of the last look that found nothing (0: none yet)
    woken: bool = False  # woken since the last look began: that look may have missed what woke it

    def due(self, now: float) -> bool:
        """Whether the queue should be looked at now."""
        return self.due_at <= now

    def wake(self) -> None:
        """Look at once (a notification named the session, it connected, or notifications may have been lost)."""
        self.due_at = 0.0
        self.wait = 0.0
        self.woken = True

    def looking(self) -> None:
        """A look begins: what woke the session before now is seen by it."""
        self.woken = False

    def looked(
        self, now: float, backoff: IdleBackoff, *, found: bool, held_until: float | None = None, spread: float = 1.0
    ) -> None:
        """Schedule the next look after one ended at `now`.

        Args:
            found: the look found messages to send (the back-off starts again from its first step).
            held_until: when the first message the look could not send yet falls due (monotonic seconds).
            spread: a factor in (0, 1] applied to the back-off, so that sessions woken together drift apart.
        """
        if self.woken:  # a wake-up came while looking, perhaps for a message committed after the claim
            self.due_at = now
            return
        self.wait = backoff.first if found else backoff.after(self.wait)
        self.due_at = now + self.wait * spread
        if held_until is not None:
            self.due_at = min(self.due_at, max(now, held_until))
