"""Table definitions: the registry (schema `zapgate`) and the per-client tables (schema chosen per transaction).

Client tables carry no schema: each transaction binds its client's schema with a transaction-local
`search_path`, so one set of statements (and one prepared-statement cache) serves every client.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from zapgate.domain.ids import REGISTRY_SCHEMA

NAMING = {
    "pk": "pk_%(table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}

tenant_metadata = MetaData(naming_convention=NAMING)
registry_metadata = MetaData(naming_convention=NAMING, schema=REGISTRY_SCHEMA)

NOW = func.now()

sessions = Table(
    "sessions",
    tenant_metadata,
    Column("id", Text, primary_key=True),
    Column("session_id", Text, nullable=False, unique=True),
    Column("client_id", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'disconnected'")),
    Column("qr_code", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("engine", Text, nullable=False, server_default=text("'whatsmeow'")),
    Column("phone_number", Text, nullable=True),  # the linked account's number
    Column("jid", Text, nullable=True),  # the linked device's JID
    Column("pairing_code", Text, nullable=True),
    Column("qr_expires_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("status_code", Text, nullable=True),  # why it is in its status, for programs (temporary_ban, ...)
    Column("status_details", JSONB, nullable=True),  # that reason's data (a ban's code and expiry, ...)
)

contacts = Table(
    "contacts",
    tenant_metadata,
    Column("id", Text, primary_key=True),
    Column("session_id", Text, ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("phone_number", Text, nullable=False),
    Column("name", Text, nullable=True),
    Column("profile_pic", Text, nullable=True),
    Column("is_group", Boolean, nullable=False, server_default=text("false")),
    # who it is (db/contacts.py): the phone-number JID (a group's JID for a group) and the LID, either or both
    Column("jid", Text, nullable=True),
    Column("lid", Text, nullable=True),
    Column("push_name", Text, nullable=True),  # the name the person set in WhatsApp
    Column("business_name", Text, nullable=True),  # a business account's verified name
    Column("picture_url", Text, nullable=True),  # the profile picture, fetched on demand (None: none, or not yet)
    Column("picture_id", Text, nullable=True),
    Column("picture_checked_at", DateTime(timezone=True), nullable=True),
    Column("picture_expires_at", DateTime(timezone=True), nullable=True),  # asked again after this
    Column("on_whatsapp", Boolean, nullable=True),  # WhatsApp's last answer (None: never asked)
    Column("blocked", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    UniqueConstraint("session_id", "phone_number"),
)
# one row per person per session, by either of its ids
Index(
    "uq_contacts_session_id_jid",
    contacts.c.session_id,
    contacts.c.jid,
    unique=True,
    postgresql_where=text("jid IS NOT NULL"),
)
Index(
    "uq_contacts_session_id_lid",
    contacts.c.session_id,
    contacts.c.lid,
    unique=True,
    postgresql_where=text("lid IS NOT NULL"),
)

messages = Table(
    "messages",
    tenant_metadata,
    Column("id", Text, primary_key=True),
    Column("session_id", Text, ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("contact_id", Text, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("message_id", Text, nullable=False, index=True),
    Column("content", Text, nullable=False),
    Column("type", Text, nullable=False, server_default=text("'text'")),
    Column("direction", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("chat_jid", Text, nullable=True),  # the JID it went to or came from
    Column("error", Text, nullable=True),  # why it failed
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("wa_message_id", Text, nullable=True),  # WhatsApp's id (receipts name it); ours is message_id
    Column("attempts", Integer, nullable=False, server_default=text("0")),  # sends tried and failed retryably
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),  # not claimed again before then
    Column("error_code", Text, nullable=True),  # why it failed, for programs (not_on_whatsapp, restricted, ...)
    Column("sender_jid", Text, nullable=True),  # who wrote it, in a group
    Column("sender_lid", Text, nullable=True),
    Column("source", Text, nullable=True),  # outbound: api (through zapgate) or phone (the linked phone itself)
    Column("payload", JSONB, nullable=True),  # the content in its public shape (NULL: a text, in `content`)
    Column("context", JSONB, nullable=True),  # the message it replies to: ids, whether we wrote it, its author
    Column("mentions", ARRAY(Text), nullable=True),  # the JIDs it mentions
    Column("edited_at", DateTime(timezone=True), nullable=True),  # edited by its author (see message_edits)
    Column("deleted_at", DateTime(timezone=True), nullable=True),  # deleted for everyone by its author
    CheckConstraint("direction IN ('inbound', 'outbound')", name="direction"),
    UniqueConstraint("session_id", "message_id"),
)
# receipts name WhatsApp's id; inbound messages are deduplicated by it too
Index(
    "uq_messages_session_id_wa_message_id",
    messages.c.session_id,
    messages.c.wa_message_id,
    unique=True,
    postgresql_where=text("wa_message_id IS NOT NULL"),
)
# "the messages of a session, newest first" reads this index forwards
Index(
    "ix_messages_session_id_timestamp",
    messages.c.session_id,
    messages.c.timestamp.desc(),
    messages.c.id.desc(),
)

# a chat's messages newest first, and its last message (the chats list): in place of an index on contact_id
# alone, so a send writes no more index entries than before (migration 0010)
Index(
    "ix_messages_contact_id_timestamp",
    messages.c.contact_id,
    messages.c.timestamp.desc(),
    messages.c.id.desc(),
)
# a chat's unread count: received messages not read yet, but reactions, votes, edits and deletes, which WhatsApp
# does not count (outbound rows never enter it)
UNREAD = "direction = 'inbound' AND status <> 'read' AND type NOT IN ('reaction', 'poll_vote', 'edit', 'revoke')"
Index("ix_messages_unread", messages.c.contact_id, postgresql_where=text(UNREAD))

# the outbound queue: a worker claims a session's pending messages oldest first
Index(
    "ix_messages_pending",
    messages.c.session_id,
    messages.c.timestamp,
    messages.c.id,
    postgresql_where=text("status = 'pending' AND direction = 'outbound'"),
)

# a chat's state on the account (WhatsApp's app state): archived, pinned, muted, marked unread. One row per chat
# whose state was ever set (the chats list computes last message and unread count from `messages`)
chats = Table(
    "chats",
    tenant_metadata,
    Column("contact_id", Text, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("session_id", Text, ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("archived", Boolean, nullable=False, server_default=text("false")),
    Column("pinned_at", DateTime(timezone=True), nullable=True),
    Column("muted_until", DateTime(timezone=True), nullable=True),  # 'infinity': muted for ever
    Column("marked_unread", Boolean, nullable=False, server_default=text("false")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# each earlier version of an edited message
message_edits = Table(
    "message_edits",
    tenant_metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("message_row_id", Text, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("content", Text, nullable=False),
    Column("payload", JSONB, nullable=True),
    Column("replaced_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# the emoji each reactor has on a message now (WhatsApp keeps one per reactor)
reactions = Table(
    "reactions",
    tenant_metadata,
    Column("message_row_id", Text, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    Column("reactor", Text, primary_key=True),  # the reactor's JID; the session's own: its account's JID
    Column("emoji", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

# each voter's current choice on a poll
poll_votes = Table(
    "poll_votes",
    tenant_metadata,
    Column("message_row_id", Text, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    Column("voter", Text, primary_key=True),
    Column("selected", ARRAY(Text), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

# the client's key for signed media links (rotating it revokes every link made before)
link_keys = Table(
    "link_keys",
    tenant_metadata,
    Column("name", Text, primary_key=True),
    Column("key", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# what an API process asks a session's worker to do at once, and the answer (the API waits until deadline)
engine_calls = Table(
    "engine_calls",
    tenant_metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("session_id", Text, ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("kind", Text, nullable=False),  # presence, read, check, ...
    Column("args", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("status", Text, nullable=False, server_default=text("'pending'")),  # pending, running, done, failed
    Column("result", JSONB, nullable=True),
    Column("error_code", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("deadline", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)
Index(
    "ix_engine_calls_pending",
    engine_calls.c.session_id,
    engine_calls.c.id,
    postgresql_where=text("status = 'pending'"),
)

# -- groups the session is (or was) in, as WhatsApp last told (services/groups.py) --
groups = Table(
    "groups",
    tenant_metadata,
    Column("id", Text, primary_key=True),
    Column("session_id", Text, ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("jid", Text, nullable=False),
    Column("subject", Text, nullable=False, server_default=text("''")),
    Column("description", Text, nullable=False, server_default=text("''")),
    Column("owner_jid", Text, nullable=True),
    Column("announce", Boolean, nullable=False, server_default=text("false")),  # only admins send
    Column("locked", Boolean, nullable=False, server_default=text("false")),  # only admins edit its info
    Column("picture_id", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=True),  # when WhatsApp created it
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("left_at", DateTime(timezone=True), nullable=True),  # the session left it (or was removed)
    UniqueConstraint("session_id", "jid"),
)

group_participants = Table(
    "group_participants",
    tenant_metadata,
    Column("group_id", Text, ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    Column("jid", Text, primary_key=True),  # phone JID when known, else LID
    Column("lid", Text, nullable=True),
    Column("is_admin", Boolean, nullable=False, server_default=text("false")),
    Column("is_super_admin", Boolean, nullable=False, server_default=text("false")),
)


# WhatsApp's answer about a number, per session: on it or not, under which JIDs (cached until expires_at)
recipients = Table(
    "recipients",
    tenant_metadata,
    Column("session_id", Text, ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True),
    Column("phone_number", Text, primary_key=True),
    Column("on_whatsapp", Boolean, nullable=False),
    Column("jid", Text, nullable=True),
    Column("lid", Text, nullable=True),
    Column("checked_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

# the numbers each session wrote to first (they had never written to it), for the daily first-contact cap
first_contacts = Table(
    "first_contacts",
    tenant_metadata,
    Column("session_id", Text, ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True),
    Column("jid", Text, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=NOW),
)
Index("ix_first_contacts_session_id_at", first_contacts.c.session_id, first_contacts.c.at)

# a message waiting for its next attempt holds back later ones to its chat: found through this
Index(
    "ix_messages_held",
    messages.c.session_id,
    messages.c.contact_id,
    postgresql_where=text("status = 'pending' AND next_attempt_at IS NOT NULL"),
)
# "has this chat ever written to the session" (the first-contact cap)
Index(
    "ix_messages_inbound_chat",
    messages.c.session_id,
    messages.c.chat_jid,
    postgresql_where=text("direction = 'inbound'"),
)

events = Table(
    "events",
    tenant_metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("session_id", Text, nullable=True),
    Column("type", Text, nullable=False),
    Column("payload", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)
Index("ix_events_session_id_id", events.c.session_id, events.c.id)
# a message's status history is its message-status events
Index(
    "ix_events_message_status",
    text("(payload ->> 'messageId')"),
    postgresql_where=text("type = 'message-status'"),
)

# who did what, when, with what outcome: one row per mutating API call
audit_log = Table(
    "audit_log",
    tenant_metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("actor", Text, nullable=False),  # the API key's prefix
    Column("action", Text, nullable=False),  # e.g. session.create, message.send
    Column("session_id", Text, nullable=True),
    Column("outcome", Text, nullable=False),  # ok, or the error code
    Column("status", Integer, nullable=False),  # the HTTP status answered
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
)

# POST /whatsapp/send with an Idempotency-Key: the first result, replayed to retries
idempotency_keys = Table(
    "idempotency_keys",
    tenant_metadata,
    Column("key", Text, primary_key=True),
    Column("fingerprint", Text, nullable=False),  # of the request: a key reused for another request is refused
    Column("response", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# per-session send rate limit (GCRA): the theoretical arrival time of the next send
send_limits = Table(
    "send_limits",
    tenant_metadata,
    Column(
        "session_id",
        Text,
        ForeignKey("sessions.session_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("tat", DateTime(timezone=True), nullable=False),
)


# where the client's events are POSTed; `cursor` is the newest event id already turned into deliveries
webhooks = Table(
    "webhooks",
    tenant_metadata,
    Column("id", Text, primary_key=True),
    Column("url", Text, nullable=False),
    Column("events", ARRAY(Text), nullable=True),  # the event types it wants; NULL: every type
    Column("sessions", ARRAY(Text), nullable=True),  # the sessions it wants; NULL: every session
    Column("secret", Text, nullable=False),  # signs each request (HMAC-SHA256); needed in clear to sign
    Column("previous_secret", Text, nullable=True),  # still signs too, after a rotation, until...
    Column("previous_secret_expires_at", DateTime(timezone=True), nullable=True),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("description", Text, nullable=True),
    Column("cursor", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# one row per event per webhook; a worker delivers a webhook's pending rows oldest first, one at a time
webhook_deliveries = Table(
    "webhook_deliveries",
    tenant_metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("webhook_id", Text, ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("leased_until", DateTime(timezone=True), nullable=True),  # a worker is delivering it until then
    Column("lease_token", Text, nullable=True),  # which worker's claim: only it may record the outcome
    Column("last_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("response_body", Text, nullable=True),  # the first bytes of the last answer
    Column("duration_ms", Integer, nullable=True),  # of the last attempt
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    CheckConstraint("status IN ('pending', 'delivered', 'dead')", name="status"),
)
# a webhook's listing, newest first
Index("ix_webhook_deliveries_webhook_id_id", webhook_deliveries.c.webhook_id, webhook_deliveries.c.id)
# a webhook's queue: its oldest pending delivery is the only one that may be attempted
Index(
    "ix_webhook_deliveries_pending",
    webhook_deliveries.c.webhook_id,
    webhook_deliveries.c.id,
    postgresql_where=text("status = 'pending'"),
)


# media files of a session (images, videos, audio, documents, stickers, thumbnails): what each is and where its
# bytes are; the bytes themselves live in a media store (media_chunks below, or an S3 bucket)
media = Table(
    "media",
    tenant_metadata,
    Column("id", Text, primary_key=True),
    Column("session_id", Text, ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False, index=True),
    # the message it belongs to; SET NULL, not CASCADE: a row must outlive its message until its bytes are
    # deleted from the store (an S3 object whose row went with its message could never be found again)
    Column("message_row_id", Text, ForeignKey("messages.id", ondelete="SET NULL"), nullable=True, index=True),
    Column("kind", Text, nullable=False),
    Column("mime_type", Text, nullable=False),
    Column("size", BigInteger, nullable=True),  # bytes; known once stored
    Column("sha256", Text, nullable=True),  # hex; known once stored
    Column("filename", Text, nullable=True),
    Column("width", Integer, nullable=True),  # pixels
    Column("height", Integer, nullable=True),
    Column("duration_ms", Integer, nullable=True),
    Column("pages", Integer, nullable=True),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("error", Text, nullable=True),  # why it failed
    Column("store", Text, nullable=False),  # postgres or s3
    Column("store_key", Text, nullable=False),  # {session_row_id}/{media_id}
    Column("thumbnail_id", Text, ForeignKey("media.id", ondelete="SET NULL"), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("expires_at", DateTime(timezone=True), nullable=True),  # retention: deleted after this moment
    Column("waveform", LargeBinary, nullable=True),  # a voice note's 64 loudness values (0-100)
    Column("handle", LargeBinary, nullable=True),  # an arrived file being downloaded: the engine's handle for it
    Column("announce", JSONB, nullable=True),  # its message-received event, announced once it is settled
    Column("attempts", Integer, nullable=False, server_default=text("0")),  # downloads tried and failed
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("kind IN ('image', 'video', 'audio', 'voice', 'document', 'sticker', 'thumbnail')", name="kind"),
    CheckConstraint("status IN ('pending', 'stored', 'failed')", name="status"),
    CheckConstraint("store IN ('postgres', 's3')", name="store"),
)
# arrived files still to download, per session
Index("ix_media_downloads", media.c.session_id, media.c.next_attempt_at, postgresql_where=text("handle IS NOT NULL"))
# deleting a media row looks for the rows whose thumbnail it is (the FK's SET NULL): without this, a scan each
Index("ix_media_thumbnail_id", media.c.thumbnail_id, postgresql_where=text("thumbnail_id IS NOT NULL"))
# retention: the rows whose time is up
Index("ix_media_expires_at", media.c.expires_at, postgresql_where=text("expires_at IS NOT NULL"))
# puts that never finished (a process died mid-way): found by age
Index("ix_media_pending", media.c.created_at, postgresql_where=text("status = 'pending'"))

# the bytes of media in the PostgreSQL store, in chunks of equal size (the last one shorter); the column's
# storage is EXTERNAL (migration 0007): media is compressed already, and a range read fetches only its slices
media_chunks = Table(
    "media_chunks",
    tenant_metadata,
    Column("media_id", Text, ForeignKey("media.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)


def _client_column(*, primary_key: bool = False, index: bool = False) -> Column[str]:
    """A registry table's `client_id`: its rows go when the client goes."""
    return Column(
        "client_id",
        Text,
        ForeignKey(f"{REGISTRY_SCHEMA}.clients.client_id", ondelete="CASCADE"),
        primary_key=primary_key,
        nullable=False,
        index=index,
    )


