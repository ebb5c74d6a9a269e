"""Measure GET /whatsapp/chats's query: one session with 10,000 chats and 100,000 messages, pages of 50.

The chats list computes each chat's last message and unread count when listed (db/chats.py), so that neither
a send nor an arrival writes a chat row. This prints the query's EXPLAIN (ANALYZE, BUFFERS) for the first
page, a deep page (by cursor) and the archived filter, and the median time of each over a few runs.

    .venv/bin/python benchmarks/chats_list.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

It creates a fresh database `zg_bench_<random>` on that server and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.db import chats as chat_rows
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.log import configure_logging
from zapgate.services.clients import ClientService

CHATS = 10_000
MESSAGES = 100_000
PAGE = 50
RUNS = 7


class Explaining:
    """An AsyncConnection that prints the plan of each statement (EXPLAIN ANALYZE) before running it."""

    def __init__(self, conn: AsyncConnection, plans: list[str]) -> None:
        self._conn = conn
        self._plans = plans

    async def execute(self, stmt: Any) -> Any:
        sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
        plan = await self._conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql))
        self._plans.append("\n".join(row[0] for row in plan))
        return await self._conn.execute(stmt)


SEED = """
INSERT INTO sessions (id, session_id, client_id, status) VALUES ('srow', 'bench', 'bench', 'connected');
INSERT INTO contacts (id, session_id, phone_number, is_group)
    SELECT 'c' || g, 'srow', (5511900000000 + g)::text, false FROM generate_series(1, {chats}) g;
INSERT INTO messages (id, session_id, contact_id, message_id, content, type, direction, status, timestamp)
    SELECT 'm' || g, 'srow', 'c' || (1 + (g * 7919) % {chats}), 'mid' || g, 'hello ' || g, 'text',
           CASE WHEN g % 3 = 0 THEN 'outbound' ELSE 'inbound' END,
           CASE WHEN g % 3 = 0 THEN 'read' WHEN g % 5 = 0 THEN 'delivered' ELSE 'read' END,
           now() - (({messages} - g) || ' seconds')::interval
    FROM generate_series(1, {messages}) g;
INSERT INTO chats (contact_id, session_id, archived)
    SELECT 'c' || g, 'srow', true FROM generate_series(1, {chats}, 20) g;
"""


async def _middle(tx: Transaction) -> tuple[datetime, str]:
    """The (activity, id) of the 5,000th chat, newest first: a cursor deep in the list."""
    row = (
        await tx.connection.execute(
            text(
                "SELECT contact_id, max(timestamp) AS at FROM messages GROUP BY contact_id "
                "ORDER BY at DESC, contact_id DESC OFFSET 4999 LIMIT 1"
            )
        )
    ).one()
    return row.at, row.contact_id


async def main(database_url: str) -> None:
    configure_logging("warning", "console")
    name = f"zg_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = database_url.rsplit("/", 1)[0] + "/" + name
    try:
        async with ConnectionManager(url, pool_size=2, health_interval=3600) as manager:
            await manager.migrate_registry()
            await ClientService(manager).create("bench")

            async def seed(tx: Transaction) -> None:
                for statement in SEED.format(chats=CHATS, messages=MESSAGES).split(";\n"):
                    if statement.strip():
                        await tx.connection.execute(text(statement.strip().rstrip(";")))

            started = time.perf_counter()
            await manager.execute_transaction("bench", seed)
            print(f"seeded {CHATS:,} chats, {MESSAGES:,} messages in {time.perf_counter() - started:.1f} s")

            vacuum = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
            await vacuum.execute("VACUUM ANALYZE client_bench.contacts, client_bench.messages, client_bench.chats")
            await vacuum.close()  # as autovacuum leaves a table that is not being written: index-only scans

            first = await manager.execute_transaction(
                "bench", lambda tx: chat_rows.list_chats(tx.connection, "srow", limit=PAGE)
            )
            second = (first[-1].activity, first[-1].contact.id)
            middle = await manager.execute_transaction("bench", _middle)
            assert isinstance(second[0], datetime)
            scenarios = {
                "first page": {"limit": PAGE},
                "second page (cursor)": {"limit": PAGE, "before": second},
                "page 100 (cursor at the 5,000th chat)": {"limit": PAGE, "before": middle},
                "archived only (every 20th chat)": {"limit": PAGE, "archived": True},
                "not archived": {"limit": PAGE, "archived": False},
            }
            for label, kwargs in scenarios.items():
                plans: list[str] = []

                async def explained(tx: Transaction, kwargs: dict[str, Any] = kwargs, plans: list[str] = plans) -> Any:
                    return await chat_rows.list_chats(Explaining(tx.connection, plans), "srow", **kwargs)  # type: ignore[arg-type]

                await manager.execute_transaction("bench", explained)
                times = []
                for _ in range(RUNS):
                    started = time.perf_counter()
                    await manager.execute_transaction(
                        "bench", lambda tx, kwargs=kwargs: chat_rows.list_chats(tx.connection, "srow", **kwargs)
                    )
                    times.append((time.perf_counter() - started) * 1000)
                print(f"\n== {label}: median {statistics.median(times):.1f} ms over {RUNS} runs ==")
                print("\n\n".join(plans))

            # the fallback, when the newest messages hold too few chats: every chat's last message looked up
            plans = []

            async def fallback(tx: Transaction) -> Any:
                return await chat_rows._full_page(Explaining(tx.connection, plans), "srow", None, None, PAGE)  # type: ignore[arg-type]

            await manager.execute_transaction("bench", fallback)
            print("\n== the fallback: every chat's last message looked up ==")
            print("\n\n".join(plans))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    asyncio.run(main(parser.parse_args().database_url))
