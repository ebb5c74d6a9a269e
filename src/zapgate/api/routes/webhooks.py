"""The client's webhooks: where its events are POSTed (signed, retried, in order), and their deliveries."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response, status

from zapgate.api.deps import Webhooks, client_of_request
from zapgate.api.schemas import (
    CreateWebhookRequest,
    DeliveryOut,
    DeliveryPage,
    Problem,
    RotateSecretRequest,
    SecretRotated,
    UpdateWebhookRequest,
    WebhookCreated,
    WebhookList,
    WebhookOut,
)
from zapgate.domain.webhooks import Delivery, Webhook, secret_hint
from zapgate.services.webhooks import NewWebhook, WebhookChanges

ClientId = Annotated[str, Depends(client_of_request)]
WebhookId = Annotated[str, Path(min_length=1, max_length=64, description="The webhook's id.")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or wrong API key."},
    422: {
        "model": Problem,
        "description": "Invalid input, with the reason: a URL that is not http(s) or points to a refused "
        "address, an unknown event name, an unknown field.",
    },
    429: {
        "model": Problem,
        "description": "Over the API key's request rate (ZAPGATE_REQUEST_RATE); `Retry-After` says when to retry.",
        "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    },
    503: {"model": Problem, "description": "The database is unavailable."},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "No such webhook."}}

router = APIRouter(prefix="/whatsapp/webhooks", tags=["webhooks"], responses=_ERRORS)


def webhook_out(webhook: Webhook) -> WebhookOut:
    """Return the API view of a webhook (without its secret)."""
    return WebhookOut(
        id=webhook.id,
        url=webhook.url,
        events=None if webhook.events is None else list(webhook.events),
        sessions=None if webhook.sessions is None else list(webhook.sessions),
        enabled=webhook.enabled,
        description=webhook.description,
        secret_hint=secret_hint(webhook.secret),
        previous_secret_expires_at=webhook.previous_secret_expires_at if webhook.previous_secret else None,
        created_at=webhook.created_at,
        updated_at=webhook.updated_at,
    )


def delivery_out(delivery: Delivery) -> DeliveryOut:
    """Return the API view of a delivery."""
    return DeliveryOut(
        id=delivery.id,
        webhook_id=delivery.webhook_id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=delivery.status.value,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        last_attempt_at=delivery.last_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        response_body=delivery.response_body,
        duration_ms=delivery.duration_ms,
        delivered_at=delivery.delivered_at,
        created_at=delivery.created_at,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": Problem, "description": "The client holds its quota of webhooks (`quota_exceeded`)."}},
)
async def create_webhook(body: CreateWebhookRequest, client: ClientId, webhooks: Webhooks) -> WebhookCreated:
    """Create a webhook: every event logged from now on that passes its filters is POSTed to `url`.

    The answer holds the signing secret, this once (generated when not given). Each request is a POST of the
    event's JSON (the body SSE and Socket.IO carry) with the headers `X-Zapgate-Event-Id`,
    `X-Zapgate-Event-Type`, `X-Zapgate-Delivery-Id`, `X-Zapgate-Webhook-Id`, `X-Zapgate-Timestamp` (Unix
    seconds) and `X-Zapgate-Signature: v1=<hex>`, the HMAC-SHA256 of `{timestamp}.{raw body}` under the
    secret. A webhook gets its events in order, one request at a time. A 2xx answer delivers; connection
    errors, timeouts, 408, 429 (honouring `Retry-After`) and 5xx are retried with exponential backoff (by
    default 12 attempts over about half an hour); any other answer is final: the delivery is dead and can be
    sent again with `.../deliveries/{deliveryId}/redeliver`.
    """
    created = await webhooks.create(
        client,
        NewWebhook(
            url=body.url,
            events=body.events,
            sessions=body.sessions,
            secret=body.secret,
            enabled=body.enabled,
            description=body.description,
        ),
    )
    return WebhookCreated(**webhook_out(created).model_dump(), secret=created.secret)


@router.get("")
async def list_webhooks(client: ClientId, webhooks: Webhooks) -> WebhookList:
    """List the client's webhooks, oldest first."""
    return WebhookList(webhooks=[webhook_out(webhook) for webhook in await webhooks.list(client)])


