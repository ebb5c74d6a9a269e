"""Files no longer needed go, bytes and all: uploads never sent in time, and files of messages that are gone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from tests.support.records import new_message, new_session
from zapgate.db.manager import ConnectionManager
from zapgate.errors import MediaNotFound
from zapgate.media.postgres import PostgresMediaStore
from zapgate.services.media import MediaFiles
from zapgate.services.retention import Pruner, RetentionDefaults


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def count(manager: ConnectionManager, client: str, table: str) -> int:
    async def run(tx) -> int:  # type: ignore[no-untyped-def]
        return int((await tx.connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())

    return await manager.execute_transaction(client, run)


async def test_expired_uploads_and_files_of_deleted_messages_are_pruned_with_their_bytes(
    manager: ConnectionManager,
) -> None:
    files = MediaFiles(manager, PostgresMediaStore(manager))
    session_row = await new_session(manager, "acme")
    await files.upload("acme", "s", chunks(b"%PDF-1.4 old upload"))
    kept_upload = await files.upload("acme", "s", chunks(b"%PDF-1.4 fresh upload"))
    sent = await files.upload("acme", "s", chunks(b"%PDF-1.4 sent with a message"))
    message_row = await new_message(manager, "acme", session_row, "M1")
    await files.keep_for_message("acme", sent.id, "M1")
    assert (await files.get("acme", sent.id)).record.message_row_id == message_row
    await manager.execute_transaction(
        "acme",
        lambda tx: tx.connection.execute(
            text("UPDATE media SET expires_at = now() - interval '1 day' WHERE id NOT IN (:a, :b)"),
            {"a": kept_upload.id, "b": sent.id},
        ),
    )
    assert await files.prune("acme", datetime.now(UTC)) == 1  # the expired upload
    assert await count(manager, "acme", "media") == 2
    # the message goes (retention, or its session's deletion): its file goes at the next prune
    await manager.execute_transaction("acme", lambda tx: tx.connection.execute(text("DELETE FROM messages")))
    assert await files.prune("acme", datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert await count(manager, "acme", "media") == 1
    assert await count(manager, "acme", "media_chunks") == 1
    assert (await files.get("acme", kept_upload.id)).record.id == kept_upload.id
    with pytest.raises(MediaNotFound):
        await files.open("acme", sent.id)


async def test_a_clients_media_retention_deletes_old_files_and_keeps_their_messages(manager: ConnectionManager) -> None:
    files = MediaFiles(manager, PostgresMediaStore(manager))
    session_row = await new_session(manager, "acme")
    old = await files.upload("acme", "s", chunks(b"%PDF-1.4 old"))
    new = await files.upload("acme", "s", chunks(b"%PDF-1.4 new"))
    message_row = await new_message(manager, "acme", session_row, "M1")
    await files.keep_for_message("acme", old.id, "M1")  # a file sent with a message: retention still takes it
    await manager.execute_transaction(
        "acme",
        lambda tx: tx.connection.execute(
            text("UPDATE media SET created_at = now() - interval '10 days' WHERE id = :id"), {"id": old.id}
        ),
    )
    pruner = Pruner(manager, "w1", RetentionDefaults(media_days=7), media=files)
    counts = await pruner.prune_client("acme", {**_FOREVER, "media_days": 7})
    assert counts["media"] == 1
    with pytest.raises(MediaNotFound):
        await files.get("acme", old.id)
    assert (await files.get("acme", new.id)).record.id == new.id
    assert await count(manager, "acme", "messages") == 1 and message_row  # the message stays


_FOREVER = {"events_days": 0, "audit_days": 0, "deliveries_days": 0, "idempotency_days": 0}
