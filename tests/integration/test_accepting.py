"""Accepting texts: concurrent sends of a client are stored together, each with its own answer."""

import asyncio

from sqlalchemy import text

from zapgate.db.manager import ConnectionManager
from zapgate.errors import RateLimited, SessionNotConnected, SessionNotFound
from zapgate.services.clients import ClientService
from zapgate.services.send_intake import SendAccepted
from zapgate.services.sessions import SessionService


async def _pending(manager: ConnectionManager) -> set[str]:
    async with manager.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT message_id FROM client_acme.messages WHERE status = 'pending' AND direction = 'outbound'")
        )
        return {row.message_id for row in rows}


async def test_sends_stored_together_each_get_their_own_answer(manager: ConnectionManager) -> None:
    await ClientService(manager).create("acme")
    sessions = SessionService(manager, default_engine="sandbox", send_rate=1, send_burst=5)
    for sid in ("s1", "s2", "s3"):
        await sessions.create("acme", sid)
    async with manager.engine.begin() as conn:
        await conn.execute(text("UPDATE client_acme.sessions SET status = 'logged_out' WHERE session_id = 's2'"))

    wanted = ["s1"] * 8 + ["s2"] * 2 + ["missing"] * 2 + ["s3"] * 3
    answers = await asyncio.gather(
        *(sessions.send_text("acme", sid, f"55119888{n:05d}", f"m{n}") for n, sid in enumerate(wanted)),
        return_exceptions=True,
    )
    by_session: dict[str, list[str]] = {}
    for sid, answer in zip(wanted, answers, strict=True):
        by_session.setdefault(sid, []).append(type(answer).__name__)
    # s1 gets its burst of 5 (in the order asked), then is over its rate; the others answer for themselves
    assert by_session == {
        "s1": ["SendAccepted"] * 5 + ["RateLimited"] * 3,
        "s2": ["SessionNotConnected"] * 2,
        "missing": ["SessionNotFound"] * 2,
        "s3": ["SendAccepted"] * 3,
    }
    limited = [a for a in answers if isinstance(a, RateLimited)]
    assert all(0 < a.retry_after <= 1.0 for a in limited)
    assert all("logged_out" in str(a) for a in answers if isinstance(a, SessionNotConnected))
    assert sum(isinstance(a, SessionNotFound) for a in answers) == 2
    accepted = {a.message_id for a in answers if isinstance(a, SendAccepted)}
    assert len(accepted) == 8 and await _pending(manager) == accepted  # what was refused stored nothing

    # the refused sends did not use the budget: s3 still has 2 of its 5; s1 none
    more = await asyncio.gather(
        *(sessions.send_text("acme", sid, "5511988800001", "more") for sid in ("s3", "s3", "s3", "s1")),
        return_exceptions=True,
    )
    assert [type(a).__name__ for a in more] == ["SendAccepted", "SendAccepted", "RateLimited", "RateLimited"]


async def test_a_session_keeps_the_order_its_texts_were_accepted_in(manager: ConnectionManager) -> None:
    await ClientService(manager).create("acme")
    sessions = SessionService(manager, default_engine="sandbox")
    await sessions.create("acme", "s1")
    accepted = await asyncio.gather(*(sessions.send_text("acme", "s1", "5511988800001", f"m{n}") for n in range(300)))
    async with manager.engine.connect() as conn:
        rows = await conn.execute(text("SELECT content FROM client_acme.messages ORDER BY timestamp, id"))
        assert [row.content for row in rows] == [f"m{n}" for n in range(300)]
    assert len({a.message_id for a in accepted}) == 300


async def test_processes_adding_the_same_new_contact_at_once_all_queue(database_url: str) -> None:
    async with (
        ConnectionManager(database_url, pool_size=4) as one,
        ConnectionManager(database_url, pool_size=4) as two,
    ):
        await one.migrate_registry()
        await ClientService(one).create("acme")
        first = SessionService(one, default_engine="sandbox")
        second = SessionService(two, default_engine="sandbox")
        await first.create("acme", "s1")
        for round_ in range(5):
            to = f"55119888800{round_:02d}"
            sends = [service.send_text("acme", "s1", to, "hi") for service in (first, second) for _ in range(20)]
            answers = await asyncio.gather(*sends, return_exceptions=True)
            assert all(isinstance(a, SendAccepted) for a in answers), answers
        contacts = await (await one.get_connection("acme")).contact.find_many()
        assert sorted(c.phone_number for c in contacts) == [f"55119888800{n:02d}" for n in range(5)]
        assert len(await _pending(one)) == 200


async def test_a_send_racing_the_insert_of_its_new_contact_is_queued_once_that_commits(
    manager: ConnectionManager,
) -> None:
    await ClientService(manager).create("acme")
    sessions = SessionService(manager, default_engine="sandbox")
    session = await sessions.create("acme", "s1")
    async with manager.engine.connect() as holder:
        held = await holder.begin()  # another process adding the same contact, not committed yet
        await holder.execute(
            text("INSERT INTO client_acme.contacts (id, session_id, phone_number) VALUES ('held', :row, :phone)"),
            {"row": session.id, "phone": "5511988800001"},
        )
        sending = asyncio.create_task(sessions.send_text("acme", "s1", "5511988800001", "hi"))
        await asyncio.sleep(0.3)
        assert not sending.done()  # waiting to learn whether the contact insert commits
        await held.commit()
        accepted = await asyncio.wait_for(sending, 5)
    stored = await (await manager.get_connection("acme")).message.find_unique(accepted.message_id)
    assert stored is not None and stored.contact_id == "held"
