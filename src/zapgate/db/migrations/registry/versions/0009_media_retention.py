"""Media retention: a client's own days to keep its media files (NULL: ZAPGATE_RETAIN_MEDIA_DAYS).

Revision ID: r0009
Revises: r0008
"""

import sqlalchemy as sa
from alembic import op

revision = "r0009"
down_revision = "r0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("retention", sa.Column("media_days", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("retention", "media_days")
