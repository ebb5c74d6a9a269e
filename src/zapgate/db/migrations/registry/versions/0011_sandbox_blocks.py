"""The sandbox's blocklists: a simulated account's blocked numbers, whose messages no longer reach it.

Revision ID: r0011
Revises: r0009
"""

import sqlalchemy as sa
from alembic import op

revision = "r0011"
down_revision = "r0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sandbox_blocks",
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("phone", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("owner", "phone", name="pk_sandbox_blocks"),
    )


def downgrade() -> None:
    op.drop_table("sandbox_blocks")
