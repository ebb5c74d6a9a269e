"""Phone numbers and WhatsApp JIDs: sanitising, validating, masking. Never rewriting digits.

A phone number's canonical JID is whatever WhatsApp says it is (an engine's lookup): Brazilian numbers, for
one, exist with and without the ninth digit, and guessing which one is how other gateways lose messages.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import NewType

import phonenumbers

from zapgate.errors import InvalidRequest

Jid = NewType("Jid", str)

USER_SERVER = "s.whatsapp.net"
LID_SERVER = "lid"
GROUP_SERVER = "g.us"

_SEPARATORS = re.compile(r"[\s+\-.()]")
_DIGITS = re.compile(r"[0-9]{8,15}", re.ASCII)
_GROUP_JID = re.compile(r"[0-9]{5,}(-[0-9]+)?@g\.us", re.ASCII)
_USER_JID = re.compile(r"([0-9]{5,20})(:[0-9]+)?@(s\.whatsapp\.net|lid)", re.ASCII)

MAX_TEXT_LENGTH = 4096  # characters per text message (the seed's limit)


class InvalidPhoneNumber(InvalidRequest):
    """A recipient that is neither a plausible phone number nor a WhatsApp JID."""

    code = "invalid_phone_number"


@dataclass(frozen=True, slots=True)
class Recipient:
    """Where a message goes: a phone number (digits with country code) or a JID given as such."""

    phone: str | None
    jid: Jid | None

    @property
    def is_group(self) -> bool:
        return self.jid is not None and self.jid.endswith("@" + GROUP_SERVER)

    @property
    def key(self) -> str:
        """The contact key stored for this recipient: the digits of a phone (a phone JID's too), or the JID."""
        if self.phone is not None:
            return self.phone
        user, _, server = str(self.jid).partition("@")
        user = user.split(":", 1)[0]  # a device's JID names its account
        return user if server == USER_SERVER else f"{user}@{server}"


def sanitize(raw: str) -> str:
    """Remove what people put between digits: spaces, `+`, `-`, `.`, parentheses."""
    return _SEPARATORS.sub("", raw)


def parse_recipient(raw: object, *, field: str | None = None) -> Recipient:
    """Return the recipient `raw` names; raise InvalidPhoneNumber saying what is expected (naming `field`,
    the input it came from, so that the API can point at it)."""
    try:
        return _parse_recipient(raw)
    except InvalidPhoneNumber as exc:
        if field is not None:
            exc.details["field"] = field
        raise


def _parse_recipient(raw: object) -> Recipient:
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidPhoneNumber("a recipient is required: a phone number with country code, or a JID")
    value = raw.strip()
    if "@" in value:
        if _GROUP_JID.fullmatch(value) or _USER_JID.fullmatch(value):
            return Recipient(phone=None, jid=Jid(value))
        raise InvalidPhoneNumber(
            "invalid JID: expected digits@s.whatsapp.net, digits@lid or a group id@g.us", value=value[:64]
        )
    digits = sanitize(value)
    if _DIGITS.fullmatch(digits) is None:
        raise InvalidPhoneNumber(
            "invalid phone number: expected 8-15 digits with the country code, e.g. 5511999999999",
            value=value[:64],
        )
    problem = _impossible(digits)
    if problem is not None:
        raise InvalidPhoneNumber(problem, value=value[:64])
    return Recipient(phone=digits, jid=None)


@functools.lru_cache(maxsize=16_384)  # a gateway writes to the same numbers again and again: parse each once
def _impossible(digits: str) -> str | None:
    """Why `digits` (with the country code) are not a possible phone number; None when they are."""
    try:
        parsed = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException as exc:
        return f"invalid phone number: {exc}"
    # "possible", not "valid": WhatsApp keeps numbers that numbering plans have since changed (Brazil's
    # eight-digit mobiles), and only WhatsApp's own lookup may say which JID a number has
    if not phonenumbers.is_possible_number(parsed):
        return "invalid phone number: not a possible number for its country code (is the country code there?)"
    return None


def phone_jid(phone: str) -> Jid:
    """Return the JID that spells `phone` literally (what to try, never a guess at another number)."""
    return Jid(f"{phone}@{USER_SERVER}")


def jid_user(jid: str) -> str:
    """Return the user part of a JID (digits for a phone JID), without device suffix."""
    return jid.split("@", 1)[0].split(":", 1)[0]


def mask(phone: str | None) -> str | None:
    """Return `phone` with its middle digits hidden, for logs: at least five of them, whatever its length."""
    if phone is None:
        return None
    user = jid_user(phone)
    shown = min(4, max(0, (len(user) - 5) // 2))  # at each end: 4 of 13 digits, 1 of 7 or 8, none of 5
    return user[:shown] + "*" * (len(user) - 2 * shown) + (user[-shown:] if shown else "")
