"""Keystores: one PostgreSQL login role per client owning schema `wm_<client>` for whatsmeow's keys.

The two functions create and drop a client's role and schema on the server side: names arrive as
arguments and are quoted on the server (quote_ident/quote_literal; `format` would need '%', which alembic's
offline script rendering doubles), so no client id is ever formatted into SQL by the application.
The role name carries a hash of the database name because roles are shared by every database of a server.

Revision ID: r0002
Revises: r0001
"""

import sqlalchemy as sa
from alembic import op

revision = "r0002"
down_revision = "r0001"
branch_labels = None
depends_on = None

_ROLE_FUNCTION = r"""
CREATE FUNCTION zapgate.keystore_role(p_client_id text) RETURNS text
LANGUAGE sql STABLE AS
$fn$ SELECT 'zgwm_' || left(md5(current_database()), 8) || '_' || p_client_id $fn$
"""

_PROVISION_FUNCTION = r"""
CREATE FUNCTION zapgate.keystore_provision(p_client_id text, p_password text) RETURNS text
LANGUAGE plpgsql AS
$fn$
DECLARE
    r text := zapgate.keystore_role(p_client_id);
    s text := 'wm_' || p_client_id;
BEGIN
    IF p_client_id IS NULL OR p_client_id !~ '^[a-z0-9][a-z0-9_]{0,47}$' THEN
        RAISE EXCEPTION 'invalid client id' USING ERRCODE = '22023';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(r));
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
        EXECUTE 'ALTER ROLE ' || quote_ident(r) || ' WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
                || 'NOBYPASSRLS PASSWORD ' || quote_literal(p_password);
    ELSE
        EXECUTE 'CREATE ROLE ' || quote_ident(r) || ' WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
                || 'NOBYPASSRLS NOINHERIT PASSWORD ' || quote_literal(p_password);
    END IF;
    EXECUTE 'CREATE SCHEMA IF NOT EXISTS ' || quote_ident(s) || ' AUTHORIZATION ' || quote_ident(r);
    EXECUTE 'ALTER SCHEMA ' || quote_ident(s) || ' OWNER TO ' || quote_ident(r);
    EXECUTE 'REVOKE ALL ON SCHEMA ' || quote_ident(s) || ' FROM PUBLIC';
    EXECUTE 'GRANT CONNECT ON DATABASE ' || quote_ident(current_database()) || ' TO ' || quote_ident(r);
    EXECUTE 'ALTER ROLE ' || quote_ident(r) || ' IN DATABASE ' || quote_ident(current_database())
            || ' SET search_path TO ' || quote_ident(s);
    RETURN r;
END
$fn$
"""

_DROP_FUNCTION = r"""
CREATE FUNCTION zapgate.keystore_drop(p_client_id text) RETURNS void
LANGUAGE plpgsql AS
$fn$
DECLARE
    r text := zapgate.keystore_role(p_client_id);
    s text := 'wm_' || p_client_id;
BEGIN
    IF p_client_id IS NULL OR p_client_id !~ '^[a-z0-9][a-z0-9_]{0,47}$' THEN
        RAISE EXCEPTION 'invalid client id' USING ERRCODE = '22023';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(r));
    EXECUTE 'DROP SCHEMA IF EXISTS ' || quote_ident(s) || ' CASCADE';
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
        -- a worker may still hold the role's connections: end them so the keys cannot be written again
        PERFORM pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = r AND pid <> pg_backend_pid();
        EXECUTE 'DROP OWNED BY ' || quote_ident(r);
        EXECUTE 'DROP ROLE ' || quote_ident(r);
    END IF;
END
$fn$
"""


def upgrade() -> None:
    op.create_table(
        "keystores",
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("role_name", sa.Text(), nullable=False),
        sa.Column("password", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.client_id"], name="fk_keystores_client_id_clients", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("client_id", name="pk_keystores"),
    )
    op.execute(_ROLE_FUNCTION)
    op.execute(_PROVISION_FUNCTION)
    op.execute(_DROP_FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION zapgate.keystore_drop(text)")
    op.execute("DROP FUNCTION zapgate.keystore_provision(text, text)")
    op.execute("DROP FUNCTION zapgate.keystore_role(text)")
    op.drop_table("keystores")
