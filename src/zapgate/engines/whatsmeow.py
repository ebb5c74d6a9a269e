"""The whatsmeow engine: real WhatsApp through neonize (whatsmeow, the Go library, bundled). The only neonize import.

Threads, and why:

- Each session runs on a thread of ours (`zapgate-wm-<ref>`) that sits in neonize's blocking `connect()` for
  the life of one Go client. whatsmeow reconnects by itself underneath (auto-reconnect, always on in neonize):
  we only report RECONNECTING/CONNECTED. When Go's `Neonize` really returns (a failed dial, a stop), our
  reconnection policy (bounded retries, backoff) decides to dial again or end.
- Go calls back (QR codes, events) on that client's Go-owned thread; callbacks only translate protobufs into
  EngineEvents and hand them to the event loop with `call_soon_threadsafe` (one producer per session keeps
  their order). Only messages and receipts hold Go's thread, until the worker stored them.
- Calls into Go from the worker (send, upload, download, lookup, pairing, logout, stop) each run on a daemon
  thread of their own and are awaited with a deadline (for files, one that grows with their size): a call stuck
  in Go costs one thread, never the worker's loop or its exit. A session whose stop does not finish in time is
  abandoned (`abandoned_clients` counts them). The one call made from Go's event thread, decrypting an arriving
  poll vote, runs the same way, on a thread of its own with a deadline, while Go's thread waits for it.

neonize's Go core keeps process-global maps (clients, stop signals, event channels) without locks: a start or
stop writing them while another thread reads them aborts the process (`fatal error: concurrent map writes`).
`_GATE` is a readers-writer gate around every entry into Go: calls that only read the maps share it; every
`Stop` and the start phase of `connect()` hold it exclusively. Go writes its maps for a start at the top of
its `Neonize` export (neonize goneonize/main.go:614 StopSignal, :626 eventChannel, :654 clients), before the
dial, but nothing calls back between those writes and the dial; the first observable point after them is the
first QR code (main.go:1148, after the dial and handshake), Go's return, or, for a stored device, the device
event (main.go:2535, after CallbackFunction read eventChannel and clients at main.go:2529/2504). So the start
hold lasts until one of those (at most START_GATE_TIMEOUT); the slow parts we control (the device-store check)
happen before it, outside the gate. Go's reads of the maps when the QR loop ends are covered from the
login-status callback on.

Sources cited as `file:line` are neonize master fcd96cb (goneonize/) and whatsmeow main 33cfac51: the nearest
available to the bundled build (neonize 0.5.2, whatsmeow 35ae40906e74); each was checked against it where
observable offline.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import gc
import hashlib
import os
import re
import subprocess
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, TypeVar

# neonize's Go library adds a <bot biz_bot="1"/> node to one-to-one sends (recipients see an AI/bot label) unless
# NEONIZE_BOT_TAG is "off", "none", "false" or "0" (neonize goneonize/main.go:145-157). Go reads the environment
# through its own copy, taken when the shared library loads (the neonize import below): set it before, always.
os.environ["NEONIZE_BOT_TAG"] = "off"

with warnings.catch_warnings():
    # neonize's import runs `uname -a` through os.popen and never closes it
    warnings.simplefilter("ignore", ResourceWarning)
    from neonize.builder import build_edit
    from neonize.client import ClientFactory, NewClient
    from neonize.exc import BuildPollVoteError, DownloadError, NeonizeError
    from neonize.proto import Neonize_pb2 as pb
    from neonize.proto.waCommon.WACommon_pb2 import MessageKey as WaMessageKey
    from neonize.proto.waCompanionReg.WAWebProtobufsCompanionReg_pb2 import DeviceProps
    from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as wa
    from neonize.utils.enum import (
        BlocklistAction,
        ChatPresence,
        ChatPresenceMedia,
        ClientName,
        ClientType,
        MediaType,
        ParticipantChange,
        ReceiptType,
    )
    from neonize.utils.enum import Presence as AccountPresence

    # reap that `uname -a` now, while its warnings are ignored (subprocess keeps it to reap at its next spawn)
    for leaked in list(getattr(subprocess, "_active", None) or ()):
        leaked.wait(timeout=5)
    getattr(subprocess, "_cleanup", lambda: None)()
    gc.collect()

from zapgate.domain.chats import ChatState, SeenPresence
from zapgate.domain.content import (
    ContactCard,
    ContactPhone,
    Contacts,
    Content,
    Edit,
    GroupInvite,
    Location,
    Media,
    MediaKind,
    MessageKey,
    Poll,
    PollVote,
    Quote,
    Reaction,
    Revoke,
    Text,
    Unsupported,
    kind_of,
    summary,
)
from zapgate.domain.groups import GroupInfo, JoinRequest, ParticipantAction, ParticipantResult, RequestAction
from zapgate.domain.phones import GROUP_SERVER, LID_SERVER, USER_SERVER
from zapgate.domain.records import MessageStatus
from zapgate.domain.sessions import SessionStatus
from zapgate.engines.base import (
    BlocklistChanged,
    ContactPictureChanged,
    EngineError,
    EngineEvent,
    EngineFailure,
    EventSink,
    InboundMessage,
    JidLookup,
    MediaGone,
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
    StopTimedOut,
    UnknownSession,
)
from zapgate.engines.whatsmeow_groups import (
    creation_results,
    group_error,
    group_info_of,
    join_request_of,
    participant_results,
    translate_group_info,
    translate_joined_group,
    translate_picture,
)
from zapgate.log import get_logger

log = get_logger(__name__)

STORE_WAIT = 30.0  # seconds Go's event thread waits for a message or receipt to be stored
T = TypeVar("T")

# seconds a start may hold the gate before it is released anyway. Go's map writes come before the dial
# (main.go:614-654), after its device-store work, which our own check beforehand has made quick (the store is
# migrated, the device read once): they are done within milliseconds, not seconds. Only the dial can take
# long (a network that swallows packets: ~60 s), and every send of every session waits while the gate is
# held, so the hold is capped well below a dial's worst case. Past it, a Go start still writing its maps
# (a database slower than this for a few queries) could abort the worker; its sessions then move to another.
START_GATE_TIMEOUT = 5.0
# seconds the gate is held after the QR loop ended without a pairing: Go only reads eventChannel and clients
# next (main.go:2529, :2504), microseconds later, then spins in FetchMe (main.go:2507) and never calls back;
# a Stop before those reads would make FetchMe dereference a deleted client, so the margin is generous
LOGIN_END_GATE = 2.0
PAIRING_WAIT = 30.0  # seconds request_pairing_code waits for the socket to come up
STOP_TIMEOUT = 10.0  # seconds a stop may take before its session is abandoned
CALL_TIMEOUT = 30.0  # seconds a call into Go (send, lookup, logout, ...) may take before it is given up
# bytes per second an upload or download is allowed on top of CALL_TIMEOUT before it is given up (a slow link)
MIN_TRANSFER_RATE = 256 * 1024
POLL_MEMORY = 4096  # polls (per engine) whose option names are kept to name their votes' options
DRAIN_QUIET = 0.3  # seconds without an event, after Disconnect, that show neonize's buffer is empty
# whatsmeow shows the first QR code 60 s and each next one 20 s (qrchan.go:90-93); neonize passes the codes
# on without their Timeout (main.go:1148), so the lifetimes are whatsmeow's constants
FIRST_QR_LIFETIME = 60.0  # seconds
NEXT_QR_LIFETIME = 20.0  # seconds
# whatsmeow drops and redials by itself once keep-alives failed this long, without a Disconnected event
# (keepalive.go:27, :46-50)
KEEPALIVE_MAX_FAIL = 180.0  # seconds
# what the QR loop reports when it ends without a pairing (qrchan.go:45-54, :153, :166, :176); "success" and
# the passkey steps are not failures
_LOGIN_ERRORS = frozenset({"error", "err-unexpected-state", "err-client-outdated", "err-scanned-without-multidevice"})
# statuses after which whatsmeow may close the QR channel, ending neonize's QR loop (qrchan.go:75-81, :186-190;
# an "error" from a passkey step leaves it open, qrchan.go:164-169: the gate's short hold covers both)
_LOGIN_ENDS = frozenset({"success", "timeout", "error", "err-unexpected-state", "err-client-outdated"})
# neonize's ConnectFailureReason names → WhatsApp's numbers (whatsmeow types/events/events.go:192-210)
_WA_REASON = {
    "GENERIC": 400,
    "LOGGED_OUT": 401,
    "TEMP_BANNED": 402,
    "MAIN_DEVICE_GONE": 403,
    "CLIENT_OUTDATED": 405,
    "UNKNOWN_LOGOUT": 406,
    "BAD_USER_AGENT": 409,
    "INTERNAL_SERVER_ERROR": 500,
    "EXPERIMENTAL": 501,
    "SERVICE_UNAVAILABLE": 503,
}
_LOGGED_OUT_REASONS = frozenset({401, 403, 406})  # ConnectFailureReason.IsLoggedOut (events.go:225-226)
# neonize's TempBanReason names → WhatsApp's ban codes (events.go:151-155)
_WA_BAN_CODE = {
    "SEND_TO_TOO_MANY_PEOPLE": 101,
    "BLOCKED_BY_USERS": 102,
    "CREATED_TOO_MANY_GROUPS": 103,
    "SENT_TOO_MANY_SAME_MESSAGE": 104,
    "BROADCAST_LIST": 106,
}

_ME_CODE = 0  # neonize's event code for "this device" (sets client.me, no handler)
_RECEIPT_STATUS = {
    pb.Receipt.DELIVERED: MessageStatus.DELIVERED,
    pb.Receipt.READ: MessageStatus.READ,
    pb.Receipt.PLAYED: MessageStatus.PLAYED,
}
# message fields that carry no content of their own
_NOT_CONTENT = frozenset(
    {"messageContextInfo", "senderKeyDistributionMessage", "fastRatchetKeySenderKeyDistributionMessage"}
)
# wrappers whose inner `message` is the content. whatsmeow unwraps the outermost ones itself before the event
# (types/events/events.go:372-420, neonize passes that Message on, goneonize/utils/encoder.go:303-326): these
# are unwrapped again for quoted messages, for wrappers whatsmeow does not know and for events built by hand
_VIEW_ONCE_WRAPPERS = frozenset({"viewOnceMessage", "viewOnceMessageV2", "viewOnceMessageV2Extension"})
_WRAPPERS = _VIEW_ONCE_WRAPPERS | {
    "ephemeralMessage",
    "documentWithCaptionMessage",
    "editedMessage",
    "deviceSentMessage",
    "botInvokeMessage",
    "lottieStickerMessage",
    "groupMentionedMessage",
    "pollCreationMessageV4",
}
_MAX_WRAPPING = 6  # wrappers nest a few levels at most
# the message fields holding a file, by kind; the first of each kind is the one `download` hands whatsmeow
_MEDIA_FIELDS = {
    "imageMessage": MediaKind.IMAGE,
    "videoMessage": MediaKind.VIDEO,
    "ptvMessage": MediaKind.VIDEO,  # a round video note: a VideoMessage
    "audioMessage": MediaKind.AUDIO,
    "documentMessage": MediaKind.DOCUMENT,
    "stickerMessage": MediaKind.STICKER,
}
_MEDIA_FIELD = {
    MediaKind.IMAGE: "imageMessage",
    MediaKind.VIDEO: "videoMessage",
    MediaKind.AUDIO: "audioMessage",
    MediaKind.DOCUMENT: "documentMessage",
    MediaKind.STICKER: "stickerMessage",
}
_POLL_FIELDS = frozenset(
    {
        "pollCreationMessage",
        "pollCreationMessageV2",
        "pollCreationMessageV3",
        "pollCreationMessageV5",
        "pollCreationMessageV6",
    }
)
_CAPTIONED = ("caption", "text", "name", "title", "conversation")
_BROADCAST_SERVER = "broadcast"  # broadcast lists and stories, status@broadcast (whatsmeow types/jid.go:26, 42)


class NotSupported(EngineError):
    """Something this engine cannot do with the neonize it runs on (see the method's docstring)."""

    code = "not_supported"
    retryable = False


class MediaHandleInvalid(EngineError):
    """A media's download handle names no file whatsmeow can fetch (another engine's, or damaged)."""

    code = "media_handle_invalid"
    retryable = False


class StartRejected(EngineError):
    """The start request lacks what its mode needs (a jid to restore, a phone number for a pairing code)."""

    code = "start_rejected"
    retryable = False


class _Gate:
    """A readers-writer gate: many readers of Go's maps at once, or one writer alone (writers go first).

    Released by count, not by owner: a start takes it on its session thread and Go's callback gives it back.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire_shared(self) -> None:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def release_shared(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def acquire_exclusive(self) -> None:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True

    def release_exclusive(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()

    @contextmanager
    def shared(self) -> Iterator[None]:
        self.acquire_shared()
        try:
            yield
        finally:
            self.release_shared()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        self.acquire_exclusive()
        try:
            yield
        finally:
            self.release_exclusive()


_GATE = _Gate()  # process-wide, as Go's maps are


class _Hold:
    """One hold of `_GATE`, released once: by its holder, or on its behalf when the holder is stuck in Go.

    Releasing for a stuck holder is safe once Go is past its map accesses, which happen at the top of each
    export (`clients[id]` lookups, Stop's deletes at main.go:587-604) before any network wait.
    """

    def __init__(self, *, exclusive: bool) -> None:
        self.exclusive = exclusive
        self._mutex = threading.Lock()
        self._held = False

    def acquire(self) -> None:
        if self.exclusive:
            _GATE.acquire_exclusive()
        else:
            _GATE.acquire_shared()
        with self._mutex:
            self._held = True

    def release(self) -> bool:
        """Give the gate back if still held; return whether this call did."""
        with self._mutex:
            if not self._held:
                return False
            self._held = False
        if self.exclusive:
            _GATE.release_exclusive()
        else:
            _GATE.release_shared()
        return True


class _GoCall:
    """A call into Go that its caller may give up on: once given up, it releases its hold or never takes one."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._hold: _Hold | None = None
        self.given_up = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        hold = _Hold(exclusive=False)
        hold.acquire()
        with self._mutex:
            if self.given_up:
                hold.release()
                raise EngineError("the call into whatsmeow was given up before it started")
            self._hold = hold
        try:
            yield
        finally:
            hold.release()

    def give_up(self) -> None:
        with self._mutex:
            self.given_up = True
            hold = self._hold
        if hold is not None and hold.release():
            log.warning("whatsmeow.gate_released_for_stuck_call")


def _in_thread(name: str, fn: Callable[..., T], *args: Any) -> Future[T]:
    """Run `fn(*args)` on a daemon thread of its own: a call stuck in Go holds that thread only, never the
    worker's loop, a shared pool or the interpreter's exit."""
    future: Future[T] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever awaits the future
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


class _GoReturnWatch:
    """neonize's handle on the Go library, calling `on_return` as soon as the blocking `Neonize` returns."""

    def __init__(self, library: Any, on_return: Callable[[], None]) -> None:
        self._library = library
        self._on_return = on_return

    def Neonize(self, *args: Any) -> Any:  # the Go export's name
        try:
            return self._library.Neonize(*args)
        finally:
            self._on_return()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._library, name)


def jid_string(jid: Any, *, device: bool = True) -> str | None:
    """Return a neonize JID as whatsmeow spells it (`user[:device]@server`), or None if it is empty."""
    if not jid.User and not jid.Server:
        return None
    if not jid.User:
        return str(jid.Server)
    if device and jid.Device:
        return f"{jid.User}:{jid.Device}@{jid.Server}"
    return f"{jid.User}@{jid.Server}"


def _bare_jid(jid: Any) -> str | None:
    """A neonize JID without its device (how groups name people), None if empty."""
    return jid_string(jid, device=False)


def parse_jid(value: str) -> Any:
    """Return the neonize JID for `user[:device]@server`."""
    user, _, server = value.partition("@")
    user, _, device = user.partition(":")
    return pb.JID(User=user, Server=server or USER_SERVER, Device=int(device or 0), RawAgent=0, Integrator=0)


def _mark_read(client: Any, *, ids: list[str], chat: Any, sender: Any) -> None:
    client.mark_read(*ids, chat=chat, sender=sender, receipt=ReceiptType.READ)


def _timestamp(value: int) -> datetime:
    seconds = value / 1000 if value > 10**11 else value  # neonize sends MessageInfo in ms, receipts in s
    return datetime.fromtimestamp(seconds, UTC) if value else datetime.now(UTC)


# -- translation: neonize protobufs in, EngineEvents out ------------------------------------------------
#
# Behaviour relied on below was read in whatsmeow at 33cfac51 (2026-08-21, the newest stored snapshot; the bundled
# 35ae40906e74 is a month newer) and in neonize's Go at fcd96cb (goneonize/, 2026-08-10). file:line refer to those.


def _text(value: Any) -> str:
    """Return a protobuf string field as str, whatever bytes Go put in it.

    Go marshals proto2 strings without checking UTF-8, and upb then hands the field back as `bytes` (protobuf
    7.36, measured): lone surrogates (as Go encodes them) become surrogates, any other bad byte stays recoverable.
    """
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return value.decode("utf-8", "surrogateescape")
    return str(value)


@dataclass(frozen=True, slots=True)
class _Parties:
    """Who a MessageSource names, phone JIDs preferred and LIDs alongside (devices dropped)."""

    chat_jid: str  # "" when the source names no chat
    chat_lid: str | None
    sender_jid: str
    sender_lid: str | None
    is_group: bool


def _phone_and_lid(*jids: Any) -> tuple[str | None, str | None]:
    """Return (the first non-LID JID, the first LID) among `jids`, skipping empty ones."""
    phone = lid = None
    for jid in jids:
        text = jid_string(jid, device=False)
        if text is None:
            continue
        if jid.Server == LID_SERVER:
            lid = lid or text
        else:
            phone = phone or text
    return phone, lid


def _parties(source: Any) -> _Parties:
    """Read a MessageSource as whatsmeow fills it (message.go:87-191).

    Groups and broadcasts (status@broadcast included) keep their chat; the writer is the participant, with the
    other identity in SenderAlt (message.go:97-112). One-to-one chats name the other party in Chat, its other
    identity in SenderAlt when they wrote, or in RecipientAlt when we did (IsFromMe, message.go:143-161, 172-185).
    """
    chat = source.Chat
    sender_phone, sender_lid = _phone_and_lid(source.Sender, source.SenderAlt)
    if chat.Server in (GROUP_SERVER, _BROADCAST_SERVER):
        chat_jid = jid_string(chat, device=False) or ""
        sender = sender_phone or sender_lid or chat_jid
        return _Parties(chat_jid, None, sender, sender_lid, chat.Server == GROUP_SERVER)
    chat_phone, chat_lid = _phone_and_lid(chat, source.RecipientAlt if source.IsFromMe else source.SenderAlt)
    chat_jid = chat_phone or chat_lid or ""
    sender = sender_phone or sender_lid or chat_jid
    return _Parties(chat_jid, chat_lid, sender, sender_lid, False)


# -- what a message holds: waE2E protobufs in, domain Content out ---------------------------------------


@dataclass(frozen=True, slots=True)
class MessageContext:
    """What reading a message needs beyond the message: who the session is, and how to open its poll votes.

    `decrypt_vote` is a call into Go (whatsmeow's DecryptPollVote, with the poll's secret from its store);
    `poll_options` names the options of a poll this engine saw (their SHA-256 is all a vote carries).
    """

    own_users: frozenset[str] = frozenset()  # the user part of the session's phone JID and of its LID
    decrypt_vote: Callable[[Any], Any] | None = None
    poll_options: Callable[[str], Sequence[str] | None] | None = None


_NO_CONTEXT = MessageContext()


@dataclass(frozen=True, slots=True)
class _Carrier:
    """The message that names another one (by a key or a quote): whose perspective the key was written from."""

    from_me: bool  # the session's account wrote it
    sender_jid: str  # who wrote it
    is_group: bool
    own_users: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Read:
    content: Content
    quote: Quote | None = None
    mentions: tuple[str, ...] = ()


def _first_field(message: Any) -> tuple[str, Any] | None:
    """The first field of a waE2E.Message that holds content (in field-number order), or None."""
    for descriptor, value in message.ListFields():
        if descriptor.name not in _NOT_CONTENT:
            return descriptor.name, value
    return None


def _unwrap(message: Any) -> tuple[Any, bool]:
    """Return the message inside any wrappers, and whether a view-once wrapper was among them."""
    view_once = False
    for _ in range(_MAX_WRAPPING):
        found = _first_field(message)
        if found is None or found[0] not in _WRAPPERS or not found[1].HasField("message"):
            break
        view_once = view_once or found[0] in _VIEW_ONCE_WRAPPERS
        message = found[1].message
    return message, view_once


def _bare(jid: str) -> str:
    """`jid` without its device part (`user:device@server` → `user@server`)."""
    user, at, server = jid.partition("@")
    return user.partition(":")[0] + at + server


def _user(jid: str | None) -> str:
    return (jid or "").partition("@")[0].partition(":")[0]


def _key_of(message_id: str, said_from_me: bool, participant: str, carrier: _Carrier) -> MessageKey:
    """A key as the session sees it, from a key written from the point of view of `carrier`'s author.

    WhatsApp writes keys the way their author sees the chat (whatsmeow BuildMessageKey, send.go:494-508):
    `fromMe` is the author of the carrier, `participant` the target's author in groups (and in quotes).
    """
    author = _bare(participant)
    if author:
        mine = _user(author) in carrier.own_users
        return MessageKey(message_id, mine, None if mine or not carrier.is_group else author)
    if said_from_me:  # the carrier's author wrote the target too
        group_author = carrier.sender_jid if carrier.is_group and not carrier.from_me else None
        return MessageKey(message_id, carrier.from_me, group_author)
    if carrier.is_group:
        return MessageKey(message_id)  # someone else in the group, unnamed
    return MessageKey(message_id, not carrier.from_me)  # a one-to-one chat has one other party


def _wa_key(key: Any, carrier: _Carrier) -> MessageKey:
    """Read a waCommon.MessageKey (reactions, revokes, edits, poll votes)."""
    return _key_of(_text(key.ID), bool(key.fromMe), _text(key.participant), carrier)


def _optional(value: Any, name: str) -> Any:
    """A protobuf field's value, or None when the message has no such field or it is unset."""
    if name not in value.DESCRIPTOR.fields_by_name or not value.HasField(name):
        return None
    return getattr(value, name)


def _optional_text(value: Any, name: str) -> str | None:
    found = _optional(value, name)
    return (_text(found) or None) if found is not None else None


def _media(kind: MediaKind, value: Any, view_once: bool) -> Media:
    """A file message; its `handle` is a waE2E.Message holding only the file's sub-message (what DownloadAny reads)."""
    stored = type(value)()
    stored.CopyFrom(value)
    stored.ClearField("contextInfo")  # quotes and mentions are not needed to download, and may be large
    handle = wa.Message(**{_MEDIA_FIELD[kind]: stored}).SerializeToString()
    seconds = _optional(value, "seconds")
    return Media(
        kind=kind,
        mime_type=_optional_text(value, "mimetype"),
        size=int(value.fileLength) or None,
        sha256=bytes(value.fileSHA256).hex() or None,
        caption=_optional_text(value, "caption"),
        filename=_optional_text(value, "fileName"),
        width=_optional(value, "width") or None,
        height=_optional(value, "height") or None,
        duration_seconds=float(seconds) if seconds else None,
        voice=bool(_optional(value, "PTT")),
        view_once=view_once or bool(_optional(value, "viewOnce")),
        animated=bool(_optional(value, "gifPlayback") or _optional(value, "isAnimated")),
        handle=handle,
    )


_VCARD_ESCAPES = {"n": "\n", "N": "\n", ",": ",", ";": ";", "\\": "\\"}


def _vcard_text(value: str) -> str:
    """Undo vCard escaping (RFC 2426 section 4: `\\n`, `\\,`, `\\;`, `\\\\`)."""
    return re.sub(r"\\(.)", lambda m: _VCARD_ESCAPES.get(m.group(1), m.group(1)), value)


def _vcard_phone(params: list[str], value: str) -> ContactPhone:
    """One TEL line: `TEL;type=CELL;waid=5511988887777:+55 11 98888-7777` (WhatsApp's own shape)."""
    wa_id = kind = None
    for param in params:
        name, equals, said = param.partition("=")
        if not equals:  # vCard 2.1 shorthand: TEL;CELL:...
            name, said = "type", name
        if name.lower() == "waid" and said.isdigit():
            wa_id = said
        elif name.lower() == "type" and kind is None:
            kind = next((t.upper() for t in said.split(",") if t.upper() not in ("VOICE", "PREF")), None)
    return ContactPhone(phone=value.strip(), wa_id=wa_id, type=kind)


def _vcard(vcard: str) -> tuple[str, tuple[ContactPhone, ...]]:
    """The formatted name and the phones of a vCard (lines unfolded; `item1.` groups ignored)."""
    formatted = ""
    phones: list[ContactPhone] = []
    for line in re.sub(r"\r?\n[ \t]", "", vcard).splitlines():
        head, colon, value = line.partition(":")
        if not colon:
            continue
        name, *params = head.split(";")
        name = name.rpartition(".")[2].upper()
        if name == "FN" and not formatted:
            formatted = _vcard_text(value).strip()
        elif name == "TEL" and value.strip():
            phones.append(_vcard_phone(params, value))
    return formatted, tuple(phones)


def _card(value: Any) -> ContactCard:
    vcard = _text(value.vcard)
    formatted, phones = _vcard(vcard)
    return ContactCard(formatted_name=_text(value.displayName) or formatted, phones=phones, vcard=vcard or None)


def _poll(value: Any) -> Poll:
    options = tuple(_text(option.optionName) for option in value.options)
    count = int(value.selectableOptionsCount)  # 0: any number of them (whatsmeow msgsecret.go:342-346)
    return Poll(
        question=_text(value.name),
        options=options,
        selectable_count=max(1, count if 0 < count <= len(options) else len(options)),
    )


def _location(name: str, value: Any) -> Location:
    live = name == "liveLocationMessage"
    return Location(
        latitude=float(value.degreesLatitude),
        longitude=float(value.degreesLongitude),
        name=None if live else _text(value.name) or None,
        address=None if live else _text(value.address) or None,
        url=None if live else _text(value.URL) or None,
        live=live or bool(value.isLive),
    )


def _unsupported(name: str, value: Any) -> Unsupported:
    kind = name.removesuffix("Message")
    said = next((_text(getattr(value, a)) for a in _CAPTIONED if getattr(value, a, "")), "")
    return Unsupported(wa_type=name, summary=f"[{kind}] {said}" if said else f"[{kind}]")


def _content_of(name: str, value: Any, *, view_once: bool, carrier: _Carrier) -> Content:
    """The Content of one message field (no protocol messages, no poll votes: see `_read`)."""
    if name == "conversation":
        return Text(body=_text(value))
    if name == "extendedTextMessage":
        return Text(body=_text(value.text), preview_url=bool(value.matchedText))
    if name in _MEDIA_FIELDS:
        return _media(_MEDIA_FIELDS[name], value, view_once)
    if name in ("locationMessage", "liveLocationMessage"):
        return _location(name, value)
    if name == "contactMessage":
        return Contacts(cards=(_card(value),))
    if name == "contactsArrayMessage":
        return Contacts(cards=tuple(_card(contact) for contact in value.contacts))
    if name == "reactionMessage":  # an empty text removes the reaction (send.go:1033, RemoveReactionText)
        return Reaction(key=_wa_key(value.key, carrier), emoji=_text(value.text))
    if name in _POLL_FIELDS:
        return _poll(value)
    if name == "groupInviteMessage":
        expiration = int(value.inviteExpiration)  # Unix seconds; 0: not given
        return GroupInvite(
            group_jid=_text(value.groupJID),
            code=_text(value.inviteCode),
            expires_at=expiration or None,
            subject=_text(value.groupName) or None,
            caption=_text(value.caption) or None,
        )
    return _unsupported(name, value)


def _text_of(message: Any) -> str:
    """The text, or caption, a message holds (what an edit replaces)."""
    found = _first_field(_unwrap(message)[0])
    if found is None:
        return ""
    name, value = found
    if name == "conversation":
        return _text(value)
    return next((_text(getattr(value, a)) for a in ("text", "caption") if getattr(value, a, "")), "")


def _quoted(message: Any, carrier: _Carrier) -> Content | None:
    """What a quoted message held, when it can be read (no protocol messages)."""
    inner, view_once = _unwrap(message)
    found = _first_field(inner)
    if found is None or found[0] == "protocolMessage":
        return None
    return _content_of(found[0], found[1], view_once=view_once, carrier=carrier)


def _context(value: Any, carrier: _Carrier) -> tuple[Quote | None, tuple[str, ...]]:
    """The quote and the mentions in a message field's contextInfo (a conversation has none)."""
    info = None if isinstance(value, str | bytes) else _optional(value, "contextInfo")
    if info is None:
        return None, ()
    mentions = tuple(_text(jid) for jid in info.mentionedJID if jid)
    quote = None
    if info.stanzaID:
        # participant names the quoted message's author, in one-to-one chats too (neonize client.py:576-596)
        key = _key_of(_text(info.stanzaID), False, _text(info.participant), carrier)
        quoted = _quoted(info.quotedMessage, carrier) if info.HasField("quotedMessage") else None
        quote = Quote(key=key, content=quoted)
    return quote, mentions


def _protocol(value: Any, carrier: _Carrier) -> _Read | None:
    """A revoke or an edit; None for the other protocol messages (key shares, history notices, ...)."""
    if value.type == wa.ProtocolMessage.REVOKE and value.HasField("key"):  # REVOKE is also the unset type's value
        return _Read(Revoke(key=_wa_key(value.key, carrier)))
    if value.type == wa.ProtocolMessage.MESSAGE_EDIT and value.HasField("editedMessage"):
        # whatsmeow unwraps the editedMessage wrapper (events.go:412-415): this protocol message is inside it
        edited = _first_field(_unwrap(value.editedMessage)[0])
        _, mentions = _context(edited[1], carrier) if edited is not None else (None, ())
        return _Read(Edit(key=_wa_key(value.key, carrier), text=_text_of(value.editedMessage)), mentions=mentions)
    return None


def _vote(event: Any, value: Any, carrier: _Carrier, context: MessageContext) -> Content:
    """A poll vote, decrypted by whatsmeow with the poll's secret (msgsecret.go:245-260).

    A vote carries the SHA-256 of each chosen option's name (msgsecret.go:309-318): they are named when this
    engine saw the poll, else given as `sha256:<hex>` for whoever stored the poll to name.
    """
    key = _wa_key(value.pollCreationMessageKey, carrier)
    if context.decrypt_vote is None:
        return Unsupported(wa_type="pollUpdateMessage", summary="[vote] not decrypted")
    try:
        vote = context.decrypt_vote(event)
    except Exception as exc:  # no secret for the poll (not seen here), no answer from Go, an unserialisable event
        log.warning("whatsmeow.vote_undecryptable", poll_id=key.id, error=repr(exc))
        return Unsupported(wa_type="pollUpdateMessage", summary="[vote] could not be decrypted")
    options = (context.poll_options(key.id) if context.poll_options else None) or ()
    names = {hashlib.sha256(option.encode()).digest(): option for option in options}
    chosen = (bytes(digest) for digest in vote.selectedOptions)
    return PollVote(key=key, selected=tuple(names.get(d) or "sha256:" + d.hex() for d in chosen))


def _read(event: Any, parties: _Parties, context: MessageContext) -> _Read | None:
    """What a Message event holds; None when it is no message a user sees (protocol-only, empty)."""
    message, view_once = _unwrap(event.Message)
    found = _first_field(message)
    if found is None:
        return None
    name, value = found
    from_me = bool(event.Info.MessageSource.IsFromMe)
    carrier = _Carrier(from_me, parties.sender_jid, parties.is_group, context.own_users)
    if name == "protocolMessage":
        return _protocol(value, carrier)
    if name == "pollUpdateMessage":
        return _Read(_vote(event, value, carrier, context))
    content = _content_of(name, value, view_once=view_once or bool(event.IsViewOnce), carrier=carrier)
    quote, mentions = _context(value, carrier)
    return _Read(content, quote, mentions)


def translate_message(ref: SessionRef, event: Any, context: MessageContext = _NO_CONTEXT) -> InboundMessage | None:
    """Return the InboundMessage a neonize Message event carries (None for protocol-only messages).

    Stories keep their chat, `status@broadcast` (the worker decides about them); messages the linked phone sent
    are `from_me`, in the chat with the other party. Texts and names pass as WhatsApp gave them. `content` is
    what it holds, typed; `type` is its kind and `text` its summary (domain.content).
    """
    info = event.Info
    message_id = _text(info.ID)
    parties = _parties(info.MessageSource)
    if not message_id or not parties.chat_jid:
        log.warning("whatsmeow.message_unaddressed", session=str(ref), has_id=bool(message_id))
        return None
    try:
        read = _read(event, parties, context)
    except Exception as exc:  # whatsmeow acknowledges the message whatever happens here: keep what we know
        log.warning("whatsmeow.content_unreadable", session=str(ref), message_id=message_id, error=repr(exc))
        read = _Read(Unsupported(wa_type="unknown", summary="[unknown]"))
    if read is None:
        return None
    return InboundMessage(
        ref=ref,
        message_id=message_id,
        chat_jid=parties.chat_jid,
        chat_lid=parties.chat_lid,
        sender_jid=parties.sender_jid,
        type=kind_of(read.content).value,
        text=summary(read.content),
        timestamp=_timestamp(int(info.Timestamp)),
        push_name=_text(info.Pushname) or None,
        verified_name=_verified_name(info),
        is_group=parties.is_group,
        from_me=bool(info.MessageSource.IsFromMe),
        sender_lid=parties.sender_lid,
        content=read.content,
        quote=read.quote,
        mentions=read.mentions,
    )


def _verified_name(info: Any) -> str | None:
    """The sender's verified business name, from the certificate details whatsmeow puts in MessageInfo."""
    if not info.HasField("VerifiedName") or not info.VerifiedName.HasField("Details"):
        return None
    return _text(info.VerifiedName.Details.verifiedName) or None


def translate_receipt(ref: SessionRef, event: Any) -> Receipt | None:
    """Return the Receipt a neonize Receipt event carries, or None when it says nothing about what we sent.

    Only delivered, read and played from someone else count. Read-self and played-self come from our own other
    devices opening messages we received (types/presence.go:46-56), as does any receipt sent by our own account
    (IsFromMe, receipt.go:64-75 with message.go:143-149): none means a recipient saw our message. neonize 0.5
    reports played-self as SERVER_ERROR (goneonize/utils/encoder.go:695-696), so that is ignored too.
    """
    source = event.MessageSource
    status = _RECEIPT_STATUS.get(event.Type)
    if status is None or source.IsFromMe:
        return None
    message_ids = tuple(i for i in (_text(m) for m in event.MessageIDs) if i)
    parties = _parties(source)
    if not message_ids or not parties.chat_jid:
        return None
    return Receipt(
        ref=ref,
        message_ids=message_ids,
        status=status,
        chat_jid=parties.chat_jid,
        timestamp=_timestamp(int(event.Timestamp)),
        sender_jid=parties.sender_jid,  # in groups, the participant whose device answered (receipt.go:55)
    )


def _enum_name(enum: Any, value: int, prefix: str = "") -> str:
    try:
        return str(enum.Name(value)).removeprefix(prefix).lower()
    except ValueError:
        return str(value)


# -- chats and presence (issue 14) -----------------------------------------------------------------------

# neonize 0.5.2 cannot send the app-state patches that archive, pin or mute a chat: its SendAppState export
# decodes the patch (goneonize/utils/decoder.go, DecodePatchInfo) by comparing the `Type` pointer with fresh
# `.Enum()` pointers, so no case ever matches, and it maps neither regular_low (archive, pin) nor
# regular_high (mute): every patch would go out for no collection. Nor does it forward whatsmeow's app-state
# events (events.Archive, Pin, Mute, MarkChatAsRead: neonize/events.py EVENT_TO_INT has no code for them),
# so the phone's own changes cannot be heard either.
APP_STATE_UNSUPPORTED = (
    "neonize 0.5.2 cannot archive, pin or mute chats: its SendAppState decodes no usable app-state collection "
    "(goneonize/utils/decoder.go DecodePatchInfo compares pointers and lacks regular_low/regular_high)"
)


def translate_presence(ref: SessionRef, event: Any) -> PresenceSeen | None:
    """Return the PresenceSeen a neonize Presence event carries (online, or offline with when last seen)."""
    phone, lid = _phone_and_lid(event.From)
    jid = phone or lid
    if not jid:
        return None
    # neonize sends LastSeen as Unix seconds of Go's time, whose zero value is far before 1970 (encoder.go)
    seen = int(event.LastSeen) if event.HasField("LastSeen") else 0
    unavailable = bool(event.Unavailable)
    return PresenceSeen(
        ref=ref,
        jid=jid,
        lid=lid,
        presence=SeenPresence.UNAVAILABLE if unavailable else SeenPresence.AVAILABLE,
        last_seen=_timestamp(seen) if unavailable and seen > 0 else None,
    )


def translate_chat_presence(ref: SessionRef, event: Any) -> PresenceSeen | None:
    """Return the PresenceSeen a neonize ChatPresence event carries: typing, recording or paused in a chat."""
    parties = _parties(event.MessageSource)
    if not parties.chat_jid or event.MessageSource.IsFromMe:
        return None
    if event.State == pb.ChatPresence.PAUSED:
        shown = SeenPresence.PAUSED
    elif event.Media == pb.ChatPresence.AUDIO:
        shown = SeenPresence.RECORDING
    else:
        shown = SeenPresence.COMPOSING
    return PresenceSeen(
        ref=ref,
        jid=parties.sender_jid,
        lid=parties.sender_lid or parties.chat_lid,
        presence=shown,
        chat_jid=parties.chat_jid,
    )


# -- contacts (issue 14) -------------------------------------------------------------------------------------
# neonize 0.5.2 forwards whatsmeow's Blocklist and Picture events (goneonize/main.go:855-868, :926-934) but not
# PushName nor BusinessName (neonize/events.py EVENT_TO_INT has no code for them): a new name is seen on the
# messages themselves (InboundMessage.push_name, verified_name), and the worker notices the change.


def translate_blocklist(ref: SessionRef, event: Any) -> BlocklistChanged | None:
    """Return the BlocklistChanged a neonize BlocklistEvent carries: whom the phone blocked and unblocked.

    None when it names nobody: with action `modify` WhatsApp only says that the list changed, and the whole list
    is to be asked again (whatsmeow types/events/events.go:610-618; see `whole_blocklist`).
    """
    blocked: list[str] = []
    unblocked: list[str] = []
    for change in event.Changes:
        jid = _bare_jid(change.JID)
        if jid is None:
            continue
        (blocked if change.BlockAction == pb.BlocklistChange.BLOCK else unblocked).append(jid)
    if not blocked and not unblocked:
        return None
    return BlocklistChanged(ref, blocked=tuple(blocked), unblocked=tuple(unblocked))


def whole_blocklist(ref: SessionRef, blocklist: Any) -> BlocklistChanged:
    """Return the BlocklistChanged of the whole blocklist (neonize's GetBlocklist answer): whoever is not on it
    is unblocked."""
    jids = tuple(jid for jid in (_bare_jid(item) for item in blocklist.JIDs) if jid)
    return BlocklistChanged(ref, blocked=jids, complete=True)


def translate_contact_picture(ref: SessionRef, event: Any, own_users: frozenset[str]) -> ContactPictureChanged | None:
    """Return the ContactPictureChanged of a neonize Picture event about a person (None for a group's picture,
    see whatsmeow_groups.translate_picture, and for the account's own). neonize's Picture has no picture id."""
    jid = _bare_jid(event.JID)
    if jid is None or event.JID.Server == GROUP_SERVER or _user(jid) in own_users:
        return None
    seconds = int(event.Timestamp) if event.HasField("Timestamp") else 0
    return ContactPictureChanged(
        ref=ref,
        jid=jid,
        lid=jid if event.JID.Server == LID_SERVER else None,
        removed=bool(event.Remove),
        timestamp=datetime.fromtimestamp(seconds, UTC) if seconds > 0 else datetime.now(UTC),
    )


def translate_undecryptable(ref: SessionRef, event: Any) -> Notice:
    """Return the notice for a message that arrived but could not be decrypted (WhatsApp may send it again)."""
    info = event.Info
    parties = _parties(info.MessageSource)
    details = {
        "messageId": _text(info.ID),
        "chatJid": parties.chat_jid,
        "chatLid": parties.chat_lid,
        "senderJid": parties.sender_jid,
        "senderLid": parties.sender_lid,
        "isGroup": parties.is_group,
        "fromMe": bool(info.MessageSource.IsFromMe),
        # true when the sender's device sent this device no ciphertext at all (types/events/events.go:299-301)
        "isUnavailable": bool(event.IsUnavailable),
        # whatsmeow's UnavailableType (events.go:303, e.g. "view_once") is dropped by neonize's encoder
        # (goneonize/utils/encoder.go:969-973): unknown here
        "unavailableType": None,
        # "hide": the message was of a kind WhatsApp does not show when it fails (events.go:276-281)
        "decryptFailMode": _enum_name(pb.UndecryptableMessage.DecryptFailModeT, event.DecryptFailMode, "DECRYPT_FAIL_"),
    }
    return Notice(ref, NoticeKind.UNDECRYPTABLE, details, timestamp=_timestamp(int(info.Timestamp)))


def translate_history_sync(ref: SessionRef, event: Any) -> Notice:
    """Return the notice for a chunk of chat history the phone sent (what it is and how far along, not its content)."""
    data = event.Data
    details = {
        "syncType": _enum_name(type(data).HistorySyncType, data.syncType),
        "progress": int(data.progress) if data.HasField("progress") else None,  # percent
        "chunkOrder": int(data.chunkOrder) if data.HasField("chunkOrder") else None,
        "conversations": len(data.conversations),
        "messages": sum(len(c.messages) for c in data.conversations),
    }
    return Notice(ref, NoticeKind.HISTORY_SYNC, details, timestamp=datetime.now(UTC))


# -- what a send holds: domain Content in, waE2E protobufs out -----------------------------------------
#
# neonize's build_*_message helpers do not fit a gateway: they read the whole file or fetch a URL themselves
# (get_bytes_from_name_or_url), run ffmpeg for durations and thumbnails and PIL for image thumbnails, guess the
# mimetype with libmagic, convert stickers, and reuse the file's own path and hashes as the thumbnail's
# (neonize client.py:1331-1403, :1457-1520, :1706-1745, :1777-1838, :977-1067). zapgate has prepared and
# measured the file already, so the messages are built here, field by field as those helpers and whatsmeow's
# builders (send.go:494-617, msgsecret.go:342-362) do, and only the upload is neonize's (client.upload).

VOICE_MIME = "audio/ogg; codecs=opus"  # what WhatsApp plays as a voice note
_DEFAULT_MIME = {
    MediaKind.IMAGE: "image/jpeg",
    MediaKind.VIDEO: "video/mp4",
    MediaKind.AUDIO: "audio/mpeg",
    MediaKind.DOCUMENT: "application/octet-stream",
    MediaKind.STICKER: "image/webp",
}
# the key the file is encrypted under; stickers are image uploads (whatsmeow download.go:95-100)
_UPLOAD_TYPE = {
    MediaKind.IMAGE: MediaType.MediaImage,
    MediaKind.VIDEO: MediaType.MediaVideo,
    MediaKind.AUDIO: MediaType.MediaAudio,
    MediaKind.DOCUMENT: MediaType.MediaDocument,
    MediaKind.STICKER: MediaType.MediaImage,
}
_MEDIA_CLASS = {
    MediaKind.IMAGE: wa.ImageMessage,
    MediaKind.VIDEO: wa.VideoMessage,
    MediaKind.AUDIO: wa.AudioMessage,
    MediaKind.DOCUMENT: wa.DocumentMessage,
    MediaKind.STICKER: wa.StickerMessage,
}
# chats where a key never names a participant: one-to-one ones (whatsmeow BuildMessageKey, send.go:500-503)
_ONE_TO_ONE_SERVERS = frozenset({USER_SERVER, LID_SERVER, "msgr"})


@dataclass(frozen=True, slots=True)
class _Me:
    """The session's own account, as a send names it (quotes of its own messages, votes on its own polls)."""

    jid: str | None  # phone JID, without device
    lid: str | None

    def in_chat(self, chat: Any) -> str | None:
        """How the account is named in `chat`: by its LID in a LID-addressed chat, else by its phone JID."""
        return self.lid if chat.Server == LID_SERVER and self.lid else self.jid


def _mention_jid(mention: str) -> str:
    """A mention as WhatsApp wants it: a JID (digits alone are a phone number's)."""
    digits = mention.removeprefix("+")
    return f"{digits}@{USER_SERVER}" if digits.isdigit() else _bare(mention)


def _message_key(chat: Any, key: MessageKey) -> Any:
    """The waCommon.MessageKey naming `key` in `chat`, as whatsmeow's BuildMessageKey writes it (send.go:494-508)."""
    built = WaMessageKey(remoteJID=jid_string(chat, device=False), fromMe=key.from_me, ID=key.id)
    if not key.from_me and chat.Server not in _ONE_TO_ONE_SERVERS:
        if not key.sender_jid:
            raise SendRejected("someone else's message in a group is named with its author (sender_jid)")
        built.participant = _bare(key.sender_jid)
    return built


def _quoted_author(chat: Any, key: MessageKey, me: _Me) -> str | None:
    if key.from_me:
        return me.in_chat(chat)
    if key.sender_jid:
        return _bare(key.sender_jid)
    if chat.Server in _ONE_TO_ONE_SERVERS:
        return jid_string(chat, device=False)  # the one other party
    return None


def _context_info(chat: Any, quote: Quote | None, mentions: Sequence[str], me: _Me) -> Any:
    """The contextInfo of a reply and its mentions (neonize client.py:576-596 quotes the same way), or None."""
    if quote is None and not mentions:
        return None
    info = wa.ContextInfo(mentionedJID=[_mention_jid(m) for m in mentions])
    if quote is not None:
        info.stanzaID = quote.key.id
        author = _quoted_author(chat, quote.key, me)
        if author:
            info.participant = author
        quoted = _quoted_message(quote.content) if quote.content is not None else None
        if quoted is not None:
            info.quotedMessage.CopyFrom(quoted)
    return info


def _media_submessage(media: Media) -> Any:
    """The file's sub-message without the upload: what WhatsApp shows before the download (and in a quote)."""
    cls = _MEDIA_CLASS[media.kind]
    duration = media.duration_seconds
    candidates = {
        "mimetype": VOICE_MIME if media.voice else media.mime_type or _DEFAULT_MIME[media.kind],
        "caption": media.caption,
        "fileName": media.filename,
        "width": media.width,
        "height": media.height,
        "seconds": max(1, round(duration)) if duration else None,
        "PTT": media.voice or None,
        "waveform": media.waveform,
        "JPEGThumbnail": media.thumbnail,
        "gifPlayback": media.animated or None,
        "isAnimated": media.animated or None,
        "viewOnce": media.view_once or None,
    }
    names = cls.DESCRIPTOR.fields_by_name  # each kind takes the fields WhatsApp's schema gives it
    return cls(**{name: value for name, value in candidates.items() if value is not None and name in names})


def _media_message(media: Media, upload: Any, now: int) -> Any:
    """A file message from neonize's UploadResponse (whatsmeow upload.go: URL, direct path, key and hashes)."""
    sub = _media_submessage(media)
    sub.URL = upload.url
    sub.directPath = upload.DirectPath
    sub.mediaKey = upload.MediaKey
    sub.fileEncSHA256 = upload.FileEncSHA256
    sub.fileSHA256 = upload.FileSHA256
    sub.fileLength = upload.FileLength
    sub.mediaKeyTimestamp = now  # seconds
    message = wa.Message(**{_MEDIA_FIELD[media.kind]: sub})
    if media.view_once and "viewOnce" in sub.DESCRIPTOR.fields_by_name:
        # the viewOnce field (as neonize's builders set it) inside the wrapper WhatsApp's clients send
        message = wa.Message(viewOnceMessage=wa.FutureProofMessage(message=message))
    return message


def _vcard_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace(",", "\\,").replace(";", "\\;")


def make_vcard(card: ContactCard) -> str:
    """A vCard 3.0 for `card`, as WhatsApp writes them: `TEL;type=CELL;waid=<wa_id>:<phone>`."""
    name = _vcard_escape(card.formatted_name)
    lines = ["BEGIN:VCARD", "VERSION:3.0", f"N:;{name};;;", f"FN:{name}"]
    for phone in card.phones:
        kind = re.sub(r"[^A-Za-z0-9-]", "", phone.type or "").upper() or "CELL"
        waid = f";waid={phone.wa_id}" if phone.wa_id else ""
        lines.append(f"TEL;type={kind}{waid}:{phone.phone}")
    lines.append("END:VCARD")
    return "\n".join(lines)


def _contacts_message(contacts: Contacts) -> Any:
    cards = [wa.ContactMessage(displayName=c.formatted_name, vcard=c.vcard or make_vcard(c)) for c in contacts.cards]
    if len(cards) == 1:
        return wa.Message(contactMessage=cards[0])
    several = wa.ContactsArrayMessage(displayName=f"{len(cards)} contacts", contacts=cards)
    return wa.Message(contactsArrayMessage=several)


def _poll_message(poll: Poll, secret: bytes | None) -> Any:
    """A poll as whatsmeow's BuildPollCreation makes it (msgsecret.go:342-362): v1, whose sends whatsmeow marks
    as polls (send.go:924, :1128-1138), with the 32-byte secret its votes are encrypted under."""
    everything = poll.selectable_count >= len(poll.options) > 1
    creation = wa.PollCreationMessage(
        name=poll.question,
        options=[wa.PollCreationMessage.Option(optionName=option) for option in poll.options],
        selectableOptionsCount=0 if everything else poll.selectable_count,  # 0: any number, as phones send
    )
    message = wa.Message(pollCreationMessage=creation)
    if secret is not None:
        message.messageContextInfo.messageSecret = secret
    return message


def _edit_message(chat: Any, edit: Edit, mentions: Sequence[str]) -> Any:
    """neonize's build_edit (builder.py:16-44, whatsmeow's BuildEdit, send.go:599-617): a new text for our message.

    whatsmeow defines a 20-minute EditWindow (send.go:591) but checks it nowhere; nor does this engine, which does
    not know when the message was sent.
    """
    if not edit.key.from_me:
        raise SendRejected("only the session's own messages can be edited")
    if mentions:
        context = wa.ContextInfo(mentionedJID=[_mention_jid(m) for m in mentions])
        new = wa.Message(extendedTextMessage=wa.ExtendedTextMessage(text=edit.text, contextInfo=context))
    else:
        new = wa.Message(conversation=edit.text)
    return build_edit(chat, edit.key.id, new)


def _content_message(content: Content, chat: Any, mentions: Sequence[str]) -> Any:
    """The waE2E.Message for a content that needs no call into Go (not a file, not a vote)."""
    if isinstance(content, Text):  # only with a quote or mentions: a plain text is a conversation (send_text)
        return wa.Message(extendedTextMessage=wa.ExtendedTextMessage(text=content.body))
    if isinstance(content, Location):
        place = {"name": content.name, "address": content.address, "URL": content.url}
        located = {"degreesLatitude": content.latitude, "degreesLongitude": content.longitude}
        fields = located | {name: value for name, value in place.items() if value is not None}
        return wa.Message(locationMessage=wa.LocationMessage(**fields))
    if isinstance(content, Contacts):
        return _contacts_message(content)
    if isinstance(content, Reaction):  # whatsmeow BuildReaction, send.go:534-546
        now = int(time.time() * 1000)
        reaction = wa.ReactionMessage(key=_message_key(chat, content.key), text=content.emoji, senderTimestampMS=now)
        return wa.Message(reactionMessage=reaction)
    if isinstance(content, Poll):
        return _poll_message(content, os.urandom(32))
    if isinstance(content, Edit):
        return _edit_message(chat, content, mentions)
    if isinstance(content, Revoke):  # whatsmeow BuildRevoke, send.go:519-527
        revoke = wa.ProtocolMessage(type=wa.ProtocolMessage.REVOKE, key=_message_key(chat, content.key))
        return wa.Message(protocolMessage=revoke)
    if isinstance(content, GroupInvite):
        return _invite_message(content)
    raise SendRejected(f"{kind_of(content).value} messages cannot be sent")


def _invite_message(invite: GroupInvite) -> Any:
    """A groupInviteMessage (waE2E GroupInviteMessage): neonize 0.5.2 has no builder for it (client.py and
    builder.py name none; whatsmeow neither), so it is built as WhatsApp's clients send it: the group, its code,
    the code's expiry (Unix seconds), the group's name and a caption."""
    fields: dict[str, Any] = {"groupJID": invite.group_jid, "inviteCode": invite.code}
    if invite.expires_at is not None:
        fields["inviteExpiration"] = invite.expires_at
    if invite.subject:
        fields["groupName"] = invite.subject
    if invite.caption:
        fields["caption"] = invite.caption
    return wa.Message(groupInviteMessage=wa.GroupInviteMessage(**fields))


def _quoted_message(content: Content) -> Any:
    """What a quote shows of the message it answers (no upload: an arrived file's own sub-message, else a stub)."""
    if isinstance(content, Text):
        return wa.Message(conversation=content.body)
    if isinstance(content, Media):
        if content.handle:
            try:
                return wa.Message.FromString(content.handle)
            except Exception:  # protobuf's DecodeError: a handle of another engine; the stub will do
                log.debug("whatsmeow.quoted_handle_unreadable")
        return wa.Message(**{_MEDIA_FIELD[content.kind]: _media_submessage(content)})
    if isinstance(content, Poll):
        return _poll_message(content, None)
    if isinstance(content, Location | Contacts):
        return _content_message(content, None, ())
    return None  # reactions, edits, revokes, votes: nothing to show


def _attach(message: Any, info: Any) -> None:
    """Put `info` (a contextInfo) into the content of `message`, inside any wrapper; kinds without one take none."""
    if info is None:
        return
    found = _first_field(_unwrap(message)[0])
    if found is not None and "contextInfo" in found[1].DESCRIPTOR.fields_by_name:
        found[1].contextInfo.MergeFrom(info)


def _poll_info(chat: Any, key: MessageKey, me: _Me) -> Any:
    """The MessageInfo of a poll, as whatsmeow's BuildPollVote reads it (msgsecret.go:331-386): chat, author, id.

    Every field neonize's Go decodes is set (goneonize/utils/decoder.go:72-88, :117-138 dereferences them).
    """
    if key.from_me:
        if me.jid is None:
            raise SendRejected("the session's own account is not known yet")
        sender = parse_jid(me.jid)  # whatsmeow keeps our polls' secrets under our phone JID (send.go:390-391)
    elif key.sender_jid:
        sender = parse_jid(_bare(key.sender_jid))
    elif chat.Server in _ONE_TO_ONE_SERVERS:
        sender = chat
    else:
        raise SendRejected("a vote on a group poll names the poll's author (sender_jid)")
    empty = pb.JID(User="", Server="", Device=0, RawAgent=0, Integrator=0)
    source = pb.MessageSource(
        Chat=chat,
        Sender=sender,
        IsFromMe=key.from_me,
        IsGroup=chat.Server in (GROUP_SERVER, _BROADCAST_SERVER),
        SenderAlt=empty,
        RecipientAlt=empty,
        BroadcastListOwner=empty,
    )
    return pb.MessageInfo(
        MessageSource=source,
        ID=key.id,
        ServerID=0,
        Type="",
        Pushname="",
        Timestamp=0,
        Category="",
        Multicast=False,
        MediaType="",
        Edit="",
    )


# whatsmeow's download errors (errors.go:116-144, download.go:247-286), as neonize passes their text
_MEDIA_GONE = re.compile(r"download failed with status code (403|404|410)\b")  # DownloadHTTPError, errors.go:120-133
_BAD_HANDLE = (
    "no url present",  # ErrNoURLPresent
    "unknown media type",  # ErrUnknownMediaType
    "didn't find any attachments",  # ErrNothingDownloadableFound
    "does not start with slash",  # download.go:259
)


def _download_error(exc: NeonizeError, ref: SessionRef) -> EngineError:
    """Map a failed download: gone from WhatsApp's servers (ask the phone again), a useless handle, or retryable."""
    text = str(exc)
    lowered = text.lower()
    session = str(ref)
    if match := _MEDIA_GONE.search(lowered):
        status = int(match.group(1))
        return MediaGone(f"whatsapp's media servers no longer have the file: {text}", session=session, status=status)
    if any(s in lowered for s in _BAD_HANDLE):
        return MediaHandleInvalid(f"the media's handle names no file: {text}", session=session)
    translated = _translate_error(exc, ref)
    if isinstance(translated, NotConnected):
        return translated
    return EngineError(f"whatsmeow could not download the file: {text}", session=session)


def _download_message(media: Media, ref: SessionRef) -> Any:
    """The waE2E.Message a media's handle holds (one file sub-message, see `_media`)."""
    message = wa.Message()
    try:
        message.ParseFromString(media.handle or b"")
    except Exception as exc:  # protobuf's DecodeError
        raise MediaHandleInvalid("the media's handle is not whatsmeow's", session=str(ref)) from exc
    found = _first_field(message)
    if found is None or found[0] not in _MEDIA_FIELD.values():
        raise MediaHandleInvalid("the media has no whatsmeow download handle", session=str(ref))
    return message


def _read_file(path: str) -> bytes:
    return Path(path).read_bytes()


def _write_file(path: str, data: bytes) -> None:
    Path(path).write_bytes(data)


# -- sends and lookups (called on an executor thread, under the gate, by _go_call) --------------------------


class LookupRejected(EngineError):
    """A lookup asked for something that is not a phone number (digits with country code)."""

    code = "lookup_rejected"
    retryable = False


def _send(client: Any, target: Any, message: Any) -> tuple[Any, str | None]:
    """Send `message` to `target`; return neonize's SendResponse and the JID whatsmeow addressed."""
    response = client.send_message(target, message)
    went_to = jid_string(target, device=False)
    if target.Server == USER_SERVER:
        # whatsmeow sent to the LID it keeps for this number (send.go:330-351); the send stored it, so the
        # store answers now. neonize's SendResponse does not say (goneonize/utils/encoder.go:169-176).
        went_to = _mapped(client.get_lid_from_pn, target) or went_to
    return response, went_to


def _mapped(lookup: Callable[[Any], Any], jid: Any) -> str | None:
    """Return the JID whatsmeow's LID store maps `jid` to, or None when it knows none.

    The store answers an empty JID, not an error, for a JID it has no mapping for (store/sqlstore/lidmap.go:96-115).
    """
    try:
        return jid_string(lookup(jid), device=False)
    except NeonizeError as exc:  # a mapping is extra information: its absence fails nothing
        log.debug("whatsmeow.lid_map_failed", error=str(exc))
        return None


def _lookup(client: Any, phone_number: str) -> JidLookup:
    """Ask WhatsApp about one phone number; keep both the phone JID and the LID it answers with."""
    digits = phone_number.removeprefix("+")
    if not (digits.isascii() and digits.isdigit()):
        # neonize joins the numbers it asks for with spaces and Go splits them again (client.py is_on_whatsapp,
        # goneonize/main.go:1224): anything but digits would ask for something else
        raise LookupRejected("a phone number is digits with country code", phone_number_length=len(phone_number))
    try:
        # whatsmeow wants the number in international format with its `+` (user.go:174-175); it appends the
        # server itself (user.go:177-179)
        answers = list(client.is_on_whatsapp("+" + digits))
    except NeonizeError as exc:
        if "function returned nothing" not in str(exc).lower():
            raise
        answers = []  # WhatsApp answered no user for the number (goneonize/main.go:1233-1236)
    answer = next((a for a in answers if a.IsIn), None)
    if answer is None:
        return JidLookup(phone_number=phone_number, on_whatsapp=False)
    jid = answer.JID
    # WhatsApp may answer with the LID as the JID; whatsmeow then stores the LID and phone JID it was given
    # (user.go:201-210, 221-227), and neonize passes on only the JID (goneonize/utils/encoder.go:189-198)
    if jid.Server == LID_SERVER:
        lid = jid_string(jid, device=False)
        phone_jid = _mapped(client.get_pn_from_lid, jid)
    else:
        phone_jid = jid_string(jid, device=False)
        lid = _mapped(client.get_lid_from_pn, jid)
    verified = _text(answer.VerifiedName.Details.verifiedName) if answer.HasField("VerifiedName") else ""
    return JidLookup(
        phone_number=phone_number,
        on_whatsapp=True,
        jid=phone_jid,  # None when only the LID is known: never a JID made of the digits asked
        lid=lid,
        extra={"verified_name": verified} if verified else {},
    )


# whatsmeow's errors for a picture it cannot give (errors.go: ErrProfilePictureNotSet, ErrProfilePictureUnauthorized)
_NO_PICTURE = ("has no profile picture", "hidden their profile picture")
_LINK_EXPIRY = re.compile(r"[?&]oe=([0-9A-Fa-f]{1,16})(?:&|$)")


def picture_of(info: Any) -> ProfilePicture:
    """Read neonize's ProfilePictureInfo: an empty one (whatsmeow answered none) is no picture."""
    url = _text(info.URL) or None
    expires_at = None
    if url is not None and (found := _LINK_EXPIRY.search(url)):
        expires_at = datetime.fromtimestamp(int(found.group(1), 16), UTC)
    return ProfilePicture(url=url, picture_id=_text(info.ID) or None, expires_at=expires_at)


def _reason(value: Any) -> str:
    try:
        return str(pb.ConnectFailureReason.Name(value)).lower()
    except ValueError:
        return str(value)


def _raw_attrs(node: Any) -> dict[str, Any]:
    """Return the attributes of a neonize Node (WhatsApp's raw stanza) as a dict."""
    attrs: dict[str, Any] = {}
    for attr in node.Attrs:
        kind = attr.WhichOneof("Value")
        if kind in ("integer", "text", "boolean"):
            attrs[str(attr.name)] = getattr(attr, kind)
    return attrs


def _failure_reason(event: Any) -> tuple[int | None, str | None]:
    """Return WhatsApp's reason number and neonize's name for it, of a ConnectFailure or LoggedOut event.

    neonize sends no Reason for numbers its enum lacks (utils/encoder.go:574-599); the raw stanza, when
    there is one, still has the number.
    """
    name = _reason(event.Reason).upper() if event.HasField("Reason") else None
    number = _WA_REASON.get(name) if name else None
    if number is None and "Raw" in event.DESCRIPTOR.fields_by_name and event.HasField("Raw"):
        raw = _raw_attrs(event.Raw).get("reason")
        try:
            number = int(raw) if raw is not None else None
        except ValueError:
            number = None
    return number, name.lower() if name else None


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(eq=False)
class _Session:
    """One hosted session: its request, its thread, its current Go client and what we know of it."""

    request: StartRequest
    dsn: str
    jid: str | None = None
    lid: str | None = None
    status: SessionStatus = SessionStatus.CONNECTING
    client: Any = None  # the NewClient of the current attempt
    attempt: int = 0
    go_live: bool = False  # Go's maps hold this client: API calls may reach it (changes under the gate only)
    socket_up: bool = False  # a QR code arrived in this attempt: the socket is open
    connected: bool = False
    delivering: bool = False  # Go's event loop (CallbackFunction) runs for the current client
    device_stored: bool = False  # the keystore holds this session's device (asked once per session)
    qr_seq: int = 0
    halt: str | None = None  # why the current attempt is being ended (first reason wins)
    terminal: bool = False  # a final status was emitted; nothing more is
    stop_requested: threading.Event = field(default_factory=threading.Event)
    finished: Future[None] = field(default_factory=Future)
    holds_gate: bool = False
    gate_mutex: threading.Lock = field(default_factory=threading.Lock)
    gate_timer: threading.Timer | None = None
    holds: set[_Hold] = field(default_factory=set)  # exclusive holds of its stops, released if abandoned
    qr_timer: asyncio.TimerHandle | None = None
    reaper: asyncio.TimerHandle | None = None
    pairing_code: str | None = None
    abandoned: bool = False  # its stop did not return in time: nothing more of it is reported or sent
    in_flight: int = 0  # events Go is handing over right now (held until stored)
    last_event: float = 0.0  # time.monotonic() of the last event handed over
    store_waits: set[threading.Event] = field(default_factory=set)  # Go threads waiting for a store

    @property
    def ref(self) -> SessionRef:
        return self.request.ref

    def take_gate(self, seconds: float = START_GATE_TIMEOUT) -> None:
        """Hold the gate exclusively while Go writes (or reads unguarded) its maps for this client."""
        with self.gate_mutex:
            if self.holds_gate or self.abandoned:
                return
        _GATE.acquire_exclusive()
        with self.gate_mutex:
            taken: bool = not self.abandoned  # abandoned while waiting: its gate must not stay taken
            if taken:
                self.holds_gate = True
                self.gate_timer = threading.Timer(seconds, self._gate_overdue, args=(seconds,))
                self.gate_timer.daemon = True
                self.gate_timer.start()
        if not taken:
            _GATE.release_exclusive()

    def drop_gate(self) -> None:
        with self.gate_mutex:
            if not self.holds_gate:
                return
            self.holds_gate = False
            if self.gate_timer is not None:
                self.gate_timer.cancel()
                self.gate_timer = None
        _GATE.release_exclusive()

    def _gate_overdue(self, seconds: float) -> None:
        if seconds >= START_GATE_TIMEOUT:
            log.warning("whatsmeow.gate_overdue", session=str(self.ref), seconds=seconds)
        self.drop_gate()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the gate exclusively for a Stop; an abandon gives it back if Go never returns."""
        hold = _Hold(exclusive=True)
        hold.acquire()
        with self.gate_mutex:
            self.holds.add(hold)
            abandoned = self.abandoned
        try:
            if abandoned:
                raise EngineError("the session was abandoned", session=str(self.ref))
            yield
        finally:
            with self.gate_mutex:
                self.holds.discard(hold)
            hold.release()

    def release_everything(self) -> None:
        """Give back every gate this session holds and let Go's waiting threads go (it was abandoned)."""
        with self.gate_mutex:
            self.abandoned = True
            holds = list(self.holds)
            waits = list(self.store_waits)
        self.drop_gate()
        released = sum(hold.release() for hold in holds)
        if released:
            log.warning("whatsmeow.gate_released_for_abandoned", session=str(self.ref), holds=released)
        for waiting in waits:
            waiting.set()


class WhatsmeowEngine:
    """Host WhatsApp sessions through whatsmeow, each client's keys in its own PostgreSQL keystore."""

    name: ClassVar[str] = "whatsmeow"

    def __init__(
        self,
        on_event: EventSink,
        keystore_dsn: Callable[[str], str],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        reconnect_attempts: int = 3,
        backoff_base: float = 1.0,
        device_name: str = "zapgate",
        stop_timeout: float = STOP_TIMEOUT,
        call_timeout: float = CALL_TIMEOUT,
    ) -> None:
        self._device_name = device_name
        self._on_event = on_event
        self._keystore_dsn = keystore_dsn
        self._given_loop = loop
        self._loop = loop
        self._reconnect_attempts = reconnect_attempts
        self._backoff_base = backoff_base
        self._stop_timeout = stop_timeout
        self._call_timeout = call_timeout
        self._sessions: dict[SessionRef, _Session] = {}
        self._polls: OrderedDict[tuple[SessionRef, str], tuple[str, ...]] = OrderedDict()  # see _remember_poll
        self._abandoned: set[_Session] = set()  # abandoned, their thread still stuck in Go
        self._lock = threading.Lock()

    @property
    def abandoned_clients(self) -> int:
        """Return how many abandoned sessions still have a Go client stuck in a call (they cost threads)."""
        with self._lock:
            return len(self._abandoned)

    # -- the protocol ---------------------------------------------------------------------------------

    async def start(self, request: StartRequest) -> None:
        """Begin connecting the session on a thread of its own; progress arrives as events."""
        self._bind_loop()
        if request.mode is StartMode.PAIRING_CODE and not request.phone_number:
            raise StartRejected("a pairing code start needs the phone number", session=str(request.ref))
        if request.mode is StartMode.RESTORE and not request.jid:
            raise StartRejected("a restore needs the session's linked jid", session=str(request.ref))
        with self._lock:
            existing = self._sessions.get(request.ref)
            if existing is not None and not existing.finished.done():
                return
            session = _Session(request=request, dsn=self._keystore_dsn(request.ref.client_id), jid=request.jid)
            self._sessions[request.ref] = session
        self._status(session, SessionStatus.CONNECTING)
        thread = threading.Thread(target=self._run, args=(session,), name=f"zapgate-wm-{request.ref}", daemon=True)
        thread.start()

    async def stop(self, ref: SessionRef) -> None:
        """Disconnect the session, keeping its keys, within `stop_timeout`. No-op if not hosted.

        Events neonize already buffered are handed over (and stored) first. Raises StopTimedOut when Go does
        not let go in time; the session is then abandoned.
        """
        session = self._session(ref)
        if session is None:
            return
        session.stop_requested.set()
        self._halt_soon(session, "stopped", drain=True)
        if not await self._finished_within(session, self._stop_timeout):
            self._abandon(session)
            raise StopTimedOut(f"the session did not stop within {self._stop_timeout:g} s", session=str(ref))

    async def logout(self, ref: SessionRef) -> None:
        """Unlink the device from the phone (whatsmeow deletes its keys) and end the session. Final."""
        session = self._hosted(ref)
        await self._go(session, lambda client: client.logout())
        if not session.terminal:
            self._status(session, SessionStatus.LOGGED_OUT, reason="logout", code="logout", final=True)
        session.stop_requested.set()
        self._halt_soon(session, "logged_out")
        if not await self._finished_within(session, self._stop_timeout):
            self._abandon(session)  # logged out all the same: the keys are gone, only a thread is left

    async def send_text(self, ref: SessionRef, to: str, text: str, message_id: str) -> SendResult:
        """Send `text` to JID `to`; the result names WhatsApp's id for it and the JID it went to.

        neonize cannot send under a chosen id: its SendMessage passes whatsmeow a SendRequestExtra holding only
        extra nodes (goneonize/main.go:502-503), so whatsmeow makes the id (send.go:210-211), and receipts name
        that one. A phone JID is sent to its LID (send.go:326-352): `to` of the result says which.
        """
        session = self._hosted(ref)
        try:
            target = parse_jid(to)
            message = wa.Message(conversation=text)
        except ValueError as exc:  # a device that is no number; lone surrogates, which protobuf cannot carry
            raise SendRejected("the recipient or the text cannot be sent", session=str(ref)) from exc
        return await self._send_built(session, target, message, message_id)

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
        """Send `content` of any kind to `to`, as a reply to `quote`, mentioning `mentions`, as `send_text` does.

        A file is read from `media.path`, uploaded (neonize's client.upload, whatsmeow's Upload) and sent with
        the upload's URL, path, key and hashes. A poll vote is built by whatsmeow (BuildPollVote), which encrypts
        it under the poll's secret from its store: only polls this session received or sent can be voted on.
        Reactions, edits, revokes and votes take no quote. Raises as `send_text`, and SendRejected for what
        cannot be sent (an edit of someone else's message, a file that is not there, ...).
        """
        if isinstance(content, Text) and quote is None and not mentions:
            return await self.send_text(ref, to, content.body, message_id)
        session = self._hosted(ref)
        me = _Me(jid=_bare(session.jid) if session.jid else None, lid=session.lid)
        try:
            target = parse_jid(to)
            info = _context_info(target, quote, mentions, me)
            if isinstance(content, Media):
                message = await self._media_message(session, content)
            elif isinstance(content, PollVote):
                message = await self._vote_message(session, target, content, me)
            else:
                message = _content_message(content, target, mentions)
            _attach(message, info)
        except ValueError as exc:  # a JID with a bad device part; lone surrogates, which protobuf cannot carry
            raise SendRejected("the recipient or the content cannot be sent", session=str(ref)) from exc
        except SendRejected as exc:
            exc.details.setdefault("session", str(ref))
            raise
        result = await self._send_built(session, target, message, message_id)
        if isinstance(content, Poll):
            self._remember_poll(ref, result.message_id, content.options)
        return result

    async def download(self, ref: SessionRef, media: Media, dest: str) -> None:
        """Download an arrived file by its handle (neonize's download_any: whatsmeow's DownloadAny) into `dest`.

        whatsmeow checks the file against its hashes and MAC before handing it over (download.go:288-313).
        Memory: neonize 0.5.2 returns the whole file as bytes (goneonize/main.go:1185-1202; its download_any
        writes a path only after that, client.py:1950-1971), and whatsmeow's streaming DownloadToFile
        (download-to-file.go) is not exported: the file is held whole in this worker, in Go and in Python
        (a few copies of it at the peak), until it is written out.

        Raises MediaGone when WhatsApp's servers answer 403, 404 or 410 (errors.go:131-133; ask the phone to
        upload it again), MediaHandleInvalid for a handle naming no file, NotConnected, or EngineError (retryable).
        """
        session = self._hosted(ref)
        message = _download_message(media, ref)
        found = _first_field(message)
        size = media.size or (int(found[1].fileLength) if found is not None else 0)

        def fetch(client: Any) -> bytes:
            try:
                return bytes(client.download_any(message))
            except DownloadError as exc:
                raise _download_error(exc, ref) from exc

        data = await self._go(session, fetch, within=self._transfer_timeout(size))
        try:
            await asyncio.wrap_future(_in_thread(f"zapgate-wm-write-{ref}", _write_file, dest, data))
        except OSError as exc:
            raise EngineError(f"the downloaded file could not be written: {exc}", session=str(ref)) from exc

    async def request_reupload(self, ref: SessionRef, chat_jid: str, key: MessageKey, media: Media) -> None:
        """Not supported: neonize 0.5.2 exposes neither whatsmeow's SendMediaRetryReceipt (mediaretry.go:77; the
        bundled library exports no such function) nor its MediaRetry event ("not implemented yet",
        goneonize/Neonize.proto:785-786; no case for it in goneonize/main.go:658-1093), so the phone can be neither
        asked nor heard, and no MediaReuploaded is ever emitted. Raises NotSupported (not retryable)."""
        self._hosted(ref)
        raise NotSupported(
            "asking the phone to upload a file again is not supported by neonize 0.5.2", session=str(ref)
        )

    async def _send_built(self, session: _Session, target: Any, message: Any, message_id: str) -> SendResult:
        """Send a built message (the one send path: the gate, error translation, WhatsApp's id and the JID)."""
        ref = session.ref
        try:
            response, went_to = await self._go(session, lambda client: _send(client, target, message))
        except RecipientUnknown as exc:
            absent = await self._absent(session, target)
            if absent is None:
                raise
            raise absent from exc
        sent_id = _text(response.ID)
        if sent_id != message_id:
            log.debug("whatsmeow.message_id_assigned", session=str(ref), requested=message_id, assigned=sent_id)
        return SendResult(message_id=sent_id, timestamp=_timestamp(int(response.Timestamp)), to=went_to)

    async def _media_message(self, session: _Session, media: Media) -> Any:
        """Read the prepared file and upload it (a call into Go, bounded by its size); build its message.

        neonize's Upload takes the file's bytes (goneonize/main.go:416-427): whatsmeow's UploadReader is not
        exported, so the file is held whole in memory while it uploads (ours, Go's copy and its ciphertext).
        """
        ref = str(session.ref)
        if not media.path:
            raise SendRejected("a file message needs its prepared file (path)", session=ref)
        try:
            data = await asyncio.wrap_future(_in_thread(f"zapgate-wm-read-{ref}", _read_file, media.path))
        except OSError as exc:
            raise SendRejected(f"the prepared file cannot be read: {exc.strerror}", session=ref) from exc
        kind = _UPLOAD_TYPE[media.kind]
        upload = await self._go(session, lambda c: c.upload(data, kind), within=self._transfer_timeout(len(data)))
        return _media_message(media, upload, int(time.time()))

    async def _vote_message(self, session: _Session, chat: Any, vote: PollVote, me: _Me) -> Any:
        """whatsmeow's BuildPollVote through neonize's build_poll_vote (goneonize/main.go:2216-2239)."""
        if any(option.startswith("sha256:") for option in vote.selected):
            raise SendRejected("a vote names its options by name", session=str(session.ref))
        info = _poll_info(chat, vote.key, me)

        def build(client: Any) -> Any:
            try:
                return client.build_poll_vote(info, list(vote.selected))
            except BuildPollVoteError as exc:
                if "secret" not in str(exc).lower():
                    raise
                # ErrOriginalMessageSecretNotFound (errors.go:148): whatsmeow never stored this poll's secret
                raise SendRejected(
                    "this session does not hold the poll's secret: it can vote only on polls it received or sent",
                    session=str(session.ref),
                ) from exc

        return await self._go(session, build)

    def _transfer_timeout(self, size: int) -> float:
        """Seconds an upload or download of `size` bytes may take: a call's, plus the file at a slow rate."""
        return self._call_timeout + size / MIN_TRANSFER_RATE

    def _remember_poll(self, ref: SessionRef, poll_id: str, options: Sequence[str]) -> None:
        """Keep a poll's options, to name the options of its votes (a vote carries their SHA-256 only)."""
        with self._lock:
            self._polls[(ref, poll_id)] = tuple(options)
            self._polls.move_to_end((ref, poll_id))
            while len(self._polls) > POLL_MEMORY:
                self._polls.popitem(last=False)

    def _poll_options(self, ref: SessionRef, poll_id: str) -> tuple[str, ...] | None:
        with self._lock:
            return self._polls.get((ref, poll_id))

    async def _absent(self, session: _Session, target: Any) -> NotOnWhatsApp | None:
        """Tell "no LID found" for a number without an account apart from any other reason, by asking WhatsApp."""
        if target.Server != USER_SERVER:
            return None
        try:
            lookup = await self._go(session, lambda client: _lookup(client, str(target.User)))
        except EngineError:
            return None  # the send's own answer stands
        if lookup.on_whatsapp:
            return None
        return NotOnWhatsApp("whatsapp has no account for this number", session=str(session.ref))

    async def resolve(self, ref: SessionRef, phone_number: str) -> JidLookup:
        """Ask WhatsApp (IsOnWhatsApp) whether `phone_number` is on it, under which phone JID and which LID.

        The digits are asked as given and the JIDs are WhatsApp's: a Brazilian number asked with its ninth digit
        may come back without it, and that answer is the JID.
        """
        session = self._hosted(ref)
        return await self._go(session, lambda client: _lookup(client, phone_number))

    async def request_pairing_code(self, ref: SessionRef, phone_number: str) -> str:
        """Request a pairing code once the socket is up (after the first QR code); also emitted as an event."""
        session = self._hosted(ref)
        attempt = session.attempt
        waited = 0.0
        while not session.socket_up:
            between_attempts = session.client is None or session.status is SessionStatus.DISCONNECTED
            gone = session.finished.done() or session.attempt != attempt or session.halt
            if between_attempts or gone or waited >= PAIRING_WAIT:
                raise NotConnected("the session has no open socket to pair on", session=str(ref))
            await asyncio.sleep(0.05)
            waited += 0.05
        return await self._go(session, lambda client: self._pair_phone(session, client, phone_number))

    async def send_presence(self, ref: SessionRef, to: str, presence: Presence) -> None:
        """Show typing, recording or paused in the chat with `to` (whatsmeow's SendChatPresence)."""
        session = self._hosted(ref)
        paused = presence is Presence.PAUSED
        state = ChatPresence.CHAT_PRESENCE_PAUSED if paused else ChatPresence.CHAT_PRESENCE_COMPOSING
        recording = presence is Presence.RECORDING
        media = ChatPresenceMedia.CHAT_PRESENCE_MEDIA_AUDIO if recording else ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT
        jid = parse_jid(to)
        await self._go(session, lambda client: client.send_chat_presence(jid, state, media))

    async def mark_read(self, ref: SessionRef, chat_jid: str, keys: tuple[MessageKey, ...]) -> None:
        """Send read receipts for `keys` (whatsmeow's MarkRead, one call per author in a group)."""
        session = self._hosted(ref)
        chat = parse_jid(chat_jid)
        by_sender: dict[str, list[str]] = {}
        for key in keys:
            if not key.from_me:
                by_sender.setdefault(key.sender_jid or chat_jid, []).append(key.id)
        for sender_jid, ids in by_sender.items():
            await self._go(session, partial(_mark_read, ids=ids, chat=chat, sender=parse_jid(sender_jid)))

    async def profile_picture(self, ref: SessionRef, jid: str) -> ProfilePicture:
        """Ask WhatsApp for the profile picture of `jid` (whatsmeow's GetProfilePictureInfo, the full picture).

        None as URL when there is none or it is hidden from this account (whatsmeow's ErrProfilePictureNotSet and
        ErrProfilePictureUnauthorized); the link's expiry is the `oe` of its URL (hex seconds), as WhatsApp sets it.
        """
        session = self._hosted(ref)
        target = parse_jid(jid)
        params = pb.GetProfilePictureParams(Preview=False, ExistingID="", IsCommunity=False)
        try:
            info = await self._go(session, lambda client: client.get_profile_picture(target, params))
        except EngineError as exc:
            if any(s in exc.message.lower() for s in _NO_PICTURE):
                return ProfilePicture(url=None)
            raise
        return picture_of(info)

    async def set_blocked(self, ref: SessionRef, jid: str, blocked: bool) -> None:
        """Block or unblock `jid` (whatsmeow's UpdateBlocklist, on the account's blocklist)."""
        session = self._hosted(ref)
        target = parse_jid(jid)
        action = BlocklistAction.BLOCK if blocked else BlocklistAction.UNBLOCK
        await self._go(session, lambda client: client.update_blocklist(target, action))

    # -- chats and presence (issue 14) -----------------------------------------------------------------

    async def change_chat(self, ref: SessionRef, chat_jid: str, state: ChatState) -> None:
        """Not with neonize 0.5.2: see APP_STATE_UNSUPPORTED (raises NotSupported)."""
        self._hosted(ref)
        raise NotSupported(APP_STATE_UNSUPPORTED, session=str(ref))

    async def subscribe_presence(self, ref: SessionRef, jid: str) -> None:
        """Subscribe to `jid`'s presence (whatsmeow's SubscribePresence): Presence events follow."""
        session = self._hosted(ref)
        target = parse_jid(jid)
        await self._go(session, lambda client: client.subscribe_presence(target))

    async def set_available(self, ref: SessionRef, available: bool) -> None:
        """Show the account online or offline (whatsmeow's SendPresence)."""
        session = self._hosted(ref)
        presence = AccountPresence.AVAILABLE if available else AccountPresence.UNAVAILABLE
        await self._go(session, lambda client: client.send_presence(presence))

    def hosts(self, ref: SessionRef) -> bool:
        """Return whether this engine currently hosts the session."""
        return self._session(ref) is not None

    def abandon(self, ref: SessionRef) -> None:
        """Forget a session whose stop did not return: its Go client is left behind, reporting nothing."""
        session = self._session(ref)
        if session is not None:
            self._abandon(session)

    async def close(self) -> None:
        """Stop every session (keeping keys), each within `stop_timeout`; abandon those that do not stop."""
        with self._lock:
            refs = list(self._sessions)
        results = await asyncio.gather(*(self.stop(ref) for ref in refs), return_exceptions=True)
        for ref, result in zip(refs, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("whatsmeow.close_stop_failed", session=str(ref), error=repr(result))

    # -- groups (translation: engines/whatsmeow_groups.py) ---------------------------------------------

    async def _group_call(self, ref: SessionRef, fn: Callable[[Any], T], *, inviting: bool = False) -> T:
        """Run a group call in Go; WhatsApp's refusals come out as the group errors they mean."""
        session = self._hosted(ref)
        try:
            return await self._go(session, fn)
        except EngineError as exc:
            raise group_error(exc, inviting=inviting) from exc

    async def list_groups(self, ref: SessionRef) -> list[GroupInfo]:
        """The groups the session is in (GetJoinedGroups)."""
        found = await self._group_call(ref, lambda client: list(client.get_joined_groups()))
        return [group_info_of(raw, _bare_jid) for raw in found]

    async def create_group(
        self, ref: SessionRef, subject: str, participants: tuple[str, ...]
    ) -> tuple[GroupInfo, tuple[ParticipantResult, ...]]:
        """CreateGroup: the answer lists each participant with its error code (0: added)."""
        jids = [parse_jid(jid) for jid in participants]
        raw = await self._group_call(ref, lambda client: client.create_group(subject, jids))
        return group_info_of(raw, _bare_jid), creation_results(raw, participants, _bare_jid)

    async def group_info(self, ref: SessionRef, group: str) -> GroupInfo:
        raw = await self._group_call(ref, lambda client: client.get_group_info(parse_jid(group)))
        return group_info_of(raw, _bare_jid)

    async def set_group_subject(self, ref: SessionRef, group: str, subject: str) -> None:
        await self._group_call(ref, lambda client: client.set_group_name(parse_jid(group), subject))

    async def set_group_description(self, ref: SessionRef, group: str, description: str) -> None:
        # empty previous and new ids: whatsmeow reads the current topic id and makes a new one (SetGroupTopic)
        await self._group_call(ref, lambda client: client.set_group_topic(parse_jid(group), "", "", description))

    async def set_group_picture(self, ref: SessionRef, group: str, image: bytes) -> str:
        return str(await self._group_call(ref, lambda client: client.set_group_photo(parse_jid(group), image)))

    async def set_group_announce(self, ref: SessionRef, group: str, announce: bool) -> None:
        await self._group_call(ref, lambda client: client.set_group_announce(parse_jid(group), announce))

    async def set_group_locked(self, ref: SessionRef, group: str, locked: bool) -> None:
        await self._group_call(ref, lambda client: client.set_group_locked(parse_jid(group), locked))

    async def update_group_participants(
        self, ref: SessionRef, group: str, action: ParticipantAction, participants: tuple[str, ...]
    ) -> tuple[ParticipantResult, ...]:
        change = ParticipantChange(action.value)
        jids = [parse_jid(jid) for jid in participants]
        answered = await self._group_call(
            ref, lambda client: list(client.update_group_participants(parse_jid(group), jids, change))
        )
        return participant_results(action, participants, answered, _bare_jid)

    async def group_invite_link(self, ref: SessionRef, group: str, *, reset: bool = False) -> str:
        return str(await self._group_call(ref, lambda client: client.get_group_invite_link(parse_jid(group), reset)))

    async def set_group_join_approval(self, ref: SessionRef, group: str, on: bool) -> None:
        """Not supported: neonize 0.5.2 does not export whatsmeow's SetGroupJoinApprovalMode (the bundled library's
        exports, `nm -D`, name no such function; client.py has no method for it). Raises NotSupported."""
        self._hosted(ref)
        raise NotSupported("switching membership approval is not supported by neonize 0.5.2", session=str(ref))

    async def group_requests(self, ref: SessionRef, group: str) -> list[JoinRequest]:
        """GetGroupRequestParticipants (neonize client.py:2870-2885): who asked to join, and when."""
        found = await self._group_call(
            ref, lambda client: list(client.get_group_request_participants(parse_jid(group)))
        )
        return [join_request_of(raw, _bare_jid) for raw in found]

    async def answer_group_requests(
        self, ref: SessionRef, group: str, action: RequestAction, participants: tuple[str, ...]
    ) -> tuple[ParticipantResult, ...]:
        """Not supported: neonize 0.5.2 does not export whatsmeow's UpdateGroupRequestParticipants (no such export
        in the bundled library, no method in client.py). Raises NotSupported."""
        self._hosted(ref)
        raise NotSupported("answering join requests is not supported by neonize 0.5.2", session=str(ref))

    async def join_group(self, ref: SessionRef, code: str) -> str:
        joined = await self._group_call(ref, lambda client: client.join_group_with_link(code), inviting=True)
        return _bare_jid(joined) or ""

    async def join_group_with_invite(
        self, ref: SessionRef, group: str, inviter: str, code: str, expiration: int | None
    ) -> str:
        jid, sender = parse_jid(group), parse_jid(inviter)
        await self._group_call(
            ref, lambda client: client.join_group_with_invite(jid, sender, code, expiration or 0), inviting=True
        )
        return _bare_jid(jid) or group

    async def leave_group(self, ref: SessionRef, group: str) -> None:
        await self._group_call(ref, lambda client: client.leave_group(parse_jid(group)))

    # -- beyond the protocol --------------------------------------------------------------------------

    def is_connected(self, ref: SessionRef) -> bool:
        """Ask Go whether the session's socket is connected (any thread may call this)."""
        session = self._session(ref)
        client = session.client if session is not None else None
        if client is None:
            return False
        with _GATE.shared():
            return bool(client.is_connected)  # nil-safe in Go even before the client is registered

    # -- the session thread ---------------------------------------------------------------------------

    def _run(self, session: _Session) -> None:
        failures = 0
        try:
            while not session.stop_requested.is_set():
                outcome, reason = self._attempt(session)
                if outcome != "retry":
                    break
                failures = 0 if session.connected else failures + 1
                retrying = failures <= self._reconnect_attempts and not session.stop_requested.is_set()
                code = "connection_lost" if session.connected else "connect_failed"
                self._emit(session, EngineFailure(session.ref, code, reason, retryable=retrying))
                if not retrying:
                    if not session.stop_requested.is_set():
                        self._status(session, SessionStatus.FAILED, reason=reason, code=code, final=True)
                    break
                self._status(session, SessionStatus.DISCONNECTED, reason=reason, code=code)
                if session.stop_requested.wait(self._backoff_base * 2 ** (failures - 1)):
                    break
                self._status(session, SessionStatus.CONNECTING)
            if session.stop_requested.is_set() and not session.terminal:
                session.terminal = True  # stopped on request: the caller records why (base.Engine.stop)
        except BaseException as exc:  # the thread must never die silently
            log.error("whatsmeow.session_crashed", session=str(session.ref), error=repr(exc), exc_info=exc)
            if not session.terminal:
                self._status(session, SessionStatus.FAILED, reason="engine_error", code="engine_error", final=True)
        finally:
            with self._lock:
                if self._sessions.get(session.ref) is session:
                    del self._sessions[session.ref]
                self._abandoned.discard(session)
            session.finished.set_result(None)

    def _attempt(self, session: _Session) -> tuple[str, str]:
        """Run one Go client until Go returns; answer "retry" or a final outcome, and why.

        whatsmeow redials by itself while the client lives (client.go:588-598, keepalive.go:46-50), so Go's
        `Neonize` returns only when the first dial fails, or when we stop the client (main.go:1139-1176).
        """
        session.attempt += 1
        session.halt = None
        session.socket_up = session.connected = session.delivering = False
        session.qr_seq = 0
        restore = session.jid is not None
        if restore and not self._device_stored(session):
            self._emit(session, EngineFailure(session.ref, "keys_not_found", "no stored keys for this session's jid"))
            self._status(session, SessionStatus.FAILED, reason="keys_not_found", code="keys_not_found", final=True)
            return "final", "keys_not_found"
        client = self._new_client(session, restore)
        session.client = client
        error = ""
        session.take_gate()
        try:
            client.connect()
        except NeonizeError as exc:
            error = str(exc)
        except Exception as exc:  # neonize raises plain errors too; the session decides what follows
            error = repr(exc)
        finally:
            session.drop_gate()
            if not session.abandoned:
                self._stop_client(session, client, final=True)
        if session.terminal or session.halt in ("stopped", "logged_out", "qr_timeout", "fatal"):
            return "final", session.halt or "final"
        return "retry", error or session.halt or "disconnected"

    def _new_client(self, session: _Session, restore: bool) -> Any:
        uuid = f"{session.ref}#{session.attempt}"
        # the linked device is listed on the phone under DeviceProps.os, sent when pairing (whatsmeow
        # store/clientpayload.go:124-125, :174-183; neonize merges ours in, main.go:651)
        props = DeviceProps(os=self._device_name, platformType=DeviceProps.CHROME)
        if restore:
            assert session.jid is not None
            client = NewClient(session.dsn, jid=parse_jid(session.jid), props=props, uuid=uuid)
            client.uuid = uuid.encode()  # neonize keys a client by its jid's user when given one: keep ours unique
        else:
            client = NewClient(session.dsn, props=props, uuid=uuid, new_device=True)
        for event_type in (
            pb.PairStatus,
            pb.Connected,
            pb.KeepAliveTimeout,
            pb.KeepAliveRestored,
            pb.LoggedOut,
            pb.StreamReplaced,
            pb.TemporaryBan,
            pb.ConnectFailure,
            pb.ClientOutdated,
            pb.Disconnected,
            pb.Message,
            pb.Receipt,
            pb.UndecryptableMessage,
            pb.HistorySync,
            pb.GroupInfoEvent,  # groups: a change (events.GroupInfo)
            pb.JoinedGroup,  # groups: the session is now in one
            pb.Picture,  # a group's picture changed, or a person's
            pb.Presence,
            pb.ChatPresence,
            pb.BlocklistEvent,  # contacts: the phone blocked or unblocked someone
        ):
            client.event(event_type)(self._handler(session))
        client.event.qr(lambda _client, code: self._on_qr(session, code))
        inner = client.event.execute

        def execute(uuid: int, binary: int, size: int, code: int) -> None:
            if session.abandoned:
                return  # an abandoned client's Go thread may still deliver: nothing of it is reported
            session.in_flight += 1  # only Go's one event thread of this client counts
            try:
                inner(uuid, binary, size, code)
            except Exception as exc:  # an exception must not unwind into Go
                log.error("whatsmeow.event_failed", session=str(session.ref), code=code, error=repr(exc))
            finally:
                session.in_flight -= 1
                session.last_event = time.monotonic()
                if code == _ME_CODE:
                    self._on_me(session, client)

        def login_status(_uuid: int, status: int) -> None:
            self._on_login_status(session, ctypes.string_at(status).decode(errors="replace"))

        client.event.execute = execute
        client._NewClient__onLoginStatus = login_status  # neonize prints these; we act on them
        # neonize notices Neonize's return by polling every 0.2 s: give the gate back the moment Go returns
        client._NewClient__client = _GoReturnWatch(client._NewClient__client, session.drop_gate)
        return client

    def _device_stored(self, session: _Session) -> bool:
        """Ask the keystore once per session whether it holds the session's device.

        neonize's GetAllDevices opens a PostgreSQL pool per call and never closes it (main.go:2377-2384);
        it touches none of Go's global maps, so it needs no gate.
        """
        if not session.device_stored:
            devices = ClientFactory.get_all_devices_from_db(session.dsn)
            wanted = (session.jid or "").split("@")[0]
            session.device_stored = any(str(device.JID.User) == wanted for device in devices)
        return session.device_stored

    def _stop_client(self, session: _Session, client: Any, *, final: bool) -> None:
        """Cancel `client` in Go (Stop: writes Go's maps, so exclusively)."""
        with session.exclusive():
            if final:
                session.go_live = False
            client.stop()
        if final:
            client._stop_finalizer.detach()  # its Stop at garbage collection would run outside the gate
            session.client = None

    def _drain(self, session: _Session, client: Any) -> None:
        """Let neonize hand over (and the worker store) the events it buffered, before a Stop drops them.

        Go's Stop cancels the event loop's context and forgets the channel (main.go:587-604); the loop then
        returns at `ctx.Done()` whatever is still buffered (main.go:2536-2548, up to 100 events, :625).
        Disconnect first ends the socket without cancelling the loop (client.go:674-683, no event is emitted),
        so what was buffered still arrives; the buffer is empty once no event came for DRAIN_QUIET.
        """
        with _GATE.shared():  # Go's Disconnect export only reads the clients map (main.go:1181-1183)
            if not session.go_live:
                return
            client.disconnect()
        quiet_since = time.monotonic()
        deadline = quiet_since + self._stop_timeout / 2
        while time.monotonic() < deadline and not session.abandoned:
            last = max(quiet_since, session.last_event)
            if session.in_flight == 0 and time.monotonic() - last >= DRAIN_QUIET:
                return
            time.sleep(0.02)
        log.warning("whatsmeow.drain_expired", session=str(session.ref), in_flight=session.in_flight)

    # -- callbacks from Go (the session's Go-owned thread) ---------------------------------------------

    def _handler(self, session: _Session) -> Callable[[Any, Any], None]:
        def handle(_client: Any, event: Any) -> None:
            self._on_event_proto(session, event)

        return handle

    def _on_me(self, session: _Session, client: Any) -> None:
        session.go_live = True
        session.delivering = True
        me = client.me
        if me is not None and me.HasField("JID") and me.JID.User:
            session.jid = jid_string(me.JID)
            if me.HasField("LID") and me.LID.User:
                session.lid = jid_string(me.LID, device=False)
        session.drop_gate()

    def _on_login_status(self, session: _Session, status: str) -> None:
        if status in _LOGIN_ENDS:
            # the QR loop ends: Go reads its maps next (main.go:1143-1174, :2529, :2504); a pairing then calls
            # back with the device event, anything else never calls back again (FetchMe spins, main.go:2507)
            session.take_gate(START_GATE_TIMEOUT if status == "success" else LOGIN_END_GATE)
        if status == "timeout":
            self._qr_timeout(session, "whatsapp ended the qr codes")
        elif status in _LOGIN_ERRORS and not (session.connected or session.jid):
            log.warning("whatsmeow.login_error", session=str(session.ref), reason=status)
            self._status(
                session,
                SessionStatus.FAILED,
                reason=f"login failed: {status}",
                code="login_error",
                details={"reason": status},
                final=True,
            )
            self._halt_soon(session, "fatal")

    def _on_qr(self, session: _Session, data: bytes | str) -> None:
        session.go_live = True
        session.socket_up = True
        session.drop_gate()
        if session.terminal or session.halt:
            return
        code = data.decode() if isinstance(data, bytes) else data
        request = session.request
        session.qr_seq += 1
        sequence = session.qr_seq
        if sequence > request.max_qr_codes:
            self._qr_timeout(session, f"{request.max_qr_codes} qr codes were not scanned")
            return
        lifetime = FIRST_QR_LIFETIME if sequence == 1 else NEXT_QR_LIFETIME
        if request.mode is StartMode.PAIRING_CODE:
            if sequence == 1 and request.phone_number:
                phone = request.phone_number
                _in_thread(f"zapgate-wm-pair-{session.ref}", self._pair_in_background, session, phone)
        else:
            self._emit(session, QrCode(session.ref, code, datetime.now(UTC) + timedelta(seconds=lifetime), sequence))
            if sequence == 1:
                self._status(session, SessionStatus.QR)
        self._call_on_loop(self._arm_qr_timer, session, sequence, lifetime)

    def _on_event_proto(self, session: _Session, event: Any) -> None:
        ref = session.ref
        if isinstance(event, pb.Message):
            message = translate_message(ref, event, self._message_context(session))
            if message is not None:
                if isinstance(message.content, Poll):
                    self._remember_poll(ref, message.message_id, message.content.options)
                self._emit_and_wait_until_stored(session, message)
        elif isinstance(event, pb.Receipt):
            receipt = translate_receipt(ref, event)
            if receipt is not None:
                self._emit_and_wait_until_stored(session, receipt)
        elif isinstance(event, pb.UndecryptableMessage):
            self._emit(session, translate_undecryptable(ref, event))
        elif isinstance(event, pb.HistorySync):
            self._emit(session, translate_history_sync(ref, event))
        elif isinstance(event, pb.GroupInfoEvent | pb.JoinedGroup | pb.Picture):
            self._on_group_event(session, event)
        elif isinstance(event, pb.BlocklistEvent):
            self._on_blocklist(session, event)
        elif isinstance(event, pb.Presence | pb.ChatPresence):
            seen = (
                translate_presence(ref, event)
                if isinstance(event, pb.Presence)
                else translate_chat_presence(ref, event)
            )
            if seen is not None:
                self._emit(session, seen)
        else:
            self._on_connection_event(session, event)

    def _on_group_event(self, session: _Session, event: Any) -> None:
        """A group changed (GroupInfoEvent, Picture) or the session joined one (JoinedGroup)."""
        ref = session.ref
        if isinstance(event, pb.GroupInfoEvent):
            own = frozenset(user for user in (_user(session.jid), _user(session.lid)) if user)
            for change in translate_group_info(ref, event, own, _bare_jid):
                self._emit(session, change)
        elif isinstance(event, pb.JoinedGroup):
            self._emit(session, translate_joined_group(ref, event, _bare_jid))
        elif (picture := translate_picture(ref, event, _bare_jid)) is not None:
            self._emit(session, picture)
        else:
            own = frozenset(user for user in (_user(session.jid), _user(session.lid)) if user)
            theirs = translate_contact_picture(ref, event, own)
            if theirs is not None:
                self._emit(session, theirs)

    def _on_blocklist(self, session: _Session, event: Any) -> None:
        """The phone blocked or unblocked someone; when WhatsApp only says the list changed, ask for all of it."""
        change = translate_blocklist(session.ref, event)
        if change is None and event.Action == pb.BlocklistEvent.MODIFY:
            try:  # on Go's event thread, as a poll vote's decryption: the next events wait for the answer
                listed = self._go_now(session, lambda client: client.get_blocklist(), halting=True)
            except EngineError as exc:
                log.warning("whatsmeow.blocklist_not_read", session=str(session.ref), error=exc.message)
                return
            change = whole_blocklist(session.ref, listed)
        if change is not None:
            self._emit(session, change)

    def _message_context(self, session: _Session) -> MessageContext:
        """Who the session is, and how to open its poll votes (whatsmeow's DecryptPollVote: a call into Go)."""
        own = frozenset(user for user in (_user(session.jid), _user(session.lid)) if user)

        def decrypt(event: Any) -> Any:
            # neonize serialises the event whole (client.py:3356-3363): a required field missing raises here,
            # before Go would dereference it (goneonize/utils/decoder.go:205-231)
            return self._go_now(session, lambda client: client.decrypt_poll_vote(event), halting=True)

        return MessageContext(
            own_users=own,
            decrypt_vote=decrypt,
            poll_options=lambda poll_id: self._poll_options(session.ref, poll_id),
        )

    def _emit_and_wait_until_stored(self, session: _Session, event: InboundMessage | Receipt) -> None:
        """Hand `event` over and hold Go's event thread until it is stored.

        whatsmeow has already acknowledged a message to WhatsApp by then (it acks before dispatching unless
        SynchronousAck, receipt.go:113-130, message.go:63; neonize never sets it): holding the thread does
        not delay that ack. It keeps the rest of neonize's buffer in Go, where a clean stop lets it drain
        (`_drain`), and bounds how much a crash can lose to what one event thread holds.
        """
        try:
            on_loop_thread = asyncio.get_running_loop() is self._loop
        except RuntimeError:  # no loop runs in this thread: Go's own thread, as it should be
            on_loop_thread = False
        stored = threading.Event()
        with session.gate_mutex:
            if session.abandoned:
                return
            session.store_waits.add(stored)
        try:
            self._emit(session, dataclasses.replace(event, ack=stored.set))
            if on_loop_thread:
                return  # fed from the event loop itself (tests): waiting here would wait forever
            if not stored.wait(STORE_WAIT):
                log.warning("whatsmeow.store_wait_expired", session=str(event.ref), kind=type(event).__name__)
        finally:
            with session.gate_mutex:
                session.store_waits.discard(stored)

    def _on_connection_event(self, session: _Session, event: Any) -> None:
        if isinstance(event, pb.Connected):
            self._on_connected(session)
        elif isinstance(event, pb.PairStatus):
            self._on_pair_status(session, event)
        elif isinstance(event, pb.Disconnected):
            # whatsmeow emits this for a drop it did not ask for, and redials by itself (client.go:595-598)
            self._reconnecting(session, "disconnected", "whatsapp closed the connection; whatsmeow redials")
        elif isinstance(event, pb.KeepAliveTimeout):
            self._on_keepalive_timeout(session, event)
        elif isinstance(event, pb.KeepAliveRestored):
            self._emit(session, Notice(session.ref, NoticeKind.KEEPALIVE_RESTORED, timestamp=datetime.now(UTC)))
            if session.status is SessionStatus.RECONNECTING and session.connected:
                self._on_connected(session)  # the same socket answers again: it never dropped
        else:
            self._on_ended_by_whatsapp(session, event)

    def _on_connected(self, session: _Session) -> None:
        session.connected = True
        self._cancel_qr_timer(session)
        phone = session.jid.split("@")[0].split(":")[0] if session.jid else None
        self._status(session, SessionStatus.CONNECTED, jid=session.jid, phone_number=phone, lid=session.lid)

    def _reconnecting(self, session: _Session, code: str, reason: str, **details: Any) -> None:
        if session.halt or session.status is SessionStatus.RECONNECTING:
            return
        self._status(session, SessionStatus.RECONNECTING, reason=reason, code=code, details=details)

    def _on_keepalive_timeout(self, session: _Session, event: Any) -> None:
        last_success = datetime.fromtimestamp(int(event.LastSuccess), UTC) if event.LastSuccess else None
        details = {
            "errorCount": int(event.ErrorCount),
            "lastSuccess": _iso(last_success) if last_success else None,
        }
        self._emit(session, Notice(session.ref, NoticeKind.KEEPALIVE_TIMEOUT, details, datetime.now(UTC)))
        failing_for = (datetime.now(UTC) - last_success).total_seconds() if last_success else 0.0
        if failing_for > KEEPALIVE_MAX_FAIL:
            # whatsmeow drops the socket and redials now, without a Disconnected event (keepalive.go:46-50)
            self._reconnecting(session, "keepalive_timeout", "whatsapp stopped answering keep-alives", **details)

    def _on_ended_by_whatsapp(self, session: _Session, event: Any) -> None:
        """WhatsApp ended the session (whatsmeow does not redial these, connectionevents.go:48-51, :102-155)."""
        ref = session.ref
        status, code = SessionStatus.FAILED, ""
        details: dict[str, Any] = {}
        if isinstance(event, pb.LoggedOut):
            number, name = _failure_reason(event)
            status, code = SessionStatus.LOGGED_OUT, "logged_out"
            details = {"reason": number, "reasonName": name, "onConnect": bool(event.OnConnect)}
            reason = name or "logged_out"
        elif isinstance(event, pb.StreamReplaced):
            code, reason = "stream_replaced", "another client connected with this session's keys"
        elif isinstance(event, pb.TemporaryBan):
            name = pb.TemporaryBan.TempBanReason.Name(event.Code) if event.HasField("Code") else None
            expires = datetime.now(UTC) + timedelta(seconds=int(event.Expire))  # a duration (encoder.go:624)
            code, reason = "temporary_ban", "whatsapp banned this account for a while"
            details = {"banCode": _WA_BAN_CODE.get(name or ""), "banReason": name.lower() if name else None}
            details["expiresAt"] = _iso(expires) if event.Expire else None
        elif isinstance(event, pb.ClientOutdated):
            code, reason = "client_outdated", "whatsapp refuses this client version"
        elif isinstance(event, pb.ConnectFailure):
            number, name = _failure_reason(event)
            details = {"reason": number, "reasonName": name, "message": str(event.Message) or None}
            code, reason = "connect_failure", f"whatsapp refused the connection: {number or name or '?'}"
            if number in _LOGGED_OUT_REASONS:
                status = SessionStatus.LOGGED_OUT
        else:
            return
        log.warning("whatsmeow.ended_by_whatsapp", session=str(ref), code=code, **details)
        if status is SessionStatus.FAILED:
            self._emit(session, EngineFailure(ref, code, reason, details=details))
        self._status(session, status, reason=reason, code=code, details=details, final=True)
        self._halt_soon(session, "logged_out" if status is SessionStatus.LOGGED_OUT else "fatal")

    def _on_pair_status(self, session: _Session, event: Any) -> None:
        if event.Status == pb.PairStatus.SUCCESS:
            session.jid = jid_string(event.ID)
            self._cancel_qr_timer(session)
            phone = event.ID.User or None
            self._status(session, SessionStatus.CONNECTING, reason="paired", jid=session.jid, phone_number=phone)
        else:
            self._emit(session, EngineFailure(session.ref, "pair_failed", event.Error or "pairing failed", True))

    # -- pairing codes and QR expiry ------------------------------------------------------------------

    def _pair_phone(self, session: _Session, client: Any, phone_number: str) -> str:
        # whatsmeow wants the display "Browser (OS)" from a fixed list (pair-code.go:88-89): the deployment's
        # name reaches the phone through DeviceProps.os instead (_new_client)
        code = str(client.PairPhone(phone_number, True, ClientName.LINUX, ClientType.CHROME))
        session.pairing_code = code
        self._emit(session, PairingCode(session.ref, code, phone_number))
        self._status(session, SessionStatus.PAIRING)
        return code

    def _pair_in_background(self, session: _Session, phone_number: str) -> None:
        call = _GoCall()
        # nobody awaits this call: a timer gives it up, so that a hung PairPhone keeps no gate
        deadline = threading.Timer(self._call_timeout, call.give_up)
        deadline.daemon = True
        deadline.start()
        try:
            self._go_call(session, call, lambda client: self._pair_phone(session, client, phone_number))
        except EngineError as exc:
            self._emit(session, EngineFailure(session.ref, "pairing_code_failed", exc.message, exc.retryable))
        finally:
            deadline.cancel()

    def _arm_qr_timer(self, session: _Session, sequence: int, lifetime: float) -> None:
        self._cancel_qr_timer(session)
        assert self._loop is not None
        session.qr_timer = self._loop.call_later(lifetime, self._qr_expired, session, sequence)

    def _cancel_qr_timer(self, session: _Session) -> None:
        timer = session.qr_timer
        if timer is not None:
            session.qr_timer = None
            self._call_on_loop(timer.cancel)

    def _qr_expired(self, session: _Session, sequence: int) -> None:
        if session.qr_seq == sequence and sequence >= session.request.max_qr_codes and not session.connected:
            self._qr_timeout(session, f"{sequence} qr codes expired unscanned")

    def _qr_timeout(self, session: _Session, reason: str) -> None:
        if session.terminal or session.connected or session.jid:
            return
        self._status(session, SessionStatus.QR_TIMEOUT, reason=reason, code="qr_timeout", final=True)
        self._halt_soon(session, "qr_timeout")

    # -- calls into Go --------------------------------------------------------------------------------

    def _go_call(self, session: _Session, call: _GoCall, fn: Callable[[Any], T], halting: bool = False) -> T:
        """Call `fn(client)` under the shared gate, translating neonize's errors (on a thread of its own).

        A session being halted refuses calls, unless `halting` (reading what it drains before its Stop).
        """
        with call.shared():
            client = session.client
            if client is None or not session.go_live or (session.halt and not halting) or session.abandoned:
                raise NotConnected("the session has no live connection", session=str(session.ref))
            try:
                return fn(client)
            except NeonizeError as exc:
                raise _translate_error(exc, session.ref) from exc

    async def _go(self, session: _Session, fn: Callable[[Any], T], *, within: float | None = None) -> T:
        """Run `fn(client)` in Go within `within` seconds (`call_timeout`); a longer call is given up (retryable)."""
        call = _GoCall()
        seconds = self._call_timeout if within is None else within
        future = _in_thread(f"zapgate-wm-go-{session.ref}", self._go_call, session, call, fn)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), seconds)
        except TimeoutError:
            call.give_up()
            log.warning("whatsmeow.call_timed_out", session=str(session.ref), seconds=seconds)
            raise EngineError(f"whatsmeow did not answer within {seconds:g} s", session=str(session.ref)) from None

    def _go_now(self, session: _Session, fn: Callable[[Any], T], *, halting: bool = False) -> T:
        """Run `fn(client)` in Go from a thread that may block (Go's event thread), within `call_timeout`."""
        call = _GoCall()
        future: Future[T] = _in_thread(f"zapgate-wm-go-{session.ref}", self._go_call, session, call, fn, halting)
        try:
            return future.result(self._call_timeout)
        except TimeoutError:
            call.give_up()
            log.warning("whatsmeow.call_timed_out", session=str(session.ref), seconds=self._call_timeout)
            raise EngineError(
                f"whatsmeow did not answer within {self._call_timeout:g} s", session=str(session.ref)
            ) from None

    async def _finished_within(self, session: _Session, seconds: float) -> bool:
        finished = asyncio.wrap_future(session.finished)
        done, _ = await asyncio.wait({finished}, timeout=seconds)
        return bool(done)

    def _halt_soon(self, session: _Session, reason: str, *, drain: bool = False) -> Future[None]:
        """End the session's current attempt: Go's `Stop`, exclusively, on a thread of its own.

        With `drain` (a clean stop), the events neonize already buffered are handed over first.
        """
        if session.halt is None:
            session.halt = reason
        client = session.client

        def halt() -> None:
            if client is None or session.abandoned:
                return
            try:
                if drain and session.delivering:
                    self._drain(session, client)
                self._stop_client(session, client, final=False)
            except Exception as exc:  # nobody awaits this thread's result
                if not session.abandoned:  # an abandoned session refuses its Stop on purpose
                    log.warning("whatsmeow.halt_failed", session=str(session.ref), error=repr(exc))

        return _in_thread(f"zapgate-wm-halt-{session.ref}", halt)

    def _abandon(self, session: _Session) -> None:
        with self._lock:
            if self._sessions.get(session.ref) is session:
                del self._sessions[session.ref]
            if session.abandoned:
                return
            if not session.finished.done():
                self._abandoned.add(session)
        session.stop_requested.set()
        session.release_everything()
        self._cancel_qr_timer(session)
        log.warning("whatsmeow.session_abandoned", session=str(session.ref), abandoned_clients=self.abandoned_clients)

    def _reap(self, session: _Session) -> None:
        """Abandon a session that ended (final status) but whose Go client never returned (FetchMe spins)."""
        session.reaper = None
        if not session.finished.done() and not session.abandoned:
            log.warning("whatsmeow.ended_session_stuck", session=str(session.ref), seconds=self._stop_timeout)
            self._abandon(session)

    # -- events out -----------------------------------------------------------------------------------

    def _status(self, session: _Session, status: SessionStatus, *, final: bool = False, **data: Any) -> None:
        if session.terminal or session.abandoned:
            return
        session.terminal = final
        session.status = status
        self._emit(session, StatusChanged(session.ref, status, **data))
        if final:
            self._call_on_loop(self._arm_reaper, session)

    def _arm_reaper(self, session: _Session) -> None:
        assert self._loop is not None
        if session.reaper is None and not session.finished.done():
            session.reaper = self._loop.call_later(self._stop_timeout, self._reap, session)

    def _emit(self, session: _Session, event: EngineEvent) -> None:
        if session.abandoned:
            return
        self._call_on_loop(self._deliver, session, event)

    def _deliver(self, session: _Session, event: EngineEvent) -> None:
        if session.abandoned:
            return  # abandoned while the event waited for the loop
        try:
            self._on_event(event)
        except Exception as exc:  # one bad consumer must not stop the others' events
            log.error("whatsmeow.sink_failed", event_type=type(event).__name__, error=repr(exc), exc_info=exc)

    def _call_on_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            log.warning("whatsmeow.no_event_loop", call=getattr(fn, "__name__", "?"))
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed between the check and the call
            log.warning("whatsmeow.event_loop_closed", call=getattr(fn, "__name__", "?"))

    # -- helpers --------------------------------------------------------------------------------------

    def _bind_loop(self) -> None:
        if self._given_loop is None:
            self._loop = asyncio.get_running_loop()

    def _session(self, ref: SessionRef) -> _Session | None:
        with self._lock:
            return self._sessions.get(ref)

    def _hosted(self, ref: SessionRef) -> _Session:
        session = self._session(ref)
        if session is None:
            raise UnknownSession("this worker does not host the session", session=str(ref))
        return session


