"""Who a contact is, pure: a person known by phone-number JID, LID or both, and how two rows of one person merge.

WhatsApp names a person by a phone-number JID (`digits@s.whatsapp.net`), by a LID (`digits@lid`) or by both,
and tells the other id later (a message carrying both, a number lookup, a send). A session keeps one contact per
person: a sighting names the ids it knows, finds every row holding one of them, and those rows become one
(`db/contacts.py` does it in a transaction; the rules are here).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from zapgate.domain.phones import (
    GROUP_SERVER,
    LID_SERVER,
    USER_SERVER,
    Jid,
    Recipient,
    jid_user,
    parse_recipient,
    phone_jid,
)
from zapgate.domain.records import Contact

_CONTACT_ID = re.compile(r"[a-z][0-9a-z]{24}", re.ASCII)  # domain.ids.new_id's form


@dataclass(frozen=True, slots=True)
class ContactIds:
    """A contact's id and its ids on WhatsApp, as every message and event names them."""

    id: str
    jid: str | None
    lid: str | None

    def fields(self) -> dict[str, Any]:
        """The event payload's fields of the contact (additive to a payload's own)."""
        return {"contactId": self.id, "contactJid": self.jid, "contactLid": self.lid}


def is_contact_id(value: str) -> bool:
    """Return whether `value` has the form of a contact's id (never a phone number or a JID)."""
    return _CONTACT_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Sighting:
    """What WhatsApp told about a person (or a group) at one moment: its ids, and what it shows of itself.

    `jid` is a phone-number JID (or a group's, or another chat's JID: `other`), `lid` a LID; devices dropped.
    `number` is digits someone asked about, when the sighting is WhatsApp's answer about them: a contact made for
    those digits before WhatsApp named their account (a send's, under the other spelling of Brazil's ninth
    digit) is this person too.
    """

    jid: str | None = None
    lid: str | None = None
    push_name: str | None = None
    business_name: str | None = None
    on_whatsapp: bool | None = None
    is_group: bool = False
    number: str | None = None

    @property
    def key(self) -> str | None:
        """The contact key for these ids: a number's digits, else the LID, else the JID as it is (a group's)."""
        if self.jid is not None and self.jid.endswith("@" + USER_SERVER):
            return jid_user(self.jid)
        return self.lid or self.jid

    @property
    def lookup_keys(self) -> list[str]:
        """Every value a row of this person may be found by (its key, JID or LID), sorted (the lock order)."""
        found = {value for value in (self.jid, self.lid, self.key, self.number) if value}
        return sorted(found)


def sighting(
    jid: str | None,
    lid: str | None = None,
    *,
    push_name: str | None = None,
    business_name: str | None = None,
    on_whatsapp: bool | None = None,
    is_group: bool = False,
    number: str | None = None,
) -> Sighting:
    """Return the sighting of a party named by any JIDs: a LID given as `jid` counts as the LID, devices dropped.

    `number`: the digits asked about when this is WhatsApp's answer about them (ignored when they are the key).
    """
    phone, lid_found = None, None
    for value in (jid, lid):
        if not value:
            continue
        bare = bare_jid(value)
        if bare.endswith("@" + LID_SERVER):
            lid_found = lid_found or bare
        else:
            phone = phone or bare
    group = is_group or (phone is not None and phone.endswith("@" + GROUP_SERVER))
    if group:  # a name seen in a group is its writer's, never the group's
        return Sighting(phone, lid_found, None, None, on_whatsapp, True)
    seen = Sighting(phone, lid_found, push_name or None, business_name or None, on_whatsapp, False)
    if number and number != seen.key and phone is not None:  # only an answer naming the number's account
        seen = Sighting(seen.jid, seen.lid, seen.push_name, seen.business_name, on_whatsapp, False, number)
    return seen


def bare_jid(jid: str) -> str:
    """Return `jid` without its device (`5511…:7@s.whatsapp.net` -> `5511…@s.whatsapp.net`)."""
    user, at, server = jid.partition("@")
    return f"{user.split(':', 1)[0]}{at}{server}" if at else jid


def holds(contact: Contact, seen: Sighting) -> bool:
    """Whether `contact` holds every id `seen` names already (nothing to merge, only names to refresh)."""
    return (seen.jid is None or contact.jid == seen.jid) and (seen.lid is None or contact.lid == seen.lid)


def spelled_as(contact: Contact, seen: Sighting) -> bool:
    """Whether `contact` is a row made for the digits `seen` was asked as, before WhatsApp named their account
    (no phone JID yet; at most the LID WhatsApp gave): the same person as `seen`, under another spelling."""
    if seen.number is None or contact.phone_number != seen.number or contact.is_group:
        return False
    return contact.jid is None and contact.lid in (None, seen.lid)


def keeper(rows: Sequence[Contact]) -> Contact:
    """Return the row of one person that stays when its rows merge: the one known by phone number, else the oldest."""

    def rank(row: Contact) -> tuple[int, float, str]:
        by_phone = 0 if row.jid is not None and row.jid.endswith("@" + USER_SERVER) else 1
        created = row.created_at.timestamp() if row.created_at is not None else 0.0
        return (by_phone, created, row.id)

    return min(rows, key=rank)


