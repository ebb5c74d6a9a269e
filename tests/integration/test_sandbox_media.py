"""The sandbox's media server in PostgreSQL: files stream through in parts, expire, come back from the phone,
and are pruned; rich messages injected through the services reach a session on the PostgreSQL network."""

import asyncio
import hashlib
import io
import os
import tracemalloc
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from tests.support.waiting import eventually
from zapgate.db.manager import ConnectionManager
from zapgate.db.tables import sandbox_media
from zapgate.domain.content import Edit, Location, Media, MediaKind, MessageKey, PollVote, Quote, Reaction, Text
from zapgate.engines.base import (
    InboundMessage,
    MediaGone,
    MediaReuploaded,
    SessionRef,
    StartMode,
    StartRequest,
    StatusChanged,
)
from zapgate.engines.sandbox import MEDIA_CHUNK, SandboxEngine
from zapgate.errors import InvalidRequest
from zapgate.services.clients import ClientService
from zapgate.services.retention import Pruner, RetentionDefaults
from zapgate.services.sandbox import InboundFile, PostgresSandboxNetwork
from zapgate.services.sessions import SessionService

PHONE = "5511999990001"
ALICE = SessionRef("acme", "alice")
UK = "447700900123"
BIG = 20 * 1024 * 1024  # bytes
DEFAULTS = RetentionDefaults(events_days=30, audit_days=90, deliveries_days=30, idempotency_days=1)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(MEDIA_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


async def _parts(manager: ConnectionManager) -> int:
    async with manager.registry_transaction() as conn:
        return int((await conn.execute(select(func.count()).select_from(sandbox_media))).scalar_one())


async def test_a_large_file_streams_through_in_bounded_memory(manager: ConnectionManager, tmp_path: Path) -> None:
    network = PostgresSandboxNetwork(manager)
    source = tmp_path / "big.bin"
    with source.open("wb") as file:
        for _ in range(BIG // MEDIA_CHUNK):
            file.write(os.urandom(MEDIA_CHUNK))
    await network.upload(io.BytesIO(b"warm-up"), recipient=PHONE)  # the pool's first connection, prepared

    tracemalloc.start()
    try:
        uploaded = await network.upload(str(source), recipient=PHONE)
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        dest = tmp_path / "down.bin"
        fetched = await network.fetch(uploaded.handle, str(dest))
        _, fetch_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (uploaded.size, uploaded.sha256) == (BIG, _sha256(source))
    assert fetched == _sha256(dest) == uploaded.sha256
    # a few parts in memory at a time, never the file
    assert upload_peak < BIG / 4 and fetch_peak < BIG / 4, (upload_peak, fetch_peak)
    assert await _parts(manager) == BIG // MEDIA_CHUNK + 1


async def test_media_expire_come_back_from_the_phone_and_are_pruned(manager: ConnectionManager, tmp_path: Path) -> None:
    network = PostgresSandboxNetwork(manager)
    data = os.urandom(MEDIA_CHUNK + 10)
    mine = await network.upload(io.BytesIO(data), recipient=PHONE)
    other = await network.upload(io.BytesIO(b"someone else's"), recipient="5511999990002")
    assert await network.expire_media(PHONE) == 2  # parts
    with pytest.raises(MediaGone):
        await network.fetch(mine.handle, str(tmp_path / "gone"))
    assert not (tmp_path / "gone").exists()
    await network.fetch(other.handle, str(tmp_path / "other"))  # another phone's media did not expire

    again = await network.reupload(mine.handle)
    assert again is not None and again != mine.handle
    assert await network.fetch(again, str(tmp_path / "again")) == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "again").read_bytes() == data

    # the expired file's rows (the phone's copy) go once they expired longer ago than the network's mail is kept
    async with manager.registry_transaction() as conn:
        await conn.execute(
            text("UPDATE sandbox_media SET expires_at = now() - interval '8 days' WHERE expires_at <= now()")
        )
    assert await Pruner(manager, "w1", DEFAULTS).prune_sandbox_media() == 2
    assert await network.reupload(mine.handle) is None  # the phone's copy went with them
    assert await _parts(manager) == 2 + 1  # the reuploaded copy and the other phone's file stay
    await network.fetch(again, str(tmp_path / "still"))
    assert await Pruner(manager, "w1", DEFAULTS).prune_due() == {"*sandbox*": {"sandbox_mail": 0, "sandbox_media": 0}}

    assert await network.lose_media(PHONE) == 2
    with pytest.raises(MediaGone):
        await network.fetch(again, str(tmp_path / "lost"))
    assert await network.reupload(again) is None
    assert await network.reupload(b"not a handle") is None
    with pytest.raises(MediaGone):
        await network.fetch(b"\xff\xfe", str(tmp_path / "never"))


async def test_an_empty_file_and_an_unreadable_one(manager: ConnectionManager, tmp_path: Path) -> None:
    network = PostgresSandboxNetwork(manager)
    empty = await network.upload(io.BytesIO(b""), recipient=PHONE)
    assert (empty.size, empty.sha256) == (0, hashlib.sha256(b"").hexdigest())
    await network.fetch(empty.handle, str(tmp_path / "empty"))
    assert (tmp_path / "empty").read_bytes() == b""
    with pytest.raises(FileNotFoundError):
        await network.upload(str(tmp_path / "missing"), recipient=PHONE)


# -- through the services, to a session on the PostgreSQL network ------------------------------------------


@pytest.fixture
async def sessions(manager: ConnectionManager) -> SessionService:
    await ClientService(manager).create("acme")
    return SessionService(manager, default_engine="sandbox")


@pytest.fixture
async def hosted(
    manager: ConnectionManager, sessions: SessionService
) -> AsyncIterator[tuple[SandboxEngine, list[Any]]]:
    """Session alice on a sandbox engine over the PostgreSQL network, linked to PHONE; its events."""
    seen: list[Any] = []
    engine = SandboxEngine(seen.append, PostgresSandboxNetwork(manager), reconnect_delay=0.01)
    await sessions.create("acme", "alice")
    await engine.start(StartRequest(ref=ALICE, mode=StartMode.QR, qr_timeout=30))
    await sessions.sandbox_scan("acme", "alice", PHONE)
    await eventually(lambda: _seen(seen, lambda e: isinstance(e, StatusChanged) and e.status == "connected"))
    yield engine, seen
    await engine.close()


async def _seen(events: list[Any], predicate: Callable[[Any], bool]) -> Any:
    return next((e for e in events if predicate(e)), None)


async def _arrived(events: list[Any], message_id: str) -> InboundMessage:
    found = await eventually(
        lambda: _seen(events, lambda e: isinstance(e, InboundMessage) and e.message_id == message_id)
    )
    assert isinstance(found, InboundMessage)
    return found


async def test_injected_kinds_reach_the_session(
    sessions: SessionService, hosted: tuple[SandboxEngine, list[Any]]
) -> None:
    _, seen = hosted
    inject = sessions.sandbox_inject
    where = await inject(
        "acme", "alice", UK, None, content={"type": "location", "location": {"latitude": 1.5, "longitude": -2}}
    )
    got = await _arrived(seen, where)
    assert (got.type, got.content, got.from_me) == ("location", Location(latitude=1.5, longitude=-2.0), False)

    # a reply that mentions, with NUL-free text; a reaction and a vote name messages the session does not know
    reply = await inject(
        "acme",
        "alice",
        UK,
        None,
        content={
            "type": "text",
            "text": {"body": "yes"},
            "context": {"message_id": where},
            "mentions": ["+55 11 99999-0001"],
        },
    )
    got = await _arrived(seen, reply)
    assert got.content == Text(body="yes") and got.quote == Quote(key=MessageKey(where))
    assert got.mentions == (f"{PHONE}@s.whatsapp.net",)
    reacted = await inject(
        "acme", "alice", UK, None, content={"type": "reaction", "reaction": {"message_id": "3EB0AA", "emoji": "😂"}}
    )
    assert (await _arrived(seen, reacted)).content == Reaction(key=MessageKey("3EB0AA"), emoji="😂")
    voted = await inject(
        "acme", "alice", UK, None, content={"type": "poll_vote", "poll_vote": {"message_id": "P1", "selected": ["a"]}}
    )
    assert (await _arrived(seen, voted)).content == PollVote(key=MessageKey("P1", from_me=True), selected=("a",))
    with pytest.raises(InvalidRequest) as refused:
        await inject("acme", "alice", UK, "and a text", content={"type": "revoke", "revoke": {"message_id": "X"}})
    assert refused.value.details["field"] == "message"


async def test_injected_media_download_expire_and_come_back(
    sessions: SessionService, hosted: tuple[SandboxEngine, list[Any]], tmp_path: Path
) -> None:
    engine, seen = hosted
    data = os.urandom(MEDIA_CHUNK * 2 + 7)
    upload = InboundFile(io.BytesIO(data), "application/pdf", "C:\\reports\\q3.pdf")
    doc = await sessions.sandbox_inject(
        "acme", "alice", UK, None, content={"type": "document", "document": {"caption": "Q3"}}, file=upload
    )
    got = await _arrived(seen, doc)
    media = got.content
    assert isinstance(media, Media) and media.handle
    assert (media.kind, media.mime_type, media.filename, media.caption, media.size, media.sha256) == (
        MediaKind.DOCUMENT,
        "application/pdf",
        "q3.pdf",
        "Q3",
        len(data),
        hashlib.sha256(data).hexdigest(),
    )
    assert got.text == "[document] Q3"
    dest = tmp_path / "q3.pdf"
    await engine.download(ALICE, media, str(dest))
    assert dest.read_bytes() == data

    await sessions.sandbox_fault("acme", "alice", "expire_media")

    async def gone() -> bool:
        try:
            await engine.download(ALICE, media, str(tmp_path / "again.pdf"))
        except MediaGone:
            return True
        return False

    await eventually(gone, within=10.0)
    await engine.request_reupload(ALICE, f"{UK}@s.whatsapp.net", MessageKey(doc), media)
    answer = await eventually(lambda: _seen(seen, lambda e: isinstance(e, MediaReuploaded)))
    assert isinstance(answer, MediaReuploaded) and answer.message_id == doc and answer.handle
    await engine.download(ALICE, Media(kind=MediaKind.DOCUMENT, handle=answer.handle), str(tmp_path / "back.pdf"))
    assert (tmp_path / "back.pdf").read_bytes() == data

    inline = await sessions.sandbox_inject(
        "acme",
        "alice",
        UK,
        None,
        content={
            "type": "audio",
            "audio": {"data": "T2dnUw==", "mime_type": "audio/ogg", "voice": True, "duration": 1},
        },
    )
    voice = (await _arrived(seen, inline)).content
    assert isinstance(voice, Media) and (voice.voice, voice.size, voice.duration_seconds) == (True, 4, 1.0)
    await engine.download(ALICE, voice, str(tmp_path / "voice.ogg"))
    assert (tmp_path / "voice.ogg").read_bytes() == b"OggS"

    await sessions.sandbox_fault("acme", "alice", "lose_media")
    await eventually(lambda: _lost(engine, voice, tmp_path))
    await engine.request_reupload(ALICE, f"{UK}@s.whatsapp.net", MessageKey(inline), voice)
    lost = await eventually(lambda: _seen(seen, lambda e: isinstance(e, MediaReuploaded) and e.message_id == inline))
    assert (lost.handle, lost.error) == (None, "gone")


async def _lost(engine: SandboxEngine, media: Media, tmp_path: Path) -> bool:
    try:
        await engine.download(ALICE, media, str(tmp_path / "lost"))
    except MediaGone:
        await asyncio.sleep(0)
        return True
    return False


async def test_targets_are_named_as_the_session_knows_them(
    manager: ConnectionManager, sessions: SessionService, hosted: tuple[SandboxEngine, list[Any]]
) -> None:
    _, seen = hosted
    session = (await sessions.get("acme", "alice")).session
    db = await manager.get_connection("acme")
    contact = await db.contact.upsert(session_id=session.id, phone_number=UK)
    for ours, theirs, direction in (("OURS-1", "3EB0SENT", "outbound"), ("3EB0GOT", "3EB0GOT", "inbound")):
        await db.message.insert_if_new(
            session_id=session.id,
            contact_id=contact.id,
            message_id=ours,
            wa_message_id=theirs,
            content="x",
            direction=direction,
            type="text",
            status="sent",
            timestamp=datetime.now(UTC),
            chat_jid=f"{UK}@s.whatsapp.net",
        )

    async def inject(kind: str, part: dict[str, Any], **extra: Any) -> InboundMessage:
        message_id = await sessions.sandbox_inject(
            "acme", "alice", UK, None, content={"type": kind, kind: part}, **extra
        )
        return await _arrived(seen, message_id)

    # the session's own message, by WhatsApp's id or by ours: its key says it is the session's
    for named in ("3EB0SENT", "OURS-1"):
        got = await inject("reaction", {"message_id": named, "emoji": "🔥"})
        assert got.content == Reaction(key=MessageKey("3EB0SENT", from_me=True), emoji="🔥")
    got = await inject("reaction", {"message_id": "3EB0GOT", "emoji": "🔥"})
    assert got.content == Reaction(key=MessageKey("3EB0GOT", from_me=False), emoji="🔥")
    got = await inject("edit", {"message_id": "3EB0GOT", "text": "better"})
    assert got.content == Edit(key=MessageKey("3EB0GOT", from_me=False), text="better")
    # the linked phone edits the session's message (it wrote it); in a group keys name their authors
    got = await inject("edit", {"message_id": "3EB0SENT", "text": "mine"}, from_me=True)
    assert got.content == Edit(key=MessageKey("3EB0SENT", from_me=True), text="mine") and got.from_me
    got = await inject("reaction", {"message_id": "3EB0SENT", "emoji": "🙂"}, group="120363012345678901@g.us")
    assert got.content == Reaction(key=MessageKey("3EB0SENT", True, f"{PHONE}@s.whatsapp.net"), emoji="🙂")
    # only its author edits or deletes a message
    for kind, part, extra in (
        ("revoke", {"message_id": "3EB0SENT"}, {}),
        ("edit", {"message_id": "3EB0GOT", "text": "no"}, {"from_me": True}),
    ):
        with pytest.raises(InvalidRequest) as refused:
            await sessions.sandbox_inject("acme", "alice", UK, None, content={"type": kind, kind: part}, **extra)
        assert refused.value.details["field"] == f"{kind}.message_id"
