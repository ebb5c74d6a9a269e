"""The sandbox network in PostgreSQL: the phone directory, mailboxes and media server shared by every worker
(and the API).

Every call waits for a database that is away rather than fail: a receipt or a message whose post failed
while PostgreSQL restarted would be lost (the mail it answers may be stored and acknowledged meanwhile).
Files stream through in parts of MEDIA_CHUNK bytes, one row each: an upload is one transaction (a handle names
a whole file or nothing), a download reads one part per transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from zapgate.background import wait_set
from zapgate.db import notify
from zapgate.db import sandbox as store
from zapgate.db.manager import ConnectionManager
from zapgate.domain.chats import ChatState
from zapgate.engines.base import EngineError, GroupNotFound, MediaGone, SessionRef
from zapgate.engines.sandbox import (
    MAIL_LEASE,
    MEDIA_CHUNK,
    MEDIA_TTL,
    PHONE_MAILBOX,
    SESSION_MAILBOX,
    ChunkWriter,
    Mail,
    MediaSource,
    MediaUpload,
    PhoneInUse,
    blocking_pair,
    departure_notices,
    media_handle,
    media_key,
    new_media_key,
    phone_address,
)
from zapgate.engines.sandbox_accounts import SandboxAccount
from zapgate.engines.sandbox_groups import SandboxGroup
from zapgate.engines.sandbox_groups import leave as leave_group
from zapgate.services.patience import while_away

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class InboundFile:
    """A file a simulated phone sends (uploaded to the inject route): where to read it, what the upload said."""

    file: BinaryIO
    content_type: str | None = None
    filename: str | None = None


DIRECTORY_TTL = 1.0  # seconds a snapshot of the phone directory is used (a lookup per send would dominate)
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")  # a surrogate as json.dumps escapes it (a pair is wrapped too)
ESCAPED = "escaped_mail"  # the one key of an envelope that carries its mail as JSON text


def envelope(mail: Mail) -> Mail:
    """Return `mail` as jsonb can store it: jsonb refuses NUL and lone surrogates in strings, which texts may
    hold, so such mail travels as JSON text (escaped). A batch of posts is one statement: one such text must not
    fail the others."""
    encoded = json.dumps(mail)
    return {ESCAPED: encoded} if "\\u0000" in encoded or _SURROGATE.search(encoded) else mail


def unwrap(stored: Mail) -> Mail:
    """Return the mail an `envelope` carries."""
    escaped = stored.get(ESCAPED)
    return dict(json.loads(escaped)) if isinstance(escaped, str) and len(stored) == 1 else stored


class PostgresSandboxNetwork:
    """`SandboxNetwork` over the registry tables `sandbox_*`."""

    def __init__(
        self,
        manager: ConnectionManager,
        wake: asyncio.Event | None = None,
        directory_news: asyncio.Event | None = None,
    ) -> None:
        self._manager = manager
        # set when mail may have arrived for an address watched (`mail_posted`), or when there is no telling
        self._wake = wake or asyncio.Event()
        self._watching: set[str] = set()  # the addresses the last collection looked at, and those watched since
        self._watched_since: set[str] = set()
        # set when a number is linked or unlinked anywhere (a NOTIFY): the snapshot of the directory is stale.
        # Without it, for up to DIRECTORY_TTL after a number was linked on another worker, a send to it went to
        # a simulated phone that read it, and the session that had just linked it never got it.
        self._directory_news = directory_news
        self._directory: dict[str, SessionRef] = {}
        self._directory_read = float("-inf")  # when the snapshot was taken (monotonic seconds)
        self._directory_reading: asyncio.Future[None] | None = None  # the read under way, shared by its askers
        self._directory_changes = 0  # links and unlinks made here: a read begun before one is stale

    async def _registry(self, what: str, work: Callable[..., Awaitable[T]]) -> T:
        """Run `work(conn)` in a registry transaction, waiting for a database that is away."""

        async def attempt() -> T:
            async with self._manager.registry_transaction() as conn:
                return await work(conn)

        return await while_away(attempt, event="sandbox.network_waiting", operation=what)

    async def link(self, phone: str, ref: SessionRef) -> None:
        async def work(conn: AsyncConnection) -> tuple[str, str]:
            linked = await store.link(conn, phone, ref.client_id, ref.session_id)
            await notify.notify(conn, notify.SANDBOX_DIRECTORY, phone)  # every worker's snapshot is stale
            if linked == (ref.client_id, ref.session_id):
                before = await store.claim_owner(conn, phone, ref.client_id)
                if before is not None and before != ref.client_id:
                    await _start_afresh(conn, phone)
            return linked

        self._directory_changed()
        try:
            owner = await self._registry("link", work)
        finally:
            self._directory_changed()  # a read begun meanwhile may not have seen it
        if owner != (ref.client_id, ref.session_id):
            raise PhoneInUse(f"sandbox phone {phone} is already linked to another session")

    async def unlink(self, phone: str, ref: SessionRef) -> None:
        self._directory_changed()
        try:

            async def work(conn: AsyncConnection) -> None:
                await store.unlink(conn, phone, ref.client_id, ref.session_id)
                await notify.notify(conn, notify.SANDBOX_DIRECTORY, phone)

            await self._registry("unlink", work)
        finally:
            self._directory_changed()  # a read begun meanwhile may not have seen it

    async def linked_phone(self, ref: SessionRef) -> str | None:
        """Return the phone linked to the session now (read now: not from the snapshot), or None."""
        async with self._manager.registry_transaction() as conn:
            return await store.phone_of(conn, ref.client_id, ref.session_id)

    async def linked_session(self, phone: str) -> SessionRef | None:
        # the directory is small and read on every send: one snapshot of it serves DIRECTORY_TTL seconds, and
        # the sends that find it stale together wait for one read of it (not one registry transaction each)
        if self._directory_news is not None and self._directory_news.is_set():
            self._directory_news.clear()
            self._directory_changed()
        if time.monotonic() - self._directory_read > DIRECTORY_TTL:
            if self._directory_reading is None:
                self._directory_reading = asyncio.ensure_future(self._read_directory())
            reading = self._directory_reading
            try:
                await asyncio.shield(reading)
            finally:
                if reading.done() and self._directory_reading is reading:
                    self._directory_reading = None
        return self._directory.get(phone)

    async def set_blocked(self, owner: str, phone: str, blocked: bool) -> None:
        await self._registry("block", lambda conn: store.set_blocked(conn, owner, phone, blocked))

    async def is_blocked(self, owner: str, phone: str) -> bool:
        return await self._registry("blocked", lambda conn: store.is_blocked(conn, owner, phone))

    async def blocked_among(self, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        if not pairs:
            return set()
        return await self._registry("blocked", lambda conn: store.blocked_among(conn, pairs))

    async def _read_directory(self) -> None:
        asked, changes = time.monotonic(), self._directory_changes
        found = await self._registry("directory", store.directory)
        self._directory = {phone: SessionRef(client, session) for phone, (client, session) in found.items()}
        if changes == self._directory_changes:  # else a link or unlink made here since may be missing from it
            self._directory_read = asked

    def _directory_changed(self) -> None:
        self._directory_read = float("-inf")
        self._directory_reading = None  # the next asker reads anew
        self._directory_changes += 1

    async def post(self, address: str, mail: Mail) -> None:
        await self.post_many([(address, mail)])

    async def post_many(self, posts: Collection[tuple[str, Mail]]) -> None:
        if not posts:
            return
        stored = [(address, envelope(mail), blocking_pair(address, mail)) for address, mail in posts]
        await self._registry("post", lambda conn: store.post_many(conn, stored))

    def mail_posted(self, address: str | None) -> None:
        """A NOTIFY said `address` got mail (None: notifications may have been missed): wake the pump if the
        address is one it collects. Every post used to wake every worker's pump, and each ran a collection:
        at 1,000 sessions on 10 workers, nine of ten found nothing."""
        if address is None or address in self._watching:
            self._wake.set()

    def watch(self, addresses: Collection[str]) -> None:
        self._watching.update(addresses)
        self._watched_since.update(addresses)
        self._wake.set()  # mail may be waiting for them already

    async def collect(self, addresses: Collection[str]) -> list[tuple[int, str, Mail]]:
        self._watching = set(addresses) | self._watched_since
        self._watched_since = set()
        if not addresses:
            return []
        taken = await self._registry("collect", lambda conn: store.collect(conn, addresses, MAIL_LEASE))
        return [(mail_id, address, unwrap(stored)) for mail_id, address, stored in taken]

    async def ack(self, mail_ids: Collection[int]) -> None:
        if not mail_ids:
            return
        await self._registry("ack", lambda conn: store.ack(conn, mail_ids))

    async def renew(self, mail_ids: Collection[int], seconds: float) -> None:
        if not mail_ids:
            return
        await self._registry("renew", lambda conn: store.renew(conn, mail_ids, seconds))

    async def release(self, addresses: Collection[str]) -> None:
        if not addresses:
            return
        await self._registry("release", lambda conn: store.release(conn, addresses))

    async def uncollected(self, worker_id: str, older_than: float) -> list[tuple[SessionRef, int, float]]:
        """The linked sessions leased to `worker_id` with mail older than `older_than` seconds that nobody holds
        (handed out to no one, or its lease over): (session, how many, the oldest's age in seconds)."""
        found = await self._registry(
            "uncollected",
            lambda conn: store.uncollected(
                conn,
                worker_id,
                older_than,
                phone_prefix=PHONE_MAILBOX,
                session_prefix=SESSION_MAILBOX,
            ),
        )
        return [(SessionRef(client, session), waiting, oldest) for client, session, waiting, oldest in found]

    async def wait_for_mail(self, at_most: float) -> None:
        await wait_set(self._wake, at_most)  # not wait_for, which can swallow the pump's cancellation at close
        self._wake.clear()

    async def upload(self, source: MediaSource, *, recipient: str) -> MediaUpload:
        key = new_media_key()
        ttl = MEDIA_TTL.total_seconds()
        reader = await asyncio.to_thread(open, source, "rb") if isinstance(source, str) else source
        try:
            start = reader.tell()

            async def attempt() -> MediaUpload:
                reader.seek(start)  # from the start again on a retry
                digest, size, part = hashlib.sha256(), 0, 0
                async with self._manager.registry_transaction() as conn:
                    while chunk := await _read(reader):
                        digest.update(chunk)
                        await store.store_media_part(conn, key, part, chunk, recipient, ttl)
                        size, part = size + len(chunk), part + 1
                    if part == 0:  # an empty file is one empty part: the file exists
                        await store.store_media_part(conn, key, 0, b"", recipient, ttl)
                return MediaUpload(media_handle(key), size, digest.hexdigest())

            try:  # one try, unless the database is away (waited for): an unreadable file is raised at once
                return await while_away(attempt, event="sandbox.network_waiting", other_attempts=1, operation="upload")
            except _Unreadable as exc:
                raise exc.error from None
        finally:
            if isinstance(source, str):
                reader.close()

    async def fetch(self, handle: bytes, dest: str) -> str:
        key = media_key(handle)
        parts = await self._registry("media", lambda conn: store.media_parts(conn, key))
        if not parts:
            raise MediaGone("the media server no longer has this file")
        async with ChunkWriter(dest) as writer:
            for part in range(parts):
                data = await self._registry("media", lambda conn, part=part: store.media_part(conn, key, part))
                if data is None:  # expired (or lost) while it was downloaded
                    raise MediaGone("the media server no longer has this file")
                await writer.write(data)
        return writer.sha256

    async def reupload(self, handle: bytes) -> bytes | None:
        try:
            key = media_key(handle)
        except MediaGone:
            return None
        fresh = new_media_key()
        ttl = MEDIA_TTL.total_seconds()
        copied = await self._registry("reupload", lambda conn: store.copy_media(conn, key, fresh, ttl))
        return media_handle(fresh) if copied else None

    async def expire_media(self, recipient: str) -> int:
        return await self._registry("expire_media", lambda conn: store.expire_media(conn, recipient))

    async def lose_media(self, recipient: str) -> int:
        return await self._registry("lose_media", lambda conn: store.lose_media(conn, recipient))

    # -- groups (engines/sandbox_groups.py) --

    async def create_group(self, group: SandboxGroup) -> None:
        fields, members = _group_row(group)
        await self._registry("create_group", lambda conn: store.insert_group(conn, fields, members))

    async def group(self, jid: str) -> SandboxGroup | None:
        row = await self._registry("group", lambda conn: store.load_group(conn, jid))
        return None if row is None else _group_of(row)

    async def change_group(self, jid: str, change: Callable[[SandboxGroup], T]) -> T:
        async def attempt() -> T:
            async with self._manager.registry_transaction() as conn:
                row = await store.load_group(conn, jid, for_update=True)
                if row is None:
                    raise _Refused(GroupNotFound(f"no group {jid}"))
                group = _group_of(row)
                try:
                    result = change(group)  # raises before anything is written (the transaction rolls back)
                except EngineError as exc:
                    raise _Refused(exc) from None
                fields, members = _group_row(group)
                await store.save_group(conn, fields, members)
                return result

        try:  # WhatsApp's refusal is raised at once; only a database that is away is waited for
            return await while_away(attempt, event="sandbox.network_waiting", other_attempts=1, operation="group")
        except _Refused as refused:
            raise refused.error from None

    async def groups_of(self, phone: str) -> list[SandboxGroup]:
        async def work(conn: AsyncConnection) -> list[SandboxGroup]:
            found = []
            for jid in await store.groups_of(conn, phone):
                row = await store.load_group(conn, jid)
                if row is not None:
                    found.append(_group_of(row))
            return found

        return await self._registry("groups_of", work)

    async def group_of_invite(self, code: str) -> str | None:
        return await self._registry("group_of_invite", lambda conn: store.group_of_invite(conn, code))

    # -- accounts (engines/sandbox_accounts.py) --

    async def chat_state(self, owner: str, chat: str) -> ChatState | None:
        found = await self._registry("chat_state", lambda conn: store.chat_state(conn, owner, chat))
        return None if found is None else ChatState(**found)

    async def change_chat_state(
        self, owner: str, chat: str, change: Callable[[ChatState | None], ChatState]
    ) -> ChatState:
        async def work(conn: AsyncConnection) -> ChatState:
            await store.lock_chat_state(conn, owner, chat)
            found = await store.chat_state(conn, owner, chat)
            state = change(None if found is None else ChatState(**found))
            await store.save_chat_state(conn, owner, chat, _chat_state_row(state))
            return state

        return await self._registry("change_chat_state", work)

    async def account(self, phone: str) -> SandboxAccount:
        found = await self._registry("account", lambda conn: store.account(conn, phone))
        return SandboxAccount() if found is None else SandboxAccount(**found)

    async def set_available(self, phone: str, available: bool, at: datetime) -> None:
        values: dict[str, Any] = {"available": available} if available else {"available": False, "last_seen": at}
        await self._registry("set_available", lambda conn: store.update_account(conn, phone, values))

    async def set_holding_reads(self, phone: str, holding: bool) -> None:
        values = {"holding_reads": holding}
        await self._registry("set_holding_reads", lambda conn: store.update_account(conn, phone, values))

    async def subscribe_presence(self, subscriber: str, target: str) -> None:
        await self._registry("subscribe_presence", lambda conn: store.subscribe_presence(conn, subscriber, target))

    async def presence_subscribers(self, target: str) -> list[str]:
        return await self._registry("presence_subscribers", lambda conn: store.presence_subscribers(conn, target))

    async def forget_presence_subscriptions(self, subscriber: str) -> None:
        await self._registry("forget_presence", lambda conn: store.forget_presence_subscriptions(conn, subscriber))


async def _start_afresh(conn: AsyncConnection, phone: str) -> None:
    """Forget the account `phone` as a new owner finds it (`SandboxNetwork.link`), in the link's transaction."""
    await store.forget_account(conn, phone, phone_address(phone))
    linked: set[str] | None = None
    for jid in await store.groups_of(conn, phone):
        row = await store.load_group(conn, jid, for_update=True)
        if row is None or phone not in dict(row.members):
            continue  # gone meanwhile
        group = _group_of(row)
        leave_group(group, phone)
        fields, members = _group_row(group)
        await store.save_group(conn, fields, members)
        linked = set(await store.directory(conn)) if linked is None else linked
        for address, mail in departure_notices(group, phone, linked):
            await store.post(conn, address, envelope(mail))


def _chat_state_row(state: ChatState) -> dict[str, Any]:
    return {
        "archived": bool(state.archived),
        "pinned": bool(state.pinned),
        "muted": bool(state.muted),
        "muted_until": state.muted_until if state.muted else None,
        "read": state.read,
    }


def _group_row(group: SandboxGroup) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    fields = {
        "jid": group.jid,
        "subject": group.subject,
        "description": group.description,
        "owner": group.owner,
        "picture_id": group.picture_id,
        "announce": group.announce,
        "locked": group.locked,
        "invite_code": group.invite_code,
        "created_at": group.created_at,
        "join_approval": group.join_approval,
        "join_requests": [[phone, at] for phone, at in group.requests.items()],  # oldest first
    }
    return fields, list(group.members.items())


def _group_of(row: store.GroupRow) -> SandboxGroup:
    f = row.fields
    return SandboxGroup(
        jid=f["jid"],
        subject=f["subject"],
        owner=f["owner"],
        created_at=f["created_at"],
        invite_code=f["invite_code"],
        description=f["description"],
        picture_id=f["picture_id"],
        announce=f["announce"],
        locked=f["locked"],
        members=dict(row.members),
        join_approval=bool(f["join_approval"]),
        requests={str(phone): str(at) for phone, at in f["join_requests"] or ()},
    )


class _Refused(Exception):
    """WhatsApp's rules refused a group change (not the database's failure: never waited for, never retried)."""

    def __init__(self, error: EngineError) -> None:
        super().__init__(str(error))
        self.error = error


class _Unreadable(Exception):
    """The file being uploaded could not be read (not the database's failure: never waited for, never retried)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


async def _read(reader: BinaryIO) -> bytes:
    """The next MEDIA_CHUNK bytes of `reader` (b"" at its end), read off the event loop."""
    try:
        return await asyncio.to_thread(reader.read, MEDIA_CHUNK)
    except OSError as exc:
        raise _Unreadable(exc) from None
