"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Response

from zapgate.api.deps import Manager
from zapgate.api.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> Health:
    """Answer 200 while the process is up (it only starts answering once it is ready to serve)."""
    return Health(status="ok")


@router.get("/health/ready", responses={503: {"model": Readiness, "description": "Not ready, with reasons."}})
async def ready(manager: Manager, response: Response) -> Readiness:
    """Answer 200 when the database answers, else 503 with the reasons."""
    if await manager.check_health():
        return Readiness(status="ready", checks={"database": "ok"})
    response.status_code = 503
    return Readiness(status="unavailable", checks={"database": "unreachable"})