clients = Table(
    "clients",
    registry_metadata,
    Column("client_id", Text, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

api_keys = Table(
    "api_keys",
    registry_metadata,
    Column("id", Text, primary_key=True),
    _client_column(index=True),
    Column("key_hash", Text, nullable=False, unique=True),
    Column("prefix", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

workers = Table(
    "workers",
    registry_metadata,
    Column("worker_id", Text, primary_key=True),
    Column("hostname", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("metrics", Text, nullable=True),  # the worker's Prometheus metrics, as of its last heartbeat
)

# one row per session that exists: what its owner wants (desired, mode, generation) and who hosts it (lease)
placements = Table(
    "placements",
    registry_metadata,
    _client_column(primary_key=True),
    Column("session_id", Text, primary_key=True),
    Column("engine", Text, nullable=False),
    Column("desired", Text, nullable=False, server_default=text("'running'")),
    Column("mode", Text, nullable=False, server_default=text("'qr'")),
    Column("pairing_phone", Text, nullable=True),
    Column("generation", Integer, nullable=False, server_default=text("0")),
    Column("worker_id", Text, nullable=True, index=True),
    Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    Column("status", Text, nullable=True),  # the session's status, mirrored by a trigger in the client schema
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    CheckConstraint("desired IN ('running', 'stopped', 'logged_out')", name="desired"),
)

sandbox_phones = Table(
    "sandbox_phones",
    registry_metadata,
    Column("phone", Text, primary_key=True),
    _client_column(),
    Column("session_id", Text, nullable=False),
    Column("linked_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# the client whose session last linked each sandbox number, kept after the unlink (no foreign key: kept after the
# client goes too): a number another client's session links starts as a new account (engines/sandbox.py)
sandbox_owners = Table(
    "sandbox_owners",
    registry_metadata,
    Column("phone", Text, primary_key=True),
    Column("client_id", Text, nullable=False),
    Column("linked_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# the sandbox's blocklists: `owner` (a phone's number) blocked `phone`; their messages no longer reach it
sandbox_blocks = Table(
    "sandbox_blocks",
    registry_metadata,
    Column("owner", Text, primary_key=True),
    Column("phone", Text, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

sandbox_mail = Table(
    "sandbox_mail",
    registry_metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("address", Text, nullable=False),
    Column("envelope", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    # mail handed to a worker stays until that worker stored what it carried (then it is deleted);
    # if the worker dies first, the mail is handed out again after this moment
    Column("taken_until", DateTime(timezone=True), nullable=True),
)
Index("ix_sandbox_mail_address_id", sandbox_mail.c.address, sandbox_mail.c.id)
Index("ix_sandbox_mail_created_at", sandbox_mail.c.created_at)  # pruning of mail nobody collected
# collecting: new mail (nobody took it), and mail whose lease ran out, without reading what is handed out
Index(
    "ix_sandbox_mail_waiting",
    sandbox_mail.c.address,
    sandbox_mail.c.id,
    postgresql_where=sandbox_mail.c.taken_until.is_(None),
)
Index(
    "ix_sandbox_mail_taken_until", sandbox_mail.c.taken_until, postgresql_where=sandbox_mail.c.taken_until.is_not(None)
)

# the sandbox's media server: each file in parts of at most engines.sandbox.MEDIA_CHUNK bytes, under a random key
sandbox_media = Table(
    "sandbox_media",
    registry_metadata,
    Column("key", Text, primary_key=True),
    Column("part", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
    Column("recipient", Text, nullable=False, index=True),  # the phone it was sent to (faults act per phone)
    # downloads fail from then on; the rows stay (the phone's copy, for reuploads) until pruned
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# -- groups of the sandbox network (engines/sandbox_groups.py) --
sandbox_groups = Table(
    "sandbox_groups",
    registry_metadata,
    Column("jid", Text, primary_key=True),
    Column("subject", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=text("''")),
    Column("owner", Text, nullable=False),  # the creator's number
    Column("picture_id", Text, nullable=True),
    Column("announce", Boolean, nullable=False, server_default=text("false")),  # only admins send
    Column("locked", Boolean, nullable=False, server_default=text("false")),  # only admins edit its info
    Column("invite_code", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    # joining by link needs an admin's approval; the requests waiting for one: [[number, ISO time]], oldest first
    Column("join_approval", Boolean, nullable=False, server_default=text("false")),
    Column("join_requests", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
)

sandbox_group_members = Table(
    "sandbox_group_members",
    registry_metadata,
    Column(
        "group_jid", Text, ForeignKey(f"{REGISTRY_SCHEMA}.sandbox_groups.jid", ondelete="CASCADE"), primary_key=True
    ),
    Column("phone", Text, primary_key=True, index=True),
    Column("role", Text, nullable=False),  # member, admin, superadmin
    Column("position", BigInteger, Identity(always=True), nullable=False),  # joining order
    CheckConstraint("role IN ('member', 'admin', 'superadmin')", name="role"),
)

# -- accounts of the sandbox network (engines/sandbox_accounts.py): what WhatsApp keeps of an account on its servers --
# the app state of each chat of an account (`owner`, a phone's number), as its devices share it
sandbox_chat_states = Table(
    "sandbox_chat_states",
    registry_metadata,
    Column("owner", Text, primary_key=True),
    Column("chat", Text, primary_key=True),  # the chat's JID
    Column("archived", Boolean, nullable=False),
    Column("pinned", Boolean, nullable=False),
    Column("muted", Boolean, nullable=False),
    Column("muted_until", DateTime(timezone=True), nullable=True),  # NULL while muted: for ever
    Column("read", Boolean, nullable=True),  # false: marked unread; NULL: never marked either way
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# an account's presence as its contacts see it, and its phone's habits
sandbox_accounts = Table(
    "sandbox_accounts",
    registry_metadata,
    Column("phone", Text, primary_key=True),
    Column("available", Boolean, nullable=False, server_default=text("false")),
    Column("last_seen", DateTime(timezone=True), nullable=True),
    Column("holding_reads", Boolean, nullable=False, server_default=text("false")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# `subscriber` (a phone's number) hears the presence of `target`, until its connection ends
sandbox_presence_subscriptions = Table(
    "sandbox_presence_subscriptions",
    registry_metadata,
    Column("target", Text, primary_key=True),
    Column("subscriber", Text, primary_key=True, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)


# per client: how long its rows are kept (NULL: the ZAPGATE_RETAIN_* default) and the state of its pruning
retention = Table(
    "retention",
    registry_metadata,
    _client_column(primary_key=True),
    Column("events_days", Integer, nullable=True),
    Column("media_days", Integer, nullable=True),
    Column("audit_days", Integer, nullable=True),
    Column("deliveries_days", Integer, nullable=True),
    Column("idempotency_days", Integer, nullable=True),
    # the newest event id pruning deleted: a resume from before it has missed events (the "gap" signal)
    Column("events_pruned_through", BigInteger, nullable=False, server_default=text("0")),
    Column("due_at", DateTime(timezone=True), nullable=False, server_default=NOW),  # next pruning
    Column("claimed_until", DateTime(timezone=True), nullable=True),  # a worker prunes it until then
    Column("claimed_by", Text, nullable=True),
    Column("last_pruned_at", DateTime(timezone=True), nullable=True),
    Column("last_pruned", JSONB, nullable=True),  # rows deleted by the last pruning, per table
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# whatsmeow's keys of each client live in schema `wm_<client>` owned by its own login role (db/keystore.py)
keystores = Table(
    "keystores",
    registry_metadata,
    _client_column(primary_key=True),
    Column("role_name", Text, nullable=False),
    Column("password", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# the clients that have webhooks: workers deliver for these without visiting every client schema
webhook_clients = Table(
    "webhook_clients",
    registry_metadata,
    _client_column(primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)

# a client's own quotas (NULL: the deployment's default, from the settings)
client_quotas = Table(
    "client_quotas",
    registry_metadata,
    _client_column(primary_key=True),
    Column("max_sessions", Integer, nullable=True),
    Column("max_webhooks", Integer, nullable=True),
    Column("engines", ARRAY(Text), nullable=True),  # the engines it may use; NULL: every engine offered
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)
