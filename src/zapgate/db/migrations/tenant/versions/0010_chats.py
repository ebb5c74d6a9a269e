"""Chats: each chat's state on the account, and the indexes the chats list reads.

- `chats`: a chat's state as WhatsApp's app state has it (archived, pinned, muted until, marked unread), one
  row per chat whose state was ever set, keyed by its contact (a merge of two contacts repoints it).
- `messages`: the index on `contact_id` alone becomes one on (contact_id, timestamp, id): a chat's messages
  newest first and its last message, at the same write cost for a send; a partial index on the received
  messages not read yet (reactions, votes, edits and deletes aside, as WhatsApp counts) gives each chat's
  unread count (sends never enter it).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chats",
        sa.Column("contact_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("archived", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("pinned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("muted_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("marked_unread", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name="fk_chats_contact_id_contacts", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_chats_session_id_sessions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("contact_id", name="pk_chats"),
    )
    op.create_index("ix_chats_session_id", "chats", ["session_id"])
    op.create_index(
        "ix_messages_contact_id_timestamp",
        "messages",
        ["contact_id", sa.text("timestamp DESC"), sa.text("id DESC")],
    )
    op.drop_index("ix_messages_contact_id", table_name="messages")
    op.create_index(
        "ix_messages_unread",
        "messages",
        ["contact_id"],
        postgresql_where=sa.text(
            "direction = 'inbound' AND status <> 'read' AND type NOT IN ('reaction', 'poll_vote', 'edit', 'revoke')"
        ),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_unread", table_name="messages")
    op.create_index("ix_messages_contact_id", "messages", ["contact_id"])
    op.drop_index("ix_messages_contact_id_timestamp", table_name="messages")
    op.drop_index("ix_chats_session_id", table_name="chats")
    op.drop_table("chats")
