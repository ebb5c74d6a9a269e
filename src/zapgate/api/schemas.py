"""Request and response bodies of the HTTP API (camelCase on the wire, as in the seed)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from zapgate.domain.events import EventType
from zapgate.domain.ids import CLIENT_ID_PATTERN, SESSION_ID_PATTERN
from zapgate.domain.phones import MAX_TEXT_LENGTH
from zapgate.errors import InvalidRequest


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True)


class _Request(_Body):
    model_config = ConfigDict(extra="forbid")


class FieldError(_Body):
    """One invalid field of a request."""

    field: str = Field(examples=["clientId"])
    message: str = Field(examples=["String should match pattern '^[a-z0-9][a-z0-9_]{0,47}$'"])


class Problem(_Body):
    """An error, as problem+json (RFC 9457)."""

    type: str = Field(examples=["https://zapgate.dev/problems/client_exists"])
    title: str = Field(examples=["Conflict"])
    status: int = Field(examples=[409])
    detail: str = Field(examples=["client 'acme' already exists"])
    code: str = Field(examples=["client_exists"])
    errors: list[FieldError] | None = None
    quota: str | None = Field(None, description="quota_exceeded: the quota reached (sessions, webhooks).")
    limit: int | None = Field(None, description="quota_exceeded: how many the client may hold.")
    request_id: str | None = Field(
        None,
        examples=["3f0c1e2a9b8d4c7e8f6a5b4c3d2e1f00"],
        description="The request's id (as the `X-Request-Id` header): the server's log lines of it carry it too.",
    )


class CreateClientRequest(_Request):
    """A new client (tenant)."""

    client_id: str = Field(
        pattern=CLIENT_ID_PATTERN,
        max_length=48,
        description="1-48 characters of a-z, 0-9 and _, starting with a letter or digit.",
        examples=["acme"],
    )


class ClientOut(_Body):
    """A registered client; keys are listed by their first characters only."""

    client_id: str = Field(examples=["acme"])
    created_at: datetime
    key_prefixes: list[str] = Field(examples=[["zg_AbC1234"]])


class ClientList(_Body):
    """Every registered client."""

    clients: list[ClientOut]


class IssuedKeyOut(_Body):
    """A client and an API key that is shown this once: store it now, it cannot be read again."""

    client_id: str = Field(examples=["acme"])
    created_at: datetime
    api_key: str = Field(examples=["zg_4bT0m3Qh6kM1yX0p9Lr2c8VwZs5NdEjUaFiKoG7HtY"])
    key_prefix: str = Field(examples=["zg_4bT0m3Q"])


class QuotaValues(_Body):
    """A client's quotas: how many sessions and webhooks it may hold, and the engines it may use."""

    max_sessions: int | None = Field(examples=[100])
    max_webhooks: int | None = Field(examples=[100])
    engines: list[str] | None = Field(examples=[["whatsmeow", "sandbox"]])


class QuotaUsage(_Body):
    """What a client holds now."""

    sessions: int = Field(examples=[3])
    webhooks: int = Field(examples=[1])


class QuotasOut(_Body):
    """A client's quotas as they apply, its own overrides (null: the deployment's default), and its usage."""

    client_id: str = Field(examples=["acme"])
    quotas: QuotaValues
    overrides: QuotaValues
    usage: QuotaUsage


class UpdateQuotasRequest(_Request):
    """The quotas to change for one client; null returns a quota to the deployment's default."""

    max_sessions: int | None = Field(
        None, ge=0, le=1_000_000, description="Sessions it may hold (0: none new).", examples=[20]
    )
    max_webhooks: int | None = Field(None, ge=0, le=1_000_000, description="Webhooks it may hold.", examples=[10])
    engines: list[str] | None = Field(
        None,
        min_length=1,
        max_length=10,
        description="Engines it may use, among those this deployment offers (ZAPGATE_ENGINES); null: every one.",
        examples=[["whatsmeow"]],
    )


class Health(_Body):
    """Liveness: the process answers."""

    status: str = Field(examples=["ok"])


class Readiness(_Body):
    """Readiness: what was checked and what failed."""

    status: str = Field(examples=["ready"])
    checks: dict[str, Any] = Field(examples=[{"database": "ok"}])


class ClientHealthOut(_Body):
    """The seed's `checkSingleConnection` for one client."""

    client_id: str = Field(examples=["acme"])
    schema_name: str = Field(examples=["client_acme"])
    healthy: bool
    latency_ms: float = Field(examples=[1.3])
    revision: str | None = Field(examples=["0002"])
    error: str | None = Field(default=None, examples=[None])


