"""The floor for zapgate's accept path: the same stack doing the least a send could do (../shared/bench/floor.py).

FastAPI on uvicorn (uvloop + httptools) with an asyncpg pool of 10 connections, one INSERT of the request's
fields per POST /insert, answered with a small JSON body. GET /empty answers {} without the database.
An app of its own, in a process of its own: none of zapgate's middleware, settings or code is in it.
`http_send.py` runs it beside `zapgate serve` against the same PostgreSQL and loads both with the same wrk script.

    FLOOR_DSN=postgresql://postgres@127.0.0.1:5432/floor PORT=8091 python benchmarks/floor.py
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import uvicorn
from fastapi import FastAPI, Request


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(os.environ["FLOOR_DSN"], min_size=10, max_size=10)
    async with app.state.pool.acquire() as conn:
        await conn.execute(
            "create table if not exists floor_messages (id bigserial primary key, session text, recipient text,"
            " body text, created timestamptz default now())"
        )
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


@app.post("/insert")
async def insert(request: Request) -> dict[str, str]:
    body = await request.json()
    async with app.state.pool.acquire() as conn:
        await conn.execute(
            "insert into floor_messages (session, recipient, body) values ($1, $2, $3)",
            body["sessionId"],
            body["to"],
            body["message"],
        )
    return {"status": "pending"}


@app.get("/empty")
async def empty() -> dict[str, str]:
    return {}


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ.get("PORT", "8091")),
        loop="uvloop",
        http="httptools",
        log_level="warning",
    )