@router.get("/{webhookId}", responses=_NOT_FOUND)
async def get_webhook(webhookId: WebhookId, client: ClientId, webhooks: Webhooks) -> WebhookOut:
    """Return one webhook."""
    return webhook_out(await webhooks.get(client, webhookId))


@router.patch("/{webhookId}", responses=_NOT_FOUND)
async def update_webhook(
    webhookId: WebhookId, body: UpdateWebhookRequest, client: ClientId, webhooks: Webhooks
) -> WebhookOut:
    """Change a webhook's URL, filters, description or enabled flag (fields left out stay as they are).

    Disabled, a webhook receives nothing (pending deliveries wait); enabled again, it receives the events
    logged from then on.
    """
    changes = WebhookChanges(
        fields=frozenset(body.model_fields_set),
        url=body.url,
        events=body.events,
        sessions=body.sessions,
        enabled=body.enabled,
        description=body.description,
    )
    return webhook_out(await webhooks.update(client, webhookId, changes))


@router.delete("/{webhookId}", status_code=status.HTTP_204_NO_CONTENT, responses=_NOT_FOUND)
async def delete_webhook(webhookId: WebhookId, client: ClientId, webhooks: Webhooks) -> Response:
    """Delete a webhook and its deliveries (pending ones are not sent)."""
    await webhooks.delete(client, webhookId)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{webhookId}/rotate-secret", responses=_NOT_FOUND)
async def rotate_webhook_secret(
    webhookId: WebhookId, client: ClientId, webhooks: Webhooks, body: RotateSecretRequest | None = None
) -> SecretRotated:
    """Give the webhook a new secret (shown this once); the old one keeps signing for `overlapSeconds`.

    During the overlap each request carries both signatures, `v1=<new>,v1=<old>`, so receivers can switch
    to the new secret at their own pace.
    """
    request = body or RotateSecretRequest.model_validate({})
    rotated = await webhooks.rotate_secret(client, webhookId, secret=request.secret, overlap=request.overlap_seconds)
    return SecretRotated(
        webhook_id=rotated.id,
        secret=rotated.secret,
        previous_secret_expires_at=rotated.previous_secret_expires_at if rotated.previous_secret else None,
    )


@router.get("/{webhookId}/deliveries", responses=_NOT_FOUND)
async def list_deliveries(
    webhookId: WebhookId,
    client: ClientId,
    webhooks: Webhooks,
    status_: Annotated[
        Literal["pending", "delivered", "dead"] | None, Query(alias="status", description="Only these.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Items per page (1-500).")] = 50,
    cursor: Annotated[str | None, Query(max_length=32, description="`nextCursor` of the previous page.")] = None,
) -> DeliveryPage:
    """List a webhook's deliveries, newest first: status, attempts, last status code and error, next attempt."""
    page = await webhooks.deliveries(client, webhookId, status=status_, limit=limit, cursor=cursor)
    return DeliveryPage(deliveries=[delivery_out(d) for d in page.items], next_cursor=page.next_cursor)


@router.post(
    "/{webhookId}/deliveries/{deliveryId}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {"model": Problem, "description": "No such webhook or delivery."}},
)
async def redeliver(
    webhookId: WebhookId,
    deliveryId: Annotated[int, Path(ge=1, le=2**63 - 1, description="The delivery's id.")],
    client: ClientId,
    webhooks: Webhooks,
) -> DeliveryOut:
    """Send a delivery's event again (delivered or dead alike): a new delivery at the end of the queue."""
    return delivery_out(await webhooks.redeliver(client, webhookId, deliveryId))
