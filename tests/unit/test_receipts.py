"""The order a message's status moves along, and the steps announced: table-driven."""

import pytest

from zapgate.domain.receipts import announced_steps, further, furthest
from zapgate.domain.records import MessageStatus

P, F, S, D, R, PL = (
    MessageStatus.PENDING,
    MessageStatus.FAILED,
    MessageStatus.SENT,
    MessageStatus.DELIVERED,
    MessageStatus.READ,
    MessageStatus.PLAYED,
)


@pytest.mark.parametrize(
    ("start", "reported", "steps"),
    [
        (S, [D], [D]),
        (S, [D, R], [D, R]),
        (S, [R, D], [R]),  # a late delivered never undoes read
        (S, [D, D, D], [D]),  # repeated receipts announce once
        (P, [D], [S, D]),  # a receipt about a message still pending: WhatsApp had it, so it was sent
        (P, [R, D], [S, R]),
        (P, [], []),
        (R, [D], []),
        (D, [PL, R], [PL]),
        (F, [D], [D]),  # a late receipt of an earlier attempt moves a failed message on
        (S, [], []),
    ],
)
def test_steps_are_announced_once_in_order_and_never_backwards(
    start: MessageStatus, reported: list[MessageStatus], steps: list[MessageStatus]
) -> None:
    assert announced_steps(start, reported) == steps


@pytest.mark.parametrize(
    ("start", "reported", "best"),
    [(S, [D, R, D], R), (R, [D], R), (P, [], P), (F, [S], S), (D, [PL], PL)],
)
def test_the_furthest_status_wins(start: MessageStatus, reported: list[MessageStatus], best: MessageStatus) -> None:
    assert furthest(start, reported) is best


def test_the_order_is_total_and_strict() -> None:
    order = [P, F, S, D, R, PL]
    for i, a in enumerate(order):
        for j, b in enumerate(order):
            assert further(a, b) is (i > j)
