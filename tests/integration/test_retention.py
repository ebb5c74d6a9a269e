"""Retention: workers prune each client's old events, audit rows, finished deliveries and idempotency keys,
and the sandbox's uncollected mail, by its policy; what a webhook still needs stays; one worker at a time."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text

from zapgate import metrics
from zapgate.db import retention as store
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.services.clients import ClientService
from zapgate.services.retention import NETWORK, Pruner, RetentionDefaults, RetentionService, gap_after

DEFAULTS = RetentionDefaults(events_days=30, audit_days=90, deliveries_days=30, idempotency_days=1)


async def sql(manager: ConnectionManager, client: str, statement: str, **params: Any) -> list[Any]:
    async def work(tx: Transaction) -> list[Any]:
        result = await tx.connection.execute(text(statement), params)
        return list(result.all()) if result.returns_rows else []

    return await manager.execute_transaction(client, work)


async def events_aged(manager: ConnectionManager, client: str, ages_days: list[int]) -> list[int]:
    """Append one event per age (oldest first as given); return their ids."""
    ids = []
    for age in ages_days:
        rows = await sql(
            manager,
            client,
            "INSERT INTO events (type, session_id, payload, created_at) "
            "VALUES ('message-received', 's1', '{}', now() - make_interval(days => :age)) RETURNING id",
            age=age,
        )
        ids.append(rows[0][0])
    return ids


async def ids_of(manager: ConnectionManager, client: str, table: str) -> list[Any]:
    key = "key" if table == "idempotency_keys" else "id"
    return [row[0] for row in await sql(manager, client, f"SELECT {key} FROM {table} ORDER BY 1")]


def pruned(table: str) -> float:
    return metrics.REGISTRY.get_sample_value("zapgate_pruned_rows_total", {"table": table}) or 0.0


async def test_each_table_is_pruned_by_its_policy_and_counted(manager: ConnectionManager) -> None:
    await ClientService(manager).create("acme")
    old, young = await events_aged(manager, "acme", [40, 45]), await events_aged(manager, "acme", [10, 0])
    for age, action in ((100, "old"), (10, "young")):
        await sql(
            manager,
            "acme",
            "INSERT INTO audit_log (at, actor, action, outcome, status) "
            "VALUES (now() - make_interval(days => :age), 'zg_x', :action, 'ok', 200)",
            age=age,
            action=action,
        )
    for key, age in (("stale", 2), ("fresh", 0)):
        await sql(
            manager,
            "acme",
            "INSERT INTO idempotency_keys (key, fingerprint, response, created_at) "
            "VALUES (:key, 'f', '{}', now() - make_interval(days => :age))",
            key=key,
            age=age,
        )
    before = {table: pruned(table) for table in ("events", "audit", "idempotency_keys")}

    counts = await Pruner(manager, "w1", DEFAULTS).prune_due()

    assert counts["acme"] == {"events": 2, "audit": 1, "webhook_deliveries": 0, "idempotency_keys": 1}
    assert await ids_of(manager, "acme", "events") == young
    assert [r[0] for r in await sql(manager, "acme", "SELECT action FROM audit_log")] == ["young"]
    assert await ids_of(manager, "acme", "idempotency_keys") == ["fresh"]
    assert pruned("events") - before["events"] == 2
    assert pruned("audit") - before["audit"] == 1
    assert pruned("idempotency_keys") - before["idempotency_keys"] == 1
    # the gap mark: a resume from before the pruned events is told where the log now starts
    gap = await gap_after(manager, "acme", old[0] - 1)
    assert gap is not None and gap.payload() == {"requestedLastEventId": old[0] - 1, "oldestEventId": young[0]}
    assert await gap_after(manager, "acme", old[-1]) is None
    # pruned once per interval: nothing is due now
    assert await Pruner(manager, "w2", DEFAULTS).prune_due() == {NETWORK: {"sandbox_mail": 0, "sandbox_media": 0}}
    policy = await RetentionService(manager, DEFAULTS).get("acme")
    assert policy.last_pruned == counts["acme"] and policy.last_pruned_at is not None


async def test_what_webhooks_still_need_is_kept(manager: ConnectionManager) -> None:
    await ClientService(manager).create("acme")
    ids = await events_aged(manager, "acme", [60, 59, 58, 57, 56])
    # an enabled webhook has turned events up to ids[2] into deliveries; the one of ids[1] is still pending
    await sql(
        manager,
        "acme",
        "INSERT INTO webhooks (id, url, secret, cursor) VALUES ('wh', 'https://example.com/h', 's', :cursor)",
        cursor=ids[2],
    )
    await sql(
        manager, "acme", "INSERT INTO webhooks (id, url, secret, enabled, cursor) VALUES ('off', 'x', 's', false, 0)"
    )
    for event_id, status in ((ids[0], "delivered"), (ids[1], "pending"), (ids[2], "dead")):
        await sql(
            manager,
            "acme",
            "INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, status, created_at) "
            "VALUES ('wh', :event, 'message-received', :status, now() - interval '40 days')",
            event=event_id,
            status=status,
        )

    counts = await Pruner(manager, "w1", DEFAULTS).prune_due()

    # the delivered and dead deliveries went; the pending one stays, and so does its event and all after it
    assert counts["acme"]["webhook_deliveries"] == 2
    assert [r[0] for r in await sql(manager, "acme", "SELECT status FROM webhook_deliveries")] == ["pending"]
    assert await ids_of(manager, "acme", "events") == ids[1:]

    # delivered at last: its event may go, and those the webhook has turned into deliveries; not those after
    await sql(manager, "acme", "UPDATE webhook_deliveries SET status = 'delivered'")
    await sql(manager, "acme", "UPDATE zapgate.retention SET due_at = now()")
    await Pruner(manager, "w1", DEFAULTS).prune_due()
    assert await ids_of(manager, "acme", "events") == ids[3:]


async def test_a_clients_policy_overrides_the_defaults_and_zero_keeps_for_ever(manager: ConnectionManager) -> None:
    await ClientService(manager).create("acme")
    await ClientService(manager).create("beta")
    service = RetentionService(manager, DEFAULTS)
    policy = await service.update("acme", {"events_days": 0, "audit_days": 7})
    assert policy.days["events_days"] == 0 and policy.days["audit_days"] == 7
    assert policy.overridden == {"events_days", "audit_days"}
    acme = await events_aged(manager, "acme", [400])
    await events_aged(manager, "beta", [400])
    await sql(
        manager,
        "acme",
        "INSERT INTO audit_log (at, actor, action, outcome, status) "
        "VALUES (now() - interval '8 days', 'k', 'a', 'ok', 200)",
    )

    counts = await Pruner(manager, "w1", DEFAULTS).prune_due()

    assert await ids_of(manager, "acme", "events") == acme  # kept for ever
    assert await ids_of(manager, "beta", "events") == []
    assert counts["acme"]["audit"] == 1 and "events" not in counts["acme"]
    back = await service.update("acme", {"events_days": None})
    assert back.days["events_days"] == 30 and back.overridden == {"audit_days"}


async def test_one_worker_at_a_time_prunes_a_client(manager: ConnectionManager) -> None:
    for client in ("a1", "a2", "a3"):
        await ClientService(manager).create(client)
    async with manager.registry_transaction() as conn:
        first = await store.claim_due(conn, "w1", 2, 600)
    async with manager.registry_transaction() as conn:
        second = await store.claim_due(conn, "w2", 10, 600)
        again = await store.claim_due(conn, "w3", 10, 600)
    assert len(first) == 2 and len(second) == 1 and again == []
    assert {r.client_id for r in first} | {r.client_id for r in second} == {"a1", "a2", "a3"}


async def test_uncollected_sandbox_mail_is_pruned(manager: ConnectionManager) -> None:
    async with manager.registry_transaction() as conn:
        for age in (8, 1):
            await conn.execute(
                text(
                    "INSERT INTO sandbox_mail (address, envelope, created_at) "
                    "VALUES ('phone:1', CAST(:envelope AS jsonb), now() - make_interval(days => :age))"
                ),
                {"envelope": json.dumps({"kind": "message", "age": age}), "age": age},
            )
    before = pruned("sandbox_mail")
    assert await Pruner(manager, "w1", DEFAULTS).prune_sandbox_mail() == 1
    async with manager.registry_transaction() as conn:
        left = (await conn.execute(text("SELECT envelope FROM sandbox_mail"))).scalars().all()
    assert [mail["age"] for mail in left] == [1]
    assert pruned("sandbox_mail") - before == 1
