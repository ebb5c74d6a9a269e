"""The sandbox's media server: files in parts, each with the phone it went to and when it expires.

Revision ID: r0008
Revises: r0007
"""

import sqlalchemy as sa
from alembic import op

revision = "r0008"
down_revision = "r0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sandbox_media",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("key", "part", name="pk_sandbox_media"),
    )
    op.create_index("ix_sandbox_media_recipient", "sandbox_media", ["recipient"])
    op.create_index("ix_sandbox_media_expires_at", "sandbox_media", ["expires_at"])
    # media are mostly compressed already: store the parts as they are, without trying to compress them again
    op.execute("ALTER TABLE sandbox_media ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("sandbox_media")
