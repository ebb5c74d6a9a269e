"""Request and response bodies of the HTTP API (camelCase on the wire, as in the seed)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from zapgate.domain.ids import CLIENT_ID_PATTERN


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True)


class _Request(_Body):
    model_config = ConfigDict(extra="forbid")


class FieldError(_Body):
    """One invalid field of a request."""

    field: str = Field(examples=["clientId"])
    message: str = Field(examples=["String should match pattern '^[a-z0-9][a-z0-9_]{0,47}$'"])


class Problem(_Body):
    """An error, as problem+json (RFC 9457)."""

    type: str = Field(examples=["https://zapgate.dev/problems/client_exists"])
    title: str = Field(examples=["Conflict"])
    status: int = Field(examples=[409])
    detail: str = Field(examples=["client 'acme' already exists"])
    code: str = Field(examples=["client_exists"])
    errors: list[FieldError] | None = None


class CreateClientRequest(_Request):
    """A new client (tenant)."""

    client_id: str = Field(
        pattern=CLIENT_ID_PATTERN,
        max_length=48,
        description="1-48 characters of a-z, 0-9 and _, starting with a letter or digit.",
        examples=["acme"],
    )


class ClientOut(_Body):
    """A registered client; keys are listed by their first characters only."""

    client_id: str = Field(examples=["acme"])
    created_at: datetime
    key_prefixes: list[str] = Field(examples=[["zg_AbC1234"]])


class ClientList(_Body):
    """Every registered client."""

    clients: list[ClientOut]


class IssuedKeyOut(_Body):
    """A client and an API key that is shown this once: store it now, it cannot be read again."""

    client_id: str = Field(examples=["acme"])
    created_at: datetime
    api_key: str = Field(examples=["zg_4bT0m3Qh6kM1yX0p9Lr2c8VwZs5NdEjUaFiKoG7HtY"])
    key_prefix: str = Field(examples=["zg_4bT0m3Q"])


class Health(_Body):
    """Liveness: the process answers."""

    status: str = Field(examples=["ok"])


class Readiness(_Body):
    """Readiness: what was checked and what failed."""

    status: str = Field(examples=["ready"])
    checks: dict[str, Any] = Field(examples=[{"database": "ok"}])


class ClientHealthOut(_Body):
    """The seed's `checkSingleConnection` for one client."""

    client_id: str = Field(examples=["acme"])
    schema_name: str = Field(examples=["client_acme"])
    healthy: bool
    latency_ms: float = Field(examples=[1.3])
    revision: str | None = Field(examples=["0002"])
    error: str | None = Field(default=None, examples=[None])
