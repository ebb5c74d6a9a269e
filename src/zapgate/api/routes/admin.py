"""Client (tenant) administration, behind ZAPGATE_ADMIN_KEY."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response, status

from zapgate.api.deps import Clients, Manager, Quotas, require_admin
from zapgate.api.schemas import (
    ClientHealthOut,
    ClientList,
    ClientOut,
    CreateClientRequest,
    IssuedKeyOut,
    Problem,
    QuotasOut,
    QuotaUsage,
    QuotaValues,
    UpdateQuotasRequest,
)
from zapgate.domain.ids import client_id
from zapgate.domain.quotas import QuotaOverrides
from zapgate.domain.quotas import Quotas as QuotaLimits
from zapgate.domain.records import Client
from zapgate.services.clients import IssuedKey
from zapgate.services.quotas import QuotaChanges, QuotaView

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong admin key."},
    403: {"model": Problem, "description": "The admin API is disabled (ZAPGATE_ADMIN_KEY is not set)."},
    422: {"model": Problem, "description": "Invalid client id or body."},
    429: {
        "model": Problem,
        "description": "Too many wrong admin keys came from this address (ZAPGATE_ADMIN_MAX_FAILURES); "
        "`Retry-After` says when it may try again.",
        "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    },
    503: {"model": Problem, "description": "The database is unavailable."},
}

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)], responses=_ERRORS)


def _client(client: Client) -> ClientOut:
    return ClientOut(client_id=client.client_id, created_at=client.created_at, key_prefixes=list(client.key_prefixes))


def _issued(issued: IssuedKey) -> IssuedKeyOut:
    return IssuedKeyOut(
        client_id=issued.client.client_id,
        created_at=issued.client.created_at,
        api_key=issued.api_key,
        key_prefix=issued.client.key_prefixes[0],
    )


@router.post(
    "/clients",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": Problem, "description": "A client with this id exists."}},
)
async def create_client(body: CreateClientRequest, clients: Clients) -> IssuedKeyOut:
    """Register a client, create its schema and return its API key (shown only in this response)."""
    return _issued(await clients.create(body.client_id))


@router.get("/clients")
async def list_clients(clients: Clients) -> ClientList:
    """List every client with the first characters of its keys."""
    return ClientList(clients=[_client(client) for client in await clients.list()])


@router.post(
    "/clients/{clientId}/rotate-key",
    responses={404: {"model": Problem, "description": "No such client."}},
)
async def rotate_client_key(clientId: str, clients: Clients) -> IssuedKeyOut:
    """Revoke every key of the client and return a new one (shown only in this response)."""
    return _issued(await clients.rotate_key(clientId))


@router.delete(
    "/clients/{clientId}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"model": Problem, "description": "No such client."}},
)
async def delete_client(clientId: str, clients: Clients) -> Response:
    """Delete the client, its keys and its schema with all its sessions, contacts, messages and events."""
    await clients.delete(clientId)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _quota_values(values: QuotaLimits | QuotaOverrides) -> QuotaValues:
    engines = None if values.engines is None else list(values.engines)
    return QuotaValues(max_sessions=values.max_sessions, max_webhooks=values.max_webhooks, engines=engines)


def _quotas(view: QuotaView) -> QuotasOut:
    return QuotasOut(
        client_id=view.client_id,
        quotas=_quota_values(view.quotas),
        overrides=_quota_values(view.overrides),
        usage=QuotaUsage(sessions=view.sessions, webhooks=view.webhooks),
    )


@router.get("/clients/{clientId}/quotas", responses={404: {"model": Problem, "description": "No such client."}})
async def get_client_quotas(clientId: str, quotas: Quotas) -> QuotasOut:
    """Return the client's quotas as they apply (its own, else the deployment's defaults) and its usage."""
    return _quotas(await quotas.get(clientId))


@router.patch("/clients/{clientId}/quotas", responses={404: {"model": Problem, "description": "No such client."}})
async def update_client_quotas(clientId: str, body: UpdateQuotasRequest, quotas: Quotas) -> QuotasOut:
    """Change the client's quotas; a field set to null returns to the deployment's default.

    A lower quota keeps what the client holds and refuses new sessions or webhooks over it. Engines left
    out of `engines` are turned off for the client: its sessions on them are stopped, and new ones refused.
    """
    changes = QuotaChanges(
        fields=frozenset(body.model_fields_set),
        max_sessions=body.max_sessions,
        max_webhooks=body.max_webhooks,
        engines=body.engines,
    )
    return _quotas(await quotas.update(clientId, changes))


@router.get("/health/clients/{clientId}")
async def client_health(clientId: str, manager: Manager) -> ClientHealthOut:
    """Check that the client's schema answers and is at the newest revision (the seed's checkSingleConnection)."""
    health = await manager.check_single_connection(client_id(clientId))
    return ClientHealthOut(
        client_id=health.client_id,
        schema_name=health.schema,
        healthy=health.healthy,
        latency_ms=health.latency_ms,
        revision=health.revision,
        error=health.error,
    )
