"""Receipts: WhatsApp's word that a message moved on (delivered, read, played), matched by WhatsApp's id.

A receipt may come back before its send is recorded (WhatsApp answers while the worker is still sending the
batch): those of a session with a batch in flight are held and stored with that batch, after their sends,
so that each step is stored and announced once and in order (`domain/receipts.py` holds the rules).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from zapgate.db import outbound
from zapgate.db.manager import Transaction
from zapgate.db.outbound import SendOutcome
from zapgate.domain.contacts import ContactIds
from zapgate.domain.events import EventType
from zapgate.domain.receipts import announced_steps, furthest
from zapgate.domain.records import MessageStatus
from zapgate.domain.storable import storable
from zapgate.engines.base import EngineEvent, GroupChanged, InboundMessage, Receipt, SessionRef
from zapgate.services.hosted import HostedSessions

EventEntry = tuple[str, str | None, dict[str, Any]]  # (type, session id, payload) for append_many
Ack = Callable[[], None]


class ReceiptBook:
    """Move a worker's outbound messages forward by their receipts."""

    def __init__(self, hosted: HostedSessions) -> None:
        self._hosted = hosted

    def not_overtaking(self, receipts: list[Receipt]) -> list[Receipt]:
        """Return the receipts that may be stored now; hold those of a session whose sends are being recorded.

        Receipts name WhatsApp's ids, which the worker learns only as each send returns: while a batch is
        in flight, a receipt of that session may be about one of its messages, and waits for its record.
        """
        return [receipt for receipt in receipts if not self.held(receipt)]

    def held(self, receipt: Receipt) -> bool:
        """Hold `receipt` if its session's sends are being recorded (True): stored with their record, after them."""
        hosted = self._hosted.get(receipt.ref)
        if hosted is None:
            return False
        hosted.last_active = time.monotonic()
        if not hosted.in_flight:
            return False
        hosted.deferred.append(receipt)  # stored once the batch is recorded: sent, then delivered
        return True

    async def advance(self, tx: Transaction, client: str, receipts: list[Receipt]) -> list[EventEntry]:
        """Move messages forward by `receipts` (of `client`); return the message-status events of the steps."""
        rows = await self._session_rows(tx, client, {r.ref.session_id for r in receipts})
        reported: dict[tuple[str, str], list[Receipt]] = {}
        for receipt in receipts:
            row = rows.get(receipt.ref.session_id)
            if row is None:
                continue
            for wa_id in receipt.message_ids:
                reported.setdefault((row, wa_id), []).append(receipt)
        if not reported:
            return []
        targets = [
            (row, wa_id, furthest(MessageStatus.PENDING, (r.status for r in items)))
            for (row, wa_id), items in reported.items()
        ]
        entries: list[EventEntry] = []
        for changed in await outbound.advance(tx.connection, targets):
            items = reported[(changed.session_row, changed.wa_message_id)]
            steps = announced_steps(changed.old_status, [r.status for r in items])
            first = items[0]
            for status in steps:
                told = next((r for r in items if r.status is status), None)
                entries.append(
                    status_entry(
                        first.ref.session_id,
                        changed.message_id,
                        changed.wa_message_id,
                        status,
                        told.timestamp.isoformat() if told is not None else None,
                        changed.contact,
                    )
                )
        return entries

    async def _session_rows(self, tx: Transaction, client: str, session_ids: set[str]) -> dict[str, str]:
        """Return the row ids of `client`'s named sessions (known ones from memory)."""
        found = {}
        for session_id in session_ids:
            hosted = self._hosted.get(SessionRef(client, session_id))
            if hosted is not None:
                found[session_id] = hosted.session_row_id
        for session_id in session_ids - set(found):
            session = await tx.session.find_unique(session_id)
            if session is not None:
                found[session_id] = session.id
        return found


def acks_of(event: EngineEvent) -> list[Ack]:
    """Return the acknowledgement an event carries, if any."""
    ack = event.ack if isinstance(event, InboundMessage | Receipt | GroupChanged) else None
    return [ack] if ack is not None else []


def split_receipts(receipts: list[Receipt], ids: set[str]) -> tuple[dict[str, list[Receipt]], list[Receipt]]:
    """Split receipts into those about WhatsApp ids `ids` (per id, in order) and the rest."""
    about: dict[str, list[Receipt]] = {}
    rest: list[Receipt] = []  # receipts, or the part of one, about other messages
    for receipt in receipts:
        for message_id in receipt.message_ids:
            if message_id in ids:
                about.setdefault(message_id, []).append(receipt)
        others = tuple(message_id for message_id in receipt.message_ids if message_id not in ids)
        if others:
            rest.append(receipt if len(others) == len(receipt.message_ids) else replace(receipt, message_ids=others))
    return about, rest


def status_entry(
    session_id: str,
    message_id: str,
    wa_message_id: str | None,
    status: MessageStatus,
    timestamp: str | None,
    contact: ContactIds | None = None,
) -> EventEntry:
    """The message-status event of message `message_id` (ours; WhatsApp's beside it) reaching `status`, with its
    contact's ids."""
    payload: dict[str, Any] = {
        "sessionId": session_id,
        "messageId": message_id,
        "whatsappMessageId": wa_message_id,
        "status": status._value_,  # `.value` is a property: a Python call (three of these per message sent)
    }
    if timestamp is not None:
        payload["timestamp"] = timestamp
    if contact is not None:
        payload["contactId"], payload["contactJid"], payload["contactLid"] = contact.id, contact.jid, contact.lid
    return (_MESSAGE_STATUS, session_id, payload)


_MESSAGE_STATUS = EventType.MESSAGE_STATUS.value


def send_entry(ref: SessionRef, outcome: SendOutcome, contact: ContactIds | None = None) -> EventEntry:
    """The message-status event of a send recorded as sent or failed."""
    entry = status_entry(
        ref.session_id,
        outcome.message_id,
        outcome.assigned_id,
        outcome.status,
        outcome.sent_at.isoformat() if outcome.sent_at else None,
        contact,
    )
    payload = entry[2]
    if outcome.chat_jid:
        payload["to"] = outcome.chat_jid
    if outcome.error:
        payload["error"] = storable(outcome.error)
    if outcome.error_code:
        payload["reason"] = outcome.error_code
    return entry
