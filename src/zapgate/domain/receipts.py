"""The order a sent message's status moves along, and which steps of it are announced.

A message's status only moves forward: pending → sent → delivered → read → played (failed sits beside
pending: a message that failed can still be reported delivered by a late receipt from an earlier attempt).
Receipts may come in any order and more than once, and may overtake the send itself (WhatsApp answers
before the worker has recorded that it sent): whatever the order, each step is stored and announced
once, in order, never backwards. These are the rules; the worker applies them to rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from zapgate.domain.records import MessageStatus

# the order a message's status only ever moves along (a late "sent" never undoes "read")
STATUS_ORDER: tuple[MessageStatus, ...] = (
    MessageStatus.PENDING,
    MessageStatus.FAILED,
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.READ,
    MessageStatus.PLAYED,
)
RANK = {status: rank for rank, status in enumerate(STATUS_ORDER)}


def further(a: MessageStatus, b: MessageStatus) -> bool:
    """Return whether `a` is further along than `b`."""
    return RANK[a] > RANK[b]


def furthest(start: MessageStatus, reported: Iterable[MessageStatus]) -> MessageStatus:
    """Return the furthest of `start` and every status in `reported`."""
    best = start
    for status in reported:
        if further(status, best):
            best = status
    return best


def announced_steps(start: MessageStatus, reported: Sequence[MessageStatus]) -> list[MessageStatus]:
    """Return the statuses to announce, in order, when a message at `start` gets `reported` in this order.

    A receipt about a message still pending means WhatsApp had it: `sent` is announced first. Each
    reported status is announced when it moves the message further than everything before it.
    """
    steps: list[MessageStatus] = []
    reached = start
    if start is MessageStatus.PENDING and reported:
        steps.append(MessageStatus.SENT)
        reached = MessageStatus.SENT
    for status in reported:
        if further(status, reached):
            steps.append(status)
            reached = status
    return steps
