"""The chats list against a real PostgreSQL: every page, walked by cursor, is the chats by last message (newest
first), whether the page is found among the newest messages or every chat is looked up."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, text, update

from zapgate.db import chats as chat_rows
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.db.tables import chats, contacts, messages

T0 = datetime(2026, 11, 1, tzinfo=UTC)


async def _seed(tx: Transaction) -> dict[str, datetime]:
    """200 chats of one session: a few very busy ones, most with a message or two, some with equal times;
    plus another session's chats and a stories contact, which are not listed. Returns each chat's last time."""
    rng = random.Random(14)
    session = (await tx.session.create(session_id="alice", client_id="acme")).id
    other = (await tx.session.create(session_id="bob", client_id="acme")).id
    rows, last = [], {}
    contact_rows = [
        {"id": f"c{i:03d}", "session_id": session, "phone_number": f"55119000{i:05d}", "is_group": False}
        for i in range(200)
    ]
    contact_rows.append({"id": "stories", "session_id": session, "phone_number": "status@broadcast", "is_group": True})
    contact_rows.append({"id": "elsewhere", "session_id": other, "phone_number": "5511900000001", "is_group": False})
    await tx.connection.execute(insert(contacts), contact_rows)
    for number, contact in enumerate(c["id"] for c in contact_rows):
        busy = number % 50 == 0
        for k in range(300 if busy else rng.randint(1, 2)):
            # whole minutes: some chats end at the same moment (the chat id breaks the tie)
            at = T0 + timedelta(minutes=rng.randint(0, 5000) if not busy else 5000 + k)
            rows.append(
                {
                    "id": f"m{len(rows):06d}",
                    "session_id": other if contact == "elsewhere" else session,
                    "contact_id": contact,
                    "message_id": f"id{len(rows)}",
                    "content": "x",
                    "direction": "inbound" if k % 2 else "outbound",
                    "status": "delivered",
                    "timestamp": at,
                }
            )
            if contact not in ("stories", "elsewhere"):
                last[contact] = max(last.get(contact, at), at)
    await tx.connection.execute(insert(messages), rows)
    archived = [{"contact_id": f"c{i:03d}", "session_id": session, "archived": True} for i in range(0, 200, 7)]
    await tx.connection.execute(insert(chats), archived)
    return last


@pytest.mark.parametrize("window", [1, 20, 10_000], ids=["falls-back", "window", "all-in-window"])
async def test_every_page_is_the_chats_by_last_message(
    manager: ConnectionManager, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    monkeypatch.setattr(chat_rows, "WINDOW_PER_CHAT", window)
    monkeypatch.setattr(chat_rows, "MIN_WINDOW", 1)
    full, windowed = [], []
    full_page, window_page = chat_rows._full_page, chat_rows._window_page

    async def counted_full(*args: Any) -> list[str]:
        full.append(1)
        return await full_page(*args)

    async def counted_window(*args: Any) -> list[str] | None:
        found = await window_page(*args)
        windowed.append(found is not None)
        return found

    monkeypatch.setattr(chat_rows, "_full_page", counted_full)
    monkeypatch.setattr(chat_rows, "_window_page", counted_window)
    await manager.get_connection("acme")
    last = await manager.execute_transaction("acme", _seed)
    session = await (await manager.get_connection("acme")).session.find_unique("alice")
    assert session is not None
    archived_ids = {f"c{i:03d}" for i in range(0, 200, 7)}
    for archived in (None, False, True):
        expected = sorted(
            (c for c in last if archived is None or (c in archived_ids) == archived),
            key=lambda c: (last[c], c),
            reverse=True,
        )
        walked: list[str] = []
        before = None
        while True:
            page = await manager.execute_transaction(
                "acme",
                lambda tx, before=before, archived=archived: chat_rows.list_chats(
                    tx.connection, session.id, archived=archived, before=before, limit=7
                ),
            )
            walked += [row.contact.id for row in page]
            for row in page:
                assert row.activity == last[row.contact.id] and row.last is not None
                assert row.last.timestamp == row.activity
                assert row.archived == (row.contact.id in archived_ids)
            if len(page) < 7:
                break
            assert page[-1].activity is not None
            before = (page[-1].activity, page[-1].contact.id)
        assert walked == expected, archived
    # which way the pages were found: the newest messages, every chat, or both
    assert (bool(full), any(windowed)) == {1: (True, False), 20: (True, True), 10_000: (True, True)}[window]
    if window == 10_000:
        assert all(windowed)  # the window settled every page it was given (archived-only pages get none)


async def test_a_merge_of_contacts_folds_their_chats_state_the_newest_winning(manager: ConnectionManager) -> None:
    await manager.get_connection("acme")

    async def work(tx: Transaction) -> list[tuple[str, bool, bool]]:
        session = (await tx.session.create(session_id="alice", client_id="acme")).id
        rows = [{"id": f"k{i}", "session_id": session, "phone_number": f"k{i}", "is_group": False} for i in range(4)]
        await tx.connection.execute(insert(contacts), rows)
        states = [
            {"contact_id": "k0", "session_id": session, "archived": False, "updated_at": T0},
            {"contact_id": "k1", "session_id": session, "archived": True, "updated_at": T0 + timedelta(hours=1)},
            {"contact_id": "k2", "session_id": session, "archived": False, "updated_at": T0},
        ]
        await tx.connection.execute(insert(chats), states)
        await tx.connection.execute(update(chats).where(chats.c.contact_id == "k2").values(marked_unread=True))
        # k1 (newer) folds into k0; k2's state moves to k3, which had none
        await tx.connection.execute(text(chat_rows.MERGE), {"kept": "k0", "others": ["k1"]})
        await tx.connection.execute(text(chat_rows.MERGE), {"kept": "k3", "others": ["k2"]})
        await tx.connection.execute(text(chat_rows.MERGE), {"kept": "k0", "others": ["k9"]})  # nothing to fold
        found = await tx.connection.execute(select(chats).order_by(chats.c.contact_id))
        return [(row.contact_id, row.archived, row.marked_unread) for row in found]

    assert await manager.execute_transaction("acme", work) == [("k0", True, False), ("k3", False, True)]
