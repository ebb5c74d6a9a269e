"""Client (tenant) administration, behind ZAPGATE_ADMIN_KEY."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response, status

from zapgate.api.deps import Clients, Manager, require_admin
from zapgate.api.schemas import (
    ClientHealthOut,
    ClientList,
    ClientOut,
    CreateClientRequest,
    IssuedKeyOut,
    Problem,
)
from zapgate.domain.ids import client_id
from zapgate.domain.records import Client
from zapgate.services.clients import IssuedKey

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong admin key."},
    403: {"model": Problem, "description": "The admin API is disabled (ZAPGATE_ADMIN_KEY is not set)."},
    422: {"model": Problem, "description": "Invalid client id or body."},
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
