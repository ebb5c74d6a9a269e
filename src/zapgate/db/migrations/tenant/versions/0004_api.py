"""What the gateway API needs: the audit log, idempotency keys, send rate limits, message status history, and
each session's status mirrored on its placement in the registry (for metrics: sessions by status).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("detail", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("response", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_idempotency_keys"),
    )
    op.create_table(
        "send_limits",
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("tat", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_id", name="pk_send_limits"),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.session_id"], name="fk_send_limits_session_id_sessions", ondelete="CASCADE"
        ),
    )
    op.create_index(
        "ix_events_message_status",
        "events",
        [sa.text("(payload ->> 'messageId')")],
        postgresql_where=sa.text("type = 'message-status'"),
    )

    # the function lands in this schema (the migration's search_path); it names the registry's table in full
    op.execute(
        """
        CREATE FUNCTION mirror_session_status() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF to_regclass('zapgate.placements') IS NOT NULL THEN  -- a bare data layer has no registry
                UPDATE zapgate.placements SET status = NEW.status
                WHERE client_id = NEW.client_id AND session_id = NEW.session_id
                  AND status IS DISTINCT FROM NEW.status;
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER sessions_mirror_status AFTER INSERT OR UPDATE OF status ON sessions "
        "FOR EACH ROW EXECUTE FUNCTION mirror_session_status()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER sessions_mirror_status ON sessions")
    op.execute("DROP FUNCTION mirror_session_status()")
    op.drop_index("ix_events_message_status", table_name="events")
    op.drop_table("send_limits")
    op.drop_table("idempotency_keys")
    op.drop_table("audit_log")
