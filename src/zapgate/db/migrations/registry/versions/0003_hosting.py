"""Session hosting: workers, placements (desired state + lease) and the sandbox network's phones and mail.

Revision ID: r0003
Revises: r0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "r0003"
down_revision = "r0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("worker_id", sa.Text(), nullable=False),
        sa.Column("hostname", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("worker_id", name="pk_workers"),
    )
    op.create_table(
        "placements",
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("engine", sa.Text(), nullable=False),
        sa.Column("desired", sa.Text(), server_default=sa.text("'running'"), nullable=False),
        sa.Column("mode", sa.Text(), server_default=sa.text("'qr'"), nullable=False),
        sa.Column("pairing_phone", sa.Text(), nullable=True),
        sa.Column("generation", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("worker_id", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("desired IN ('running', 'stopped', 'logged_out')", name="ck_placements_desired"),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.client_id"], name="fk_placements_client_id_clients", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("client_id", "session_id", name="pk_placements"),
    )
    op.create_index("ix_placements_worker_id", "placements", ["worker_id"])
    op.create_table(
        "sandbox_phones",
        sa.Column("phone", sa.Text(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("linked_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.client_id"], name="fk_sandbox_phones_client_id_clients", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("phone", name="pk_sandbox_phones"),
    )
    op.create_table(
        "sandbox_mail",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("envelope", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("taken_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sandbox_mail"),
    )
    op.create_index("ix_sandbox_mail_address_id", "sandbox_mail", ["address", "id"])


def downgrade() -> None:
    op.drop_table("sandbox_mail")
    op.drop_table("sandbox_phones")
    op.drop_table("placements")
    op.drop_table("workers")