class CreateSessionRequest(_Request):
    """A new session (a WhatsApp number to connect)."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN, description="1-64 of A-Z a-z 0-9 _ -", examples=["user123"])
    engine: Literal["whatsmeow", "sandbox"] | None = Field(
        None, description="`whatsmeow` (real WhatsApp) or `sandbox`; default ZAPGATE_DEFAULT_ENGINE."
    )
    phone_number: str | None = Field(
        None,
        max_length=32,
        description="Pair by a code for this number (with country code) instead of by QR code.",
        examples=["5511999999999"],
    )


class SessionOut(_Body):
    """A session: its status, how to pair it, the linked number."""

    session_id: str = Field(examples=["user123"])
    status: str = Field(examples=["qr"])
    engine: str = Field(examples=["sandbox"])
    sandbox: bool = Field(description="True on the simulated network: no real WhatsApp behind it.")
    phone_number: str | None = Field(examples=["5511999999999"])
    jid: str | None = Field(examples=["5511999999999:7@s.whatsapp.net"])
    qr_code: str | None = Field(description="The current QR code's raw string, while pairing by QR.")
    qr_expires_at: datetime | None
    pairing_code: str | None = Field(examples=["ABCD-EFGH"])
    last_error: str | None
    status_code: str | None = Field(
        None, examples=["temporary_ban"], description="Why it is in its status, for programs (null when fine)."
    )
    status_details: dict[str, Any] | None = Field(
        None, examples=[{"banCode": 101, "expiresAt": "2026-12-01T10:00:00+00:00"}], description="That reason's data."
    )
    desired: str | None = Field(None, description="What was asked of it: running, stopped or logged_out.")
    created_at: datetime
    updated_at: datetime


class SessionList(_Body):
    """The client's sessions."""

    sessions: list[SessionOut]


class SendMessageRequest(_Request):
    """A text to send (the seed's body)."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN, examples=["user123"])
    to: str = Field(
        min_length=1,
        max_length=64,
        description="A phone number with country code (spaces, +, -, . and parentheses are ignored) or a JID.",
        examples=["5511999999999"],
    )
    message: str = Field(min_length=1, max_length=MAX_TEXT_LENGTH, examples=["Olá! Como posso ajudar?"])


class _Part(BaseModel):
    """An object of the WhatsApp Cloud API's message shape: snake_case names, checked by zapgate's rules."""

    model_config = ConfigDict(extra="allow")


class TextPart(_Part):
    body: str = Field(description="1 to 4096 characters.", examples=["Olá! Como posso ajudar?"])
    preview_url: bool = False


class MediaPart(_Part):
    id: str | None = Field(None, description="A file uploaded before (`POST /whatsapp/media`).")
    link: str | None = Field(None, description="An http(s) address zapgate fetches (as webhooks, no private ones).")
    caption: str | None = Field(None, description="Images, videos and documents: up to 1024 characters.")
    filename: str | None = Field(None, description="Documents: the name the recipient sees.")
    voice: bool = Field(False, description="Audio: send as a voice note (converted to Ogg/Opus).")
    view_once: bool = Field(False, description="Images, videos and voice notes: shown once.")


class LocationPart(_Part):
    latitude: float = Field(ge=-90, le=90, examples=[-23.5505])
    longitude: float = Field(ge=-180, le=180, examples=[-46.6333])
    name: str | None = None
    address: str | None = None
    url: str | None = None


class ContactName(_Part):
    formatted_name: str = Field(examples=["Ana Souza"])


class ContactPhonePart(_Part):
    phone: str = Field(examples=["+55 11 91234-5678"])
    wa_id: str | None = Field(None, examples=["5511912345678"])
    type: str | None = Field(None, examples=["CELL"])


class ContactPart(_Part):
    name: ContactName
    phones: list[ContactPhonePart] = []
    vcard: str | None = Field(None, description="A vCard to send as is (else one is made from name and phones).")


class ReactionPart(_Part):
    message_id: str = Field(description="The message reacted to (its `messageId`).")
    emoji: str = Field(description='One emoji; "" removes the session\'s reaction.', examples=["👍"])


class PollPart(_Part):
    question: str = Field(examples=["Which day suits you?"])
    options: list[str] = Field(description="2 to 12 different options.", examples=[["Monday", "Tuesday"]])
    selectable_count: int = Field(1, description="How many options a voter may choose.")


class GroupInvitePart(_Part):
    group_id: str = Field(
        description="The group to invite to (its JID or the part before @): the session must be one of its admins.",
        examples=["120363012345678901@g.us"],
    )
    caption: str | None = Field(None, description="Up to 1024 characters shown with the invitation.")


class ContextPart(_Part):
    message_id: str = Field(description="The message this one replies to (its `messageId`).")


MESSAGE_TYPES = (
    "text",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "location",
    "contacts",
    "reaction",
    "poll",
    "group_invite",
)


class MessageRequest(BaseModel):
    """A message of any kind to send, in the WhatsApp Cloud API's shape (`type` and the object of that type)."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True)

    session_id: str = Field(alias="sessionId", pattern=SESSION_ID_PATTERN, examples=["user123"])
    to: str = Field(
        min_length=1,
        max_length=64,
        description="A phone number with country code, a JID (a group's too) or a LID.",
        examples=["5511999999999"],
    )
    type: str = Field("text", description="One of: " + ", ".join(MESSAGE_TYPES) + ".", examples=["text"])
    text: TextPart | None = None
    image: MediaPart | None = None
    video: MediaPart | None = None
    audio: MediaPart | None = None
    document: MediaPart | None = None
    sticker: MediaPart | None = None
    location: LocationPart | None = None
    contacts: list[ContactPart] | None = None
    reaction: ReactionPart | None = None
    poll: PollPart | None = None
    group_invite: GroupInvitePart | None = Field(
        None, description="An invitation to a group (its current code, subject and 3 days' expiry are added)."
    )
    context: ContextPart | None = Field(None, description="Makes the message a reply to another.")
    mentions: list[str] | None = Field(None, description="Phone numbers or JIDs mentioned (groups).")
    messaging_product: str | None = Field(None, description="Ignored (the Cloud API's `whatsapp`).")
    recipient_type: str | None = Field(None, description="Ignored (the Cloud API's `individual`).")


