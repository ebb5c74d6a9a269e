"""What hosting sessions needs: the engine, the linked account, the current QR, delivery details of messages,
and message ids unique per session.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sessions", sa.Column("engine", sa.Text(), server_default=sa.text("'whatsmeow'"), nullable=False))
    op.add_column("sessions", sa.Column("phone_number", sa.Text(), nullable=True))
    op.add_column("sessions", sa.Column("jid", sa.Text(), nullable=True))
    op.add_column("sessions", sa.Column("pairing_code", sa.Text(), nullable=True))
    op.add_column("sessions", sa.Column("qr_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("sessions", sa.Column("last_error", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("chat_jid", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("error", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "messages",
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    # a WhatsApp message id is unique per session, not per client: two sessions of one client that talk to
    # each other hold the same id, once outbound and once inbound
    op.drop_constraint("uq_messages_message_id", "messages", type_="unique")
    op.create_unique_constraint("uq_messages_session_id_message_id", "messages", ["session_id", "message_id"])
    op.create_index("ix_messages_message_id", "messages", ["message_id"])
    op.create_index(
        "ix_messages_pending",
        "messages",
        ["session_id", "timestamp", "id"],
        postgresql_where=sa.text("status = 'pending' AND direction = 'outbound'"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_pending", table_name="messages")
    op.drop_index("ix_messages_message_id", table_name="messages")
    op.drop_constraint("uq_messages_session_id_message_id", "messages", type_="unique")
    op.create_unique_constraint("uq_messages_message_id", "messages", ["message_id"])
    for column in ("updated_at", "sent_at", "error", "chat_jid"):
        op.drop_column("messages", column)
    for column in ("last_error", "qr_expires_at", "pairing_code", "jid", "phone_number", "engine"):
        op.drop_column("sessions", column)
