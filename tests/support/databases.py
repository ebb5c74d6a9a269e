"""Database URLs as the tests need them: libpq's form for asyncpg, another database of the same server."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

from zapgate.db.embedded import EmbeddedPostgres


def plain_url(url: str) -> str:
    """Return `url` as a libpq/asyncpg URL (no SQLAlchemy driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    """Return `url` pointing at another database of the same server."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@contextlib.contextmanager
def own_server(prefix: str) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of a test's own (for a test that stops or restarts it), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    server = EmbeddedPostgres(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
