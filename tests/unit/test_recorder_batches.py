"""How the recorder groups a batch of engine events into transactions (the storing itself: integration tests)."""

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

from zapgate.domain.records import MessageStatus
from zapgate.domain.sessions import SessionStatus
from zapgate.engines.base import EngineEvent, InboundMessage, Notice, NoticeKind, Receipt, SessionRef, StatusChanged
from zapgate.services import recorder as recorder_module
from zapgate.services.receipts import Ack, ReceiptBook
from zapgate.services.recorder import Recorder

AT = datetime(2026, 12, 1, tzinfo=UTC)
ALICE, BOB, CAROL = SessionRef("acme", "alice"), SessionRef("acme", "bob"), SessionRef("globex", "carol")


class Transactions(Recorder):
    """A recorder that notes each transaction it would open, with what it would store in it."""

    def __init__(self) -> None:
        super().__init__(cast(Any, None), {})
        self.opened: list[list[str]] = []
        self.acked: list[str] = []

    async def _store(self, event: EngineEvent) -> list[Ack]:
        self.opened.append([name(event)])
        return [lambda: self.acked.append(name(event))]

    async def _store_together(self, events: list[EngineEvent]) -> list[Ack]:
        self.opened.append([name(e) for e in events])
        return [lambda e=e: self.acked.append(name(e)) for e in events]


def name(event: EngineEvent) -> str:
    if isinstance(event, Receipt):
        return f"{event.ref.session_id}:{event.message_ids[0]}"
    if isinstance(event, InboundMessage):
        return f"{event.ref.session_id}:{event.message_id}"
    if isinstance(event, StatusChanged):
        return f"{event.ref.session_id}:status"
    return f"{event.ref.session_id}:notice"


def receipt(ref: SessionRef, message_id: str) -> Receipt:
    return Receipt(ref=ref, message_ids=(message_id,), status=MessageStatus.DELIVERED, chat_jid="x", timestamp=AT)


def text(ref: SessionRef, message_id: str) -> InboundMessage:
    jid = "5511999990000@s.whatsapp.net"
    return InboundMessage(ref, message_id, jid, None, jid, "text", "hi", AT)


def notice(ref: SessionRef) -> Notice:
    return Notice(ref=ref, kind=NoticeKind.HISTORY_SYNC, timestamp=AT)


async def test_a_batchs_receipts_share_one_transaction_per_client_and_keep_their_place_in_their_session() -> None:
    """Issue 16: at 1,000 sessions over 100 clients a worker's queue interleaves clients, so runs of one client's
    receipts were a receipt or two long: a transaction each, three per text with its message. A client's receipts
    in a batch now share one, stored before any later event of one of their sessions (each session's events keep
    their order) and otherwise at the batch's end."""
    recorder = Transactions()
    batch: list[EngineEvent] = [
        receipt(ALICE, "a1"),
        receipt(CAROL, "c1"),
        notice(BOB),  # another session of acme: alice's receipt may wait
        receipt(BOB, "b1"),
        receipt(ALICE, "a2"),
        receipt(CAROL, "c2"),
        notice(ALICE),  # alice's receipts first
        receipt(ALICE, "a3"),
    ]
    await recorder.store_batch(batch)
    assert recorder.opened == [
        ["bob:notice"],
        ["alice:a1", "bob:b1", "alice:a2"],
        ["alice:notice"],
        ["carol:c1", "carol:c2"],
        ["alice:a3"],
    ]
    assert sorted(recorder.acked) == sorted(name(event) for event in batch)


async def test_a_clients_arrived_messages_share_the_transaction_of_its_receipts_in_their_order() -> None:
    """Issue 16: a transaction per arrived message held a busy worker's recorder behind (27,000 sandbox mail
    waiting at 1,000 sessions and 100 texts/s). A client's messages and receipts of a batch share one, in
    their order; any other event of one of their sessions is stored after them."""
    recorder = Transactions()
    batch: list[EngineEvent] = [
        text(ALICE, "m1"),
        receipt(BOB, "b1"),
        text(CAROL, "m2"),
        text(ALICE, "m3"),
        notice(ALICE),
        text(BOB, "m4"),
    ]
    await recorder.store_batch(batch)
    assert recorder.opened == [
        ["alice:m1", "bob:b1", "alice:m3"],
        ["alice:notice"],
        ["carol:m2"],
        ["bob:m4"],
    ]
    assert sorted(recorder.acked) == sorted(name(event) for event in batch)


def status(ref: SessionRef) -> StatusChanged:
    return StatusChanged(ref, SessionStatus.CONNECTED)


