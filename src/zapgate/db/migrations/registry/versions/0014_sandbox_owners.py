"""The sandbox's number owners: the client whose session last linked each number, kept after the unlink, so
that a number linked by another client's session starts as a new account (engines/sandbox.py).

Numbers linked now are owned by their linking client; of a number unlinked now nothing is known (its next
linker keeps what the network has of it, as before).

Revision ID: r0014
Revises: r0013
"""

import sqlalchemy as sa
from alembic import op

revision = "r0014"
down_revision = "r0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sandbox_owners",
        sa.Column("phone", sa.Text(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),  # no foreign key: the owner is remembered after it goes
        sa.Column("linked_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("phone", name="pk_sandbox_owners"),
    )
    op.execute(
        "INSERT INTO sandbox_owners (phone, client_id, linked_at)"
        " SELECT phone, client_id, linked_at FROM sandbox_phones"
    )


def downgrade() -> None:
    op.drop_table("sandbox_owners")
