"""Client quotas: a client's own limits on sessions and webhooks, and the engines it may use.

Revision ID: r0006
Revises: r0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "r0006"
down_revision = "r0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "client_quotas",
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("max_sessions", sa.Integer(), nullable=True),
        sa.Column("max_webhooks", sa.Integer(), nullable=True),
        sa.Column("engines", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.client_id"], name="fk_client_quotas_client_id_clients", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("client_id", name="pk_client_quotas"),
    )


def downgrade() -> None:
    op.drop_table("client_quotas")
