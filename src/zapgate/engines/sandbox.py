"""The sandbox engine: a simulated WhatsApp network, for bots and tests that need no phone and no internet.

Sessions on the sandbox behave like linked devices, and the network like WhatsApp where users can tell:

- a new session shows rotating, expiring QR codes until a simulated phone "scans" one (`scan` mail naming the
  phone number), or shows a pairing code that the simulated phone "types" (`enter_code` mail);
- linked sessions message each other through the network, also across workers, and get `delivered` then
  `read` receipts; a number that no sandbox session has linked is a simulated phone that reads at once;
- who is on WhatsApp: every number linked to a sandbox session, and every other number except those whose
  digits end in `NOT_ON_WHATSAPP_SUFFIX` ("404", as HTTP's Not Found): `resolve` says so, and a send to such a
  number raises `NotOnWhatsApp`. Accounts have a JID (`<digits>@s.whatsapp.net`) and a LID (`<digits>@lid`)
  that `simulated_lid` derives from the number (a bijection, so a send to a LID reaches its number; never the
  number itself);
- Brazil's ninth digit, as WhatsApp has it: a Brazilian mobile (55, a two-digit area code, 9, eight digits;
  or written without its 9, eight digits not starting with 2-5 as landlines do) is on WhatsApp with the 9 in
  area codes below `NINTH_DIGIT_DROPPED_FROM_AREA` (30) and without it from there on (accounts registered
  before the ninth digit came). `resolve` answers the account's JID for either spelling (`5531912345678` ->
  `553112345678@s.whatsapp.net`); a send to the other spelling's JID is a guess and fails with
  `RecipientUnknown`, as whatsmeow's "no LID found". A linked number is on WhatsApp as linked, whatever its
  spelling;
- sends go out under WhatsApp's own id, as whatsmeow makes them: `whatsapp_message_id` is `3EB0` and 18
  uppercase hex digits of a hash of (session, requested id), so a resend of the same message keeps its id
  (WhatsApp drops resends by id). Receipts and the recipient's message name that id;
- anyone can inject an inbound message from any number (or from a LID alone, from the linked phone itself, in
  a group, as a story on `status@broadcast`) and notices (`undecryptable`, `history_sync`). Texts pass
  through unchanged, NUL included: cleaning them is the worker's job;
- every kind of message travels (texts, media, locations, contacts, reactions, polls and votes, edits, deletes
  for everyone), with the message it replies to and whom it mentions. A message that names another (a reaction,
  an edit, a reply's quote) names it by key from its reader's side, as WhatsApp does: the `from_me` of a key
  the sender wrote flips for the recipient;
- media go through the network's media server, as WhatsApp's: a send uploads the file (`SandboxNetwork.upload`)
  and the recipient's message carries a `handle` to download it with (`download`). Files expire after
  `MEDIA_TTL`; the phone keeps its copy, so `request_reupload` gets a new handle (`MediaReuploaded`) until the
  phone's copy is gone too (`error="gone"`);
- faults: drop the connection, log out from the phone, reject the next send (`SendRejected`), restrict the
  account for the next send (`Restricted`, code 463), fail the next `count` sends (a retryable `EngineError`),
  expire the media the session's phone received so far (`expire_media`: downloads raise `MediaGone`, a
  reupload brings them back), lose them from the phone as well (`lose_media`: reuploads fail);
- `send_presence` keeps the last presence per chat (`SandboxEngine.presence`) and shows it to a linked
  recipient subscribed to the session's presence;
- chats and presence (issue 14): the network keeps what WhatsApp's servers keep of an account, so a session
  that moves to another worker finds it (engines/sandbox_accounts.py says whose each piece is, and why): its
  chats' app state (archived, pinned, muted, marked unread: `SandboxEngine.chat_state`), the phone's own
  changes injected as `app_state` mail and reported as `ChatChanged`; its presence (online, last seen); who
  subscribed to it. A session subscribes to a linked number's presence (`subscribe_presence`, answered at
  once with that presence): it hears its online/offline changes (`set_available`) and its typing in their
  chat as `PresenceSeen`, until its own connection ends (a new one subscribes anew, as with WhatsApp); a
  simulated phone shows presence by injected `presence` mail. The `hold_reads` fault makes the session's phone
  stop reading what arrives at once (for good): senders get `read` when the chat is marked read;
- every account has a profile picture (a stable simulated URL whose link expires after `PICTURE_LINK_TTL`)
  except those whose number ends in `NO_PICTURE_SUFFIX`; groups have one too. A contact's new picture (or its
  removal) is injected as `picture` mail: the session sees the new one from then on (kept per session, as
  app state is) and hears of it as `ContactPictureChanged`;
- each account has a blocklist on the network: a blocked number's messages to it are never delivered (they
  vanish, as WhatsApp shows its sender a single tick), whether it writes by number or by LID. The phone's own
  blocks and unblocks are injected as `blocklist` mail: the network's blocklist changes, and the session hears
  of it as `BlocklistChanged`;
- a number changes hands as on WhatsApp: the network remembers the client whose session last linked each
  number, and when a session of another client links it, the account starts anew in the same step, as a
  number WhatsApp registers to a new owner (`SandboxNetwork.link`): its chats' app state, presence, phone's
  habits, presence subscriptions to and from it, blocklist and the mail waiting for the phone are forgotten,
  and it leaves its groups as `leave_group` does. Any session of the same client linking it again (after a
  logout) finds the account as it was;
- a stopped or abandoned session reports nothing more, whatever of it was under way.

The network is a `SandboxNetwork`: mailboxes addressed to a phone (`phone:5511…`) or to a session
(`session:client/session`), a media server, groups, blocklists and the accounts' state. `LocalSandboxNetwork`
keeps them in memory (one process); the worker uses one backed by PostgreSQL, so that mail waits, like
WhatsApp's servers keep it, until the addressee is online, and so that what the servers keep outlives any
worker. The engine itself holds only what a linked device does: its connection, the presence it last showed
in each chat, the injected send faults. Mail is JSON: a message carries its content as
`domain.content.to_payload` does (`content_mail`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import os
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property, partial
from typing import Any, BinaryIO, ClassVar, Protocol, TypeVar

from zapgate import metrics
from zapgate.background import wait_set
from zapgate.domain.chats import ChatState, SeenPresence
from zapgate.domain.content import (
    Content,
    Edit,
    GroupInvite,
    Media,
    MessageKey,
    PollVote,
    Quote,
    Reaction,
    Revoke,
    Text,
    Unsupported,
    from_payload,
    kind_of,
    summary,
    to_payload,
)
from zapgate.domain.groups import (
    INVITE_LINK_PREFIX,
    INVITE_MESSAGE_LIFETIME,
    GroupAction,
    GroupInfo,
    GroupParticipant,
    JoinRequest,
    ParticipantAction,
    ParticipantOutcome,
    ParticipantResult,
    RequestAction,
)
from zapgate.domain.phones import GROUP_SERVER, LID_SERVER, USER_SERVER, jid_user
from zapgate.domain.records import MessageStatus
from zapgate.domain.sessions import SessionStatus
from zapgate.engines.base import (
    BlocklistChanged,
    ChatChanged,
    ContactPictureChanged,
    EngineError,
    EngineEvent,
    EngineFailure,
    EventSink,
    GroupChanged,
    GroupForbidden,
    GroupNotFound,
    InboundMessage,
    InviteInvalid,
    JidLookup,
    MediaGone,
    MediaReuploaded,
    NotConnected,
    Notice,
    NoticeKind,
    NotOnWhatsApp,
    PairingCode,
    Presence,
    PresenceSeen,
    ProfilePicture,
    QrCode,
    Receipt,
    RecipientUnknown,
    Restricted,
    SendRejected,
    SendResult,
    SessionRef,
    StartMode,
    StartRequest,
    StatusChanged,
    UnknownSession,
)
from zapgate.engines.sandbox_accounts import LocalAccounts, SandboxAccount, merged_chat_state
from zapgate.engines.sandbox_groups import (
    ADMIN,
    SUPER_ADMIN,
    LocalGroups,
    SandboxGroup,
    answer_requests,
    change_participants,
    new_group_jid,
    new_invite_code,
    pending_requests,
    require_admin,
    require_editor,
    require_member,
    require_sender,
    set_join_approval,
)
from zapgate.engines.sandbox_groups import join as join_group
from zapgate.engines.sandbox_groups import leave as leave_group
from zapgate.errors import InvalidRequest
from zapgate.log import get_logger

log = get_logger(__name__)

Mail = dict[str, Any]
T = TypeVar("T")

RECONNECT_DELAY = 0.05  # seconds the sandbox takes to reconnect after a dropped connection
MAIL_POLL_INTERVAL = 1.0  # seconds between mailbox checks when no wake-up arrives
MAIL_LEASE = 10.0  # seconds collected mail is handed out for: then it is handed out again, unless acknowledged
HELD_LEASE = 60.0  # seconds the lease of mail whose event the recorder holds is extended by, each time it ends soon
LEASE_RENEWAL = 3.0  # seconds between looks for held mail whose lease ends within twice that
ACK_AT_CLOSE = 5.0  # seconds a closing engine waits for the acknowledgements under way
HOLD_AT_MOST = 300.0  # seconds mail is held for the recorder at most: then handed out again (its event was lost)
# mail held for the recorder at which the pump stops collecting until it has stored some: a recorder that is
# behind leaves mail in its mailbox (durable, as WhatsApp's server keeps it for a slow device), not in memory,
# and the session statuses it reports meanwhile wait behind a few batches, not behind tens of thousands
HELD_HIGH_WATER = 1000
# mail whose events are reported in runs, after the receipts they answer with are posted
DEFERRED_MAIL = frozenset({"message", "receipt", "group"})
PHONE_MAILBOX = "phone:"  # + a number: the mailbox of a phone
SESSION_MAILBOX = "session:"  # + "client/session": the mailbox of a session

NOT_ON_WHATSAPP_SUFFIX = "404"  # an unlinked number whose digits end so has no WhatsApp account
NO_PICTURE_SUFFIX = "00"  # an account whose number ends so shows no profile picture
PICTURE_URL = "https://pps.sandbox.zapgate.invalid/v/t61"  # where simulated profile pictures are (never fetched)
PICTURE_LINK_TTL = timedelta(days=1)  # how long a profile picture's link works, as WhatsApp's expire
NINTH_DIGIT_DROPPED_FROM_AREA = 30  # Brazilian mobiles of this area code and up are on WhatsApp without the 9
WHATSAPP_ID_PREFIX = "3EB0"  # whatsmeow's message ids: this, then 18 uppercase hex digits
STATUS_BROADCAST = "status@broadcast"  # the chat of stories
RESTRICTED_CODE = 463  # WhatsApp's error code when it restricts an account's sending
SANDBOX_FAULTS = (
    "drop_connection",
    "logout",
    "reject_next_send",
    "restrict",
    "fail_transient",
    "expire_media",
    "lose_media",
    "hold_reads",
)
MEDIA_TTL = timedelta(days=30)  # how long the media server keeps a file, as WhatsApp's do
MEDIA_CHUNK = 1024 * 1024  # bytes read, stored and written at a time: a file is never whole in memory

# LID = number x _LID_FACTOR mod a prime above every 15-digit number: a bijection that fixes no phone number
_LID_MODULUS = 1_000_000_000_000_037
_LID_FACTOR = 314_159_265_358_979
_DIGITS = re.compile(r"[0-9]{1,20}", re.ASCII)
# 55, an area code (two digits 1-9), then 9 and eight digits (a mobile), or eight digits that do not start
# with 2-5 (a mobile written without its 9: landlines start with 2-5)
_BRAZILIAN_MOBILE = re.compile(r"55([1-9]{2})(?:9([0-9]{8})|([016789][0-9]{7}))", re.ASCII)


def whatsapp_account(phone: str) -> str | None:
    """Return the number of `phone`'s account on the simulated network by its rules, or None if it has none.

    Linked numbers aside (they always have one, see `SandboxEngine.resolve`): a number ending in
    `NOT_ON_WHATSAPP_SUFFIX` has none; a Brazilian mobile's account has the ninth digit below area code
    `NINTH_DIGIT_DROPPED_FROM_AREA` and lacks it from there on; any other number is its own account.
    """
    if _DIGITS.fullmatch(phone) is None or phone.endswith(NOT_ON_WHATSAPP_SUFFIX):
        return None
    brazilian = _BRAZILIAN_MOBILE.fullmatch(phone)
    if brazilian is None:
        return phone
    area, with_ninth, without_ninth = brazilian.groups()
    ninth = "9" if int(area) < NINTH_DIGIT_DROPPED_FROM_AREA else ""
    return f"55{area}{ninth}{with_ninth or without_ninth}"


def spellings(phone: str) -> tuple[str, ...]:
    """Return `phone` and, for a Brazilian mobile, its spelling with the ninth digit added or removed."""
    brazilian = _BRAZILIAN_MOBILE.fullmatch(phone)
    if brazilian is None:
        return (phone,)
    area, with_ninth, without_ninth = brazilian.groups()
    return (phone, f"55{area}{with_ninth}" if with_ninth else f"55{area}9{without_ninth}")


def simulated_lid(phone: str) -> str:
    """Return the LID (digits) of the account of `phone` (digits): stable, and never the number itself."""
    return str(int(phone) * _LID_FACTOR % _LID_MODULUS)


def phone_of_lid(lid: str) -> str | None:
    """Return the number whose `simulated_lid` is `lid` (digits), or None if no phone number has it."""
    if _DIGITS.fullmatch(lid) is None or int(lid) >= _LID_MODULUS:
        return None
    phone = str(int(lid) * pow(_LID_FACTOR, -1, _LID_MODULUS) % _LID_MODULUS)
    return phone if 8 <= len(phone) <= 15 else None


def whatsapp_message_id(ref: SessionRef, requested: str) -> str:
    """Return the id WhatsApp gives the message `requested` of `ref`: the same for a resend of it."""
    digest = hashlib.sha256(f"{ref}:{requested}".encode()).hexdigest()[:18].upper()
    return WHATSAPP_ID_PREFIX + digest


def phone_address(phone: str) -> str:
    """The mailbox of a phone number."""
    return f"{PHONE_MAILBOX}{phone}"


def session_address(ref: SessionRef) -> str:
    """The mailbox of a session (control mail: scans, codes, faults, injected messages)."""
    return f"{SESSION_MAILBOX}{ref.client_id}/{ref.session_id}"


def content_mail(
    content: Content, *, quote: Quote | None = None, mentions: Sequence[str] = (), upload: MediaUpload | None = None
) -> Mail:
    """Return the mail fields that carry `content`, the message it replies to and whom it mentions.

    `text` is its summary (a text's body), `content` its public object (`to_payload`), `media` a file's
    download handle (the `upload`'s, else the media's own), thumbnail and waveform, in base64. Keys are
    written as the reader sees them: the sender turns them (`seen_by`) before.
    """
    if isinstance(content, Media):
        content = replace(content, media_id=None)  # zapgate's id of the file is the sender's, not the reader's
        if upload is not None:
            content = replace(content, size=upload.size, sha256=upload.sha256)
    fields: Mail = {"text": summary(content), "content": to_payload(content)}
    if isinstance(content, Media):
        handle = upload.handle if upload is not None else content.handle
        extras = (("handle", handle), ("thumbnail", content.thumbnail), ("waveform", content.waveform))
        fields["media"] = {name: base64.b64encode(value).decode() for name, value in extras if value is not None}
    if quote is not None:
        quoted = quote.content
        if isinstance(quoted, Media):
            quoted = replace(quoted, media_id=None)
        fields["quote"] = {"key": _key_mail(quote.key), "content": None if quoted is None else to_payload(quoted)}
    if mentions:
        fields["mentions"] = list(mentions)
    return fields


def mail_content(mail: Mapping[str, Any]) -> tuple[Content, Quote | None, tuple[str, ...]]:
    """Read what `content_mail` wrote (or mail with a plain `text`): the content, its quote, its mentions."""
    payload = mail.get("content")
    if not isinstance(payload, Mapping):
        return Text(body=str(mail["text"])), None, ()
    try:
        content = from_payload(payload)
    except ValueError:
        log.warning("sandbox.unreadable_content", type=payload.get("type"))
        content = Unsupported(wa_type=str(payload.get("type")), summary=str(mail.get("text") or ""))
    if isinstance(content, Media):
        media = mail.get("media")
        extras = media if isinstance(media, Mapping) else {}
        content = replace(
            content,
            handle=_unb64(extras.get("handle")),
            thumbnail=_unb64(extras.get("thumbnail")),
            waveform=_unb64(extras.get("waveform")),
        )
    quote = None
    quoted = mail.get("quote")
    if isinstance(quoted, Mapping):
        try:
            inner = quoted.get("content")
            quote = Quote(key=_key_read(quoted["key"]), content=from_payload(inner) if inner else None)
        except (KeyError, TypeError, ValueError):
            log.warning("sandbox.unreadable_quote")
    mentions = tuple(str(jid) for jid in mail.get("mentions") or ())
    return content, quote, mentions


def seen_by(key: MessageKey) -> MessageKey:
    """Return `key`, as its writer named it in a chat, as the other party of the chat sees it.

    WhatsApp's keys say "mine or not": a message the writer wrote is not the reader's, and the other way round.
    """
    return MessageKey(id=key.id, from_me=not key.from_me)


def content_seen_by(content: Content) -> Content:
    """Return `content` with the key of the message it acts on (if any) as the chat's other party sees it."""
    if isinstance(content, Reaction | PollVote | Edit | Revoke):
        return replace(content, key=seen_by(content.key))
    return content


def _key_mail(key: MessageKey) -> dict[str, Any]:
    return {"id": key.id, "from_me": key.from_me, "sender": key.sender_jid}


def _key_read(raw: Mapping[str, Any]) -> MessageKey:
    sender = raw.get("sender")
    return MessageKey(id=str(raw["id"]), from_me=bool(raw.get("from_me")), sender_jid=str(sender) if sender else None)


def _unb64(value: object) -> bytes | None:
    return base64.b64decode(value) if isinstance(value, str) else None


class MediaCorrupt(EngineError):
    """A downloaded file is not the one the message names (its SHA-256 differs)."""

    code = "media_corrupt"
    retryable = False


class PhoneInUse(EngineError):
    """The simulated phone is linked to another session already."""

    code = "phone_in_use"
    retryable = False


@dataclass(frozen=True, slots=True)
class MediaUpload:
    """A file on the network's media server: the handle to download it by, its size and SHA-256 (hex)."""

    handle: bytes = field(repr=False)
    size: int
    sha256: str


MediaSource = str | BinaryIO  # a file's path, or a binary file open for reading (read from where it stands)
_MEDIA_KEY = re.compile(r"[0-9a-f]{32}", re.ASCII)


def new_media_key() -> str:
    """Return a new key of the media server (what a handle holds)."""
    return secrets.token_hex(16)


def media_handle(key: str) -> bytes:
    """The handle a recipient downloads the file `key` by (opaque to everyone but the network)."""
    return key.encode("ascii")


def media_key(handle: bytes | None) -> str:
    """Return the media server's key in `handle`; raise MediaGone for a handle the server never gave."""
    try:
        key = handle.decode("ascii") if handle else ""
    except UnicodeDecodeError:
        key = ""
    if _MEDIA_KEY.fullmatch(key) is None:
        raise MediaGone("the media server has no file by this handle")
    return key


async def file_chunks(source: MediaSource) -> AsyncIterator[bytes]:
    """Yield the bytes of `source`, MEDIA_CHUNK at a time, read off the event loop (a path is opened here)."""
    reader = await asyncio.to_thread(open, source, "rb") if isinstance(source, str) else source
    try:
        while chunk := await asyncio.to_thread(reader.read, MEDIA_CHUNK):
            yield chunk
    finally:
        if isinstance(source, str):
            reader.close()


class ChunkWriter:
    """Write a downloaded file chunk by chunk off the event loop, hashing it; remove it unless completed."""

    def __init__(self, dest: str) -> None:
        self._dest = dest
        self._digest = hashlib.sha256()
        self._file: BinaryIO | None = None

    async def __aenter__(self) -> ChunkWriter:
        self._file = await asyncio.to_thread(open, self._dest, "wb")
        return self

    async def write(self, chunk: bytes) -> None:
        assert self._file is not None
        self._digest.update(chunk)
        await asyncio.to_thread(self._file.write, chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    async def __aexit__(self, kind: object, error: object, trace: object) -> None:
        assert self._file is not None
        await asyncio.to_thread(self._file.close)
        if error is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(os.unlink, self._dest)


class SandboxNetwork(Protocol):
    """Mailboxes, the phone directory and the media server of the simulated network."""

    async def link(self, phone: str, ref: SessionRef) -> None:
        """Record that `phone` is linked to `ref`; raise EngineError if another session has it.

        A number last linked by another client's session starts as a new account first, in the same step
        (WhatsApp's number registered by a new owner): the network forgets its chats' app state, presence and
        phone's habits, the presence subscriptions to and from it, its blocklist and the mail waiting at its
        phone's address, and it leaves each of its groups as `leave_group` does (the members left are told).
        The same client linking it again, by any of its sessions, keeps all of it.
        """

    async def unlink(self, phone: str, ref: SessionRef) -> None:
        """Forget the link of `phone` to `ref` (no-op if it is not theirs), and with it the presence subscriptions
        it made; the account shows offline from then on."""

    async def linked_session(self, phone: str) -> SessionRef | None:
        """Return the session `phone` is linked to, if any."""

    async def post(self, address: str, mail: Mail) -> None:
        """Leave `mail` in the mailbox at `address`; a person's message to a phone whose account blocked the
        sender is dropped (`blocking_pair`), as WhatsApp's server drops it: it is never delivered, even after an
        unblock, and its sender sees one tick."""

    async def post_many(self, posts: Collection[tuple[str, Mail]]) -> None:
        """Leave each (address, mail) of `posts`, in their order, all or none (each as `post` does)."""

    async def set_blocked(self, owner: str, phone: str, blocked: bool) -> None:
        """Put the number `phone` on the blocklist of the account `owner` (a number), or take it off."""

    async def is_blocked(self, owner: str, phone: str) -> bool:
        """Whether the account `owner` blocked the number `phone`."""

    async def blocked_among(self, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of the (owner, phone) `pairs` are blocks (`is_blocked` of many at once)."""

    async def collect(self, addresses: Collection[str]) -> list[tuple[int, str, Mail]]:
        """Hand out the waiting mail of `addresses`, oldest first, as (mail id, address, mail).

        Mail handed out stays in the mailbox until acknowledged; unacknowledged mail is handed out again
        after a while (its taker may have died before storing what it carried).
        """

    async def ack(self, mail_ids: Collection[int]) -> None:
        """Delete mail that has been dealt with."""

    async def renew(self, mail_ids: Collection[int], seconds: float) -> None:
        """Keep handed-out mail handed out until `seconds` from now: its taker still holds it."""

    async def release(self, addresses: Collection[str]) -> None:
        """Make the mail of `addresses` that is handed out collectable at once: whoever took it no longer hosts
        them (a worker that died, or a start of the session that was replaced)."""

    def watch(self, addresses: Collection[str]) -> None:
        """Wake `wait_for_mail` for mail to `addresses` from now on (a session that started or linked its
        phone; collecting watches the addresses it collects from, and only those)."""

    async def wait_for_mail(self, at_most: float) -> None:
        """Return when mail may have arrived for an address watched, or after `at_most` seconds."""

    async def upload(self, source: MediaSource, *, recipient: str) -> MediaUpload:
        """Store the file `source` on the media server for `MEDIA_TTL`, for the phone `recipient` (digits).

        The file streams through, MEDIA_CHUNK at a time. Raises OSError when it cannot be read.
        """

    async def fetch(self, handle: bytes, dest: str) -> str:
        """Write the file of `handle` to the path `dest`, streaming; return its SHA-256 (hex).

        Raises MediaGone when the server no longer has it (expired, or never had it); `dest` is removed then.
        """

    async def reupload(self, handle: bytes) -> bytes | None:
        """Upload the file of `handle` again from the phone's copy, for another `MEDIA_TTL`: return the new
        handle, or None when the phone no longer has it."""

    async def expire_media(self, recipient: str) -> int:
        """Expire every file stored so far for the phone `recipient` (the phone keeps its copy); return how much
        expired (files, or their parts: for logs and tests)."""

    async def lose_media(self, recipient: str) -> int:
        """Forget every file of the phone `recipient`, the phone's copy included; return how much went (files,
        or their parts)."""

    # -- groups (engines/sandbox_groups.py) --

    async def create_group(self, group: SandboxGroup) -> None:
        """Store a new group."""

    async def group(self, jid: str) -> SandboxGroup | None:
        """Return the group `jid` as it is now, or None."""

    async def change_group(self, jid: str, change: Callable[[SandboxGroup], T]) -> T:
        """Apply `change` to the group `jid` (alone: no other change meanwhile) and keep the result; return what
        `change` returns. Raises GroupNotFound, or what `change` raises (then nothing changed)."""

    async def groups_of(self, phone: str) -> list[SandboxGroup]:
        """Return the groups `phone` is in."""

    async def group_of_invite(self, code: str) -> str | None:
        """Return the JID of the group whose invite code is `code`, or None."""

    # -- accounts: app state, presence, the phone's habits (engines/sandbox_accounts.py) --

    async def chat_state(self, owner: str, chat: str) -> ChatState | None:
        """Return the app state the account `owner` keeps for its chat `chat` (a JID), or None if never changed."""

    async def change_chat_state(
        self, owner: str, chat: str, change: Callable[[ChatState | None], ChatState]
    ) -> ChatState:
        """Apply `change` to the app state of the account's chat (alone: no other change meanwhile), keep the
        result and return it."""

    async def account(self, phone: str) -> SandboxAccount:
        """Return what the network keeps of the account `phone` (the defaults for one it knows nothing of)."""

    async def set_available(self, phone: str, available: bool, at: datetime) -> None:
        """Show the account `phone` online, or offline and last seen `at`."""

    async def set_holding_reads(self, phone: str, holding: bool) -> None:
        """Make the phone of the account `phone` leave what arrives unread, or read it at once again."""

    async def subscribe_presence(self, subscriber: str, target: str) -> None:
        """Record that the account `subscriber` hears the presence of the account `target`."""

    async def presence_subscribers(self, target: str) -> list[str]:
        """Return the accounts that hear the presence of `target`."""

    async def forget_presence_subscriptions(self, subscriber: str) -> None:
        """End every presence subscription of the account `subscriber` (its connection ended)."""


@dataclass
class _StoredFile:
    data: bytearray
    recipient: str
    expires_at: datetime  # downloads fail from then on; the bytes stay as the phone's copy


class LocalSandboxNetwork(LocalGroups, LocalAccounts):
    """The sandbox network inside one process."""

    def __init__(self) -> None:
        LocalGroups.__init__(self)
        LocalAccounts.__init__(self)
        self._links: dict[str, SessionRef] = {}
        self._boxes: dict[str, deque[tuple[int, Mail]]] = {}
        self._arrived = asyncio.Event()
        self._ids = itertools.count(1)
        self._files: dict[str, _StoredFile] = {}
        self._blocked: set[tuple[str, str]] = set()
        self._owners: dict[str, str] = {}  # number -> the client whose session last linked it
        self.unacknowledged: dict[int, Mail] = {}

    async def link(self, phone: str, ref: SessionRef) -> None:
        current = self._links.get(phone)
        if current is not None and current != ref:
            raise PhoneInUse(f"sandbox phone {phone} is already linked to another session")
        if self._owners.get(phone, ref.client_id) != ref.client_id:
            await self._start_afresh(phone)
        self._links[phone] = ref
        self._owners[phone] = ref.client_id

    async def _start_afresh(self, phone: str) -> None:
        """Forget the account `phone` as a new owner finds it (`SandboxNetwork.link`)."""
        self.forget_account(phone)
        self._blocked = {(owner, blocked) for owner, blocked in self._blocked if owner != phone}
        self._boxes.pop(phone_address(phone), None)
        for group in await self.groups_of(phone):
            left = await self.change_group(group.jid, partial(_left, phone=phone))
            for address, mail in departure_notices(left, phone, self._links):
                await self.post(address, mail)

    async def unlink(self, phone: str, ref: SessionRef) -> None:
        if self._links.get(phone) == ref:
            del self._links[phone]
            await self.forget_presence_subscriptions(phone)
            if (await self.account(phone)).available:
                await self.set_available(phone, False, datetime.now(UTC))

    async def linked_session(self, phone: str) -> SessionRef | None:
        return self._links.get(phone)

    async def post(self, address: str, mail: Mail) -> None:
        if blocking_pair(address, mail) in self._blocked:
            return  # WhatsApp's server never delivers what a blocked sender writes
        self._boxes.setdefault(address, deque()).append((next(self._ids), mail))
        self._arrived.set()

    async def post_many(self, posts: Collection[tuple[str, Mail]]) -> None:
        for address, mail in posts:
            await self.post(address, mail)

    async def set_blocked(self, owner: str, phone: str, blocked: bool) -> None:
        if blocked:
            self._blocked.add((owner, phone))
        else:
            self._blocked.discard((owner, phone))

    async def is_blocked(self, owner: str, phone: str) -> bool:
        return (owner, phone) in self._blocked

    async def blocked_among(self, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        return set(pairs) & self._blocked

    async def collect(self, addresses: Collection[str]) -> list[tuple[int, str, Mail]]:
        taken: list[tuple[int, str, Mail]] = []
        for address in addresses:
            box = self._boxes.pop(address, None)
            if box:
                taken.extend((mail_id, address, mail) for mail_id, mail in box)
        self.unacknowledged.update((mail_id, mail) for mail_id, _, mail in taken)
        return sorted(taken, key=lambda item: item[0])

    async def ack(self, mail_ids: Collection[int]) -> None:
        for mail_id in mail_ids:
            self.unacknowledged.pop(mail_id, None)

    async def renew(self, mail_ids: Collection[int], seconds: float) -> None:
        pass  # mail handed out here is never handed out again

    async def release(self, addresses: Collection[str]) -> None:
        pass

    def watch(self, addresses: Collection[str]) -> None:
        pass  # every post wakes the one engine of this process

    async def wait_for_mail(self, at_most: float) -> None:
        await wait_set(self._arrived, at_most)  # not wait_for, which can swallow the pump's cancellation at close
        self._arrived.clear()

    async def upload(self, source: MediaSource, *, recipient: str) -> MediaUpload:
        data = bytearray()
        async for chunk in file_chunks(source):
            data += chunk
        key = new_media_key()
        self._files[key] = _StoredFile(data, recipient, datetime.now(UTC) + MEDIA_TTL)
        return MediaUpload(media_handle(key), len(data), hashlib.sha256(data).hexdigest())

    async def fetch(self, handle: bytes, dest: str) -> str:
        stored = self._files.get(media_key(handle))
        if stored is None or stored.expires_at <= datetime.now(UTC):
            raise MediaGone("the media server no longer has this file")
        async with ChunkWriter(dest) as writer:
            view = memoryview(stored.data)
            for start in range(0, len(view), MEDIA_CHUNK):
                await writer.write(bytes(view[start : start + MEDIA_CHUNK]))
        return writer.sha256

    async def reupload(self, handle: bytes) -> bytes | None:
        try:
            stored = self._files.get(media_key(handle))
        except MediaGone:
            return None
        if stored is None:
            return None
        key = new_media_key()
        self._files[key] = replace(stored, expires_at=datetime.now(UTC) + MEDIA_TTL)
        return media_handle(key)

    async def expire_media(self, recipient: str) -> int:
        now = datetime.now(UTC)
        expired = [f for f in self._files.values() if f.recipient == recipient and f.expires_at > now]
        for stored in expired:
            stored.expires_at = now
        return len(expired)

    async def lose_media(self, recipient: str) -> int:
        lost = [key for key, stored in self._files.items() if stored.recipient == recipient]
        for key in lost:
            del self._files[key]
        return len(lost)


Blocks = dict[tuple[str, str], bool]  # (account, number) → whether the account blocked the number


@dataclass
class MailRound:
    """A run of collected mail being delivered: the posts its mail answers with, then the events it reports
    (with the mail id each one's acknowledgement deletes)."""

    blocks: Blocks
    lease_ends: float  # when the leases of its mail end (monotonic seconds)
    posts: list[tuple[str, Mail]] = field(default_factory=list)
    events: list[tuple[_Session, EngineEvent, int]] = field(default_factory=list)


@dataclass
class _Held:
    """Mail whose event the recorder has and has not stored yet."""

    session: _Session
    since: float  # when it was handed to the recorder (monotonic seconds)
    lease_ends: float  # when its lease ends, as far as this worker knows (monotonic seconds, early if anything)


@dataclass
class _Session:
    request: StartRequest
    status: SessionStatus = SessionStatus.CREATED
    phone: str | None = None
    pairing_code: str | None = None
    reject_next_send: bool = False
    restrict_next_send: bool = False
    failing_sends: int = 0  # sends still to fail with a retryable error (injected fault)
    # the device's own (engines/sandbox_accounts.py says what the network keeps instead, and why)
    presences: dict[str, Presence] = field(default_factory=dict)  # the last presence shown, per chat JID
    reads: list[str] = field(default_factory=list)  # ids of the messages marked read
    # the phone's habit as the network keeps it (read once per connection: every arriving message asks it)
    hold_reads: bool = False  # the phone leaves what arrives unread: read receipts go when marked read
    # contacts (issue 14): pictures changed since the session linked, by account (None: removed)
    pictures: dict[str, str | None] = field(default_factory=dict)
    silenced: bool = False  # stopped or abandoned: whatever of it is still under way reports nothing
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # sends to simulated phones whose reads are not reported yet: (WhatsApp id, chat JID), in the order sent
    phone_reads: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ref(self) -> SessionRef:
        return self.request.ref

    @cached_property
    def address(self) -> str:
        """The session's own mailbox (its phone's is `phone_address(phone)`)."""
        return session_address(self.request.ref)


class SandboxEngine:
    """Host sandbox sessions in this worker."""

    name: ClassVar[str] = "sandbox"

    def __init__(self, on_event: EventSink, network: SandboxNetwork, *, reconnect_delay: float = RECONNECT_DELAY):
        self._sink = on_event
        self._network = network
        self._reconnect_delay = reconnect_delay
        self._sessions: dict[SessionRef, _Session] = {}
        self._pump: asyncio.Task[None] | None = None
        # mail whose event the recorder has and has not stored yet: its lease is renewed (`_renew_held`)
        self._held: dict[int, _Held] = {}
        self._to_ack: set[int] = set()  # mail whose event is stored, to delete in one trip
        self._acking: asyncio.Task[None] | None = None
        self._room = asyncio.Event()  # set when held mail fell below HELD_HIGH_WATER

    # -- the Engine protocol ------------------------------------------------------------------------------

    async def start(self, request: StartRequest) -> None:
        ref = request.ref
        if ref in self._sessions:
            await self.stop(ref)
        session = self._sessions[ref] = _Session(request)
        self._network.watch([session.address])
        self._ensure_pump()
        self._set_status(session, SessionStatus.CONNECTING)
        if request.mode is StartMode.RESTORE:
            phone = jid_user(request.jid) if request.jid else None
            if phone is not None and await self._network.linked_session(phone) == ref:
                await self._connected(session, phone)
            else:
                self._set_status(session, SessionStatus.LOGGED_OUT, "the simulated phone unlinked this session")
                self._forget(session)
            return
        if request.mode is StartMode.PAIRING_CODE:
            if not request.phone_number:
                raise InvalidRequest("a pairing code needs the phone number to link")
            await self.request_pairing_code(ref, request.phone_number)
            return
        self._spawn(session, self._show_qr_codes(session))

    async def stop(self, ref: SessionRef) -> None:
        session = self._sessions.pop(ref, None)
        if session is None:
            return
        self._silence(session)

    async def logout(self, ref: SessionRef) -> None:
        session = self._sessions.pop(ref, None)
        if session is None:
            raise UnknownSession(f"session {ref} is not hosted here")
        for task in list(session.tasks):
            task.cancel()
        if session.phone is not None:
            await self._unlink(session.phone, ref)
        self._set_status(session, SessionStatus.LOGGED_OUT, "logged out")
        self._silence(session)

    async def send_text(self, ref: SessionRef, to: str, text: str, message_id: str) -> SendResult:
        return await self.send(ref, to, Text(body=text), message_id)

    async def send(
        self,
        ref: SessionRef,
        to: str,
        content: Content,
        message_id: str,
        *,
        quote: Quote | None = None,
        mentions: tuple[str, ...] = (),
    ) -> SendResult:
        session = self._connected_session(ref)
        assert session.phone is not None
        if isinstance(content, Unsupported):
            raise SendRejected(f"the {self.name} engine cannot send {content.wa_type} messages", session=str(ref))
        self._injected_send_fault(session)
        if to.endswith("@" + GROUP_SERVER):
            return await self._send_to_group(session, to, content, message_id, quote=quote, mentions=mentions)
        account = await self._recipient_account(to)
        linked = account is not None and await self._network.linked_session(account) is not None
        upload = await self._upload(ref, content, account if linked else None)
        now = datetime.now(UTC)
        whatsapp_id = whatsapp_message_id(ref, message_id)
        if account is None or not linked:
            # no sandbox session has this number (or it is a group): a simulated phone receives and reads it, once
            # the send returned (one task reports the reads of all the sends made meanwhile)
            if not session.phone_reads:
                self._spawn(session, self._external_phones_read(session))
            session.phone_reads.append((whatsapp_id, to))
            return SendResult(message_id=whatsapp_id, timestamp=now)
        if quote is not None:
            quote = replace(quote, key=seen_by(quote.key))
        mail: Mail = {
            "kind": "message",
            "id": whatsapp_id,
            "from": session.phone,
            "to": account,
            "timestamp": now.isoformat(),
            **content_mail(content_seen_by(content), quote=quote, mentions=mentions, upload=upload),
        }
        await self._network.post(phone_address(account), mail)
        return SendResult(message_id=whatsapp_id, timestamp=now)

    async def _upload(self, ref: SessionRef, content: Content, recipient: str | None) -> MediaUpload | None:
        """Upload a media's file for the linked phone `recipient` (a simulated phone only needs it readable)."""
        if not isinstance(content, Media):
            return None
        if content.path is None:
            raise SendRejected(f"a {content.kind.value} message needs its prepared file (path)", session=str(ref))
        try:
            if recipient is None:
                await asyncio.to_thread(os.stat, content.path)
                return None
            return await self._network.upload(content.path, recipient=recipient)
        except OSError as exc:
            raise SendRejected(f"the file to send cannot be read: {exc.strerror}", session=str(ref)) from exc

    async def download(self, ref: SessionRef, media: Media, dest: str) -> None:
        self._connected_session(ref)
        if media.handle is None:
            raise MediaGone("the message names no file on the media server", session=str(ref))
        sha256 = await self._network.fetch(media.handle, dest)
        if media.sha256 is not None and media.sha256 != sha256:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(os.unlink, dest)
            raise MediaCorrupt("the downloaded file does not match its SHA-256", session=str(ref))

    async def request_reupload(self, ref: SessionRef, chat_jid: str, key: MessageKey, media: Media) -> None:
        session = self._connected_session(ref)
        self._spawn(session, self._reupload(session, key.id, media.handle))

    async def _reupload(self, session: _Session, message_id: str, handle: bytes | None) -> None:
        """The phone answers a reupload request: its copy of the file uploaded again, or gone."""
        fresh = await self._network.reupload(handle) if handle else None
        self._emit(
            session,
            MediaReuploaded(
                ref=session.ref, message_id=message_id, handle=fresh, error=None if fresh is not None else "gone"
            ),
        )

    async def resolve(self, ref: SessionRef, phone_number: str) -> JidLookup:
        self._hosted(ref)
        account = await self._account(phone_number)
        if account is None:
            return JidLookup(phone_number=phone_number, on_whatsapp=False, extra={"sandbox": "not_on_whatsapp"})
        linked = await self._network.linked_session(account)
        return JidLookup(
            phone_number=phone_number,
            on_whatsapp=True,
            jid=f"{account}@{USER_SERVER}",
            lid=f"{simulated_lid(account)}@{LID_SERVER}",
            extra={"sandbox": "linked" if linked else "simulated"},
        )

    async def profile_picture(self, ref: SessionRef, jid: str) -> ProfilePicture:
        session = self._connected_session(ref)
        user, server = jid_user(jid), jid.partition("@")[2]
        if server == GROUP_SERVER:
            return _picture(jid)
        phone = phone_of_lid(user) if server == LID_SERVER else user
        account = None if phone is None else await self._account(phone)
        if account is None:
            return ProfilePicture(url=None)
        if account in session.pictures:  # changed (or removed) since: the one injected
            version = session.pictures[account]
            return ProfilePicture(url=None) if version is None else _picture(account, version)
        if account.endswith(NO_PICTURE_SUFFIX):
            return ProfilePicture(url=None)
        return _picture(account)

    async def set_blocked(self, ref: SessionRef, jid: str, blocked: bool) -> None:
        session = self._connected_session(ref)
        assert session.phone is not None
        user, server = jid_user(jid), jid.partition("@")[2]
        phone = phone_of_lid(user) if server == LID_SERVER else user if server in ("", USER_SERVER) else None
        if phone is None:
            raise SendRejected("only a person can be blocked: a phone number's JID or a LID", session=str(ref))
        await self._network.set_blocked(session.phone, phone, blocked)

    async def request_pairing_code(self, ref: SessionRef, phone_number: str) -> str:
        session = self._hosted(ref)
        if session.status not in {SessionStatus.CONNECTING, SessionStatus.QR, SessionStatus.PAIRING}:
            raise EngineError(f"session {ref} is {session.status.value}: a pairing code is for a new pairing")
        for task in list(session.tasks):
            task.cancel()  # the QR codes stop once a code is asked for
        code = _pairing_code(ref, phone_number)
        session.pairing_code = code
        session.request = StartRequest(
            ref=ref,
            mode=StartMode.PAIRING_CODE,
            phone_number=phone_number,
            qr_timeout=session.request.qr_timeout,
            max_qr_codes=session.request.max_qr_codes,
        )
        self._set_status(session, SessionStatus.PAIRING)
        self._emit(session, PairingCode(ref=ref, code=code, phone_number=phone_number))
        self._spawn(session, self._expire_pairing(session))
        return code

    async def send_presence(self, ref: SessionRef, to: str, presence: Presence) -> None:
        session = self._hosted(ref)
        if session.status is not SessionStatus.CONNECTED or session.phone is None:
            raise NotConnected(f"session {ref} is {session.status.value}, not connected")
        session.presences[to] = presence
        recipient = _phone_of(to)
        if recipient is not None and recipient in await self._network.presence_subscribers(session.phone):
            await self._post_presence(session.phone, recipient, chat=presence)

    async def mark_read(self, ref: SessionRef, chat_jid: str, keys: tuple[MessageKey, ...]) -> None:
        session = self._hosted(ref)
        if session.status is not SessionStatus.CONNECTED:
            raise NotConnected(f"session {ref} is {session.status.value}, not connected")
        session.reads.extend(key.id for key in keys)
        if not session.hold_reads:
            return  # the session's phone read them already, and said so
        sender = _phone_of(chat_jid)
        if session.phone is not None and sender is not None and await self._network.linked_session(sender):
            await self._network.post(
                phone_address(sender),
                {
                    "kind": "receipt",
                    "ids": [key.id for key in keys if not key.from_me],
                    "status": MessageStatus.READ.value,
                    "from": session.phone,
                    "timestamp": datetime.now(UTC).isoformat(),
                },
            )

    def reads(self, ref: SessionRef) -> list[str]:
        """Return the ids of the messages the session marked read (for tests)."""
        return list(self._hosted(ref).reads)

    def presence(self, ref: SessionRef, chat_jid: str) -> Presence | None:
        """Return the presence the session last showed in the chat `chat_jid` (for tests), if any."""
        return self._hosted(ref).presences.get(chat_jid)

    # -- chats and presence (issue 14) ---------------------------------------------------------------------

    async def change_chat(self, ref: SessionRef, chat_jid: str, state: ChatState) -> None:
        session = self._connected_session(ref)
        assert session.phone is not None
        await self._network.change_chat_state(session.phone, chat_jid, partial(merged_chat_state, change=state))

    async def subscribe_presence(self, ref: SessionRef, jid: str) -> None:
        session = self._connected_session(ref)
        phone = _phone_of(jid)
        if phone is None or session.phone is None or not await self._network.linked_session(phone):
            return  # a simulated phone shows presence only when a test injects it
        await self._network.subscribe_presence(session.phone, phone)
        await self._post_presence(phone, session.phone)  # WhatsApp answers with the presence now

    async def set_available(self, ref: SessionRef, available: bool) -> None:
        session = self._connected_session(ref)
        assert session.phone is not None
        await self._shown_available(session.phone, available)

    async def chat_state(self, ref: SessionRef, chat_jid: str) -> ChatState | None:
        """Return the app state the session's account keeps for the chat `chat_jid` (for tests), if any."""
        phone = self._hosted(ref).phone
        return None if phone is None else await self._network.chat_state(phone, chat_jid)

    async def _shown_available(self, phone: str, available: bool) -> None:
        """Show the account `phone` online or offline (last seen now) to whoever subscribed to its presence."""
        await self._network.set_available(phone, available, datetime.now(UTC))
        for subscriber in await self._network.presence_subscribers(phone):
            await self._post_presence(phone, subscriber)

    async def _post_presence(self, phone: str, to_phone: str, *, chat: Presence | None = None) -> None:
        """Show the presence of the account `phone` (online or not as the network has it; with `chat`, in the chat
        with `to_phone`) to that phone."""
        mail: Mail = {"kind": "presence", "from": phone, "chat": chat is not None}
        if chat is not None:
            mail["presence"] = chat.value
        else:
            account = await self._network.account(phone)
            mail["presence"] = (SeenPresence.AVAILABLE if account.available else SeenPresence.UNAVAILABLE).value
            if not account.available and account.last_seen is not None:
                mail["last_seen"] = account.last_seen.isoformat()
        await self._network.post(phone_address(to_phone), mail)

    async def _chat_mail(self, session: _Session, kind: str, mail: Mail) -> None:
        """App state changed on the phone, or someone's presence."""
        if kind == "presence_subscribe":  # written before subscriptions lived on the network: one of those now
            if session.phone is not None:
                await self._network.subscribe_presence(str(mail["from"]), session.phone)
                await self._post_presence(session.phone, str(mail["from"]))
            return
        stamp = mail.get("timestamp")
        timestamp = datetime.fromisoformat(stamp) if isinstance(stamp, str) else datetime.now(UTC)
        if kind == "app_state":
            if session.phone is None:  # the link is gone (logged out since): no account to keep it for
                log.info("sandbox.unlinked_mail_dropped", kind=kind)
                return
            until = mail.get("muted_until")
            state = ChatState(
                archived=mail.get("archived"),
                pinned=mail.get("pinned"),
                muted=mail.get("muted"),
                muted_until=datetime.fromisoformat(until) if isinstance(until, str) else None,
                read=mail.get("read"),
            )
            chat = str(mail["chat"])
            await self._network.change_chat_state(session.phone, chat, partial(merged_chat_state, change=state))
            self._emit(session, ChatChanged(ref=session.ref, chat_jid=chat, state=state, timestamp=timestamp))
            read_ids = [str(i) for i in mail.get("read_ids") or ()]
            if read_ids and session.hold_reads:  # the phone read them now: the sender sees blue ticks
                await self.mark_read(session.ref, chat, tuple(MessageKey(id=i) for i in read_ids))
            return
        party = _Party.of(mail.get("from"), mail.get("from_lid"))
        group = mail.get("group")
        in_chat = bool(mail.get("chat")) or isinstance(group, str)
        seen = mail.get("last_seen")
        self._emit(
            session,
            PresenceSeen(
                ref=session.ref,
                jid=party.jid,
                lid=party.lid,
                presence=SeenPresence(str(mail["presence"])),
                chat_jid=(group if isinstance(group, str) else party.jid) if in_chat else None,
                last_seen=datetime.fromisoformat(seen) if isinstance(seen, str) else None,
            ),
        )

    async def _contact_mail(self, session: _Session, kind: str, mail: Mail) -> None:
        """The session's phone blocked or unblocked someone (`blocklist`), or someone changed their picture."""
        party = _Party.of(mail.get("from"), mail.get("from_lid"))
        phone = party.phone or (phone_of_lid(party.lid_user) if party.lid_user else None)
        if kind == "blocklist":
            blocked = bool(mail.get("blocked"))
            if session.phone is not None and phone is not None:
                await self._network.set_blocked(session.phone, phone, blocked)
            jids = (party.jid,)
            self._emit(
                session,
                BlocklistChanged(session.ref, blocked=jids if blocked else (), unblocked=() if blocked else jids),
            )
            return
        picture_id = mail.get("picture_id")
        removed = not isinstance(picture_id, str)
        account = None if phone is None else await self._account(phone)
        if account is not None:
            session.pictures[account] = None if removed else str(picture_id)
        stamp = mail.get("timestamp")
        self._emit(
            session,
            ContactPictureChanged(
                ref=session.ref,
                jid=party.jid,
                lid=party.lid,
                removed=removed,
                timestamp=datetime.fromisoformat(stamp) if isinstance(stamp, str) else datetime.now(UTC),
                picture_id=None if removed else str(picture_id),
            ),
        )

    def hosts(self, ref: SessionRef) -> bool:
        return ref in self._sessions

    def abandon(self, ref: SessionRef) -> None:
        session = self._sessions.pop(ref, None)
        if session is not None:
            self._silence(session)

    async def close(self) -> None:
        for ref in list(self._sessions):
            await self.stop(ref)
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
        if self._acking is not None:  # what was stored is deleted now, or handed out again after its lease
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(ACK_AT_CLOSE):
                    await self._acking
            self._acking = None

    # -- groups (the rules: engines/sandbox_groups.py) ----------------------------------------------------

    async def list_groups(self, ref: SessionRef) -> list[GroupInfo]:
        phone = self._phone(ref)
        return [group_info_of(group) for group in await self._network.groups_of(phone)]

    async def create_group(
        self, ref: SessionRef, subject: str, participants: tuple[str, ...], *, acting: str | None = None
    ) -> tuple[GroupInfo, tuple[ParticipantResult, ...]]:
        phone = self._phone(ref, acting)
        targets = [(jid, await self._member_account(jid)) for jid in participants]
        group = SandboxGroup(
            jid=new_group_jid(),
            subject=subject,
            owner=phone,
            created_at=datetime.now(UTC).replace(microsecond=0),
            invite_code=new_invite_code(),
            members={phone: SUPER_ADMIN},
        )
        results = change_participants(group, phone, ParticipantAction.ADD, targets)
        await self._network.create_group(group)
        await self._tell_group(group, phone, GroupAction.JOINED, participants=list(group.members))
        return group_info_of(group), tuple(results)

    async def group_info(self, ref: SessionRef, group: str) -> GroupInfo:
        phone = self._phone(ref)
        found = await self._network.group(group)
        if found is None:
            raise GroupNotFound(f"no group {group}")
        require_member(found, phone)
        return group_info_of(found)

    async def set_group_subject(self, ref: SessionRef, group: str, subject: str, *, acting: str | None = None) -> None:
        await self._edit_group(self._phone(ref, acting), group, GroupAction.SUBJECT, subject=subject)

    async def set_group_description(
        self, ref: SessionRef, group: str, description: str, *, acting: str | None = None
    ) -> None:
        await self._edit_group(self._phone(ref, acting), group, GroupAction.DESCRIPTION, description=description)

    async def set_group_picture(self, ref: SessionRef, group: str, image: bytes) -> str:
        picture_id = str(int.from_bytes(hashlib.sha256(image).digest()[:6], "big"))
        await self._edit_group(self._phone(ref), group, GroupAction.PICTURE, picture_id=picture_id)
        return picture_id

    async def set_group_announce(
        self, ref: SessionRef, group: str, announce: bool, *, acting: str | None = None
    ) -> None:
        await self._edit_group(self._phone(ref, acting), group, GroupAction.ANNOUNCE, announce=announce)

    async def set_group_locked(self, ref: SessionRef, group: str, locked: bool, *, acting: str | None = None) -> None:
        await self._edit_group(self._phone(ref, acting), group, GroupAction.LOCKED, locked=locked)

    async def _edit_group(self, phone: str, group: str, action: GroupAction, **value: Any) -> None:
        """Change one setting of the group as `phone` (`value` names it as SandboxGroup does); tell its members."""

        def change(found: SandboxGroup) -> SandboxGroup:
            if action in (GroupAction.ANNOUNCE, GroupAction.LOCKED):
                require_admin(found, phone, f"change its {action.value} setting")
            else:
                require_editor(found, phone, f"change its {action.value}")
            for name, new in value.items():
                setattr(found, name, new)
            return found

        changed = await self._network.change_group(group, change)
        await self._tell_group(changed, phone, action, fields=value)

    async def update_group_participants(
        self,
        ref: SessionRef,
        group: str,
        action: ParticipantAction,
        participants: tuple[str, ...],
        *,
        acting: str | None = None,
    ) -> tuple[ParticipantResult, ...]:
        phone = self._phone(ref, acting)
        changed, results, done = await self._each_participant(
            group, participants, lambda found, targets: change_participants(found, phone, action, targets)
        )
        if done:
            gone = done if action is ParticipantAction.REMOVE else []
            await self._tell_group(changed, phone, GroupAction(action.value), participants=done, gone=gone)
        return tuple(results)

    async def _each_participant(
        self,
        group: str,
        participants: tuple[str, ...],
        rule: Callable[[SandboxGroup, list[tuple[str, str | None]]], list[ParticipantResult]],
    ) -> tuple[SandboxGroup, list[ParticipantResult], list[str]]:
        """Apply `rule` to `group` for each of `participants` (JID, its account): the group as changed, each
        one's result, and the accounts it went through for."""
        targets = [(jid, await self._member_account(jid)) for jid in participants]

        def change(found: SandboxGroup) -> tuple[SandboxGroup, list[ParticipantResult]]:
            return found, rule(found, targets)

        changed, results = await self._network.change_group(group, change)
        done = [
            account
            for (_, account), result in zip(targets, results, strict=True)
            if result.outcome is ParticipantOutcome.OK and account is not None
        ]
        return changed, results, done

    async def group_invite_link(self, ref: SessionRef, group: str, *, reset: bool = False) -> str:
        phone = self._phone(ref)

        def change(found: SandboxGroup) -> SandboxGroup:
            require_admin(found, phone, "see or reset its invite link")
            if reset:
                found.invite_code = new_invite_code()
            return found

        changed = await self._network.change_group(group, change)
        if reset:
            await self._tell_group(changed, phone, GroupAction.INVITE_RESET)
        return INVITE_LINK_PREFIX + changed.invite_code

    async def join_group(self, ref: SessionRef, code: str, *, acting: str | None = None) -> str:
        phone = self._phone(ref, acting)
        group = await self._network.group_of_invite(code)
        if group is None:
            raise InviteInvalid("the invite link was revoked or never existed")

        def change(found: SandboxGroup) -> tuple[SandboxGroup, str]:
            if found.invite_code != code:  # revoked meanwhile
                raise InviteInvalid("the invite link was revoked or never existed")
            return found, join_group(found, phone, datetime.now(UTC))

        changed, outcome = await self._network.change_group(group, change)
        await self._joined(changed, phone, outcome)
        return group

    async def join_group_with_invite(
        self, ref: SessionRef, group: str, inviter: str, code: str, expiration: int | None
    ) -> str:
        phone = self._phone(ref)
        if expiration is not None and expiration <= int(datetime.now(UTC).timestamp()):
            raise InviteInvalid("the invitation has expired")

        def change(found: SandboxGroup) -> tuple[SandboxGroup, str]:
            if found.invite_code != code:  # revoked since it was sent
                raise InviteInvalid("the invitation was revoked")
            return found, join_group(found, phone, datetime.now(UTC))

        try:
            changed, outcome = await self._network.change_group(group, change)
        except GroupNotFound as exc:
            raise InviteInvalid("the invitation names no group") from exc
        await self._joined(changed, phone, outcome)
        return group

    async def _joined(self, group: SandboxGroup, phone: str, outcome: str) -> None:
        """Tell what joining by link did: the members hear join-by-link; a request is told to the admins."""
        if outcome == "joined":
            await self._tell_group(group, phone, GroupAction.JOIN_BY_LINK, participants=[phone])
        elif outcome == "requested":
            await self._tell_group(group, phone, GroupAction.REQUESTED, participants=[phone], admins_only=True)

    async def set_group_join_approval(
        self, ref: SessionRef, group: str, on: bool, *, acting: str | None = None
    ) -> None:
        phone = self._phone(ref, acting)

        def change(found: SandboxGroup) -> tuple[SandboxGroup, list[str]]:
            return found, set_join_approval(found, phone, on)

        changed, approved = await self._network.change_group(group, change)
        await self._tell_group(changed, phone, GroupAction.JOIN_APPROVAL, fields={"join_approval": on})
        if approved:
            await self._tell_group(changed, phone, GroupAction.APPROVED, participants=approved)

    async def group_requests(self, ref: SessionRef, group: str) -> list[JoinRequest]:
        phone = self._phone(ref)
        found = await self._network.group(group)
        if found is None:
            raise GroupNotFound(f"no group {group}")
        return [
            JoinRequest(jid=f"{number}@{USER_SERVER}", requested_at=datetime.fromisoformat(at))
            for number, at in pending_requests(found, phone)
        ]

    async def answer_group_requests(
        self,
        ref: SessionRef,
        group: str,
        action: RequestAction,
        participants: tuple[str, ...],
        *,
        acting: str | None = None,
    ) -> tuple[ParticipantResult, ...]:
        phone = self._phone(ref, acting)
        changed, results, done = await self._each_participant(
            group, participants, lambda found, targets: answer_requests(found, phone, action, targets)
        )
        if done and action is RequestAction.APPROVE:
            await self._tell_group(changed, phone, GroupAction.APPROVED, participants=done)
        elif done:
            await self._tell_group(changed, phone, GroupAction.REJECTED, participants=done, admins_only=True)
        return tuple(results)

    async def _invite_by_message(self, ref: SessionRef, group: str, people: Sequence[str], acting: str) -> None:
        """The admin `acting` sends each of `people` an invitation to `group` (a group_invite message)."""
        found = await self._network.group(group)
        if found is None:
            raise GroupNotFound(f"no group {group}")
        require_admin(found, acting, "invite by message")
        now = datetime.now(UTC)
        invite = GroupInvite(
            group_jid=group,
            code=found.invite_code,
            expires_at=int((now + INVITE_MESSAGE_LIFETIME).timestamp()),
            subject=found.subject,
        )
        for jid in people:
            account = await self._member_account(jid)
            if account is None or await self._network.linked_session(account) is None:
                continue  # a simulated phone: it takes note, nobody hears of it
            mail: Mail = {
                "kind": "message",
                "id": "3EB0" + secrets.token_hex(8).upper(),
                "from": acting,
                "to": account,
                "timestamp": now.isoformat(),
                **content_mail(invite),
            }
            await self._network.post(phone_address(account), mail)

    async def leave_group(self, ref: SessionRef, group: str, *, acting: str | None = None) -> None:
        phone = self._phone(ref, acting)

        changed = await self._network.change_group(group, partial(_left, phone=phone))
        await self._tell_group(changed, phone, GroupAction.LEAVE, participants=[phone], gone=[phone])

    def _phone(self, ref: SessionRef, acting: str | None = None) -> str:
        """The number that acts: the session's (connected), or the simulated phone `acting` (injection)."""
        if acting is not None:
            return acting
        session = self._connected_session(ref)
        assert session.phone is not None
        return session.phone

    async def _group_act(self, session: _Session, mail: Mail) -> None:
        """A simulated phone (`as`) acts in a group as a member would (injection: sandbox group-act mail).

        What WhatsApp refuses it is told to the session it was injected through, as an `error` event.
        """
        ref, acting, group = session.ref, str(mail["as"]), str(mail.get("group") or "")
        people = tuple(str(jid) for jid in mail.get("participants") or ())
        value = mail.get("value")
        acts: dict[str, Callable[[], Awaitable[Any]]] = {
            "create": lambda: self.create_group(ref, str(value), people, acting=acting),
            "subject": lambda: self.set_group_subject(ref, group, str(value), acting=acting),
            "description": lambda: self.set_group_description(ref, group, str(value), acting=acting),
            "announce": lambda: self.set_group_announce(ref, group, bool(value), acting=acting),
            "locked": lambda: self.set_group_locked(ref, group, bool(value), acting=acting),
            "join": lambda: self.join_group(ref, str(value), acting=acting),
            "leave": lambda: self.leave_group(ref, group, acting=acting),
            "invite": lambda: self._invite_by_message(ref, group, people, acting),
        }
        for change in ParticipantAction:
            acts[change.value] = partial(self.update_group_participants, ref, group, change, people, acting=acting)
        act = acts.get(str(mail.get("action")))
        if act is None:
            self._fail(session, "unknown_group_act", f"unknown group action {mail.get('action')!r}")
            return
        try:
            await act()
        except EngineError as exc:
            self._fail(session, exc.code, f"the simulated phone could not do it: {exc.message}")

    async def _member_account(self, jid: str) -> str | None:
        """Return the number of the account JID `jid` (or digits) names, or None if it has none."""
        try:
            return await self._recipient_account(jid)
        except SendRejected:
            return None

    async def _tell_group(
        self,
        group: SandboxGroup,
        actor: str,
        action: GroupAction,
        *,
        participants: Sequence[str] = (),
        gone: Sequence[str] = (),
        fields: Mapping[str, Any] | None = None,
        admins_only: bool = False,
    ) -> None:
        """Notify every linked member of `group` (and those `gone` from it) of a change, as WhatsApp does
        (`group_notices`); `admins_only`: only the admins hear it (join requests)."""
        # a simulated phone takes note, nobody hears of it
        linked = [p for p in dict.fromkeys([*group.members, *gone]) if await self._network.linked_session(p)]
        notices = group_notices(
            group, actor, action, linked, participants=participants, gone=gone, fields=fields, admins_only=admins_only
        )
        await self._network.post_many(notices)

    def _group_changed(self, session: _Session, mail: Mail, ack: Callable[[], None]) -> GroupChanged:
        """The GroupChanged event a group notification carries."""
        info = mail.get("info")
        actor = mail.get("actor")
        return GroupChanged(
            ref=session.ref,
            group_jid=str(mail["group"]),
            action=GroupAction(mail["action"]),
            timestamp=datetime.fromisoformat(mail["timestamp"]),
            actor_jid=f"{actor}@{USER_SERVER}" if actor else None,
            participants=tuple(f"{phone}@{USER_SERVER}" for phone in mail.get("participants") or ()),
            subject=mail.get("subject"),
            description=mail.get("description"),
            picture_id=mail.get("picture_id"),
            announce=mail.get("announce"),
            locked=mail.get("locked"),
            join_approval=mail.get("join_approval"),
            reason=mail.get("reason"),
            info=group_info_of(SandboxGroup.from_mail(info)) if isinstance(info, dict) else None,
            ack=ack,
        )

    async def _send_to_group(
        self,
        session: _Session,
        to: str,
        content: Content,
        message_id: str,
        *,
        quote: Quote | None,
        mentions: tuple[str, ...],
    ) -> SendResult:
        """Send to every member of the group `to`: linked members get the message, simulated ones read it at once."""
        assert session.phone is not None
        group = await self._network.group(to)
        if group is None:
            raise GroupNotFound(f"no group {to}", session=str(session.ref))
        try:
            require_sender(group, session.phone)
        except GroupForbidden as exc:
            raise SendRejected(exc.message, session=str(session.ref)) from exc
        now = datetime.now(UTC)
        whatsapp_id = whatsapp_message_id(session.ref, message_id)
        simulated = []
        await self._upload(session.ref, content, None)  # readable at all
        for phone in group.members:
            if phone == session.phone:
                continue
            if await self._network.linked_session(phone) is None:
                simulated.append(phone)
                continue
            upload = await self._upload(session.ref, content, phone)
            read_quote = None if quote is None else replace(quote, key=key_for(quote.key, session.phone, phone))
            mail: Mail = {
                "kind": "message",
                "id": whatsapp_id,
                "from": session.phone,
                "to": phone,
                "group": to,
                "timestamp": now.isoformat(),
                **content_mail(
                    content_for(content, session.phone, phone), quote=read_quote, mentions=mentions, upload=upload
                ),
            }
            await self._network.post(phone_address(phone), mail)
        if simulated:
            self._spawn(session, self._simulated_members_read(session, whatsapp_id, to, simulated))
        return SendResult(message_id=whatsapp_id, timestamp=now)

    async def _simulated_members_read(self, session: _Session, message_id: str, group: str, phones: list[str]) -> None:
        await asyncio.sleep(0)  # after the send has returned
        for status in (MessageStatus.DELIVERED, MessageStatus.READ):
            for phone in phones:
                self._emit(
                    session,
                    Receipt(
                        ref=session.ref,
                        message_ids=(message_id,),
                        status=status,
                        chat_jid=group,
                        timestamp=datetime.now(UTC),
                        sender_jid=f"{phone}@{USER_SERVER}",
                    ),
                )

    # -- the simulated network ----------------------------------------------------------------------------

    def _ensure_pump(self) -> None:
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._pump_mail(), name="sandbox.mail")

    async def _pump_mail(self) -> None:
        renewed = time.monotonic()
        while True:
            addresses = []
            for session in self._sessions.values():
                addresses.append(session.address)
                if session.phone is not None and session.status is SessionStatus.CONNECTED:
                    addresses.append(phone_address(session.phone))
            try:
                if time.monotonic() - renewed >= LEASE_RENEWAL:
                    renewed = time.monotonic()
                    await self._renew_held()
                if len(self._held) >= HELD_HIGH_WATER:  # the recorder is behind: the mail waits where it is
                    metrics.SANDBOX_MAIL_PAUSES.inc()
                    self._room.clear()
                    await wait_set(self._room, LEASE_RENEWAL)
                    continue
                collected = time.monotonic()  # the leases end MAIL_LEASE after this, or later
                taken = await self._network.collect(addresses) if addresses else []
                await self._deliver_all(taken, collected + MAIL_LEASE)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the network (database) may be briefly away: try again later
                log.warning("sandbox.mail_failed", error=repr(exc))
            await self._network.wait_for_mail(MAIL_POLL_INTERVAL)

    async def _renew_held(self) -> None:
        """Keep the mail handed to the recorder, and not stored yet, from being handed out again (at most
        HOLD_AT_MOST seconds: an event the recorder gave up on is handed out again then).

        A lease about to end is extended by HELD_LEASE, so a backlog costs the registry one write per held mail
        a minute, not one per renewal; a session started elsewhere releases its mail at once (`_connected`).
        """
        now = time.monotonic()
        due = []
        for mail_id, held in list(self._held.items()):
            if held.session.silenced or now - held.since > HOLD_AT_MOST:
                del self._held[mail_id]
            elif held.lease_ends - now < 2 * LEASE_RENEWAL:
                due.append(mail_id)
        if due:
            await self._network.renew(due, HELD_LEASE)
            for mail_id in due:
                if (renewed := self._held.get(mail_id)) is not None:
                    renewed.lease_ends = now + HELD_LEASE

    async def _deliver_all(self, taken: list[tuple[int, str, Mail]], lease_ends: float) -> None:
        """Deliver collected mail in its order, with as few trips to the network as the order allows: what
        messages, receipts and group notifications need (blocklists, receipts to post) is asked and posted once
        for a run of them, then their events are reported."""
        pending = MailRound(blocks=await self._blocks_among(taken), lease_ends=lease_ends)
        for mail_id, address, mail in taken:
            held = self._held.get(mail_id)
            if held is not None and not held.session.silenced:
                metrics.SANDBOX_MAIL_REHANDED.inc()
                continue  # handed out again while the recorder still has it (its lease ran out): once is enough
            if mail.get("kind") in DEFERRED_MAIL:
                await self._deliver(mail_id, address, mail, pending)
            else:  # it may change what the run asked (a blocklist) or report at once: the run goes first
                await self._flush(pending)
                pending = MailRound(blocks=await self._blocks_among([(mail_id, address, mail)]), lease_ends=lease_ends)
                await self._deliver(mail_id, address, mail, pending)
        await self._flush(pending)

    async def _blocks_among(self, taken: list[tuple[int, str, Mail]]) -> Blocks:
        """The blocklist answers the messages among `taken` need: (account, sender) → blocked."""
        asked = set()
        for _, address, mail in taken:
            session = self._addressee(address)
            one_to_one = not (mail.get("group") or mail.get("story") or mail.get("from_me"))
            if mail.get("kind") == "message" and one_to_one and session is not None and session.phone is not None:
                sender = blockable_sender(mail)
                if sender is not None:
                    asked.add((session.phone, sender))
        blocked = await self._network.blocked_among(asked) if asked else set()
        return {pair: pair in blocked for pair in asked}

    async def _flush(self, pending: MailRound) -> None:
        """Post what the run's mail answers, then report its events: a message is stored (and its mail
        acknowledged) only after its receipts are on their way."""
        if pending.posts:
            await self._network.post_many(pending.posts)
            pending.posts.clear()
        now = time.monotonic()
        for session, event, mail_id in pending.events:
            if not session.silenced:
                self._held[mail_id] = _Held(session, now, pending.lease_ends)
            self._emit(session, event)
        pending.events.clear()

    async def _deliver(self, mail_id: int, address: str, mail: Mail, pending: MailRound) -> None:
        kind = mail.get("kind")
        session = self._addressee(address)
        if session is None:
            await self._network.post(address, mail)  # not ours (any more): leave it for whoever hosts it
            await self._network.ack([mail_id])
            return
        if kind == "message":
            if session.phone is None:  # written to a link that is gone (logged out since): nobody reads it
                log.info("sandbox.unlinked_mail_dropped", address=address)
                await self._network.ack([mail_id])
                return
            await self._receive(session, mail, mail_id, pending)
            return
        if kind == "receipt":
            group = mail.get("group")
            reader = f"{mail['from']}@{USER_SERVER}"
            receipt = Receipt(
                ref=session.ref,
                message_ids=tuple(mail["ids"]),
                status=MessageStatus(mail["status"]),
                chat_jid=group if isinstance(group, str) else reader,
                timestamp=datetime.fromisoformat(mail["timestamp"]),
                ack=self._acker(mail_id),
                sender_jid=reader if isinstance(group, str) else None,
            )
            pending.events.append((session, receipt, mail_id))
            return
        if kind == "group":
            if session.phone is None:
                await self._network.ack([mail_id])
                return
            pending.events.append((session, self._group_changed(session, mail, self._acker(mail_id)), mail_id))
            return
        if kind == "notice":
            self._notice(session, mail)
        elif kind in ("app_state", "presence", "presence_subscribe"):
            await self._chat_mail(session, str(kind), mail)
        elif kind in ("blocklist", "picture"):
            await self._contact_mail(session, str(kind), mail)
        else:
            await self._control(session, kind, mail)
        await self._network.ack([mail_id])

    def _acker(self, mail_id: int) -> Callable[[], None]:
        """Return the callback that deletes mail `mail_id` once what it carried is stored (with whatever else
        is stored by then: one trip for a batch the recorder stored)."""

        def ack() -> None:
            self._to_ack.add(mail_id)
            if self._acking is None or self._acking.done():
                self._acking = asyncio.get_running_loop().create_task(self._ack_stored(), name="sandbox.ack")

        return ack

    async def _ack_stored(self) -> None:
        while self._to_ack:
            mail_ids, self._to_ack = self._to_ack, set()
            try:
                await self._network.ack(mail_ids)
            except Exception as exc:  # not the database being away (waited for): try again shortly
                log.warning("sandbox.ack_failed", error=repr(exc))
                self._to_ack |= mail_ids
                await asyncio.sleep(1.0)
                continue
            for mail_id in mail_ids:
                self._held.pop(mail_id, None)
            if len(self._held) < HELD_HIGH_WATER:
                self._room.set()

    async def _control(self, session: _Session, kind: object, mail: Mail) -> None:
        if kind == "scan":
            await self._scanned(session, str(mail["phone"]))
        elif kind == "enter_code":
            await self._code_entered(session, str(mail["code"]))
        elif kind == "fault":
            await self._fault(session, str(mail["fault"]), int(mail.get("count") or 1))
        elif kind == "group_act":
            await self._group_act(session, mail)
        else:
            log.warning("sandbox.unknown_mail", kind=kind)

    def _addressee(self, address: str) -> _Session | None:
        for session in self._sessions.values():
            if address == session.address or (session.phone is not None and address == phone_address(session.phone)):
                return session
        return None

    async def _receive(self, session: _Session, mail: Mail, mail_id: int, pending: MailRound) -> None:
        """Report the message `mail` carries: a chat, a group's, a story; from someone, or from the phone."""
        sender = _Party.of(mail.get("from"), mail.get("from_lid"))
        from_me = bool(mail.get("from_me"))
        group = mail.get("group")
        if mail.get("story"):
            # whatsmeow reports broadcasts as group messages (message.go, parseMessageSource)
            chat_jid, chat_lid, is_group = STATUS_BROADCAST, None, True
        elif isinstance(group, str):
            chat_jid, chat_lid, is_group = group, None, True
        else:
            chat_jid, chat_lid, is_group = sender.jid, sender.lid, False
        if from_me and session.phone is not None:
            # written on the linked phone itself: the other party (`from`) names the chat only
            sender = _Party.of(session.phone, None)
        content, quote, mentions = mail_content(mail)
        if session.silenced:
            return  # stopped meanwhile: whoever hosts the session next is handed this mail
        ack = self._acker(mail_id)
        if not (is_group or from_me) and await self._blocked(session, mail, pending.blocks):
            ack()  # WhatsApp never delivers it (the sender sees one tick): nothing is reported, nothing waits
            return
        in_group = isinstance(group, str) and not mail.get("story")
        if not ((is_group and not in_group) or from_me or session.phone is None) and sender.phone is not None:
            # the recipient's phone gets it, then reads it: the sender hears both. Posted before the message is
            # reported, so before its mail is acknowledged (once stored): mail whose receipts could not be posted
            # is handed out again, and its receipts with it (a receipt repeated changes nothing)
            pending.posts += await self._receipts(session, sender.phone, str(mail["id"]), group if in_group else None)
        pending.events.append(
            (
                session,
                InboundMessage(
                    ref=session.ref,
                    message_id=str(mail["id"]),
                    chat_jid=chat_jid,
                    chat_lid=chat_lid,
                    sender_jid=sender.jid,
                    sender_lid=sender.lid,
                    type=kind_of(content).value,
                    text=summary(content),
                    timestamp=datetime.fromisoformat(mail["timestamp"]),
                    push_name=mail.get("push_name"),
                    verified_name=None if from_me else mail.get("verified_name"),
                    is_group=is_group,
                    from_me=from_me,
                    content=content,
                    quote=quote,
                    mentions=mentions,
                    ack=ack,
                ),
                mail_id,
            )
        )

    async def _blocked(self, session: _Session, mail: Mail, known: Blocks) -> bool:
        """Whether the session's account blocked the sender of `mail` (from `known` when it was asked)."""
        phone = blockable_sender(mail)
        if session.phone is None or phone is None:
            return False
        answer = known.get((session.phone, phone))
        return await self._network.is_blocked(session.phone, phone) if answer is None else answer

    async def _receipts(
        self, session: _Session, sender_phone: str, whatsapp_id: str, group: str | None = None
    ) -> list[tuple[str, Mail]]:
        """The receipts that tell a linked sender its message `whatsapp_id` was delivered to the session's
        phone, then read, as (address, mail) to post.

        In a group, each member's phone answers for itself (`group` names the chat, `from` the member).
        """
        if session.phone is None or await self._network.linked_session(sender_phone) is None:
            return []
        receipts = []
        read = () if session.hold_reads else (MessageStatus.READ,)
        for status in (MessageStatus.DELIVERED, *read):
            receipt: Mail = {
                "kind": "receipt",
                "ids": [whatsapp_id],
                "status": status.value,
                "from": session.phone,
                "timestamp": datetime.now(UTC).isoformat(),
            }
            if group is not None:
                receipt["group"] = group
            receipts.append((phone_address(sender_phone), receipt))
        return receipts

    def _notice(self, session: _Session, mail: Mail) -> None:
        try:
            kind = NoticeKind(str(mail.get("notice")))
        except ValueError:
            log.warning("sandbox.unknown_notice", notice=mail.get("notice"))
            return
        stamp = mail.get("timestamp")
        timestamp = datetime.fromisoformat(stamp) if isinstance(stamp, str) else datetime.now(UTC)
        self._emit(
            session, Notice(ref=session.ref, kind=kind, details=dict(mail.get("details") or {}), timestamp=timestamp)
        )

    async def _external_phones_read(self, session: _Session) -> None:
        """Report the sends to simulated phones as delivered, then read (`_Session.phone_reads`): per chat, one
        receipt of each status naming its messages in the order sent, as WhatsApp reports several messages that
        reached a phone together (a receipt's list of ids)."""
        try:
            await asyncio.sleep(0)  # after the send has returned
        finally:  # cancelled (the session stopped): those reads are never reported, and the next send starts anew
            reads, session.phone_reads = session.phone_reads, []
        now = datetime.now(UTC)
        chats: dict[str, dict[str, None]] = {}  # a chat's ids, each once (a resend keeps its id)
        for message_id, chat_jid in reads:
            chats.setdefault(chat_jid, {})[message_id] = None
        for chat_jid, ids in chats.items():
            for status in (MessageStatus.DELIVERED, MessageStatus.READ):
                self._emit(
                    session,
                    Receipt(ref=session.ref, message_ids=tuple(ids), status=status, chat_jid=chat_jid, timestamp=now),
                )

    # -- pairing ------------------------------------------------------------------------------------------

    async def _show_qr_codes(self, session: _Session) -> None:
        request = session.request
        self._set_status(session, SessionStatus.QR)
        for sequence in range(1, request.max_qr_codes + 1):
            expires_at = datetime.now(UTC) + timedelta(seconds=request.qr_timeout)
            code = _qr_code(session.ref, sequence)
            self._emit(session, QrCode(ref=session.ref, code=code, expires_at=expires_at, sequence=sequence))
            await asyncio.sleep(request.qr_timeout)
        self._set_status(session, SessionStatus.QR_TIMEOUT, f"no scan of {request.max_qr_codes} QR codes")
        self._forget(session)

    async def _expire_pairing(self, session: _Session) -> None:
        request = session.request
        await asyncio.sleep(request.qr_timeout * request.max_qr_codes)
        self._set_status(session, SessionStatus.QR_TIMEOUT, "the pairing code was not entered in time")
        self._forget(session)

    async def _scanned(self, session: _Session, phone: str) -> None:
        if session.status is not SessionStatus.QR:
            self._fail(
                session, "not_showing_qr", f"a scan needs a QR code on screen; the session is {session.status.value}"
            )
            return
        await self._link(session, phone)

    async def _code_entered(self, session: _Session, code: str) -> None:
        if session.status is not SessionStatus.PAIRING or session.request.phone_number is None:
            self._fail(session, "not_pairing", f"no pairing code is pending; the session is {session.status.value}")
            return
        if code.replace("-", "").upper() != (session.pairing_code or "").replace("-", ""):
            self._fail(session, "wrong_pairing_code", "the pairing code entered on the phone does not match")
            return
        await self._link(session, session.request.phone_number)

    async def _link(self, session: _Session, phone: str) -> None:
        try:
            await self._network.link(phone, session.ref)
        except PhoneInUse as exc:
            self._fail(session, exc.code, exc.message)
            return
        for task in list(session.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        self._set_status(session, SessionStatus.CONNECTING, "paired")
        await self._connected(session, phone)

    async def _connected(self, session: _Session, phone: str) -> None:
        session.phone = phone
        session.pairing_code = None
        # mail a former host of the session took and had not stored (it died, or this start replaced it) is
        # collected now, not once its lease (up to HELD_LEASE) ends; what it did store is acknowledged, so repeated
        # at worst (stored once)
        await self._network.release([session.address, phone_address(phone)])
        # a new connection (engines/sandbox_accounts.py): the server forgets what the last one subscribed to, and
        # shows the account offline if the last one ended without a word; the phone keeps its habits
        await self._network.forget_presence_subscriptions(phone)
        account = await self._network.account(phone)
        if account.available:
            await self._shown_available(phone, False)
        if session.hold_reads and not account.holding_reads:  # the fault came while this connection was made
            await self._network.set_holding_reads(phone, True)
        session.hold_reads = session.hold_reads or account.holding_reads
        if session.silenced:
            return  # stopped meanwhile
        session.status = SessionStatus.CONNECTED
        self._network.watch([phone_address(phone)])
        self._emit(
            session,
            StatusChanged(
                ref=session.ref,
                status=SessionStatus.CONNECTED,
                jid=f"{phone}@{USER_SERVER}",
                phone_number=phone,
                lid=f"{simulated_lid(phone)}@{LID_SERVER}",
            ),
        )

    async def _unlink(self, phone: str, ref: SessionRef) -> None:
        """Unlink the session's phone: its subscribers see it go offline; the network ends its subscriptions."""
        if (await self._network.account(phone)).available:
            await self._shown_available(phone, False)
        await self._network.unlink(phone, ref)

    # -- faults -------------------------------------------------------------------------------------------

    async def _fault(self, session: _Session, fault: str, count: int = 1) -> None:
        if fault == "reject_next_send":
            session.reject_next_send = True
        elif fault == "restrict":
            session.restrict_next_send = True
        elif fault == "fail_transient":
            session.failing_sends = max(1, count)
        elif fault in ("logout", "expire_media", "lose_media", "hold_reads"):
            await self._phone_fault(session, fault)
        elif fault == "drop_connection":
            if session.status is SessionStatus.CONNECTED:
                self._set_status(session, SessionStatus.DISCONNECTED, "connection dropped (injected fault)")
                self._spawn(session, self._reconnect(session))
        else:
            self._fail(session, "unknown_fault", f"unknown fault {fault!r}")

    async def _phone_fault(self, session: _Session, fault: str) -> None:
        """What the session's phone does: unlink it, lose or expire its media, leave what arrives unread."""
        if fault == "logout":
            if session.phone is not None:
                await self._unlink(session.phone, session.ref)
            for task in list(session.tasks):
                task.cancel()
            self._forget(session)
            self._set_status(session, SessionStatus.LOGGED_OUT, "logged out from the phone")
            self._silence(session)
        elif fault == "hold_reads":
            session.hold_reads = True  # the phone's habit: kept on the network, for whoever hosts the session next
            if session.phone is not None:
                await self._network.set_holding_reads(session.phone, True)
        elif session.phone is not None:
            # the media the session's phone received so far: expired on the server (the phone keeps a copy), or lost
            forget = self._network.expire_media if fault == "expire_media" else self._network.lose_media
            await forget(session.phone)

    async def _reconnect(self, session: _Session) -> None:
        await asyncio.sleep(self._reconnect_delay)
        self._set_status(session, SessionStatus.CONNECTING, "reconnecting")
        await asyncio.sleep(self._reconnect_delay)
        if session.phone is not None:
            await self._connected(session, session.phone)

    # -- helpers ------------------------------------------------------------------------------------------

    def _hosted(self, ref: SessionRef) -> _Session:
        session = self._sessions.get(ref)
        if session is None:
            raise UnknownSession(f"session {ref} is not hosted here")
        return session

    def _connected_session(self, ref: SessionRef) -> _Session:
        session = self._hosted(ref)
        if session.status is not SessionStatus.CONNECTED or session.phone is None:
            raise NotConnected(f"session {ref} is {session.status.value}, not connected")
        return session

    async def _account(self, phone: str) -> str | None:
        """Return the number of the account `phone` reaches (a linked spelling first), or None."""
        for spelling in spellings(phone):
            if await self._network.linked_session(spelling) is not None:
                return spelling
        return whatsapp_account(phone)

    async def _recipient_account(self, to: str) -> str | None:
        """Return the number of the account JID `to` names (None for a group); raise as WhatsApp refuses a send."""
        user, server = jid_user(to), to.partition("@")[2]
        if server == LID_SERVER:
            phone = phone_of_lid(user)
            if phone is None or await self._account(phone) != phone:
                raise RecipientUnknown("no LID found: no WhatsApp account has this LID")
            return phone
        if server not in ("", USER_SERVER):
            return None  # a group (or another server): a simulated chat
        account = await self._account(user)
        if account is None:
            raise NotOnWhatsApp("the recipient's number is not on WhatsApp")
        if account != user:
            # whatsmeow finds no LID for a spelling WhatsApp does not have: the ninth digit guessed wrong
            raise RecipientUnknown("no LID found: WhatsApp has this number under another JID (resolve it first)")
        return account

    def _injected_send_fault(self, session: _Session) -> None:
        """Raise the error an injected fault holds for this send, if any."""
        if session.reject_next_send:
            session.reject_next_send = False
            raise SendRejected("the sandbox rejected this send (injected fault)")
        if session.restrict_next_send:
            session.restrict_next_send = False
            raise Restricted("the account is restricted from sending (injected fault)", code=RESTRICTED_CODE)
        if session.failing_sends > 0:
            session.failing_sends -= 1
            raise EngineError(f"the sandbox failed this send (injected fault, {session.failing_sends} more to fail)")

    def _emit(self, session: _Session, event: EngineEvent) -> None:
        if not session.silenced:
            self._sink(event)

    def _forget(self, session: _Session) -> None:
        """Stop hosting `session`, unless another start of its ref replaced it meanwhile (that one stays hosted:
        popped by its ref, it would be connected and collect no mail)."""
        if self._sessions.get(session.ref) is session:
            del self._sessions[session.ref]

    def _silence(self, session: _Session) -> None:
        """Cancel what the session has under way and drop whatever it would still report."""
        session.silenced = True
        for task in list(session.tasks):
            task.cancel()

    def _set_status(self, session: _Session, status: SessionStatus, reason: str | None = None) -> None:
        session.status = status
        self._emit(session, StatusChanged(ref=session.ref, status=status, reason=reason))

    def _fail(self, session: _Session, code: str, message: str) -> None:
        self._emit(session, EngineFailure(ref=session.ref, code=code, message=message))

    def _spawn(self, session: _Session, coro: Any) -> None:
        task = asyncio.create_task(coro)
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)


def blockable_sender(mail: Mail) -> str | None:
    """The number whose block would keep the message `mail` from its recipient (known by number or by LID)."""
    sender = _Party.of(mail.get("from"), mail.get("from_lid"))
    return sender.phone or (phone_of_lid(sender.lid_user) if sender.lid_user else None)


def blocking_pair(address: str, mail: Mail) -> tuple[str, str] | None:
    """(the recipient's account, the sender's number) whose block keeps `mail` from being delivered at all: a
    person's message to a phone; None for anything else (a group's, a story, the phone's own, not a message)."""
    if mail.get("kind") != "message" or mail.get("group") or mail.get("story") or mail.get("from_me"):
        return None
    # to a number's mailbox, or (injected) to a session's, for the number it links (`to`)
    to = address.removeprefix(PHONE_MAILBOX) if address.startswith(PHONE_MAILBOX) else mail.get("to")
    sender = blockable_sender(mail)
    return None if sender is None or not isinstance(to, str) else (to, sender)


def _phone_of(jid: str) -> str | None:
    """The number a one-to-one chat's JID (a number's or a LID) names; None for a group or another server."""
    user, server = jid_user(jid), jid.partition("@")[2]
    if server == LID_SERVER:
        return phone_of_lid(user)
    return user if server in ("", USER_SERVER) and _DIGITS.fullmatch(user) else None


@dataclass(frozen=True, slots=True)
class _Party:
    """Someone in a chat, by phone number, LID or both."""

    phone: str | None
    lid_user: str | None

    @classmethod
    def of(cls, phone: object, lid: object) -> _Party:
        """Name the party of mail fields `from` (digits) and `from_lid` (digits); the sandbox knows a number's LID."""
        number = str(phone) if phone else None
        lid_user = jid_user(str(lid)) if lid else (simulated_lid(number) if number else None)
        return cls(number, lid_user)

    @property
    def jid(self) -> str:
        """The phone JID when the number is known, else the LID."""
        if self.phone is not None:
            return f"{self.phone}@{USER_SERVER}"
        return f"{self.lid_user}@{LID_SERVER}"

    @property
    def lid(self) -> str | None:
        return f"{self.lid_user}@{LID_SERVER}" if self.lid_user else None


def _picture(owner: str, version: str | None = None) -> ProfilePicture:
    """The simulated profile picture of an account (digits) or a group (its JID): a stable URL, a day's link.

    `version`: the id of a picture the account changed to (injected), else its first one.
    """
    seed = f"picture:{owner}" if version is None else f"picture:{owner}:{version}"
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return ProfilePicture(
        url=f"{PICTURE_URL}/{digest[:32]}.jpg",
        picture_id=str(int(digest[:8], 16)) if version is None else version,
        expires_at=datetime.now(UTC) + PICTURE_LINK_TTL,
    )


def group_info_of(group: SandboxGroup) -> GroupInfo:
    """The GroupInfo of a sandbox group: members by phone JID, with their LIDs."""
    return GroupInfo(
        jid=group.jid,
        subject=group.subject,
        description=group.description,
        owner_jid=f"{group.owner}@{USER_SERVER}",
        announce=group.announce,
        locked=group.locked,
        join_approval=group.join_approval,
        picture_id=group.picture_id,
        created_at=group.created_at,
        participants=tuple(
            GroupParticipant(
                jid=f"{phone}@{USER_SERVER}",
                lid=f"{simulated_lid(phone)}@{LID_SERVER}",
                is_admin=role in (ADMIN, SUPER_ADMIN),
                is_super_admin=role == SUPER_ADMIN,
            )
            for phone, role in group.members.items()
        ),
    )


def _left(group: SandboxGroup, phone: str) -> SandboxGroup:
    """`group` once `phone` left it."""
    leave_group(group, phone)
    return group


def group_notices(
    group: SandboxGroup,
    actor: str,
    action: GroupAction,
    linked: Collection[str],
    *,
    participants: Sequence[str] = (),
    gone: Sequence[str] = (),
    fields: Mapping[str, Any] | None = None,
    admins_only: bool = False,
) -> list[tuple[str, Mail]]:
    """The mail (address, mail) that tells the `linked` members of `group` (and those `gone` from it) of a change.

    Who the change brings in hears JOINED with the whole group; who it takes out hears LEFT; the others hear
    `action` with the `participants` it names, or the new value of the setting (`fields`). `admins_only`: only
    the admins hear it (join requests).
    """
    base: Mail = {"kind": "group", "group": group.jid, "actor": actor, "timestamp": datetime.now(UTC).isoformat()}
    joining = action in (GroupAction.JOINED, GroupAction.ADD, GroupAction.JOIN_BY_LINK, GroupAction.APPROVED)
    notices = []
    for phone in dict.fromkeys([*group.members, *gone]):
        if phone not in linked or (admins_only and not group.is_admin(phone)):
            continue
        if joining and phone in participants:
            reason = {
                GroupAction.ADD: "added",
                GroupAction.JOIN_BY_LINK: "invite",
                GroupAction.APPROVED: "approved",
            }.get(action)
            reason = reason or ("created" if phone == group.owner else "added")
            mail = {**base, "action": GroupAction.JOINED.value, "reason": reason, "info": group.to_mail()}
        elif phone in gone:
            reason = "removed" if action is GroupAction.REMOVE else "left"
            mail = {**base, "action": GroupAction.LEFT.value, "reason": reason}
        else:
            mail = {**base, "action": action.value, "participants": list(participants), **(fields or {})}
        notices.append((phone_address(phone), mail))
    return notices


def departure_notices(group: SandboxGroup, phone: str, linked: Collection[str]) -> list[tuple[str, Mail]]:
    """The mail that tells the `linked` members left in `group` that `phone` left it (as `leave_group` does)."""
    return group_notices(group, phone, GroupAction.LEAVE, linked, participants=[phone])


def key_for(key: MessageKey, writer: str, reader: str) -> MessageKey:
    """Return `key`, as `writer` (a number) named it in a group, as the member `reader` sees it."""
    author = writer if key.from_me else (jid_user(key.sender_jid) if key.sender_jid else None)
    return MessageKey(
        id=key.id, from_me=author == reader, sender_jid=None if author is None else f"{author}@{USER_SERVER}"
    )


def content_for(content: Content, writer: str, reader: str) -> Content:
    """Return `content` with the key of the message it acts on (if any) as the group member `reader` sees it."""
    if isinstance(content, Reaction | PollVote | Edit | Revoke):
        return replace(content, key=key_for(content.key, writer, reader))
    return content


def _qr_code(ref: SessionRef, sequence: int) -> str:
    digest = hashlib.sha256(f"{ref}:{sequence}".encode()).hexdigest()[:32]
    return f"sandbox@{ref.client_id}/{ref.session_id},{sequence},{digest}"


def _pairing_code(ref: SessionRef, phone: str) -> str:
    digest = hashlib.sha256(f"{ref}:{phone}".encode()).hexdigest().upper()
    alphabet = "ABCDEFGHJKLMNPQRSTVWXYZ23456789"
    chars = "".join(alphabet[int(digest[i : i + 2], 16) % len(alphabet)] for i in range(0, 16, 2))
    return f"{chars[:4]}-{chars[4:]}"