# whatsmeow's errors reach us as text only (neonize raises its exceptions with Go's err.Error()).
# No socket, or no login: the send waits for the reconnection
_NOT_CONNECTED = (
    "websocket not connected",  # ErrNotConnected, errors.go:22
    "websocket disconnected before",  # DisconnectedError, errors.go:259 (the socket dropped mid-request)
    "the store doesn't contain a device jid",  # ErrNotLoggedIn, errors.go:23
    "client is nil",  # ErrClientIsNil, errors.go:19 (Go holds no such client)
    "not logged in",  # no such text in whatsmeow or neonize today: kept for one that says so
)
# WhatsApp did not answer in time, or the request was cancelled: another attempt may go through
_TRANSIENT = (
    # ErrIQTimedOut, ErrMessageTimedOut (errors.go:21, 24); a send that timed out may have arrived all the same,
    # and a new attempt gets a new id from whatsmeow: the worker's retry policy decides
    "timed out",
    "context canceled",  # Go's context.Canceled (send.go:436: the request's context ended)
    "context deadline exceeded",  # Go's context.DeadlineExceeded
)
_NO_SUCH_RECIPIENT = (
    "no lid found",  # "no LID found for <jid> from server", send.go:344: WhatsApp gave no LID for the number
)
_RESTRICTED = ("account restricted", "reachout")  # not in whatsmeow's errors today: kept for a text that says so
_NOT_SENDABLE = (
    "can't send message to unknown server",  # ErrUnknownServer, errors.go:110
    "message recipient must be a user jid with no device part",  # ErrRecipientADJID, errors.go:111
    "sending to non-status broadcast lists is not yet supported",  # ErrBroadcastListUnsupported, errors.go:109
)
_SERVER_ERROR = re.compile(r"server returned error (\d+)")  # the send's ack carried an error code, send.go:451-452
_IQ_STATUS = re.compile(r"info query returned status (\d+)")  # IQError, errors.go:224
_REACHOUT_TIMELOCKED = 463  # WhatsApp's restriction on messaging new contacts (whatsmeow issue 1074, Baileys 2441)
_SMAX_INVALID = 479  # "invalid stanza" (client.go:309); comes and goes with session state (whatsmeow issue 690)
_RATE_OVERLIMIT = 429  # ErrIQRateOverLimit, errors.go:195


