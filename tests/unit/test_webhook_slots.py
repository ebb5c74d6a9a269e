"""A worker's webhook slots, shared between clients: the budget each client's claim gets."""

from __future__ import annotations

from zapgate.domain.ids import ClientId
from zapgate.services.webhook_dispatcher import WebhookDispatcher, _Client

A, B, C = ClientId("acme"), ClientId("globex"), ClientId("initech")


def dispatcher(concurrency: int) -> WebhookDispatcher:
    # nothing is started: the claim budget is plain bookkeeping
    return WebhookDispatcher(None, "postgresql://unused/db", concurrency=concurrency)  # type: ignore[arg-type]


def test_a_client_alone_may_take_every_slot() -> None:
    slots = dispatcher(4)
    slots._clients[A] = _Client(busy={"h1", "h2", "h3"})
    assert slots._share(A) == 4


def test_a_client_holding_its_share_gives_the_next_free_slot_to_a_waiting_one() -> None:
    slots = dispatcher(4)
    slots._clients[A] = _Client(busy={"h1", "h2", "h3"})  # one slot free, acme has many more webhooks due
    slots._clients[B] = _Client()
    slots._waiting.add(B)
    assert slots._share(A) - len(slots._clients[A].busy) <= 0  # acme waits ...
    assert slots._share(B) == 2  # ... and globex may take up to half the slots


def test_three_clients_share_the_slots_in_equal_parts() -> None:
    slots = dispatcher(6)
    slots._clients[A] = _Client(busy={"h1"})
    slots._clients[B] = _Client(busy={"h2"})
    slots._clients[C] = _Client()
    assert slots._share(A) == 3  # initech has nothing due: two clients share
    slots._waiting.add(C)
    assert slots._share(C) == 2 and slots._share(A) == 2
