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
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

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
    UniqueConstraint("session_id", "phone_number"),
)

messages = Table(
    "messages",
    tenant_metadata,
    Column("id", Text, primary_key=True),
    Column("session_id", Text, ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("contact_id", Text, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("message_id", Text, nullable=False, unique=True),
    Column("content", Text, nullable=False),
    Column("type", Text, nullable=False, server_default=text("'text'")),
    Column("direction", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    CheckConstraint("direction IN ('inbound', 'outbound')", name="direction"),
)
# "the messages of a session, newest first" reads this index forwards
Index(
    "ix_messages_session_id_timestamp",
    messages.c.session_id,
    messages.c.timestamp.desc(),
    messages.c.id.desc(),
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
    Column(
        "client_id",
        Text,
        ForeignKey(f"{REGISTRY_SCHEMA}.clients.client_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("key_hash", Text, nullable=False, unique=True),
    Column("prefix", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
)
