"""The sandbox groups' membership approval: `join_approval` (joining by link needs an admin's approval) and
`join_requests` (the requests waiting for one: [[number, ISO time]], oldest first).

Revision ID: r0013
Revises: r0012
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "r0013"
down_revision = "r0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "sandbox_groups", sa.Column("join_approval", sa.Boolean(), server_default=sa.text("false"), nullable=False)
    )
    op.add_column(
        "sandbox_groups",
        sa.Column("join_requests", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False),
    )


def downgrade() -> None:
    op.drop_column("sandbox_groups", "join_requests")
    op.drop_column("sandbox_groups", "join_approval")