class EditMessageRequest(_Request):
    """A new text (or caption) for a message the session sent, within WhatsApp's 15 minutes."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN, examples=["user123"])
    text: str = Field(min_length=1, max_length=MAX_TEXT_LENGTH, examples=["Olá! (corrigido)"])


class PresenceRequest(_Request):
    """What the session shows in a chat: typing (composing), recording audio, or stopped (paused)."""

    to: str = Field(min_length=1, max_length=64, description="A phone number, a JID or a group's JID.")
    presence: Literal["composing", "recording", "paused"] = Field(examples=["composing"])


class PresenceOut(_Body):
    """The presence shown."""

    session_id: str
    to: str = Field(description="The chat's JID.")
    presence: str


class ReadRequest(_Request):
    """Mark a chat's received messages read (blue ticks for the sender): all not read yet, or those named."""

    chat: str = Field(min_length=1, max_length=64, description="The chat: a phone number or a JID.")
    message_ids: list[str] | None = Field(None, min_length=1, max_length=500)


class ReadOut(_Body):
    """The messages marked read now (those read before are left out)."""

    session_id: str
    read: list[str]


class NumberCheckOut(_Body):
    """What WhatsApp says about one number: on it or not, under which JID and LID."""

    input: str = Field(description="The number as given.")
    number: str = Field(description="Its digits, with the country code.")
    on_whats_app: bool = Field(alias="onWhatsApp")
    jid: str | None = Field(None, description="WhatsApp's own JID for it (Brazil's ninth digit as WhatsApp has it).")
    lid: str | None = None
    contact_id: str | None = Field(
        None, description="The session's contact for it (made or merged by this check); null when not on WhatsApp."
    )


class NumberCheckList(_Body):
    """WhatsApp's answers about numbers, in the order asked."""

    session_id: str
    numbers: list[NumberCheckOut]


class MediaOut(BaseModel):
    """A stored file: what it is, and a signed link to its bytes that needs no API key until `url_expires_at`."""

    id: str
    status: Literal["pending", "stored", "failed"]
    mime_type: str = Field(examples=["image/jpeg"])
    size: int | None = Field(None, description="Bytes.")
    sha256: str | None = Field(None, description="Of the bytes, hex.")
    width: int | None = None
    height: int | None = None
    duration: float | None = Field(None, description="Seconds (audio, video).")
    filename: str | None = None
    error: str | None = Field(None, description="Why it failed (status failed).")
    url: str = Field(description="A signed link to the bytes (GET, no API key).")
    url_expires_at: datetime


