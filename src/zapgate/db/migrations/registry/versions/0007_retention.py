"""Retention: per-client overrides of how long events, audit rows, deliveries and idempotency keys are kept,
and the state of each client's pruning (who prunes it now, when next, what went, how far the events went).

Revision ID: r0007
Revises: r0006
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "r0007"
down_revision = "r0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention",
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("events_days", sa.Integer(), nullable=True),
        sa.Column("audit_days", sa.Integer(), nullable=True),
        sa.Column("deliveries_days", sa.Integer(), nullable=True),
        sa.Column("idempotency_days", sa.Integer(), nullable=True),
        sa.Column("events_pruned_through", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.Text(), nullable=True),
        sa.Column("last_pruned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_pruned", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.client_id"], name="fk_retention_client_id_clients", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("client_id", name="pk_retention"),
    )
    op.create_index("ix_sandbox_mail_created_at", "sandbox_mail", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_sandbox_mail_created_at", table_name="sandbox_mail")
    op.drop_table("retention")
