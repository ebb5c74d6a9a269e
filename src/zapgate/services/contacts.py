"""Contacts: who a session's chat partners are (one per person, by phone-number JID and LID, see db/contacts.py),
their profile pictures (fetched on demand through the session's worker and cached with their expiry), blocking,
and recipients named by contact id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from zapgate.db import contacts
from zapgate.db.manager import ConnectionManager, Transaction
from zapgate.domain.contacts import (
    address_of,
    is_contact_id,
    picture_due,
    picture_expiry,
    picture_seen,
    recipient_of,
)
from zapgate.domain.ids import client_id as valid_client_id
from zapgate.domain.phones import Recipient, parse_recipient
from zapgate.domain.records import Contact
from zapgate.errors import ContactNotFound, EngineCallFailed, InvalidRequest, SessionNotConnected, UnknownContact
from zapgate.log import get_logger
from zapgate.services.contact_events import announce
from zapgate.services.engine_calls import EngineCalls

log = get_logger(__name__)

PICTURE_TTL = timedelta(hours=24)  # a profile picture (or its absence) is asked again after this at the latest


@dataclass(frozen=True, slots=True)
class ContactDetails:
    """A contact with the public id of its session."""

    contact: Contact
    session_id: str


class ContactService:
    """Show, refresh and block the contacts of a client's sessions."""

    def __init__(self, manager: ConnectionManager, calls: EngineCalls) -> None:
        self._manager = manager
        self._calls = calls

    async def get(self, client: str, contact_id: str) -> ContactDetails:
        """The contact with its profile picture: asked of WhatsApp when never asked or expired, else the cached one.

        A session that cannot ask now (not connected, its worker slow) shows what is cached.
        """
        cid = valid_client_id(client)
        found = await self._find(cid, contact_id)
        if not picture_due(found.contact, datetime.now(UTC)):
            return found
        try:
            answer = await self._calls.call(cid, found.session_id, "picture", {"jid": address_of(found.contact)})
        except (SessionNotConnected, EngineCallFailed) as exc:
            log.info("contact.picture_not_asked", contact_id=contact_id, reason=exc.code)
            return found
        now = datetime.now(UTC)
        link_expiry = answer.get("expiresAt")
        expires_at = picture_expiry(datetime.fromisoformat(link_expiry) if link_expiry else None, now, PICTURE_TTL)

        async def cache(tx: Transaction) -> Contact | None:
            cached = await contacts.set_picture(
                tx.connection,
                found.contact.id,
                url=answer.get("url"),
                picture_id=answer.get("id"),
                checked_at=now,
                expires_at=expires_at,
            )
            update = None if cached is None else picture_seen(found.contact, cached)
            if update is not None:  # it changed since the last look, and no event said so
                await announce(tx, found.session_id, [update])
            return cached

        cached = await self._manager.execute_transaction(cid, cache)
        return found if cached is None else ContactDetails(cached, found.session_id)

    async def set_blocked(self, client: str, contact_id: str, blocked: bool) -> ContactDetails:
        """Block the contact (their messages no longer reach the session) or unblock it, through the session."""
        cid = valid_client_id(client)
        found = await self._find(cid, contact_id)
        if found.contact.is_group:
            raise InvalidRequest("contactId: a group cannot be blocked (leave it instead)", field="contactId")
        await self._calls.call(cid, found.session_id, "block", {"jid": address_of(found.contact), "blocked": blocked})

        async def record(tx: Transaction) -> Contact | None:
            changed = await contacts.set_blocked(tx.connection, found.contact.id, blocked, source="api")
            if changed is None:
                return None
            contact, update = changed
            if update is not None:  # a contact-update, unless it was so already
                await announce(tx, found.session_id, [update])
            return contact

        changed = await self._manager.execute_transaction(cid, record)
        return found if changed is None else ContactDetails(changed, found.session_id)

    async def _find(self, cid: str, contact_id: str) -> ContactDetails:
        async def read(tx: Transaction) -> ContactDetails | None:
            contact = await contacts.find(tx.connection, contact_id)
            if contact is None:
                return None
            session = await contacts.session_id_of(tx.connection, contact.session_id)
            return None if session is None else ContactDetails(contact, session)

        found = await self._manager.execute_transaction(cid, read) if is_contact_id(contact_id) else None
        if found is None:
            raise ContactNotFound(f"contact {contact_id!r} not found", contact_id=contact_id)
        return found


async def recipient_for(manager: ConnectionManager, client: str, to: object, *, field: str = "to") -> Recipient:
    """Where `to` names: a phone number, a phone-number JID, a LID, a group's JID, or a contact id of the client
    (its number, else its LID); InvalidRequest naming `field` for anything else, an unknown contact id included."""
    if not (isinstance(to, str) and is_contact_id(to.strip())):
        return parse_recipient(to, field=field)
    contact_id = to.strip()
    contact = await manager.execute_transaction(
        valid_client_id(client), lambda tx: contacts.find(tx.connection, contact_id)
    )
    if contact is None:
        raise UnknownContact(
            f"{field}: no contact {contact_id!r} (a phone number, a JID, a LID or a contact id expected)", field=field
        )
    return recipient_of(contact, field=field)
