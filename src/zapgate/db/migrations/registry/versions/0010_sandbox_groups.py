"""The sandbox network's groups: `sandbox_groups` (subject, description, owner, settings, picture, invite code)
and `sandbox_group_members` (each member's number and role, in joining order).

Revision ID: r0010
Revises: r0009
"""

import sqlalchemy as sa
from alembic import op

revision = "r0010"
down_revision = "r0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sandbox_groups",
        sa.Column("jid", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("picture_id", sa.Text(), nullable=True),
        sa.Column("announce", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("locked", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("invite_code", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("jid", name="pk_sandbox_groups"),
        sa.UniqueConstraint("invite_code", name="uq_sandbox_groups_invite_code"),
    )
    op.create_table(
        "sandbox_group_members",
        sa.Column("group_jid", sa.Text(), nullable=False),
        sa.Column("phone", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("position", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.CheckConstraint("role IN ('member', 'admin', 'superadmin')", name="ck_sandbox_group_members_role"),
        sa.ForeignKeyConstraint(
            ["group_jid"],
            ["sandbox_groups.jid"],
            name="fk_sandbox_group_members_group_jid_sandbox_groups",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_jid", "phone", name="pk_sandbox_group_members"),
    )
    op.create_index("ix_sandbox_group_members_phone", "sandbox_group_members", ["phone"])


def downgrade() -> None:
    op.drop_table("sandbox_group_members")
    op.drop_table("sandbox_groups")