def _translate_error(exc: NeonizeError, ref: SessionRef) -> EngineError:
    """Map a neonize error to ours: NotConnected, a SendRejected kind (permanent), or a retryable EngineError."""
    text = str(exc)
    lowered = text.lower()
    session = str(ref)
    # a failure deep inside a send names its cause last ("failed to get user info ...: websocket not connected")
    if any(s in lowered for s in _NOT_CONNECTED):
        return NotConnected(f"whatsapp is not reachable: {text}", session=session)
    if any(s in lowered for s in _TRANSIENT):
        return EngineError(f"whatsapp did not answer in time: {text}", session=session)
    if any(s in lowered for s in _NO_SUCH_RECIPIENT):
        return RecipientUnknown(f"whatsapp knows no such recipient: {text}", session=session)
    if "not on whatsapp" in lowered:
        return NotOnWhatsApp(f"whatsapp has no account for the recipient: {text}", session=session)
    if any(s in lowered for s in _RESTRICTED):
        return Restricted(f"whatsapp restricted this account: {text}", session=session)
    if match := _SERVER_ERROR.search(lowered):
        return _server_error(int(match.group(1)), text, session)
    if match := _IQ_STATUS.search(lowered):
        return _iq_error(int(match.group(1)), text, session)
    if any(s in lowered for s in _NOT_SENDABLE):
        return SendRejected(f"whatsapp cannot send there: {text}", session=session)
    return EngineError(f"whatsmeow failed: {text}", session=session)


def _server_error(code: int, text: str, session: str) -> EngineError:
    """Map the error code WhatsApp acknowledged a send with."""
    if code == _REACHOUT_TIMELOCKED:
        return Restricted(f"whatsapp restricted messaging new contacts: {text}", session=session, error_code=code)
    if code == _SMAX_INVALID or code == _RATE_OVERLIMIT or code >= 500:
        return EngineError(f"whatsapp refused for now: {text}", session=session, error_code=code)
    if 400 <= code < 500:
        return SendRejected(f"whatsapp refused the message: {text}", session=session, error_code=code)
    return EngineError(f"whatsapp answered an error: {text}", session=session, error_code=code)


def _iq_error(code: int, text: str, session: str) -> EngineError:
    """Map the status of a query a send made first (devices, group members, LIDs)."""
    if code == 404:  # ErrIQNotFound "item-not-found", errors.go:189
        return RecipientUnknown(f"whatsapp knows no such recipient: {text}", session=session, error_code=code)
    if code == _RATE_OVERLIMIT or not 400 <= code < 500:
        return EngineError(f"whatsapp refused for now: {text}", session=session, error_code=code)
    return SendRejected(f"whatsapp refused the message: {text}", session=session, error_code=code)
