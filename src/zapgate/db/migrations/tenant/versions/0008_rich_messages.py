"""Rich messages: typed content, replies, mentions, edits, deletes, reactions and poll votes.

- `messages.payload`: the content in its public shape (`domain.content.to_payload`); NULL for the texts
  stored before this revision and for texts sent through `POST /whatsapp/send` (`content` holds them).
- `messages.context`: the message it replies to (our id, WhatsApp's id, whether we wrote it, its author).
- `messages.mentions`: the JIDs it mentions.
- `messages.edited_at`, `deleted_at`: edited by its author (the earlier texts are in `message_edits`), deleted
  for everyone (its content kept or erased, per `ZAPGATE_ERASE_DELETED_MESSAGES`).
- `message_edits`: each earlier version of an edited message.
- `reactions`: the emoji each reactor has on a message now (one per reactor, as WhatsApp shows them).
- `poll_votes`: each voter's current choice on a poll.
- `media.waveform`: a voice note's 64 loudness values, which WhatsApp shows before it is played.
- `media.handle`, `announce`, `attempts`, `next_attempt_at`: a file that arrived and is being downloaded: what
  the engine needs to download it (after a restart too), the message-received event to announce once it is
  stored (or failed for good), and its download attempts.
- `link_keys`: the client's key for signed media links (rotating it revokes every link made before).
- `engine_calls`: what an API process asks a session's worker to do at once (show typing, mark read, look
  numbers up, ...) and its answer: the API waits for it until `deadline`.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("media", sa.Column("waveform", sa.LargeBinary(), nullable=True))
    op.add_column("media", sa.Column("handle", sa.LargeBinary(), nullable=True))
    op.add_column("media", sa.Column("announce", postgresql.JSONB(), nullable=True))
    op.add_column("media", sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column("media", sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_media_downloads", "media", ["session_id", "next_attempt_at"], postgresql_where=sa.text("handle IS NOT NULL")
    )
    op.add_column("messages", sa.Column("payload", postgresql.JSONB(), nullable=True))
    op.add_column("messages", sa.Column("context", postgresql.JSONB(), nullable=True))
    op.add_column("messages", sa.Column("mentions", postgresql.ARRAY(sa.Text()), nullable=True))
    op.add_column("messages", sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("messages", sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "message_edits",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("message_row_id", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=True),
        sa.Column("replaced_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_row_id"], ["messages.id"], name="fk_message_edits_message_row_id_messages", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_message_edits"),
    )
    op.create_index("ix_message_edits_message_row_id", "message_edits", ["message_row_id"])
    op.create_table(
        "reactions",
        sa.Column("message_row_id", sa.Text(), nullable=False),
        sa.Column("reactor", sa.Text(), nullable=False),
        sa.Column("emoji", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_row_id"], ["messages.id"], name="fk_reactions_message_row_id_messages", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("message_row_id", "reactor", name="pk_reactions"),
    )
    op.create_table(
        "poll_votes",
        sa.Column("message_row_id", sa.Text(), nullable=False),
        sa.Column("voter", sa.Text(), nullable=False),
        sa.Column("selected", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_row_id"], ["messages.id"], name="fk_poll_votes_message_row_id_messages", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("message_row_id", "voter", name="pk_poll_votes"),
    )
    op.create_table(
        "link_keys",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_link_keys"),
    )
    op.create_table(
        "engine_calls",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("args", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("result", postgresql.JSONB(), nullable=True),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_engine_calls_session_id_sessions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_engine_calls"),
    )
    op.create_index(
        "ix_engine_calls_pending",
        "engine_calls",
        ["session_id", "id"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_engine_calls_pending", table_name="engine_calls")
    op.drop_table("engine_calls")
    op.drop_table("link_keys")
    op.drop_table("poll_votes")
    op.drop_table("reactions")
    op.drop_index("ix_message_edits_message_row_id", table_name="message_edits")
    op.drop_table("message_edits")
    for column in ("deleted_at", "edited_at", "mentions", "context", "payload"):
        op.drop_column("messages", column)
    op.drop_index("ix_media_downloads", table_name="media")
    for column in ("next_attempt_at", "attempts", "announce", "handle", "waveform"):
        op.drop_column("media", column)
