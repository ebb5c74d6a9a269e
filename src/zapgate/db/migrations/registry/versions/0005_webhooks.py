"""Webhooks: the clients that have any, so that workers deliver without visiting every client schema.

Revision ID: r0005
Revises: r0004
"""

import sqlalchemy as sa
from alembic import op

revision = "r0005"
down_revision = "r0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_clients",
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.client_id"], name="fk_webhook_clients_client_id_clients", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("client_id", name="pk_webhook_clients"),
    )


def downgrade() -> None:
    op.drop_table("webhook_clients")
