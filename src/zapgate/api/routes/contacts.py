"""The contacts of the client's sessions: one per person (phone-number JID and LID together), number checks,
profile pictures, blocking."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from zapgate.api.deps import Chats, Messages, client_of_request, from_state
from zapgate.api.routes.whatsapp import _CALL_ERRORS, _ERRORS, _Cursor, _Limit, _SessionFilter, contact_out
from zapgate.api.schemas import ContactOut, ContactPage, NumberCheckList, NumberCheckOut, Problem
from zapgate.domain.ids import SESSION_ID_PATTERN
from zapgate.services.contacts import ContactDetails, ContactService
from zapgate.services.messages import ContactView

ClientId = Annotated[str, Depends(client_of_request)]
Contacts = Annotated[ContactService, Depends(from_state("contacts", ContactService))]
ContactIdPath = Annotated[
    str, Path(min_length=1, max_length=64, description="A contact's `id`.", examples=["k3x9q2m1c0v8b7n6a5s4d3f2g"])
]

router = APIRouter(prefix="/whatsapp", tags=["contacts"], responses=_ERRORS)

_CONTACT_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such contact (another client's contacts are not found either)."},
}


def _details(found: ContactDetails) -> ContactOut:
    return contact_out(found.contact, found.session_id)


@router.get("/contacts", responses={404: {"model": Problem, "description": "No such session."}})
async def list_contacts(
    client: ClientId,
    messages: Messages,
    session_id: _SessionFilter = None,
    limit: _Limit = 100,
    cursor: _Cursor = None,
) -> ContactPage:
    """List the contacts of the client's sessions, by key (a number's digits, else a LID, or a group's JID).

    A person is one contact per session, known by phone-number JID (`jid`), LID (`lid`) or both: when WhatsApp
    names both (a message, a number check, a send), contacts found apart by each become one, with every message.
    """
    page = await messages.list_contacts(client, session=session_id, limit=limit, cursor=cursor)
    items: list[ContactView] = page.items
    return ContactPage(
        contacts=[contact_out(view.contact, view.session_id) for view in items], next_cursor=page.next_cursor
    )


@router.get("/contacts/check", responses=_CALL_ERRORS)
async def check_numbers(
    client: ClientId,
    chats: Chats,
    session_id: Annotated[str, Query(alias="sessionId", pattern=SESSION_ID_PATTERN)],
    numbers: Annotated[
        list[str],
        Query(description="Up to 50 phone numbers with country code: repeat the parameter or separate by commas."),
    ],
) -> NumberCheckList:
    """Ask WhatsApp, through the session, whether numbers are on it and under which JID and LID.

    The canonical JID is WhatsApp's answer, never a rewrite of the digits (Brazil's ninth digit). Answers
    are cached for the session's sends, and each number on WhatsApp is a contact of the session (`contactId`;
    made if new, merged with one known by its LID).
    """
    wanted = [part.strip() for item in numbers for part in item.split(",") if part.strip()]
    answers = await chats.check_numbers(client, session_id, wanted)
    return NumberCheckList(session_id=session_id, numbers=[NumberCheckOut.model_validate(a) for a in answers])


@router.get("/contacts/{contactId}", responses=_CONTACT_ERRORS)
async def get_contact(contactId: ContactIdPath, client: ClientId, contacts: Contacts) -> ContactOut:
    """Return a contact: both of its ids (`jid`, `lid`), names, whether it is on WhatsApp and blocked, and its
    profile picture (`pictureUrl`).

    The picture is asked of WhatsApp through the session the first time and whenever its cached answer expired
    (`pictureExpiresAt`: at most a day, never past the link's own expiry); while the session is not connected
    the cached one is shown.
    """
    return _details(await contacts.get(client, contactId))


_BLOCK_ERRORS: dict[int | str, dict[str, Any]] = {
    **_CONTACT_ERRORS,
    409: {"model": Problem, "description": "The session is not connected."},
    502: {"model": Problem, "description": "WhatsApp refused (the engine's reason in `reason`)."},
    504: {"model": Problem, "description": "The session's worker did not answer in time: try again."},
}


@router.post("/contacts/{contactId}/block", responses=_BLOCK_ERRORS)
async def block_contact(contactId: ContactIdPath, client: ClientId, contacts: Contacts) -> ContactOut:
    """Block the contact on the session's account: WhatsApp no longer delivers their messages to it.

    A group cannot be blocked (422).
    """
    return _details(await contacts.set_blocked(client, contactId, True))


@router.post("/contacts/{contactId}/unblock", responses=_BLOCK_ERRORS)
async def unblock_contact(contactId: ContactIdPath, client: ClientId, contacts: Contacts) -> ContactOut:
    """Unblock the contact on the session's account: their messages reach it again."""
    return _details(await contacts.set_blocked(client, contactId, False))
