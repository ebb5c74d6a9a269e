"""The engine seam: one protocol every engine implements, and the events every engine emits.

An engine hosts many sessions in one worker process. It is told to start, stop, log out, send and look up;
it reports everything else as `EngineEvent`s, delivered in order, on the worker's event loop, through the
callback it was built with. Engines never touch the database: the worker stores what they report.
Vendor types (neonize protobufs, ...) never leave the engine's module; errors leave as `EngineError`s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from zapgate.domain.chats import ChatState, SeenPresence
from zapgate.domain.content import Content, Media, MessageKey, Quote
from zapgate.domain.groups import (
    GroupAction,
    GroupInfo,
    JoinRequest,
    ParticipantAction,
    ParticipantResult,
    RequestAction,
)
from zapgate.domain.records import MessageStatus
from zapgate.domain.sessions import SessionStatus
from zapgate.errors import ZapgateError


class StartMode(StrEnum):
    """How a session starts."""

    QR = "qr"  # a new pairing by QR code
    PAIRING_CODE = "pairing_code"  # a new pairing by a code typed on the phone (needs the phone number)
    RESTORE = "restore"  # an existing pairing, from the stored keys


@dataclass(frozen=True, slots=True)
class SessionRef:
    """Names one session across the whole gateway."""

    client_id: str
    session_id: str

    def __str__(self) -> str:
        return f"{self.client_id}/{self.session_id}"


@dataclass(frozen=True, slots=True)
class StartRequest:
    """Everything an engine needs to start a session."""

    ref: SessionRef
    mode: StartMode
    phone_number: str | None = None  # digits with country code; required for PAIRING_CODE
    jid: str | None = None  # the linked device's JID; required for RESTORE
    qr_timeout: float = 60.0  # seconds each QR code lives
    max_qr_codes: int = 5  # unscanned codes before the session ends as qr_timeout


# -- events -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QrCode:
    """A QR code to show: `code` is the raw string a phone scans."""

    ref: SessionRef
    code: str
    expires_at: datetime
    sequence: int  # 1 for the first code of this pairing, then 2, 3, ...


@dataclass(frozen=True, slots=True)
class PairingCode:
    """A code to type on the phone (WhatsApp > Linked devices > Link with phone number)."""

    ref: SessionRef
    code: str
    phone_number: str


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """The session moved to `status`; `jid`/`phone_number` name the linked account once known.

    `reason` is for people; `code` names it for programs (`stream_replaced`, `temporary_ban`,
    `client_outdated`, `connect_failure`, `keepalive_timeout`, `login_error`, ...) and `details` carries its
    data (a ban's code and expiry, a connect failure's reason number).
    """

    ref: SessionRef
    status: SessionStatus
    reason: str | None = None
    jid: str | None = None
    phone_number: str | None = None
    code: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    lid: str | None = None  # the linked account's LID, once known


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message that arrived for the session (or was sent from the linked phone itself, `from_me`)."""

    ref: SessionRef
    message_id: str  # WhatsApp's id of the message
    chat_jid: str  # the chat's phone JID (or group JID) when known, else its LID; `status@broadcast` for stories
    chat_lid: str | None  # the chat's LID when known
    sender_jid: str  # who wrote it (differs from chat_jid in groups): phone JID when known, else LID
    type: str  # "text" for text and extended text; else the kind ("image", "audio", ...)
    text: str  # the text, or a summary of what the message holds
    timestamp: datetime
    push_name: str | None = None
    is_group: bool = False
    from_me: bool = False  # sent by the linked account (from the phone, or another linked device)
    sender_lid: str | None = None  # the sender's LID when known
    verified_name: str | None = None  # the sender's verified business name, for a business account
    content: Content | None = None  # what it holds, typed (None: an engine that reports text only)
    quote: Quote | None = None  # the message it replies to
    mentions: tuple[str, ...] = ()  # JIDs it mentions
    # called once the message is stored: an engine that can hold it (not acknowledge it to WhatsApp,
    # or keep it in the sandbox's mailbox) until then gets it again after a crash instead of losing it
    ack: Callable[[], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Receipt:
    """Messages the session sent reached a new status (delivered, read, played)."""

    ref: SessionRef
    message_ids: tuple[str, ...]
    status: MessageStatus
    chat_jid: str
    timestamp: datetime
    ack: Callable[[], None] | None = field(default=None, compare=False, repr=False)  # as InboundMessage.ack
    sender_jid: str | None = None  # whose device answered: in groups the participant, else the chat's party


@dataclass(frozen=True, slots=True)
class EngineFailure:
    """Something went wrong that the user should hear about (the session's status may not change)."""

    ref: SessionRef
    code: str
    message: str
    retryable: bool = False
    details: Mapping[str, Any] = field(default_factory=dict)


class NoticeKind(StrEnum):
    """Things WhatsApp tells a session that are not messages, but that a user must not miss."""

    UNDECRYPTABLE = "undecryptable"  # a message arrived that could not be decrypted (WhatsApp may resend it)
    HISTORY_SYNC = "history_sync"  # the phone sent a chunk of chat history (type, progress, chats)
    KEEPALIVE_TIMEOUT = "keepalive_timeout"  # WhatsApp stopped answering keep-alives (the socket may be dead)
    KEEPALIVE_RESTORED = "keepalive_restored"  # keep-alives are answered again


@dataclass(frozen=True, slots=True)
class Notice:
    """A notice of `kind` for the session; `details` holds what it says (ids, counts, codes)."""

    ref: SessionRef
    kind: NoticeKind
    details: Mapping[str, Any] = field(default_factory=dict)
    timestamp: datetime | None = None


@dataclass(frozen=True, slots=True)
class MediaReuploaded:
    """The phone answered a request to upload an arrived file again (see `Engine.request_reupload`).

    `handle` is the new download handle (replacing the media's), or None with `error` when the phone no
    longer has the file.
    """

    ref: SessionRef
    message_id: str  # WhatsApp's id of the message holding the file
    handle: bytes | None = field(default=None, repr=False)
    error: str | None = None


# -- groups: events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupChanged:
    """Something changed in a group the session is (or was) in: one `action`, by `actor_jid` when known.

    `participants` are whom a participants action names (JIDs, phone JID when known); the setting fields
    carry the new value of the setting `action` names. `info` is the whole group when the engine has it
    (JOINED: the session created it, was added, joined by link).
    """

    ref: SessionRef
    group_jid: str
    action: GroupAction
    timestamp: datetime
    actor_jid: str | None = None
    participants: tuple[str, ...] = ()
    subject: str | None = None
    description: str | None = None
    picture_id: str | None = None
    announce: bool | None = None
    locked: bool | None = None
    join_approval: bool | None = None
    reason: str | None = None  # why a JOINED/LEFT happened: created, added, invite, approved, left, removed
    info: GroupInfo | None = None
    ack: Callable[[], None] | None = field(default=None, compare=False, repr=False)  # as InboundMessage.ack


# -- chats and presence (issue 14): ChatState and SeenPresence live in domain/chats.py -------------------


@dataclass(frozen=True, slots=True)
class ChatChanged:
    """The account's own phone (or another linked device) changed a chat's state: archived it, pinned it, ..."""

    ref: SessionRef
    chat_jid: str  # the chat's JID (a number's, a LID or a group's)
    state: ChatState
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class PresenceSeen:
    """A contact's presence: online or not (`chat_jid` None), or typing/recording/paused in a chat."""

    ref: SessionRef
    jid: str  # whose presence: a phone JID when known, else a LID
    presence: SeenPresence
    chat_jid: str | None = None  # in which chat (a group's JID, or the contact's own for a one-to-one chat)
    last_seen: datetime | None = None  # with UNAVAILABLE, when it shares it
    lid: str | None = None


# -- contacts (issue 14) ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlocklistChanged:
    """The account's blocklist changed on its phone (or another linked device): JIDs blocked and unblocked.

    `complete`: `blocked` is the whole blocklist now, and whoever is not on it is unblocked (WhatsApp said only
    that the list changed, and the engine asked for all of it).
    """

    ref: SessionRef
    blocked: tuple[str, ...] = ()
    unblocked: tuple[str, ...] = ()
    complete: bool = False


@dataclass(frozen=True, slots=True)
class ContactPictureChanged:
    """Someone (a person, not a group: see GroupChanged) changed or removed their profile picture."""

    ref: SessionRef
    jid: str  # whose: a phone JID when known, else a LID
    removed: bool
    timestamp: datetime
    lid: str | None = None
    picture_id: str | None = None  # the new picture's id, when the engine tells it


EngineEvent = (
    QrCode
    | PairingCode
    | StatusChanged
    | InboundMessage
    | Receipt
    | EngineFailure
    | Notice
    | MediaReuploaded
    | GroupChanged
    | ChatChanged
    | PresenceSeen
    | BlocklistChanged
    | ContactPictureChanged
)
EventSink = Callable[[EngineEvent], None]


# -- answers ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendResult:
    """A message WhatsApp accepted, under `message_id`: WhatsApp's id, which its receipts will name.

    It may differ from the id the worker asked for (whatsmeow through neonize 0.5.2 makes its own); the
    worker keeps both, and ours stays the public one.
    """

    message_id: str
    timestamp: datetime
    to: str | None = None  # the JID it actually went to, when the engine resolved another one


@dataclass(frozen=True, slots=True)
class JidLookup:
    """What WhatsApp says about a phone number: is it there, and under which JID."""

    phone_number: str
    on_whatsapp: bool
    jid: str | None = None
    lid: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProfilePicture:
    """Someone's profile picture as WhatsApp shows it to the session: a URL (None: no picture, or not shown to
    this account) that works until `expires_at` (when the engine knows; WhatsApp's links expire)."""

    url: str | None
    picture_id: str | None = None
    expires_at: datetime | None = None


# -- errors -------------------------------------------------------------------------------------------


class EngineError(ZapgateError):
    """An engine could not do what it was asked."""

    code = "engine_error"
    retryable = True


class NotConnected(EngineError):
    """The session has no live connection right now (a send waits for it)."""

    code = "session_not_connected"


class SendRejected(EngineError):
    """WhatsApp refused this message; sending it again will not help."""

    code = "send_rejected"
    retryable = False


class NotOnWhatsApp(SendRejected):
    """The recipient has no WhatsApp account (WhatsApp's own lookup said so)."""

    code = "not_on_whatsapp"


class RecipientUnknown(SendRejected):
    """WhatsApp knows no such user, or no LID for it ("no LID found"): permanent for this message."""

    code = "recipient_unknown"


class Restricted(SendRejected):
    """WhatsApp restricted this account's sending (error 463, an account restriction): `details` say how."""

    code = "restricted"


class MediaGone(EngineError):
    """WhatsApp's media servers no longer have this file (expired, 403/404/410): ask the phone to upload it again."""

    code = "media_gone"
    retryable = False


class StopTimedOut(EngineError):
    """The engine could not stop a session in time; its client was abandoned (see `Engine.abandon`)."""

    code = "stop_timed_out"
    retryable = False


class Presence(StrEnum):
    """What a session shows in a chat while it prepares a message."""

    COMPOSING = "composing"  # typing…
    RECORDING = "recording"  # recording audio…
    PAUSED = "paused"  # stopped typing


class UnknownSession(EngineError):
    """This engine does not host that session."""

    code = "session_not_hosted"
    retryable = False


# -- groups: errors -----------------------------------------------------------------------------------


class GroupNotFound(EngineError):
    """No such group, or the session is not in it (WhatsApp answers both alike: 404 or 403 item-not-found)."""

    code = "group_not_found"
    retryable = False


class GroupForbidden(EngineError):
    """The session's role in the group does not allow this (not an admin; a locked or announce group)."""

    code = "group_forbidden"
    retryable = False


class InviteInvalid(EngineError):
    """The invite link or code names no group (revoked, or never given)."""

    code = "invite_invalid"
    retryable = False


class GroupFull(EngineError):
    """The group has as many participants as WhatsApp allows."""

    code = "group_full"
    retryable = False


# -- the protocol -------------------------------------------------------------------------------------


class Engine(Protocol):
    """What every engine does. One instance serves many sessions in one worker."""

    name: ClassVar[str]

    async def start(self, request: StartRequest) -> None:
        """Begin connecting the session; progress (QR codes, status changes) arrives as events."""

    async def stop(self, ref: SessionRef) -> None:
        """Disconnect the session, keeping its keys (it can be restored). No-op if not hosted.

        Emits no status: the caller knows why it stops the session (request, timeout, shutdown) and records it.
        """

    async def logout(self, ref: SessionRef) -> None:
        """Unlink the session from the phone and delete its keys. Final."""

    async def send_text(self, ref: SessionRef, to: str, text: str, message_id: str) -> SendResult:
        """Send `text` to JID `to`, asking for `message_id`; the result names the id WhatsApp used.

        Raises NotConnected (try again after the reconnection), SendRejected and its kinds (permanent for
        this message) or EngineError (`retryable` says whether another attempt may help).
        """

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
        """Send `content` of any kind to JID `to` (a reply to `quote`, mentioning `mentions`), as `send_text` does.

        A `Media` names its prepared file by `path`; reactions, edits, revokes and votes name their message by
        its key. Raises as `send_text`, and SendRejected for a kind this engine cannot send.
        """

    async def download(self, ref: SessionRef, media: Media, dest: str) -> None:
        """Write the file of an arrived `media` (by its `handle`) to the path `dest`.

        Raises MediaGone when WhatsApp no longer has it (then `request_reupload`), NotConnected or EngineError.
        """

    async def request_reupload(self, ref: SessionRef, chat_jid: str, key: MessageKey, media: Media) -> None:
        """Ask the phone to upload an arrived file again; the answer comes as a MediaReuploaded event."""

    async def mark_read(self, ref: SessionRef, chat_jid: str, keys: tuple[MessageKey, ...]) -> None:
        """Tell the senders that the messages `keys` of the chat `chat_jid` were read (blue ticks)."""

    async def send_presence(self, ref: SessionRef, to: str, presence: Presence) -> None:
        """Show `presence` (typing, recording, paused) in the chat with JID `to`."""

    async def resolve(self, ref: SessionRef, phone_number: str) -> JidLookup:
        """Ask WhatsApp whether `phone_number` (digits with country code) is on it and under which JIDs."""

    async def request_pairing_code(self, ref: SessionRef, phone_number: str) -> str:
        """Request a pairing code for `phone_number` (also emitted as a PairingCode event)."""

    async def profile_picture(self, ref: SessionRef, jid: str) -> ProfilePicture:
        """Ask WhatsApp for the profile picture of `jid` (a person's phone JID or LID, or a group's JID)."""

    async def set_blocked(self, ref: SessionRef, jid: str, blocked: bool) -> None:
        """Block `jid` (their messages no longer reach the session) or unblock it, on the account's blocklist."""

    # -- chats and presence (issue 14) -----------------------------------------------------------------

    async def change_chat(self, ref: SessionRef, chat_jid: str, state: ChatState) -> None:
        """Archive, pin or mute the chat `chat_jid` on the account (WhatsApp's app state), as `state` says.

        Raises NotSupported when the engine cannot make that change.
        """

    async def subscribe_presence(self, ref: SessionRef, jid: str) -> None:
        """Ask to hear `jid`'s presence (online, last seen, typing): it comes as PresenceSeen events."""

    async def set_available(self, ref: SessionRef, available: bool) -> None:
        """Show the account online (available) or offline to the contacts subscribed to it."""

    def hosts(self, ref: SessionRef) -> bool:
        """Return whether this engine currently hosts the session."""

    def abandon(self, ref: SessionRef) -> None:
        """Forget a session whose stop did not finish in time: nothing more of it is reported or sent.

        What the engine cannot reclaim (a Go client stuck in a call) stays behind; the worker counts it.
        """

    async def close(self) -> None:
        """Stop every session (keeping keys) and release the engine's resources."""

    # -- groups -----------------------------------------------------------------------------------------
    # Each raises NotConnected, GroupNotFound, GroupForbidden (WhatsApp's rules on who may do what) or
    # EngineError; changes are also reported to every member (the session included) as GroupChanged events.

    async def list_groups(self, ref: SessionRef) -> list[GroupInfo]:
        """Return the groups the session is in."""

    async def create_group(
        self, ref: SessionRef, subject: str, participants: tuple[str, ...]
    ) -> tuple[GroupInfo, tuple[ParticipantResult, ...]]:
        """Create a group with the session as its creator (super admin); return it and each participant's outcome."""

    async def group_info(self, ref: SessionRef, group: str) -> GroupInfo:
        """Return what the group `group` (its JID) is now."""

    async def set_group_subject(self, ref: SessionRef, group: str, subject: str) -> None:
        """Give the group a new subject (its name)."""

    async def set_group_description(self, ref: SessionRef, group: str, description: str) -> None:
        """Give the group a new description ("" removes it)."""

    async def set_group_picture(self, ref: SessionRef, group: str, image: bytes) -> str:
        """Give the group a new picture (a JPEG); return WhatsApp's id of it."""

    async def set_group_announce(self, ref: SessionRef, group: str, announce: bool) -> None:
        """Let only admins send (True), or everyone (False)."""

    async def set_group_locked(self, ref: SessionRef, group: str, locked: bool) -> None:
        """Let only admins edit the group's info (True), or everyone (False)."""

    async def update_group_participants(
        self, ref: SessionRef, group: str, action: ParticipantAction, participants: tuple[str, ...]
    ) -> tuple[ParticipantResult, ...]:
        """Add, remove, promote or demote participants (JIDs); return each one's outcome, in order."""

    async def group_invite_link(self, ref: SessionRef, group: str, *, reset: bool = False) -> str:
        """Return the group's invite link; `reset` revokes the current one and returns its replacement."""

    async def set_group_join_approval(self, ref: SessionRef, group: str, on: bool) -> None:
        """Let people join by link only with an admin's approval (True), or at once (False: pending requests are
        approved, as WhatsApp does)."""

    async def group_requests(self, ref: SessionRef, group: str) -> list[JoinRequest]:
        """Return the requests to join the group that wait for an admin's answer (admins only)."""

    async def answer_group_requests(
        self, ref: SessionRef, group: str, action: RequestAction, participants: tuple[str, ...]
    ) -> tuple[ParticipantResult, ...]:
        """Approve or reject the join requests of `participants` (JIDs); return each one's outcome, in order."""

    async def join_group(self, ref: SessionRef, code: str) -> str:
        """Join the group of invite code `code` (or ask to, when it approves new participants); return its JID.

        Raises InviteInvalid, GroupFull."""

    async def join_group_with_invite(
        self, ref: SessionRef, group: str, inviter: str, code: str, expiration: int | None
    ) -> str:
        """Join `group` by an invite message from `inviter` (its code, its expiry in Unix seconds); return the JID.

        Raises InviteInvalid (revoked, expired, no such group), GroupFull."""

    async def leave_group(self, ref: SessionRef, group: str) -> None:
        """Leave the group."""
