"""The audit log's writer: one entry that cannot be stored never holds back the client's other entries."""

from __future__ import annotations

from datetime import UTC, datetime

from zapgate.db.manager import ConnectionManager
from zapgate.domain.records import AuditEntry
from zapgate.services.audit import MAX_TRIES, AuditLog


def entry(action: str, **fields: object) -> AuditEntry:
    values: dict[str, object] = {
        "at": datetime.now(UTC),
        "actor": "zg_abcdefg",
        "action": action,
        "outcome": "ok",
        "status": 200,
        **fields,
    }
    return AuditEntry(**values)  # type: ignore[arg-type]


async def test_an_entry_with_a_nul_byte_is_stored_and_blocks_nothing(manager: ConnectionManager) -> None:
    audit = AuditLog(manager)
    audit.record("acme", entry("session.create", session_id="\x00", outcome="validation_failed", status=422))
    audit.record("acme", entry("message.send", detail={"path": "/whatsapp/\x00\ud800", "k\x00": "v"}))
    await audit.flush()
    audit.record("acme", entry("session.delete"))
    await audit.flush()
    assert audit.written == 3
    listed = (await audit.list("acme")).items
    assert [e.action for e in listed] == ["session.delete", "message.send", "session.create"]
    assert listed[2].session_id == ""
    assert listed[1].detail == {"path": "/whatsapp/\ufffd", "k": "v"}


async def test_a_batch_the_database_refuses_is_written_entry_by_entry(manager: ConnectionManager) -> None:
    audit = AuditLog(manager)
    audit.record("acme", entry("first"))
    audit.record("acme", entry("refused", status=2**40))  # beyond the column's integer: refused alone
    audit.record("acme", entry("third"))
    await audit.flush()
    assert audit.written == 2
    for _ in range(MAX_TRIES):
        audit.record("acme", entry("later"))
        await audit.flush()
    assert audit.dropped == 1 and audit._pending == []
    actions = [e.action for e in (await audit.list("acme")).items]
    assert sorted(actions) == sorted(["first", "third"] + ["later"] * MAX_TRIES)


async def test_a_batch_is_stored_in_its_order_with_every_field(manager: ConnectionManager) -> None:
    audit = AuditLog(manager)
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    made = [
        entry(f"action.{n}", at=at, session_id=None if n % 3 else f"s{n}", status=200 + n, detail={"n": n})
        for n in range(60)
    ]
    for one in made:
        audit.record("acme", one)
    await audit.flush()
    listed = (await audit.list("acme", limit=100)).items[::-1]  # the log lists newest first
    assert [(e.at, e.action, e.session_id, e.status, e.detail, e.outcome, e.actor) for e in listed] == [
        (e.at, e.action, e.session_id, e.status, e.detail, e.outcome, e.actor) for e in made
    ]