class MessageAccepted(_Body):
    """A message accepted for sending: it is stored and will go out."""

    message_id: str = Field(examples=["3EB0C431C26A1916E2A3A5"])
    session_id: str = Field(examples=["user123"])
    status: str = Field(examples=["pending"])
    timestamp: datetime


class QrOut(_Body):
    """The session's current QR code: scan it with WhatsApp > Linked devices."""

    session_id: str = Field(examples=["user123"])
    qr: str = Field(description="The raw string the QR code encodes.")
    qr_data_url: str = Field(description="The QR code as a PNG data URL (for an <img src>).")
    expires_at: datetime | None


class PairingCodeRequest(_Request):
    """The number to pair by code."""

    phone_number: str = Field(min_length=1, max_length=32, examples=["5511999999999"])


class ScanRequest(_Request):
    """The simulated phone that scans (sandbox)."""

    phone_number: str = Field(min_length=1, max_length=32, examples=["5511999990001"])


class EnterCodeRequest(_Request):
    """The pairing code the simulated phone types (sandbox)."""

    code: str = Field(min_length=1, max_length=16, examples=["ABCD-EFGH"])


class Accepted(_Body):
    """The request was taken; its effect arrives as events."""

    accepted: bool = True


_KIND_OBJECT = "The message of this `type`, as in the send body (snake_case inside, see the route)."


# the kinds a simulated phone can send (`type` of a sandbox injection), each with its object under its name
InboundKind = Literal[
    "text",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "location",
    "contacts",
    "reaction",
    "poll",
    "poll_vote",
    "edit",
    "revoke",
    "group_invite",
]
INBOUND_KINDS: tuple[str, ...] = get_args(InboundKind)


class InboundAppState(_Request):
    """A change the session's own phone made to a chat (WhatsApp's app state)."""

    archived: bool | None = None
    pinned: bool | None = None
    muted: bool | None = None
    muted_until: datetime | None = Field(None, description="With muted: until when (none: for ever).")
    read: bool | None = Field(None, description="true: the chat was read on the phone; false: marked unread.")

    def mail(self) -> dict[str, Any]:
        """The fields of the sandbox's app_state mail."""
        fields: dict[str, Any] = {
            name: value
            for name in ("archived", "pinned", "muted", "read")
            if (value := getattr(self, name)) is not None
        }
        if not fields:
            raise InvalidRequest("appState: at least one of archived, pinned, muted, read", field="appState")
        if self.muted_until is not None:
            if not self.muted:
                raise InvalidRequest("appState.mutedUntil: only with muted true", field="appState.mutedUntil")
            fields["muted_until"] = self.muted_until.isoformat()
        return fields


