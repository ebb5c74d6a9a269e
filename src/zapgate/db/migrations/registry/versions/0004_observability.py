"""Observability: each session's status mirrored on its placement (sessions by status without visiting every
client schema), and each worker's metrics (Prometheus text) written with its heartbeat.

Revision ID: r0004
Revises: r0003
"""

import sqlalchemy as sa
from alembic import op

revision = "r0004"
down_revision = "r0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("placements", sa.Column("status", sa.Text(), nullable=True))
    op.add_column("workers", sa.Column("metrics", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("workers", "metrics")
    op.drop_column("placements", "status")
