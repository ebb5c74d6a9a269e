"""The sandbox's accounts on the network: each chat's app state (`sandbox_chat_states`), presence and the phone's
habits (`sandbox_accounts`), and who hears whose presence (`sandbox_presence_subscriptions`), so that a session
moving to another worker finds them (engines/sandbox_accounts.py).

Revision ID: r0012
Revises: r0011
"""

import sqlalchemy as sa
from alembic import op

revision = "r0012"
down_revision = "r0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sandbox_chat_states",
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("chat", sa.Text(), nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("muted", sa.Boolean(), nullable=False),
        sa.Column("muted_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read", sa.Boolean(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("owner", "chat", name="pk_sandbox_chat_states"),
    )
    op.create_table(
        "sandbox_accounts",
        sa.Column("phone", sa.Text(), nullable=False),
        sa.Column("available", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("holding_reads", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("phone", name="pk_sandbox_accounts"),
    )
    op.create_table(
        "sandbox_presence_subscriptions",
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("subscriber", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("target", "subscriber", name="pk_sandbox_presence_subscriptions"),
    )
    op.create_index("ix_sandbox_presence_subscriptions_subscriber", "sandbox_presence_subscriptions", ["subscriber"])


def downgrade() -> None:
    op.drop_table("sandbox_presence_subscriptions")
    op.drop_table("sandbox_accounts")
    op.drop_table("sandbox_chat_states")