class InboundRequest(_Request):
    """A message from any number to a sandbox session: in a chat, a group or the stories; or a notice."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN, examples=["user123"])
    from_number: str = Field(
        alias="from",
        min_length=1,
        max_length=32,
        examples=["447700900123"],
        description="The sender's phone number, or its LID (`digits@lid`) for a sender known by LID only.",
    )
    message: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_TEXT_LENGTH,
        examples=["Hello from the sandbox"],
        description="A text message; or give `type` and its object (or `notice`).",
    )
    from_me: bool = Field(
        False, description="Written on the session's own phone, in the chat with `from` (a message it sent)."
    )
    from_lid: str | None = Field(
        None, min_length=1, max_length=32, examples=["123456789012345@lid"], description="The LID of `from`."
    )
    group: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        examples=["120363012345678901@g.us"],
        description="Written in this group (by `from`).",
    )
    story: bool = Field(False, description="A story (status@broadcast) that `from` posted.")
    push_name: str | None = Field(None, min_length=1, max_length=100, description="The sender's profile name.")
    business_name: str | None = Field(
        None, min_length=1, max_length=100, description="The sender's verified business name (a business account)."
    )
    notice: Literal["undecryptable", "history_sync"] | None = Field(
        None,
        description="Deliver this notice instead: a message from `from` that could not be decrypted, or a "
        "chunk of chat history from the phone.",
    )
    type: InboundKind | None = Field(
        None, description="The kind of message (instead of `message`); its object goes under this name."
    )
    text: dict[str, Any] | None = Field(None, description=_KIND_OBJECT, examples=[{"body": "Hi!"}])
    image: dict[str, Any] | None = Field(
        None, description=_KIND_OBJECT, examples=[{"data": "iVBORw0KGgo...", "mime_type": "image/png", "caption": "x"}]
    )
    video: dict[str, Any] | None = Field(None, description=_KIND_OBJECT)
    audio: dict[str, Any] | None = Field(None, description=_KIND_OBJECT)
    document: dict[str, Any] | None = Field(None, description=_KIND_OBJECT)
    sticker: dict[str, Any] | None = Field(None, description=_KIND_OBJECT)
    location: dict[str, Any] | None = Field(
        None, description=_KIND_OBJECT, examples=[{"latitude": -23.55, "longitude": -46.63, "name": "Sé"}]
    )
    contacts: list[Any] | None = Field(None, description=_KIND_OBJECT)
    reaction: dict[str, Any] | None = Field(
        None, description=_KIND_OBJECT, examples=[{"message_id": "3EB0C767D26A1A6D4E2B", "emoji": "👍"}]
    )
    poll: dict[str, Any] | None = Field(
        None, description=_KIND_OBJECT, examples=[{"question": "Lunch?", "options": ["pizza", "sushi"]}]
    )
    poll_vote: dict[str, Any] | None = Field(
        None,
        alias="poll_vote",
        description=_KIND_OBJECT,
        examples=[{"message_id": "3EB0C767D26A1A6D4E2B", "selected": ["sushi"]}],
    )
    edit: dict[str, Any] | None = Field(
        None, description=_KIND_OBJECT, examples=[{"message_id": "3EB0C767D26A1A6D4E2B", "text": "fixed"}]
    )
    revoke: dict[str, Any] | None = Field(
        None, description=_KIND_OBJECT, examples=[{"message_id": "3EB0C767D26A1A6D4E2B"}]
    )
    group_invite: dict[str, Any] | None = Field(
        None,
        alias="group_invite",
        description=_KIND_OBJECT,
        examples=[{"group_id": "120363012345678901@g.us", "code": "AbCdEfGhIjKlMnOpQrStUv", "subject": "Team"}],
    )
    context: dict[str, Any] | None = Field(
        None, description='A reply: `{"message_id": ...}` names the message it answers.'
    )
    mentions: list[Any] | None = Field(None, description="Phone numbers or JIDs the message mentions.")
    # chats and presence (issue 14)
    app_state: InboundAppState | None = Field(
        None,
        description="Instead of a message: the session's phone changed its chat with `from` (or `group`): "
        "archived, pinned, muted (until `mutedUntil`, for ever without), read (or marked unread).",
    )
    presence: Literal["available", "unavailable", "composing", "recording", "paused"] | None = Field(
        None,
        description="Instead of a message: `from` shows this presence: online or offline (with `lastSeen`), or "
        "typing, recording or paused in its chat with the session (or in `group`).",
    )
    last_seen: datetime | None = Field(None, description="With presence unavailable: when `from` was last online.")
    # contacts (issue 14)
    blocked: bool | None = Field(
        None,
        description="Instead of a message: the session's phone blocked `from` (true) or unblocked it (false): "
        "a contact-update event follows.",
    )
    picture: Literal["changed", "removed"] | None = Field(
        None,
        description="Instead of a message: `from` changed its profile picture, or removed it: a contact-update "
        "event follows, and the contact shows the new one.",
    )

    def message_part(self) -> dict[str, Any] | None:
        """The message in the send body's shape (`type`, its object, `context`, `mentions`) if `type` is given,
        or if `message` replies or mentions (a text); None for a plain `message`."""
        kind = self.type
        for name in INBOUND_KINDS:
            if name != kind and getattr(self, name) is not None:
                raise InvalidRequest(f"{name}: only the object of `type` is given ({kind or 'no type'})", field=name)
        if kind is None:
            if self.context is None and self.mentions is None:
                return None
            if self.message is None:
                raise InvalidRequest("type: the kind of message that replies or mentions is required", field="type")
            return {"type": "text", "text": {"body": self.message}, "context": self.context, "mentions": self.mentions}
        return {"type": kind, kind: getattr(self, kind), "context": self.context, "mentions": self.mentions}


class FaultRequest(_Request):
    """A fault to inject into a sandbox session."""

    fault: Literal[
        "drop_connection",
        "logout",
        "reject_next_send",
        "restrict",
        "fail_transient",
        "expire_media",
        "lose_media",
        "hold_reads",
    ] = Field(
        description="`drop_connection` (it reconnects), `logout` (from the phone), `reject_next_send`, `restrict` "
        "(the next send is refused as from a restricted account, code 463), `fail_transient` (the next `count` "
        "sends fail with a retryable error), `expire_media` (the media the session received so far expire: "
        "downloads fail until the phone uploads them again), `lose_media` (the phone lost them too), "
        "`hold_reads` (the phone stops reading what arrives at once: senders get `read` when the chat is marked read)."
    )
    count: int | None = Field(None, ge=1, le=100, description="Sends that `fail_transient` fails (default 1).")


class InboundAccepted(_Body):
    """An injected message, on its way to the session."""

    message_id: str
    session_id: str


class ContactOut(_Body):
    """A chat partner of a session: a person (one contact, by phone-number JID and LID together) or a group.

    `to` of a send takes its `id`.
    """

    id: str
    session_id: str = Field(examples=["user123"])
    phone_number: str = Field(
        examples=["5511999999999"],
        description="Its key: the number (once its phone JID is known), else its LID, or the JID of a group.",
    )
    name: str | None = Field(examples=["Maria"])
    profile_pic: str | None = Field(None, description="The profile picture's URL, as `pictureUrl` (the seed's name).")
    is_group: bool = False
    jid: str | None = Field(
        None, examples=["5511999999999@s.whatsapp.net"], description="Its phone-number JID (a group's JID)."
    )
    lid: str | None = Field(None, examples=["123456789012345@lid"], description="Its LID, once WhatsApp named it.")
    push_name: str | None = Field(None, description="The name the person set in WhatsApp (their last message's).")
    business_name: str | None = Field(None, description="A business account's verified name.")
    picture_url: str | None = Field(None, description="Its profile picture (null: none, or not shown to the session).")
    picture_expires_at: datetime | None = Field(
        None, description="Until when `pictureUrl` is cached (it is asked again afterwards); null: never asked."
    )
    on_whats_app: bool | None = Field(
        None, description="Whether it is on WhatsApp, as WhatsApp last said (null: never said)."
    )
    blocked: bool = False
    updated_at: datetime | None = None


class StatusStepOut(_Body):
    """A status the message reached, and when."""

    status: str = Field(examples=["delivered"])
    at: datetime | None
    error: str | None = None


class ReactionOut(_Body):
    """An emoji someone has on a message now; `reactor` is their JID, or `me` for the session."""

    reactor: str
    emoji: str
    at: datetime


class VoteOut(_Body):
    """A voter's current choice on a poll; `voter` is their JID, or `me` for the session."""

    voter: str
    selected: list[str]
    at: datetime