async def test_a_sessions_status_goes_ahead_of_other_sessions_backlog_but_never_of_its_own() -> None:
    """Issue 16: at 1,000 sessions a session that moved to another worker was not `connected` for minutes: its
    status waited behind thousands of other sessions' messages in the worker's queue. A session's lifecycle
    event (status, QR code, pairing code, failure) is now stored ahead of the queue when nothing of its own
    session waits; behind its own session's events it keeps its place."""
    recorder = Transactions()
    for event in [
        text(ALICE, "m1"),
        text(CAROL, "m2"),
        status(BOB),  # nothing of bob waits: ahead
        status(BOB),  # only bob's status waits, ahead: ahead too, after it
        status(ALICE),  # alice's message waits: after it
        text(BOB, "m3"),  # after bob's status, as put
        status(BOB),  # bob's text waits: after it
    ]:
        recorder.put(event)
    assert recorder.waiting == 7
    await recorder.drain()
    assert recorder.waiting == 0
    assert recorder.opened == [
        ["bob:status"],
        ["bob:status"],
        ["alice:m1"],
        ["alice:status"],
        ["bob:m3"],
        ["bob:status"],
        ["carol:m2"],  # another client's: at the batch's end
    ]


async def test_a_status_that_comes_while_a_batch_is_stored_goes_between_its_runs_unless_its_session_is_in_it() -> None:
    """Issue 16: a busy worker's batch is many transactions, and a status that came meanwhile waited for all of
    them (sessions taken over from a dead worker were started within 9 s of their claims, their `connecting` stored
    10 s after that). It is now stored between two runs of the batch, unless its session has events in the batch:
    then it comes first in the next one, after them."""
    bob, dave = SessionRef("acme", "bob"), SessionRef("initech", "dave")

    class Arriving(Transactions):
        async def _store_together(self, events: list[EngineEvent]) -> list[Ack]:
            if not self.opened:  # while the batch's first run is stored, two sessions report a status
                self.put(StatusChanged(bob, SessionStatus.CONNECTING))  # nothing of bob in the batch
                self.put(StatusChanged(CAROL, SessionStatus.CONNECTING))  # carol's message is in it
            return await super()._store_together(events)

    recorder = Arriving()
    for event in (text(ALICE, "a1"), text(CAROL, "c1"), text(dave, "d1")):  # three clients: three runs
        recorder.put(event)
    await recorder.drain()
    assert recorder.opened == [["alice:a1"], ["bob:status"], ["carol:c1"], ["dave:d1"], ["carol:status"]]
    assert recorder.waiting == 0


async def test_urgent_events_past_a_full_batch_never_overtake_their_sessions_events_in_it(
    monkeypatch: Any,
) -> None:
    """When more lifecycle events wait than a batch holds (many sessions starting at once, each reporting QR
    codes), the ones left over were stored between the batch's runs, ahead of their own session's earlier ones
    still in the batch. Those of a session in the batch now wait for the next batch; the others still go between
    its runs."""
    monkeypatch.setattr(recorder_module, "EVENT_BATCH", 3)
    dave = SessionRef("initech", "dave")
    recorder = Transactions()
    for event in (
        StatusChanged(ALICE, SessionStatus.CONNECTING),
        StatusChanged(BOB, SessionStatus.CONNECTING),
        StatusChanged(CAROL, SessionStatus.CONNECTING),  # the batch is full: the next ones are left over
        StatusChanged(ALICE, SessionStatus.CONNECTED),  # alice's first is in the batch: after the batch
        StatusChanged(dave, SessionStatus.CONNECTING),  # nothing of dave in it: between its runs
        StatusChanged(CAROL, SessionStatus.CONNECTED),  # after the batch, after carol's first
    ):
        recorder.put(event)
    await recorder.drain()
    stored = [names[0] for names in recorder.opened]
    assert stored.index("alice:status") == 0 and stored.count("alice:status") == 2
    firsts = {who: stored.index(f"{who}:status") for who in ("alice", "bob", "carol", "dave")}
    lasts = {who: len(stored) - 1 - stored[::-1].index(f"{who}:status") for who in ("alice", "carol")}
    batch = [firsts["alice"], firsts["bob"], firsts["carol"]]
    assert all(lasts[who] > max(batch) for who in ("alice", "carol"))  # never ahead of the batch's own
    assert firsts["dave"] < max(batch)  # went between the batch's runs
    assert recorder.waiting == 0


def test_a_receipt_of_a_session_whose_sends_are_being_recorded_is_held_for_that_record_at_once() -> None:
    """A receipt that nothing of its session waits ahead of goes straight to the session's held receipts when its
    sends are in flight (the record stores it after them), as storing it would have put it, with no trip through
    the recorder's queue and transactions. Behind its session's queued events it waits its turn, as before."""
    alice = SimpleNamespace(in_flight=True, deferred=[], last_active=0.0)
    bob = SimpleNamespace(in_flight=False, deferred=[], last_active=0.0)
    recorder = Transactions()
    recorder.receipts = ReceiptBook(cast(Any, {ALICE: alice, BOB: bob}))

    first = receipt(ALICE, "a1")
    recorder.put(first)
    assert alice.deferred == [first] and recorder.waiting == 0 and alice.last_active > 0

    recorder.put(receipt(BOB, "b1"))  # not in flight: stored by the recorder
    assert bob.deferred == [] and recorder.waiting == 1

    recorder.put(text(ALICE, "m1"))
    behind = receipt(ALICE, "a2")
    recorder.put(behind)  # after a message of its session still queued: in its place, behind it
    assert alice.deferred == [first] and recorder.waiting == 3
