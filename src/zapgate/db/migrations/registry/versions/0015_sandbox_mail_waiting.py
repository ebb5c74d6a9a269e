"""The sandbox's mailboxes, collected without reading what is handed out: a worker whose recorder holds a backlog
(mail handed out, its event not stored yet) read every such mail of its sessions on each collection.

New mail is found by a partial index of the mail nobody took; mail whose lease ran out by an index of the leases.

Revision ID: r0015
Revises: r0014
"""

import sqlalchemy as sa
from alembic import op

revision = "r0015"
down_revision = "r0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_sandbox_mail_waiting",
        "sandbox_mail",
        ["address", "id"],
        postgresql_where=sa.text("taken_until IS NULL"),
    )
    op.create_index(
        "ix_sandbox_mail_taken_until",
        "sandbox_mail",
        ["taken_until"],
        postgresql_where=sa.text("taken_until IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_sandbox_mail_taken_until", table_name="sandbox_mail")
    op.drop_index("ix_sandbox_mail_waiting", table_name="sandbox_mail")