class MessageOut(_Body):
    """A message sent or received by a session."""

    id: str
    message_id: str = Field(
        examples=["3EB0C431C26A1916E2A3A5"],
        description="The message's id: the one `POST /whatsapp/send` answered (for inbound messages, WhatsApp's).",
    )
    whatsapp_message_id: str | None = Field(
        None,
        examples=["3EB0A1B2C3D4E5F6A7B8C9"],
        description="The id WhatsApp knows the message by (receipts name it); null until WhatsApp took it.",
    )
    session_id: str = Field(examples=["user123"])
    direction: Literal["inbound", "outbound"]
    status: str = Field(examples=["read"])
    type: str = Field(examples=["text"])
    content: str = Field(examples=["Olá! Como posso ajudar?"])
    timestamp: datetime
    sent_at: datetime | None = None
    chat_jid: str | None = Field(None, examples=["5511999999999@s.whatsapp.net"])
    sender_jid: str | None = Field(None, description="Who wrote it, in a group.")
    sender_lid: str | None = None
    source: str | None = Field(
        None,
        examples=["api"],
        description="Outbound only: sent through zapgate (api) or from the linked phone itself (phone).",
    )
    error: str | None = None
    error_code: str | None = Field(None, examples=["not_on_whatsapp"], description="Why it failed, for programs.")
    attempts: int = Field(0, description="Attempts that failed in a way that may pass (it is tried again).")
    contact_id: str | None = Field(None, description="Its contact's id (the chat's: a person or a group).")
    contact: ContactOut | None = None
    history: list[StatusStepOut] | None = Field(None, description="Every status it reached (single message only).")
    body: dict[str, Any] | None = Field(
        None,
        alias="message",
        description="What it holds, in the Cloud API's shape: `{type, <type>: {...}}` (texts too).",
        examples=[{"type": "location", "location": {"latitude": -23.55, "longitude": -46.63}}],
    )
    context: dict[str, Any] | None = Field(None, description="The message it replies to.")
    mentions: list[str] | None = None
    edited_at: datetime | None = None
    deleted_at: datetime | None = Field(None, description="Deleted for everyone by its author.")
    reactions: list[ReactionOut] | None = None
    votes: list[VoteOut] | None = Field(None, description="Polls: each voter's choice.")


