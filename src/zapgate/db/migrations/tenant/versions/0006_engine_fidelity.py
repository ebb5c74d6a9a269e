"""Engine fidelity: WhatsApp's own message ids beside ours, attempts, typed failures, senders, sources, recipients.

- `sessions.status_code`, `status_details`: why a session is where it is, for programs (a ban's code and
  expiry, another client that took the session, ...).
- `wa_message_id`: the id WhatsApp knows a message by (receipts name it). Ours (`message_id`) stays the
  public id; for inbound messages both are WhatsApp's. Rows sent before this revision had their
  `message_id` replaced by WhatsApp's, so both start equal.
- `attempts`, `next_attempt_at`: a message that failed for a reason that may pass is tried again later,
  up to a cap, without holding up the messages behind it.
- `error_code`: why a message failed, for programs (`not_on_whatsapp`, `restricted`, ...).
- `sender_jid`, `sender_lid`: who wrote a group message; `source`: `api` or `phone` for outbound messages.
- `recipients`: WhatsApp's answer about a number, per session, cached with an expiry.
- `first_contacts`: the numbers a session wrote to first, for the daily first-contact cap.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("status_code", sa.Text(), nullable=True))
    op.add_column("sessions", sa.Column("status_details", postgresql.JSONB(), nullable=True))
    op.add_column("messages", sa.Column("wa_message_id", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("messages", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("messages", sa.Column("error_code", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("sender_jid", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("sender_lid", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("source", sa.Text(), nullable=True))
    op.execute("UPDATE messages SET wa_message_id = message_id WHERE status <> 'pending'")
    op.execute("UPDATE messages SET source = 'api' WHERE direction = 'outbound'")
    op.create_index(
        "uq_messages_session_id_wa_message_id",
        "messages",
        ["session_id", "wa_message_id"],
        unique=True,
        postgresql_where=sa.text("wa_message_id IS NOT NULL"),
    )
    # a message waiting for its next attempt holds back later ones to its chat: found through this
    op.create_index(
        "ix_messages_held",
        "messages",
        ["session_id", "contact_id"],
        postgresql_where=sa.text("status = 'pending' AND next_attempt_at IS NOT NULL"),
    )
    # "has this chat ever written to the session" (the first-contact cap)
    op.create_index(
        "ix_messages_inbound_chat",
        "messages",
        ["session_id", "chat_jid"],
        postgresql_where=sa.text("direction = 'inbound'"),
    )
    op.create_table(
        "recipients",
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("phone_number", sa.Text(), nullable=False),
        sa.Column("on_whatsapp", sa.Boolean(), nullable=False),
        sa.Column("jid", sa.Text(), nullable=True),
        sa.Column("lid", sa.Text(), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_recipients_session_id_sessions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("session_id", "phone_number", name="pk_recipients"),
    )
    op.create_table(
        "first_contacts",
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("jid", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_first_contacts_session_id_sessions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("session_id", "jid", name="pk_first_contacts"),
    )
    op.create_index("ix_first_contacts_session_id_at", "first_contacts", ["session_id", "at"])


def downgrade() -> None:
    op.drop_table("first_contacts")
    op.drop_table("recipients")
    op.drop_index("ix_messages_inbound_chat", table_name="messages")
    op.drop_index("ix_messages_held", table_name="messages")
    op.drop_index("uq_messages_session_id_wa_message_id", table_name="messages")
    for column in ("source", "sender_lid", "sender_jid", "error_code", "next_attempt_at", "attempts", "wa_message_id"):
        op.drop_column("messages", column)
    op.drop_column("sessions", "status_details")
    op.drop_column("sessions", "status_code")
