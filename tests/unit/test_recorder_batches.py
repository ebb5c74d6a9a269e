"""How the recorder groups a batch of engine events into transactions (the storing itself: integration tests)."""

from datetime import UTC, datetime
from typing import Any, cast

from zapgate.domain.records import MessageStatus
from zapgate.engines.base import EngineEvent, Notice, NoticeKind, Receipt, SessionRef
from zapgate.services.receipts import Ack
from zapgate.services.recorder import Recorder

AT = datetime(2026, 12, 1, tzinfo=UTC)
ALICE, BOB, CAROL = SessionRef("acme", "alice"), SessionRef("acme", "bob"), SessionRef("globex", "carol")


class Transactions(Recorder):
    """A recorder that notes each transaction it would open, with what it would store in it."""

    def __init__(self) -> None:
        super().__init__(cast(Any, None), cast(Any, None))
        self.opened: list[list[str]] = []
        self.acked: list[str] = []

    async def _store(self, event: EngineEvent) -> list[Ack]:
        self.opened.append([name(event)])
        return [lambda: self.acked.append(name(event))]

    async def _store_receipts(self, receipts: list[Receipt]) -> list[Ack]:
        self.opened.append([name(r) for r in receipts])
        return [lambda r=r: self.acked.append(name(r)) for r in receipts]


def name(event: EngineEvent) -> str:
    if isinstance(event, Receipt):
        return f"{event.ref.session_id}:{event.message_ids[0]}"
    return f"{event.ref.session_id}:notice"


def receipt(ref: SessionRef, message_id: str) -> Receipt:
    return Receipt(ref=ref, message_ids=(message_id,), status=MessageStatus.DELIVERED, chat_jid="x", timestamp=AT)


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