class MessagePage(_Body):
    """A page of messages, newest first; pass `nextCursor` as `cursor` for the next one."""

    messages: list[MessageOut]
    next_cursor: str | None = None


class ContactPage(_Body):
    """A page of contacts by number; pass `nextCursor` as `cursor` for the next one."""

    contacts: list[ContactOut]
    next_cursor: str | None = None


class AuditEntryOut(_Body):
    """One mutating call: who made it (the API key's prefix), what, when, and how it ended."""

    id: int
    at: datetime
    actor: str = Field(examples=["zg_4bT0m3Q"])
    action: str = Field(examples=["message.send"])
    session_id: str | None = Field(examples=["user123"])
    outcome: str = Field(examples=["ok"], description="`ok`, or the error code answered.")
    status: int = Field(examples=[202])
    detail: dict[str, Any] = Field(examples=[{"method": "POST", "path": "/whatsapp/send"}])


class AuditPage(_Body):
    """A page of the audit log, newest first; pass `nextCursor` as `cursor` for the next one."""

    entries: list[AuditEntryOut]
    next_cursor: str | None = None


WEBHOOK_EVENT_NAMES = (*(kind.value for kind in EventType), "*")  # every event a webhook can ask for


def _known_event(name: str) -> str:
    if name not in WEBHOOK_EVENT_NAMES:
        raise ValueError(f"unknown event {name!r}: expected one of {', '.join(WEBHOOK_EVENT_NAMES)}")
    return name


WebhookEventName = Annotated[
    str, AfterValidator(_known_event), WithJsonSchema({"type": "string", "enum": list(WEBHOOK_EVENT_NAMES)})
]
_EVENTS_FIELD = (
    "The event types to deliver (`*` or leaving it out: every type): " + ", ".join(WEBHOOK_EVENT_NAMES[:-1]) + "."
)
_SESSIONS_FIELD = "Only the events of these sessions (leave it out for every session, present and future)."


class CreateWebhookRequest(_Request):
    """A new webhook: where to POST the client's events, which ones, and the secret that signs them."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        description="An http or https URL. Loopback and private-network addresses are refused unless the "
        "server allows them (ZAPGATE_WEBHOOK_ALLOW_LOOPBACK, ZAPGATE_WEBHOOK_ALLOW_PRIVATE); cloud metadata "
        "addresses always are.",
        examples=["https://example.com/hooks/zapgate"],
    )
    events: list[WebhookEventName] | None = Field(
        None,
        min_length=1,
        max_length=len(WEBHOOK_EVENT_NAMES),
        description=_EVENTS_FIELD,
        examples=[["message-received", "message-status"]],
    )
    sessions: list[str] | None = Field(
        None, min_length=1, max_length=100, description=_SESSIONS_FIELD, examples=[["user123"]]
    )
    secret: str | None = Field(
        None,
        min_length=16,
        max_length=256,
        description="The signing secret; generated when not given. Shown in this answer only.",
    )
    enabled: bool = True
    description: str | None = Field(None, max_length=200, examples=["n8n: new messages"])


class UpdateWebhookRequest(_Request):
    """The fields of a webhook to change; the others stay as they are (`events`/`sessions`: null means every)."""

    url: str | None = Field(None, min_length=1, max_length=2048, examples=["https://example.com/hooks/zapgate"])
    events: list[WebhookEventName] | None = Field(
        None, min_length=1, max_length=len(WEBHOOK_EVENT_NAMES), description=_EVENTS_FIELD
    )
    sessions: list[str] | None = Field(None, min_length=1, max_length=100, description=_SESSIONS_FIELD)
    enabled: bool | None = Field(
        None, description="Disabled, it receives nothing; enabled again, it receives the events from then on."
    )
    description: str | None = Field(None, max_length=200)


class WebhookOut(_Body):
    """A webhook; its secret is shown only when created or rotated."""

    id: str = Field(examples=["k2x8c0q4m7v1n5b9z3w6y0t2r"])
    url: str = Field(examples=["https://example.com/hooks/zapgate"])
    events: list[str] | None = Field(description="The event types it receives; null: every type.")
    sessions: list[str] | None = Field(description="The sessions whose events it receives; null: every session.")
    enabled: bool
    description: str | None = None
    secret_hint: str = Field(examples=["…x9Qz"], description="The last 4 characters of the current secret.")
    previous_secret_expires_at: datetime | None = Field(
        None, description="Until then, requests carry a second signature made with the previous secret."
    )
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookOut):
    """A new webhook, with its secret: store it now, it cannot be read again."""

    secret: str = Field(examples=["whsec_4bT0m3Qh6kM1yX0p9Lr2c8VwZs5NdEjUaFiKoG7HtY"])


class WebhookList(_Body):
    """The client's webhooks, oldest first."""

    webhooks: list[WebhookOut]


