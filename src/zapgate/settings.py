"""One `Settings` object, read from the environment (and `.env`) at the edge and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from zapgate.domain.media import parse_store_location
from zapgate.domain.quotas import engine_names


class Settings(BaseSettings):
    """Everything zapgate can be told; each field names its environment variable."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
        frozen=True,
    )

    # the seed's variables, with the seed's defaults
    session_timeout_ms: int = Field(300_000, ge=1_000, validation_alias="WHATSAPP_SESSION_TIMEOUT")
    max_sessions: int = Field(10, ge=1, le=10_000, validation_alias="WHATSAPP_MAX_SESSIONS")
    qr_timeout_ms: int = Field(60_000, ge=1_000, validation_alias="WHATSAPP_QR_TIMEOUT")

    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    data_dir: Path = Field(Path(".zapgate"), validation_alias="ZAPGATE_DATA_DIR")
    admin_key: SecretStr | None = Field(None, validation_alias="ZAPGATE_ADMIN_KEY")

    host: str = Field("127.0.0.1", min_length=1, validation_alias="ZAPGATE_HOST")
    port: int = Field(8000, ge=1, le=65_535, validation_alias="ZAPGATE_PORT")

    log_level: Literal["debug", "info", "warning", "error"] = Field("info", validation_alias="ZAPGATE_LOG_LEVEL")
    log_format: Literal["console", "json"] = Field("console", validation_alias="ZAPGATE_LOG_FORMAT")

    workers: int = Field(1, ge=0, le=64, validation_alias="ZAPGATE_WORKERS")  # started by `zapgate serve`
    # API processes of `zapgate serve` on one port, each with its own pool (README: Performance)
    api_processes: int = Field(1, ge=1, le=64, validation_alias="ZAPGATE_API_PROCESSES")
    # the engines this deployment runs (comma-separated); a session on another is refused, workers run only these
    engines: str = Field("whatsmeow,sandbox", validation_alias="ZAPGATE_ENGINES")
    # set by `zapgate serve` for the workers it starts (not by hand): a worker stops once this process is gone
    supervisor_pid: int | None = Field(None, ge=1, validation_alias="ZAPGATE_SUPERVISOR_PID")
    default_engine: Literal["whatsmeow", "sandbox"] = Field("whatsmeow", validation_alias="ZAPGATE_DEFAULT_ENGINE")
    lease_ttl: float = Field(10.0, ge=1.0, le=15.0, validation_alias="ZAPGATE_LEASE_TTL")  # seconds
    max_qr_codes: int = Field(5, ge=1, le=50, validation_alias="ZAPGATE_MAX_QR_CODES")

    # engines: bounds, reconnection, what is kept, how the real engine shows itself
    device_name: str = Field("zapgate", min_length=1, max_length=64, validation_alias="ZAPGATE_DEVICE_NAME")
    engine_timeout: float = Field(15.0, gt=0, le=600, validation_alias="ZAPGATE_ENGINE_TIMEOUT")  # s per start/stop
    max_abandoned_clients: int = Field(10, ge=0, le=1_000, validation_alias="ZAPGATE_MAX_ABANDONED_CLIENTS")
    reconnect_window: float = Field(300.0, ge=5, le=86_400, validation_alias="ZAPGATE_RECONNECT_WINDOW")  # seconds
    keep_stories: bool = Field(False, validation_alias="ZAPGATE_KEEP_STORIES")
    # a message its author deleted for everyone: marked deleted and kept (false), or its content erased (true)
    erase_deleted_messages: bool = Field(False, validation_alias="ZAPGATE_ERASE_DELETED_MESSAGES")
    # seconds an API request waits for the session's worker to do something at once (typing, read, lookups)
    engine_call_timeout: float = Field(20.0, gt=0, validation_alias="ZAPGATE_ENGINE_CALL_TIMEOUT")
    recipient_cache_ttl: float = Field(86_400.0, ge=0, validation_alias="ZAPGATE_RECIPIENT_CACHE_TTL")  # seconds
    send_max_attempts: int = Field(5, ge=1, le=100, validation_alias="ZAPGATE_SEND_MAX_ATTEMPTS")
    # pacing of the real engine's sends (unset: its safe defaults); ZAPGATE_SANDBOX_PACED rehearses it on the sandbox
    pace_typing_ms_per_char: float | None = Field(None, ge=0, validation_alias="ZAPGATE_PACE_TYPING_MS_PER_CHAR")
    pace_typing_max_ms: float | None = Field(None, ge=0, validation_alias="ZAPGATE_PACE_TYPING_MAX_MS")
    pace_pause_min_ms: float | None = Field(None, ge=0, validation_alias="ZAPGATE_PACE_PAUSE_MIN_MS")
    pace_pause_max_ms: float | None = Field(None, ge=0, validation_alias="ZAPGATE_PACE_PAUSE_MAX_MS")
    first_contacts_per_day: int | None = Field(None, ge=0, validation_alias="ZAPGATE_FIRST_CONTACTS_PER_DAY")
    sandbox_paced: bool = Field(False, validation_alias="ZAPGATE_SANDBOX_PACED")

    # what one client may hold by default (each client's own: PATCH /admin/clients/{clientId}/quotas)
    max_sessions_per_client: int = Field(100, ge=0, le=1_000_000, validation_alias="ZAPGATE_MAX_SESSIONS_PER_CLIENT")
    max_webhooks_per_client: int = Field(100, ge=0, le=1_000_000, validation_alias="ZAPGATE_MAX_WEBHOOKS_PER_CLIENT")

    # realtime and sending
    sse_heartbeat: float = Field(15.0, gt=0, le=300, validation_alias="ZAPGATE_SSE_HEARTBEAT")  # seconds
    send_rate: float = Field(5.0, ge=0, validation_alias="ZAPGATE_SEND_RATE")  # per session per second; 0: no limit
    send_burst: int = Field(30, ge=1, validation_alias="ZAPGATE_SEND_BURST")  # sends a session may make at once
    # requests per API key per API process (0: no limit): `burst` at once, then `rate` a second; over it 429
    request_rate: float = Field(100.0, ge=0, validation_alias="ZAPGATE_REQUEST_RATE")  # per key per second
    request_burst: int = Field(200, ge=1, validation_alias="ZAPGATE_REQUEST_BURST")
    # wrong admin keys: after this many from one address within the window, that address gets 429 till it ends
    admin_max_failures: int = Field(20, ge=1, le=1_000_000, validation_alias="ZAPGATE_ADMIN_MAX_FAILURES")
    admin_failure_window: float = Field(300.0, gt=0, le=86_400, validation_alias="ZAPGATE_ADMIN_FAILURE_WINDOW")  # s
    # seconds an API key that authenticated is remembered per API process (revocations are announced at once)
    key_cache_ttl: float = Field(30.0, ge=0, le=3600, validation_alias="ZAPGATE_KEY_CACHE_TTL")
    # realtime connections (SSE streams and Socket.IO sockets), per API process: how many one API key may hold,
    # how much one may have waiting to be sent, and how long it may stay that far behind before it is dropped
    max_streams_per_key: int = Field(20, ge=1, le=100_000, validation_alias="ZAPGATE_MAX_STREAMS_PER_KEY")
    socket_backlog_events: int = Field(1000, ge=1, le=1_000_000, validation_alias="ZAPGATE_SOCKET_BACKLOG_EVENTS")
    socket_backlog_bytes: int = Field(1 << 20, ge=1024, validation_alias="ZAPGATE_SOCKET_BACKLOG_BYTES")
    stream_backlog_bytes: int = Field(1 << 20, ge=1024, validation_alias="ZAPGATE_STREAM_BACKLOG_BYTES")
    stall_timeout: float = Field(30.0, gt=0, le=600, validation_alias="ZAPGATE_STALL_TIMEOUT")  # seconds

    # /metrics: a key to scrape it with (unset: open), and whether series may name clients and webhooks
    metrics_key: SecretStr | None = Field(None, validation_alias="ZAPGATE_METRICS_KEY")
    metrics_client_labels: bool = Field(False, validation_alias="ZAPGATE_METRICS_CLIENT_LABELS")

    # retention: days each kind of row is kept (0: for ever); per-client overrides by the admin API. Workers prune
    # every client once per ZAPGATE_PRUNE_INTERVAL seconds; events a webhook has yet to deliver are kept
    retain_events_days: int = Field(30, ge=0, le=36_500, validation_alias="ZAPGATE_RETAIN_EVENTS_DAYS")
    retain_audit_days: int = Field(90, ge=0, le=36_500, validation_alias="ZAPGATE_RETAIN_AUDIT_DAYS")
    retain_deliveries_days: int = Field(30, ge=0, le=36_500, validation_alias="ZAPGATE_RETAIN_DELIVERIES_DAYS")
    retain_idempotency_days: int = Field(1, ge=0, le=36_500, validation_alias="ZAPGATE_RETAIN_IDEMPOTENCY_DAYS")
    # media files (sent and received) are deleted this many days after they were stored; their messages stay
    retain_media_days: int = Field(0, ge=0, le=36_500, validation_alias="ZAPGATE_RETAIN_MEDIA_DAYS")
    retain_sandbox_mail_days: int = Field(7, ge=0, le=36_500, validation_alias="ZAPGATE_RETAIN_SANDBOX_MAIL_DAYS")
    prune_interval: float = Field(3600.0, ge=1, le=7 * 86_400, validation_alias="ZAPGATE_PRUNE_INTERVAL")  # seconds

    # media files: `postgres` (chunks in each client's schema) or `s3://bucket/prefix` (any S3-compatible server,
    # reached with the ZAPGATE_S3_* settings or, where those are unset, the usual AWS_* variables)
    media_store: str = Field("postgres", validation_alias="ZAPGATE_MEDIA_STORE")
    s3_endpoint_url: str | None = Field(
        None, validation_alias=AliasChoices("ZAPGATE_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    )
    s3_region: str | None = Field(
        None, validation_alias=AliasChoices("ZAPGATE_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
    )
    s3_access_key_id: str | None = Field(
        None, validation_alias=AliasChoices("ZAPGATE_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    )
    s3_secret_access_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("ZAPGATE_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
    )
    # signed media links (in events and webhooks): how long they work, and the address they start with (the
    # gateway as webhook consumers reach it, e.g. https://gw.example.com; empty: links are paths)
    media_link_ttl: float = Field(7 * 86_400.0, ge=60, le=365 * 86_400, validation_alias="ZAPGATE_MEDIA_LINK_TTL")
    public_url: str = Field("", max_length=512, validation_alias="ZAPGATE_PUBLIC_URL")

    db_pool_size: int = Field(20, ge=1, le=1_000, validation_alias="ZAPGATE_DB_POOL_SIZE")
    db_pool_timeout: float = Field(30.0, gt=0, validation_alias="ZAPGATE_DB_POOL_TIMEOUT")  # seconds
    db_health_interval: float = Field(30.0, gt=0, validation_alias="ZAPGATE_DB_HEALTH_INTERVAL")  # seconds
    db_idle_timeout: float = Field(300.0, gt=0, validation_alias="ZAPGATE_DB_IDLE_TIMEOUT")  # seconds

    # webhooks: attempt n of a delivery waits a random time in [d/2, d], d = min(BACKOFF_BASE * 2^(n-1), BACKOFF_MAX)
    webhook_timeout: float = Field(10.0, gt=0, le=120, validation_alias="ZAPGATE_WEBHOOK_TIMEOUT")  # s per attempt
    webhook_max_attempts: int = Field(12, ge=1, le=100, validation_alias="ZAPGATE_WEBHOOK_MAX_ATTEMPTS")
    webhook_backoff_base: float = Field(1.0, gt=0, validation_alias="ZAPGATE_WEBHOOK_BACKOFF_BASE")  # seconds
    webhook_backoff_max: float = Field(600.0, gt=0, validation_alias="ZAPGATE_WEBHOOK_BACKOFF_MAX")  # seconds
    # webhooks a worker delivers to at once (each webhook gets one request at a time: its events stay in order)
    webhook_concurrency: int = Field(64, ge=1, le=10_000, validation_alias="ZAPGATE_WEBHOOK_CONCURRENCY")
    webhook_allow_loopback: bool = Field(False, validation_alias="ZAPGATE_WEBHOOK_ALLOW_LOOPBACK")
    webhook_allow_private: bool = Field(False, validation_alias="ZAPGATE_WEBHOOK_ALLOW_PRIVATE")
    webhook_sweep_interval: float = Field(30.0, gt=0, validation_alias="ZAPGATE_WEBHOOK_SWEEP_INTERVAL")  # seconds

    @field_validator("log_level", "log_format", "default_engine", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("engines", mode="before")
    @classmethod
    def _engine_list(cls, value: object) -> object:
        if isinstance(value, str | list | tuple):
            return ",".join(engine_names(value))
        return value

    @model_validator(mode="after")
    def _default_engine_offered(self) -> Settings:
        if self.default_engine in self.offered_engines:
            return self
        if "default_engine" in self.model_fields_set:
            raise ValueError(
                f"ZAPGATE_DEFAULT_ENGINE: {self.default_engine!r} is not in ZAPGATE_ENGINES ({self.engines})"
            )
        # not chosen: the first engine offered is the default (frozen model: set as its validator would)
        object.__setattr__(self, "default_engine", self.offered_engines[0])
        return self

    @property
    def offered_engines(self) -> tuple[str, ...]:
        """The engines this deployment runs (ZAPGATE_ENGINES), in the order given."""
        return tuple(self.engines.split(","))

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
            raise ValueError("expected a PostgreSQL URL such as postgresql://user:password@host:5432/dbname")
        return value

    @field_validator("media_store")
    @classmethod
    def _media_store(cls, value: str) -> str:
        location = parse_store_location(value)
        if location.bucket is None:
            return location.store.value
        return f"s3://{location.bucket}/{location.prefix}".rstrip("/")

    @field_validator("s3_region", "s3_access_key_id")
    @classmethod
    def _unset_when_empty(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("s3_endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("http://", "https://")) or len(value) <= len("https://"):
            raise ValueError("expected the server's URL, such as http://127.0.0.1:9000 or https://s3.example.com")
        return value.rstrip("/")

    @field_validator("s3_secret_access_key")
    @classmethod
    def _unset_when_blank(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None or value.get_secret_value() == "" else value

    @model_validator(mode="after")
    def _s3_keys_together(self) -> Settings:
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("ZAPGATE_S3_ACCESS_KEY_ID and ZAPGATE_S3_SECRET_ACCESS_KEY are set together or not at all")
        return self

    @field_validator("admin_key", "metrics_key")
    @classmethod
    def _strong_admin_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        if len(value.get_secret_value()) < 16:
            raise ValueError("expected at least 16 characters (use a random string)")
        return value


# values never echoed back: they hold keys or passwords
_SECRET_VARIABLES = frozenset(
    {
        "ZAPGATE_ADMIN_KEY",
        "ZAPGATE_METRICS_KEY",
        "DATABASE_URL",
        "ZAPGATE_S3_SECRET_ACCESS_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "S3_SECRET_ACCESS_KEY",
    }
)


def describe_settings_error(exc: ValidationError) -> str:
    """Return one line naming each invalid variable and what it expects."""
    parts = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "settings"
        field = Settings.model_fields.get(name)
        if field is not None and isinstance(field.validation_alias, str):
            name = field.validation_alias
        name = name.upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        given = error.get("input")
        secret = name in _SECRET_VARIABLES
        shown = "" if secret or isinstance(given, dict) or given is None else f" (got {str(given)[:40]!r})"
        parts.append(f"{name}: {message}{shown}")
    return "invalid configuration: " + "; ".join(parts)
