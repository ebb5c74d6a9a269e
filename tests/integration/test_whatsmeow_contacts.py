"""Contacts through the whatsmeow engine, offline at neonize's call boundary: profile pictures, the blocklist and
what a message tells of its sender (both ids, push name, verified business name). The Go library is a stand-in
(tests.support.neonize.FakeGo); neonize's Python client is the real thing."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.neonize import FakeGo, empty_jid, jid, live_engine, until
from zapgate.engines.base import (
    BlocklistChanged,
    ContactPictureChanged,
    EngineEvent,
    InboundMessage,
    ProfilePicture,
    SessionRef,
)
from zapgate.engines.whatsmeow import WhatsmeowEngine, pb, wa

REF = SessionRef("acme", "s1")
PHONE = "5521988887777@s.whatsapp.net"
LID = "123456789012345@lid"


@pytest.fixture
async def live(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[WhatsmeowEngine, FakeGo, list[EngineEvent]]]:
    fake = FakeGo()
    monkeypatch.setattr(importlib.import_module("neonize.client"), "gocode", fake)
    async with live_engine(REF, fake) as (engine, events):
        yield engine, fake, events


async def test_a_profile_picture_is_asked_for_in_full_and_expires_with_its_link(live: Any) -> None:
    engine, fake, _ = live
    url = "https://pps.whatsapp.net/v/t61.24694-24/1234_n.jpg?ccb=11-4&oh=01_AdS&oe=6A1B2C3D&_nc_sid=5e03e0"
    fake.picture = pb.ProfilePictureInfo(URL=url, ID="1790000000", Type="image", DirectPath="/v/t61/1234_n.jpg")
    picture = await engine.profile_picture(REF, LID)
    assert picture == ProfilePicture(
        url=url, picture_id="1790000000", expires_at=datetime.fromtimestamp(0x6A1B2C3D, UTC)
    )
    [(asked, params)] = fake.pictures
    assert (asked.User, asked.Server) == ("123456789012345", "lid")
    assert not params.Preview  # the full picture, not the thumbnail


async def test_no_picture_or_a_hidden_one_is_none_and_other_failures_raise(live: Any) -> None:
    engine, fake, _ = live
    assert await engine.profile_picture(REF, PHONE) == ProfilePicture(url=None)  # whatsmeow answered nothing
    for error in ("that user has no profile picture", "the user has hidden their profile picture from you"):
        fake.picture_error = error
        assert await engine.profile_picture(REF, PHONE) == ProfilePicture(url=None)
    fake.picture_error = "info query timed out"
    with pytest.raises(Exception, match="in time"):
        await engine.profile_picture(REF, PHONE)


async def test_blocking_and_unblocking_update_whatsmeows_blocklist(live: Any) -> None:
    engine, fake, _ = live
    await engine.set_blocked(REF, PHONE, True)
    await engine.set_blocked(REF, LID, False)
    assert [(j.User, j.Server, action) for j, action in fake.blocklist] == [
        ("5521988887777", "s.whatsapp.net", "block"),
        ("123456789012345", "lid", "unblock"),
    ]


async def test_a_message_names_its_sender_by_both_ids_with_its_names(live: Any) -> None:
    _, fake, events = live
    details = importlib.import_module(
        "neonize.proto.waVnameCert.WAWebProtobufsVnameCert_pb2"
    ).VerifiedNameCertificate.Details
    source = pb.MessageSource(
        Chat=jid("123456789012345", "lid"),
        Sender=jid("123456789012345", "lid"),
        IsFromMe=False,
        IsGroup=False,
        SenderAlt=jid("5521988887777"),
        RecipientAlt=empty_jid(),
        BroadcastListOwner=empty_jid(),
    )
    info = pb.MessageInfo(
        MessageSource=source,
        ID="3EB0BIZ",
        ServerID=0,
        Type="text",
        Pushname="Ana",
        Timestamp=1_790_000_000_000,
        Category="",
        Multicast=False,
        MediaType="",
        Edit="",
        VerifiedName=pb.VerifiedName(Details=details(verifiedName="Ana's Bakery", serial=1, issuer="smb:wa")),
    )
    fake.push(pb.Message(Info=info, Message=wa.Message(conversation="olá")))
    await until(lambda: any(isinstance(e, InboundMessage) for e in events))
    [message] = [e for e in events if isinstance(e, InboundMessage)]
    assert (message.chat_jid, message.chat_lid, message.sender_jid, message.sender_lid) == (PHONE, LID, PHONE, LID)
    assert (message.push_name, message.verified_name) == ("Ana", "Ana's Bakery")


# -- the phone's blocklist and contacts' pictures (issue 14) ------------------------------------------------


def _change(user: str, server: str, action: Any) -> Any:
    return pb.BlocklistChange(JID=jid(user, server), BlockAction=action)


async def test_the_phones_blocks_and_unblocks_are_told(live: Any) -> None:
    _, fake, events = live
    fake.push(
        pb.BlocklistEvent(
            Action=pb.BlocklistEvent.DEFAULT,
            DHASH="2",
            PrevDHash="1",
            Changes=[
                _change("5521988887777", "s.whatsapp.net", pb.BlocklistChange.BLOCK),
                _change("123456789012345", "lid", pb.BlocklistChange.UNBLOCK),
            ],
        )
    )
    await until(lambda: any(isinstance(e, BlocklistChanged) for e in events))
    [change] = [e for e in events if isinstance(e, BlocklistChanged)]
    assert change == BlocklistChanged(REF, blocked=(PHONE,), unblocked=(LID,), complete=False)
    assert fake.blocklist_reads == 0


async def test_a_blocklist_that_only_says_it_changed_is_read_whole(live: Any) -> None:
    engine, fake, events = live
    await engine.set_blocked(REF, PHONE, True)  # what GetBlocklist will answer
    fake.push(pb.BlocklistEvent(Action=pb.BlocklistEvent.MODIFY, DHASH="3", PrevDHash="2"))
    await until(lambda: any(isinstance(e, BlocklistChanged) for e in events))
    [change] = [e for e in events if isinstance(e, BlocklistChanged)]
    assert change == BlocklistChanged(REF, blocked=(PHONE,), complete=True)
    assert fake.blocklist_reads == 1


async def test_a_persons_new_picture_is_told_and_the_accounts_own_is_not(live: Any) -> None:
    _, fake, events = live
    own = jid("5511999999999")  # the linked account (tests.support.neonize's device)
    fake.push(pb.Picture(JID=own, Author=own, Timestamp=1_790_000_000, Remove=False))
    fake.push(pb.Picture(JID=jid("123456789012345", "lid"), Author=empty_jid(), Timestamp=1_790_000_100, Remove=True))
    fake.push(pb.Picture(JID=jid("5521988887777"), Author=jid("5521988887777"), Timestamp=1_790_000_200, Remove=False))
    await until(lambda: len([e for e in events if isinstance(e, ContactPictureChanged)]) == 2)
    removed, changed = [e for e in events if isinstance(e, ContactPictureChanged)]
    assert removed == ContactPictureChanged(
        REF, jid=LID, lid=LID, removed=True, timestamp=datetime.fromtimestamp(1_790_000_100, UTC)
    )
    assert (changed.jid, changed.lid, changed.removed, changed.picture_id) == (PHONE, None, False, None)
