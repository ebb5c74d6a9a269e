"""Database URLs as the tests need them: libpq's form for asyncpg, another database of the same server."""

from __future__ import annotations

from sqlalchemy.engine import make_url


def plain_url(url: str) -> str:
    """Return `url` as a libpq/asyncpg URL (no SQLAlchemy driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    """Return `url` pointing at another database of the same server."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)