def merged(kept: Contact, others: Sequence[Contact], seen: Sighting) -> dict[str, Any]:
    """Return the columns of `kept` that change when it absorbs `others` and learns `seen`.

    What was just seen wins (a push name changes, a number moves to another account); what only one row knew is
    kept (a picture, a name given); blocked if any row was.
    """
    rows = [kept, *others]

    def first(name: str) -> Any:
        return next((getattr(row, name) for row in rows if getattr(row, name) is not None), None)

    values: dict[str, Any] = {
        "jid": seen.jid or first("jid"),
        "lid": seen.lid or first("lid"),
        "name": first("name") if not seen.push_name or seen.is_group else seen.push_name,
        "push_name": seen.push_name or first("push_name"),
        "business_name": seen.business_name or first("business_name"),
        "is_group": seen.is_group or any(row.is_group for row in rows),
        "blocked": any(row.blocked for row in rows),
    }
    if seen.on_whatsapp is not None:
        values["on_whatsapp"] = seen.on_whatsapp
    elif any(row.on_whatsapp for row in rows):
        values["on_whatsapp"] = True
    if kept.picture_checked_at is None:
        source = next((row for row in others if row.picture_checked_at is not None), None)
        if source is not None:
            values.update(
                picture_url=source.picture_url,
                picture_id=source.picture_id,
                picture_checked_at=source.picture_checked_at,
                picture_expires_at=source.picture_expires_at,
            )
    values["phone_number"] = Sighting(values["jid"], values["lid"]).key or kept.phone_number
    return {name: value for name, value in values.items() if getattr(kept, name) != value}


# -- contact-update events: what of a contact a user cares about, when it changes --------------------------

# the columns whose change a contact-update announces, by the name its body gives them
ANNOUNCED = {"push_name": "pushName", "business_name": "businessName", "blocked": "blocked"}


@dataclass(frozen=True, slots=True)
class ContactUpdate:
    """A change of a contact worth an event: rows merged into it, a name, the blocklist, its picture.

    `changes` holds the new values by their public names (`merged` lists the contacts folded into this one, by
    their ids as they were), `previous` the values before, `source` who changed it: `whatsapp` (what WhatsApp
    told: a message, a lookup), `phone` (the account's own phone, or the person's), `api`.
    """

    contact: Contact
    changes: dict[str, Any]
    previous: dict[str, Any]
    source: str

    def payload(self) -> dict[str, Any]:
        """The body of the `contact-update` event (a public contract: built here only)."""
        contact = self.contact
        return {
            **ContactIds(contact.id, contact.jid, contact.lid).fields(),
            "phoneNumber": contact.phone_number,
            "changes": self.changes,
            "previous": self.previous,
            "source": self.source,
        }


def noticed(
    before: Contact, after: Contact, others: Sequence[Contact] = (), *, source: str = "whatsapp"
) -> ContactUpdate | None:
    """Return the update a user would hear of when `before` became `after` (having absorbed `others`), if any.

    A name learned for the first time counts (a contact first known by a send shows who it is); ids learned
    do not (a lookup of a new number is no news), unless rows merged.
    """
    changes: dict[str, Any] = {}
    previous: dict[str, Any] = {}
    for column, name in ANNOUNCED.items():
        old, new = getattr(before, column), getattr(after, column)
        if old != new and new is not None:
            changes[name], previous[name] = new, old
    if others:
        changes["merged"] = [{"contactId": row.id, "jid": row.jid, "lid": row.lid} for row in others]
        previous.update(jid=before.jid, lid=before.lid)
    return ContactUpdate(after, changes, previous, source) if changes else None


def picture_change(*, removed: bool, picture_id: str | None) -> dict[str, Any]:
    """The `changes` of a contact-update for a new profile picture (or its removal)."""
    changes: dict[str, Any] = {"picture": "removed" if removed else "changed"}
    if picture_id is not None and not removed:
        changes["pictureId"] = picture_id
    return changes


def picture_seen(before: Contact, after: Contact) -> ContactUpdate | None:
    """The update when a look at a contact's picture (`after`) finds another than the last look (`before`) did:
    changed or removed meanwhile, untold. None when nobody had looked (or an event told it already)."""
    if before.picture_checked_at is None or before.picture_id == after.picture_id:
        return None
    removed = after.picture_id is None and after.picture_url is None
    changes = picture_change(removed=removed, picture_id=after.picture_id)
    return ContactUpdate(after, changes, {"pictureId": before.picture_id}, "whatsapp")


def recipient_of(contact: Contact, *, field: str = "to") -> Recipient:
    """Where a message to `contact` goes: its number (WhatsApp resolves it), else its LID, else its JID (a group's)."""
    if contact.jid is not None and contact.jid.endswith("@" + USER_SERVER):
        return Recipient(phone=jid_user(contact.jid), jid=None)
    if contact.lid is not None:
        return Recipient(phone=None, jid=Jid(contact.lid))
    if contact.jid is not None:
        return Recipient(phone=None, jid=Jid(contact.jid))
    return parse_recipient(contact.phone_number, field=field)


def address_of(contact: Contact) -> str:
    """The JID WhatsApp knows `contact` by, for calls about it: its phone JID, else its LID, else its key's JID."""
    if contact.jid is not None:
        return contact.jid
    if contact.lid is not None:
        return contact.lid
    key = contact.phone_number
    return key if "@" in key else phone_jid(key)


def picture_due(contact: Contact, now: datetime) -> bool:
    """Whether the contact's profile picture must be asked for (never asked, or its cached answer expired)."""
    return contact.picture_expires_at is None or contact.picture_expires_at <= now


def picture_expiry(link_expires_at: datetime | None, now: datetime, ttl: timedelta) -> datetime:
    """Until when a picture answer is kept: `ttl` at most, and never past its link's own expiry."""
    cap = now + ttl
    return cap if link_expires_at is None else max(now, min(link_expires_at, cap))
