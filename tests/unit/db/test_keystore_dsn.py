"""The key-store DSN whatsmeow connects with: the client's role on DATABASE_URL's server, with its TLS settings."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from zapgate.db.keystore import keystore_dsn


def _parts(dsn: str) -> tuple[str, dict[str, str]]:
    split = urlsplit(dsn)
    return f"{split.scheme}://{split.netloc}{split.path}", {k: v[-1] for k, v in parse_qs(split.query).items()}


def test_the_role_replaces_the_user_and_the_schema_is_the_search_path() -> None:
    base, query = _parts(keystore_dsn("postgresql+asyncpg://admin:pw@db.example:5433/zapgate", "zgwm_x", "s3", "wm_x"))
    assert base == "postgres://zgwm_x:s3@db.example:5433/zapgate"
    assert query == {"sslmode": "disable", "search_path": "wm_x"}


@pytest.mark.parametrize(
    ("url_query", "expected"),
    [
        ("sslmode=require", {"sslmode": "require"}),
        (
            "sslmode=verify-full&sslrootcert=/etc/ca.pem&sslcert=/etc/c.pem&sslkey=/etc/k.pem",
            {"sslmode": "verify-full", "sslrootcert": "/etc/ca.pem", "sslcert": "/etc/c.pem", "sslkey": "/etc/k.pem"},
        ),
        ("ssl=true", {"sslmode": "require"}),  # asyncpg's spelling
        ("ssl=verify-ca", {"sslmode": "verify-ca"}),
        ("ssl=false", {"sslmode": "disable"}),
        ("host=/run/postgresql&application_name=zapgate", {"sslmode": "disable", "host": "/run/postgresql"}),
    ],
)
def test_tls_settings_of_database_url_are_kept(url_query: str, expected: dict[str, str]) -> None:
    _, query = _parts(keystore_dsn(f"postgresql://admin:pw@db/zapgate?{url_query}", "r", "p", "wm_c"))
    assert query == {**expected, "search_path": "wm_c"}