class RotateSecretRequest(_Request):
    """A new secret for a webhook (generated when not given) and how long the old one keeps signing too."""

    secret: str | None = Field(None, min_length=16, max_length=256)
    overlap_seconds: int = Field(
        86_400, ge=0, le=604_800, description="Seconds the previous secret keeps signing (a second signature)."
    )


class SecretRotated(_Body):
    """The webhook's new secret, shown this once."""

    webhook_id: str
    secret: str = Field(examples=["whsec_Yq0c1L8m3N5p7R9t2V4x6Z8b0D2f4H6j8K0m2P4r6T8"])
    previous_secret_expires_at: datetime | None


class DeliveryOut(_Body):
    """One event on its way to a webhook, and how its last attempt went."""

    id: int = Field(examples=[1042])
    webhook_id: str
    event_id: int = Field(examples=[987], description="The event's id (also sent as X-Zapgate-Event-Id).")
    event_type: str = Field(examples=["message-received"])
    status: Literal["pending", "delivered", "dead"]
    attempts: int = Field(examples=[1])
    next_attempt_at: datetime | None = Field(None, description="When it is tried next (pending only).")
    last_attempt_at: datetime | None = None
    last_status_code: int | None = Field(None, examples=[200])
    last_error: str | None = Field(None, examples=[None])
    response_body: str | None = Field(None, description="The first 1 KiB of the last answer.")
    duration_ms: int | None = Field(None, examples=[38])
    delivered_at: datetime | None = None
    created_at: datetime


class DeliveryPage(_Body):
    """A page of a webhook's deliveries, newest first; pass `nextCursor` as `cursor` for the next one."""

    deliveries: list[DeliveryOut]
    next_cursor: str | None = None


# -- chats and presence (issue 14) ----------------------------------------------------------------------


class ChatLastMessage(_Body):
    """A chat's newest message."""

    id: str = Field(description="The message's id (as in /whatsapp/messages).")
    whatsapp_message_id: str | None = None
    direction: Literal["inbound", "outbound"]
    type: str = Field(examples=["text"])
    text: str = Field(description="Its text, or a summary of what it holds.")
    timestamp: datetime
    status: str = Field(examples=["read"])


class ChatOut(_Body):
    """A conversation of a session: with a contact or a group."""

    id: str = Field(description="The chat's id: its contact's id.")
    session_id: str
    chat: str = Field(description="The contact's key: a number's digits, a LID or a group's JID.")
    jid: str = Field(description="The chat's JID.")
    lid: str | None = Field(None, description="The contact's LID, when known.")
    name: str | None = None
    is_group: bool
    last_message: ChatLastMessage | None = None
    unread_count: int = Field(description="Received messages not read yet.")
    marked_unread: bool = Field(description="Marked unread on the phone (till it is read).")
    archived: bool
    pinned: bool
    pinned_at: datetime | None = None
    muted: bool
    muted_until: datetime | None = Field(None, description="Muted until then; null while muted: for ever.")


class ChatPage(_Body):
    """A page of chats, newest activity first; pass `nextCursor` as `cursor` for the next one."""

    chats: list[ChatOut]
    next_cursor: str | None = None


class ChatReadOut(_Body):
    """A chat marked read."""

    chat: ChatOut
    read: int = Field(description="Messages that became `read` now.")


class MuteRequest(_Request):
    """Mute a chat until a moment, for a duration, or (neither given) for ever."""

    until: datetime | None = Field(None, description="Until this moment (ISO 8601 with offset).")
    duration: int | None = Field(None, description="For this many seconds (up to 366 days).", examples=[28800])


class PresenceSubscribeRequest(_Request):
    """Whose presence to hear."""

    to: str = Field(min_length=1, max_length=64, description="A phone number or a contact's JID (or LID).")


class PresenceSubscribeOut(_Body):
    """Subscribed: `presence` events follow for this JID."""

    session_id: str
    subscribed: str = Field(description="The JID subscribed to.")


class OwnPresenceRequest(_Request):
    """Show the session online or offline to contacts subscribed to its presence."""

    presence: Literal["available", "unavailable"]


class OwnPresenceOut(_Body):
    """The presence the session shows now."""

    session_id: str
    presence: str
