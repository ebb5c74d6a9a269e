"""Contact-update events: what changed of a contact that a user would hear of (merged rows, a name, the blocklist,
a profile picture), appended to the event log in the transaction that changed it.

Whoever changes contacts (the recorder, the outbox, an engine call, the API) collects `ContactUpdate`s
(`db/contacts.py` reports them) and hands them here before its transaction commits.
"""

from __future__ import annotations

from collections.abc import Iterable

from zapgate.db.manager import Transaction
from zapgate.domain.contacts import ContactUpdate
from zapgate.domain.events import EventType
from zapgate.services.receipts import EventEntry


def contact_entries(session_id: str, updates: Iterable[ContactUpdate]) -> list[EventEntry]:
    """The contact-update events of `updates`, one per contact changed (in order), for `append_many`."""
    return [
        (EventType.CONTACT_UPDATE.value, session_id, {"sessionId": session_id, **update.payload()})
        for update in updates
    ]


async def announce(tx: Transaction, session_id: str, updates: Iterable[ContactUpdate]) -> None:
    """Append the contact-update events of `updates` in the transaction `tx`."""
    entries = contact_entries(session_id, updates)
    if entries:
        await tx.event.append_many(entries)
