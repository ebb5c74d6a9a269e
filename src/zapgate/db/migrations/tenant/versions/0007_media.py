"""Media: the records of a session's media files, and the chunks of those stored in PostgreSQL.

- `media`: one row per file (image, video, audio, voice note, document, sticker, thumbnail): what it is, its
  size and SHA-256 once stored, its status (`pending` while being stored, `stored`, `failed`), and where its
  bytes are (`store` postgres or s3, `store_key` `{session_row_id}/{media_id}`). A session's deletion takes
  its media rows along; a message's deletion only unlinks them (SET NULL): the row must stay until its bytes
  are deleted from the store, or an S3 object would be left with nothing pointing at it.
- `media_chunks`: the bytes of media in the PostgreSQL store, in numbered chunks; deleting a media row (or
  its session, or the client's schema) deletes them. Their column is stored EXTERNAL (uncompressed, out of
  line): media is compressed already, so PostgreSQL's compression would only spend CPU, and an uncompressed
  value lets `substring` (a range read) fetch only the slices it needs.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "media",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("session_id", sa.Text(), nullable=False),
        sa.Column("message_row_id", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("mime_type", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.Text(), nullable=True),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=True),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("store", sa.Text(), nullable=False),
        sa.Column("store_key", sa.Text(), nullable=False),
        sa.Column("thumbnail_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('image', 'video', 'audio', 'voice', 'document', 'sticker', 'thumbnail')", name="ck_media_kind"
        ),
        sa.CheckConstraint("status IN ('pending', 'stored', 'failed')", name="ck_media_status"),
        sa.CheckConstraint("store IN ('postgres', 's3')", name="ck_media_store"),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name="fk_media_session_id_sessions", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["message_row_id"], ["messages.id"], name="fk_media_message_row_id_messages", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["thumbnail_id"], ["media.id"], name="fk_media_thumbnail_id_media", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_media"),
    )
    op.create_index("ix_media_session_id", "media", ["session_id"])
    op.create_index("ix_media_message_row_id", "media", ["message_row_id"])
    # deleting a media row looks for the rows whose thumbnail it is (the FK's SET NULL): without this, a scan each
    op.create_index(
        "ix_media_thumbnail_id", "media", ["thumbnail_id"], postgresql_where=sa.text("thumbnail_id IS NOT NULL")
    )
    op.create_index("ix_media_expires_at", "media", ["expires_at"], postgresql_where=sa.text("expires_at IS NOT NULL"))
    op.create_index("ix_media_pending", "media", ["created_at"], postgresql_where=sa.text("status = 'pending'"))
    op.create_table(
        "media_chunks",
        sa.Column("media_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["media_id"], ["media.id"], name="fk_media_chunks_media_id_media", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("media_id", "seq", name="pk_media_chunks"),
    )
    op.execute("ALTER TABLE media_chunks ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("media_chunks")
    op.drop_table("media")
