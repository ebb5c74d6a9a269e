from pathlib import Path

import pytest
from pydantic import ValidationError

from zapgate.settings import Settings, describe_settings_error

ENV_NAMES = [
    "WHATSAPP_SESSION_TIMEOUT",
    "WHATSAPP_MAX_SESSIONS",
    "WHATSAPP_QR_TIMEOUT",
    "DATABASE_URL",
    "ZAPGATE_DATA_DIR",
    "ZAPGATE_ADMIN_KEY",
    "ZAPGATE_HOST",
    "ZAPGATE_PORT",
    "ZAPGATE_LOG_LEVEL",
    "ZAPGATE_LOG_FORMAT",
    "ZAPGATE_DB_POOL_SIZE",
    "ZAPGATE_ENGINES",
    "ZAPGATE_DEFAULT_ENGINE",
    "ZAPGATE_MAX_SESSIONS_PER_CLIENT",
    "ZAPGATE_MAX_WEBHOOKS_PER_CLIENT",
    "ZAPGATE_MEDIA_STORE",
    "ZAPGATE_S3_ENDPOINT_URL",
    "ZAPGATE_S3_REGION",
    "ZAPGATE_S3_ACCESS_KEY_ID",
    "ZAPGATE_S3_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_are_the_seeds() -> None:
    settings = Settings()
    assert settings.session_timeout_ms == 300_000
    assert settings.max_sessions == 10
    assert settings.qr_timeout_ms == 60_000
    assert settings.database_url is None
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.db_pool_size == 20
    assert settings.db_health_interval == 30.0
    assert settings.db_idle_timeout == 300.0


def test_environment_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("WHATSAPP_MAX_SESSIONS=25\nZAPGATE_LOG_FORMAT=JSON\n")
    monkeypatch.setenv("ZAPGATE_PORT", "9001")
    monkeypatch.setenv("ZAPGATE_ADMIN_KEY", "s3cret-s3cret-s3cret")
    settings = Settings()
    assert settings.max_sessions == 25
    assert settings.log_format == "json"
    assert settings.port == 9001
    assert settings.admin_key is not None
    assert settings.admin_key.get_secret_value() == "s3cret-s3cret-s3cret"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("ZAPGATE_PORT", "abc", "ZAPGATE_PORT: Input should be a valid integer"),
        ("ZAPGATE_PORT", "70000", "ZAPGATE_PORT: Input should be less than or equal to 65535"),
        ("WHATSAPP_MAX_SESSIONS", "0", "WHATSAPP_MAX_SESSIONS: Input should be greater than or equal to 1"),
        ("WHATSAPP_QR_TIMEOUT", "soon", "WHATSAPP_QR_TIMEOUT: Input should be a valid integer"),
        ("WHATSAPP_SESSION_TIMEOUT", "10", "WHATSAPP_SESSION_TIMEOUT: Input should be greater than or equal to 1000"),
        ("DATABASE_URL", "mysql://db/x", "DATABASE_URL: expected a PostgreSQL URL"),
        ("ZAPGATE_LOG_LEVEL", "loud", "ZAPGATE_LOG_LEVEL: Input should be 'debug', 'info', 'warning' or 'error'"),
        ("ZAPGATE_LOG_FORMAT", "xml", "ZAPGATE_LOG_FORMAT: Input should be 'console' or 'json'"),
        ("ZAPGATE_ADMIN_KEY", "short", "ZAPGATE_ADMIN_KEY: expected at least 16 characters"),
    ],
)
def test_invalid_values_give_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    line = describe_settings_error(caught.value)
    assert "\n" not in line
    assert line.startswith("invalid configuration: ")
    assert expected in line
    if name == "ZAPGATE_ADMIN_KEY":
        assert value not in line  # a secret is never echoed


