"""Per-client retention, behind ZAPGATE_ADMIN_KEY: how long events, audit rows, webhook deliveries and
idempotency keys are kept, and what the last pruning deleted (services/retention.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from zapgate.api.deps import AppSettings, Manager, require_admin
from zapgate.api.schemas import Problem
from zapgate.services.retention import Policy, RetentionService, retention_defaults

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong admin key."},
    403: {"model": Problem, "description": "The admin API is disabled (ZAPGATE_ADMIN_KEY is not set)."},
    404: {"model": Problem, "description": "No such client."},
    422: {"model": Problem, "description": "Invalid client id or body."},
    503: {"model": Problem, "description": "The database is unavailable."},
}

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)], responses=_ERRORS)

_DAYS = Field(default=None, ge=0, le=36_500, description="Days kept; 0 keeps for ever; null: back to the default.")


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True)


class RetentionPatch(_Body):
    """The fields to change; those left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    events_days: int | None = _DAYS
    audit_days: int | None = _DAYS
    deliveries_days: int | None = _DAYS
    idempotency_days: int | None = _DAYS
    media_days: int | None = _DAYS


class RetentionOut(_Body):
    """A client's retention in force, which fields are its own (the rest are the ZAPGATE_RETAIN_* defaults),
    and what its last pruning deleted per table."""

    client_id: str = Field(examples=["acme"])
    events_days: int = Field(examples=[30])
    audit_days: int = Field(examples=[90])
    deliveries_days: int = Field(examples=[30])
    idempotency_days: int = Field(examples=[1])
    media_days: int = Field(examples=[0], description="Days a media file is kept (0: as long as its message).")
    overridden: list[str] = Field(examples=[["eventsDays"]])
    last_pruned_at: datetime | None = None
    last_pruned: dict[str, int] | None = Field(None, examples=[{"events": 120, "audit": 0}])


def _service(manager: Manager, settings: AppSettings) -> RetentionService:
    return RetentionService(manager, retention_defaults(settings))


Retention = Annotated[RetentionService, Depends(_service)]


def _out(policy: Policy) -> RetentionOut:
    return RetentionOut(
        client_id=policy.client_id,
        events_days=policy.days["events_days"],
        audit_days=policy.days["audit_days"],
        deliveries_days=policy.days["deliveries_days"],
        idempotency_days=policy.days["idempotency_days"],
        media_days=policy.days["media_days"],
        overridden=sorted(to_camel(field) for field in policy.overridden),
        last_pruned_at=policy.last_pruned_at,
        last_pruned=dict(policy.last_pruned) if policy.last_pruned is not None else None,
    )


@router.get("/clients/{clientId}/retention")
async def get_retention(clientId: str, retention: Retention) -> RetentionOut:
    """Return how long the client's rows are kept, and what its last pruning deleted."""
    return _out(await retention.get(clientId))


@router.patch("/clients/{clientId}/retention")
async def update_retention(clientId: str, body: RetentionPatch, retention: Retention) -> RetentionOut:
    """Change how long the client's rows are kept (days; 0 keeps for ever; null goes back to the default).

    Workers apply it at the client's next pruning (every ZAPGATE_PRUNE_INTERVAL seconds). Events a webhook has
    not delivered yet are kept whatever their age.
    """
    return _out(await retention.update(clientId, body.model_dump(exclude_unset=True, by_alias=False)))
