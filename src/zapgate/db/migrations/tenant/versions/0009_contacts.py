"""Contacts with one identity: a person is one row per session, known by phone-number JID, LID or both.

- `contacts.jid`: the phone-number JID (`digits@s.whatsapp.net`; a group's JID for a group), `lid`: the LID
  (`digits@lid`). Either may be known first; when WhatsApp tells both, the rows of each merge into one
  (`db/contacts.py`). Partial unique indexes per session keep one row per JID and per LID.
- `push_name` (the name the person set), `business_name` (a business account's verified name), `picture_url`,
  `picture_id`, `picture_checked_at`, `picture_expires_at` (the profile picture, fetched on demand and cached),
  `on_whatsapp`, `blocked`, `created_at`, `updated_at`.
- Backfill: a key that is digits is a phone number (its JID, and the LID the recipients cache knows for it), a
  `…@lid` key a LID, any other key (a group's) the JID itself. Rows of one person that were split before (one by
  number, one by LID) merge the next time WhatsApp names both.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_COLUMNS = (
    "jid",
    "lid",
    "push_name",
    "business_name",
    "picture_url",
    "picture_id",
    "picture_checked_at",
    "picture_expires_at",
    "on_whatsapp",
    "blocked",
    "created_at",
    "updated_at",
)


def upgrade() -> None:
    for name in ("jid", "lid", "push_name", "business_name", "picture_url", "picture_id"):
        op.add_column("contacts", sa.Column(name, sa.Text(), nullable=True))
    op.add_column("contacts", sa.Column("picture_checked_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("contacts", sa.Column("picture_expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("contacts", sa.Column("on_whatsapp", sa.Boolean(), nullable=True))
    op.add_column("contacts", sa.Column("blocked", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.add_column(
        "contacts", sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)
    )
    op.add_column(
        "contacts", sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)
    )
    # the key tells what a row is: a LID, a number's digits, or another JID (a group's, status@broadcast)
    op.execute("UPDATE contacts SET lid = phone_number WHERE phone_number LIKE '%@lid'")
    op.execute("UPDATE contacts SET jid = phone_number || '@s.whatsapp.net' WHERE phone_number ~ '^[0-9]+$'")
    op.execute("UPDATE contacts SET jid = phone_number WHERE phone_number LIKE '%@%' AND phone_number NOT LIKE '%@lid'")
    # a number's LID as WhatsApp answered it, unless another row of the session holds that LID already
    op.execute(
        """
        UPDATE contacts c SET lid = r.lid
        FROM recipients r
        WHERE c.lid IS NULL AND c.jid IS NOT NULL AND r.session_id = c.session_id AND r.phone_number = c.phone_number
          AND r.lid IS NOT NULL AND r.jid = c.jid
          AND NOT EXISTS (SELECT 1 FROM contacts o WHERE o.session_id = c.session_id AND o.lid = r.lid)
        """
    )
    op.execute(
        "UPDATE contacts c SET on_whatsapp = r.on_whatsapp FROM recipients r"
        " WHERE r.session_id = c.session_id AND r.phone_number = c.phone_number"
    )
    op.execute("UPDATE contacts SET push_name = name WHERE name IS NOT NULL AND NOT is_group")
    op.create_index(
        "uq_contacts_session_id_jid",
        "contacts",
        ["session_id", "jid"],
        unique=True,
        postgresql_where=sa.text("jid IS NOT NULL"),
    )
    op.create_index(
        "uq_contacts_session_id_lid",
        "contacts",
        ["session_id", "lid"],
        unique=True,
        postgresql_where=sa.text("lid IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_contacts_session_id_lid", table_name="contacts")
    op.drop_index("uq_contacts_session_id_jid", table_name="contacts")
    for column in reversed(_COLUMNS):
        op.drop_column("contacts", column)