def test_postgres_urls_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for url in ["postgres://u@h/db", "postgresql://u:p@h:5432/db", "postgresql+asyncpg://u@h/db"]:
        monkeypatch.setenv("DATABASE_URL", url)
        assert Settings().database_url == url


def test_engines_offered_and_the_default_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().offered_engines == ("whatsmeow", "sandbox")
    monkeypatch.setenv("ZAPGATE_ENGINES", " Sandbox ")
    only_sandbox = Settings()
    assert only_sandbox.offered_engines == ("sandbox",)
    assert only_sandbox.default_engine == "sandbox"  # not chosen: the first engine offered
    monkeypatch.setenv("ZAPGATE_DEFAULT_ENGINE", "whatsmeow")  # chosen, and not offered: refused
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "ZAPGATE_DEFAULT_ENGINE" in describe_settings_error(refused.value)
    monkeypatch.setenv("ZAPGATE_ENGINES", "sandbox,telegram")
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "ZAPGATE_ENGINES" in describe_settings_error(refused.value)


def test_quota_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings().max_sessions_per_client, Settings().max_webhooks_per_client) == (100, 100)
    monkeypatch.setenv("ZAPGATE_MAX_SESSIONS_PER_CLIENT", "5")
    monkeypatch.setenv("ZAPGATE_MAX_WEBHOOKS_PER_CLIENT", "0")
    assert (Settings().max_sessions_per_client, Settings().max_webhooks_per_client) == (5, 0)


def test_media_is_kept_in_postgresql_unless_a_bucket_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().media_store == "postgres"
    monkeypatch.setenv("ZAPGATE_MEDIA_STORE", "s3://zapgate-media/prod/")
    monkeypatch.setenv("ZAPGATE_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("ZAPGATE_S3_ACCESS_KEY_ID", "minio")
    monkeypatch.setenv("ZAPGATE_S3_SECRET_ACCESS_KEY", "minio-secret-key")
    settings = Settings()
    assert settings.media_store == "s3://zapgate-media/prod"
    assert settings.s3_endpoint_url == "http://127.0.0.1:9000"
    assert settings.s3_access_key_id == "minio"
    assert settings.s3_secret_access_key is not None
    assert settings.s3_secret_access_key.get_secret_value() == "minio-secret-key"
    assert "minio-secret-key" not in repr(settings)


def test_s3_settings_fall_back_to_the_aws_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    settings = Settings()
    assert (settings.s3_region, settings.s3_access_key_id) == ("eu-west-1", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_REGION", "sa-east-1")  # botocore's order: AWS_REGION first
    monkeypatch.setenv("ZAPGATE_S3_ACCESS_KEY_ID", "zapgate-key")  # ours win over AWS_*
    monkeypatch.setenv("ZAPGATE_S3_SECRET_ACCESS_KEY", "zapgate-secret")
    settings = Settings()
    assert (settings.s3_region, settings.s3_access_key_id) == ("sa-east-1", "zapgate-key")
    assert settings.s3_secret_access_key is not None
    assert settings.s3_secret_access_key.get_secret_value() == "zapgate-secret"


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"ZAPGATE_MEDIA_STORE": "disk"}, "ZAPGATE_MEDIA_STORE: expected postgres or s3://bucket/prefix"),
        ({"ZAPGATE_MEDIA_STORE": "s3://Media_Bucket"}, "ZAPGATE_MEDIA_STORE: expected an S3 bucket name"),
        ({"ZAPGATE_S3_ENDPOINT_URL": "minio:9000"}, "ZAPGATE_S3_ENDPOINT_URL: expected the server's URL"),
        ({"ZAPGATE_S3_SECRET_ACCESS_KEY": "half-a-pair"}, "set together or not at all"),
        ({"ZAPGATE_S3_ACCESS_KEY_ID": "half-a-pair"}, "set together or not at all"),
    ],
)
def test_invalid_media_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], expected: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    line = describe_settings_error(caught.value)
    assert expected in line
    assert "half-a-pair" not in line
