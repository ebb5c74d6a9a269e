"""Liveness, readiness and metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST

from zapgate.api.deps import from_state, require_metrics_key
from zapgate.api.schemas import Health, Problem, Readiness
from zapgate.services.observability import Observability

router = APIRouter(tags=["health"])


Observed = Annotated[Observability, Depends(from_state("observability", Observability))]


@router.get("/health")
async def health() -> Health:
    """Answer 200 while the process is up (it only starts answering once it is ready to serve)."""
    return Health(status="ok")


@router.get("/health/ready", responses={503: {"model": Readiness, "description": "Not ready, with reasons."}})
async def ready(observed: Observed, response: Response) -> Readiness:
    """Answer 200 when the database answers and a worker is alive to host sessions, else 503 with the reasons."""
    readiness = await observed.readiness()
    if not readiness.ready:
        response.status_code = 503
    return Readiness(status="ready" if readiness.ready else "unavailable", checks=readiness.checks)


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(require_metrics_key)],
    responses={
        200: {"description": "Prometheus text format.", "content": {CONTENT_TYPE_LATEST: {}}},
        401: {"model": Problem, "description": "ZAPGATE_METRICS_KEY is set and the request does not carry it."},
    },
)
async def prometheus_metrics(observed: Observed) -> Response:
    """Prometheus metrics of the whole gateway: this API process, every live worker (label `process`), sessions
    by status, messages by direction and status, send latency, outbound queue depth, pool use, health check
    failures, events published. No client's data is in them, and no client or webhook id unless
    ZAPGATE_METRICS_CLIENT_LABELS is set. With ZAPGATE_METRICS_KEY set, scrape with that key
    (`Authorization: Bearer <key>` or `X-API-Key`)."""
    return Response(await observed.metrics_text(), media_type=CONTENT_TYPE_LATEST)
