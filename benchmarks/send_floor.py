"""The floor of a send that really goes out: the least a durable outbox could do per message, on the floor's stack.

`floor.py` measures one INSERT per request: what accepting a send costs at the least. A send that goes out
costs more than accepting it, whoever builds the gateway: the message must be found again, sent, and its
outcome and receipts stored where the client can read them. This app does exactly that and nothing else, so
that zapgate's `POST /whatsapp/send` with its worker running can be compared with the same work done the
cheapest way this stack allows (`http_send.py --parts bound`). An app of its own: none of zapgate's code.

- API process: FastAPI on uvicorn (uvloop, httptools), an asyncpg pool of 10, as `floor.py`. `POST /send`
  stores the message, pending, with one INSERT (the floor's statement, on a table with the outbox's index).
- sender process (`send_floor.py worker`, started by the API process): one asyncpg connection in a loop.
  It reads the oldest pending messages (up to 1,000 at once; one sender, so no locks), "sends" each (the
  sandbox's simulated phone: a WhatsApp id, then delivered and read at once), and records them in one
  statement: each message's status and WhatsApp id, and its three status events (sent, delivered, read) in
  an event log. When nothing is pending it looks again 1 ms later, then 2, 4 ... up to 100 ms.

Left out, as no production gateway could: authentication, validation beyond the JSON, rate limits,
idempotency, tenants, contacts, audit, NOTIFY, ordering per chat, retries, webhooks, streams.

    FLOOR_DSN=postgresql://postgres@127.0.0.1:5432/floor PORT=8092 python benchmarks/send_floor.py
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import uvicorn
import uvloop
from fastapi import FastAPI, Request

SCHEMA = """
create table if not exists sf_messages (
    id bigserial primary key, session text not null, recipient text not null, body text not null,
    status text not null default 'pending', wa_id text, sent_at timestamptz, created timestamptz default now()
);
-- the outbox's look for pending messages, and a receipt's look for its message by WhatsApp id
create index if not exists sf_messages_pending on sf_messages (id) where status = 'pending';
create index if not exists sf_messages_wa on sf_messages (session, wa_id);
create table if not exists sf_events (
    id bigserial primary key, session text not null, type text not null, payload jsonb not null,
    created timestamptz default now()
);
"""

IDLE_FIRST, IDLE_MAX = 0.001, 0.1  # seconds between looks while nothing is pending: doubled up to IDLE_MAX
CLAIM = "select id, session, recipient, body from sf_messages where status = 'pending' order by id limit 1000"

RECORD = """
with sent as (
    update sf_messages m set status = 'read', wa_id = s.wa_id, sent_at = now()
    from unnest($1::bigint[], $2::text[]) as s(id, wa_id)
    where m.id = s.id
    returning m.id, m.session, m.recipient, s.wa_id
)
insert into sf_events (session, type, payload)
select sent.session, 'message-status',
       jsonb_build_object('messageId', sent.id, 'to', sent.recipient, 'waId', sent.wa_id, 'status', r.status)
from sent cross join (values (1, 'sent'), (2, 'delivered'), (3, 'read')) as r(n, status)
order by sent.id, r.n
"""


async def sender(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    idle = IDLE_FIRST
    while True:
        rows = await conn.fetch(CLAIM)
        if not rows:
            # each look walks the pending index's dead entries (no vacuum here): an idle sender must not load the
            # server while the others are measured
            await asyncio.sleep(idle)
            idle = min(idle * 2, IDLE_MAX)
            continue
        idle = IDLE_FIRST
        ids = [row["id"] for row in rows]
        wa_ids = [f"3EB0{row['id']:016X}" for row in rows]  # sent: WhatsApp's id for it (delivered, read at once)
        await conn.execute(RECORD, ids, wa_ids)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    dsn = os.environ["FLOOR_DSN"]
    async with asyncpg.create_pool(dsn, min_size=10, max_size=10) as pool:
        async with pool.acquire() as conn:
            await conn.execute(SCHEMA)
        app.state.pool = pool
        worker = await asyncio.create_subprocess_exec(sys.executable, __file__, "worker")
        try:
            yield
        finally:
            worker.terminate()
            await worker.wait()


app = FastAPI(lifespan=lifespan)


@app.post("/send")
async def send(request: Request) -> dict[str, str]:
    body = await request.json()
    async with app.state.pool.acquire() as conn:
        await conn.execute(
            "insert into sf_messages (session, recipient, body) values ($1, $2, $3)",
            body["sessionId"],
            body["to"],
            body["message"],
        )
    return {"status": "pending"}


@app.get("/pending")
async def pending() -> dict[str, int]:
    async with app.state.pool.acquire() as conn:
        return {"pending": await conn.fetchval("select count(*) from sf_messages where status = 'pending'")}


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        uvloop.run(sender(os.environ["FLOOR_DSN"]))
    else:
        uvicorn.run(
            app,
            host="127.0.0.1",
            port=int(os.environ.get("PORT", "8092")),
            loop="uvloop",
            http="httptools",
            log_level="warning",
        )
