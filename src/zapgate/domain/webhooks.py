"""Webhooks, pure: which URLs, addresses and secrets are accepted, how requests are built and signed, what an
attempt's outcome makes of a delivery.

Nothing here does I/O: the service resolves host names and sends; these functions decide.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from secrets import token_urlsafe
from urllib.parse import urlsplit

from zapgate.domain.events import EventType, event_body
from zapgate.domain.ids import row_id, session_id
from zapgate.domain.records import Event
from zapgate.errors import InvalidRequest, InvalidWebhook

MAX_URL_LENGTH = 2048
SIGNATURE_VERSION = "v1"
SECRET_PREFIX = "whsec_"
SECRET_DISPLAY = 4  # last characters of a secret shown in listings (a chosen secret may be short: show little)
MAX_OVERLAP = 7 * 86_400.0  # seconds the previous secret may keep signing after a rotation

# the headers of every delivery
EVENT_ID_HEADER = "X-Zapgate-Event-Id"
TIMESTAMP_HEADER = "X-Zapgate-Timestamp"
SIGNATURE_HEADER = "X-Zapgate-Signature"
DELIVERY_ID_HEADER = "X-Zapgate-Delivery-Id"
EVENT_TYPE_HEADER = "X-Zapgate-Event-Type"
WEBHOOK_ID_HEADER = "X-Zapgate-Webhook-Id"

# cloud metadata services: never a webhook's destination, whatever the configuration allows
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
    }
)
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: private in practice
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64 prefix (RFC 6052): the last 32 bits are IPv4
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215): a network's own


class DeliveryStatus(StrEnum):
    """Where one delivery of one event to one webhook stands."""

    PENDING = "pending"  # waiting for its (next) attempt
    DELIVERED = "delivered"  # the endpoint answered 2xx
    DEAD = "dead"  # given up: a final answer (4xx) or the last attempt failed


class Outcome(StrEnum):
    """What one attempt came to."""

    DELIVERED = "delivered"
    RETRY = "retry"  # connection error, timeout, 5xx, 408, 429: tried again later
    FAILED = "failed"  # another answer (4xx, 3xx): not retried


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which destinations webhooks may reach besides the public internet."""

    allow_loopback: bool = False  # 127.0.0.0/8, ::1, localhost
    allow_private: bool = False  # 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, link-local


@dataclass(frozen=True, slots=True)
class WebhookUrl:
    """A checked webhook URL and the host it names (an IP address or a name to resolve)."""

    url: str
    scheme: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits a random time in [d/2, d], d = min(base * 2^(n-1), cap)."""

    max_attempts: int = 12
    base: float = 1.0  # seconds
    cap: float = 600.0  # seconds
    retry_after_cap: float = 3600.0  # seconds: the longest Retry-After honoured

    def delay(self, attempts: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after the `attempts`-th failed attempt (Retry-After wins when it asks for longer)."""
        full = min(self.cap, self.base * 2 ** max(0, attempts - 1))
        jittered = (rng or random).uniform(full / 2, full)
        if retry_after is not None:
            jittered = max(jittered, min(retry_after, self.retry_after_cap))
        return jittered

    def gives_up(self, attempts: int) -> bool:
        """Whether a delivery that failed `attempts` times is dead."""
        return attempts >= self.max_attempts


def event_names(names: Collection[str] | None) -> list[str] | None:
    """Return `names` checked against the event types (None or "*" among them: every event), in a stable order."""
    if names is None or "*" in names:
        return None
    known = {member.value for member in EventType}
    unknown = sorted(set(names) - known)
    if unknown:
        raise InvalidWebhook(
            f"unknown event name {unknown[0]!r}: expected any of {', '.join(sorted(known))} (or '*' for all)",
            field="events",
        )
    if not names:
        raise InvalidWebhook("events: name at least one event, or leave it out for all", field="events")
    return sorted(set(names))


def session_names(sessions: Sequence[str] | None) -> list[str] | None:
    """Return `sessions` checked as session ids (None: every session), sorted and without repeats."""
    if sessions is None:
        return None
    if not sessions:
        raise InvalidWebhook("sessions: name at least one session, or leave it out for all", field="sessions")
    return sorted({session_id(session) for session in sessions})


def new_secret() -> str:
    """Return a new random signing secret (256 bits)."""
    return SECRET_PREFIX + token_urlsafe(32)


def checked_secret(secret: str) -> str:
    """Return a signing secret the client chose, refused unless 16 to 256 printable characters, unpadded."""
    if not 16 <= len(secret) <= 256 or not secret.isprintable() or secret.strip() != secret:
        raise InvalidWebhook("secret: 16 to 256 printable characters without surrounding spaces", field="secret")
    return secret


def secret_hint(secret: str) -> str:
    """The last characters of a secret, to tell secrets apart without showing them.

    The end, not the start: a generated secret starts with the same `whsec_` prefix, and a secret the client
    chose (16 characters or more) would give away much of itself by its first ten.
    """
    return "…" + secret[-SECRET_DISPLAY:]


def rotation_overlap(overlap: float) -> float:
    """Return the seconds a replaced secret keeps signing, refused outside 0 to MAX_OVERLAP."""
    if not 0 <= overlap <= MAX_OVERLAP:
        raise InvalidWebhook(f"overlapSeconds: 0 to {int(MAX_OVERLAP)} expected", field="overlapSeconds")
    return overlap


def delivery_status(status: str | None) -> DeliveryStatus | None:
    """Return the status a listing of deliveries is filtered by (None: any)."""
    if status is None:
        return None
    try:
        return DeliveryStatus(status)
    except ValueError as exc:
        raise InvalidRequest(f"status: one of {', '.join(DeliveryStatus)} expected") from exc


def delivery_cursor(cursor: str | None) -> int | None:
    """Return the delivery id a listing continues before, read from the `nextCursor` it gave (None: the start)."""
    if cursor is None:
        return None
    before = row_id(cursor)
    if before is None:
        raise InvalidRequest("cursor: not a cursor this listing returned (use nextCursor as given)")
    return before


def classify_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address, policy: AddressPolicy) -> str | None:
    """Return why `address` may not be called under `policy` ("<address> is <kind>"), or None when it may."""
    kind = address_refusal(address, policy)
    return None if kind is None else f"{address} is {kind}"


def address_refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address, policy: AddressPolicy) -> str | None:
    """Return the kind of address `address` is when `policy` refuses it ("a loopback address (...)"), or None.

    The address itself is not in the answer: a refusal of a resolved name must not tell the caller what an
    internal DNS server answered.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            if address.ipv4_mapped is not None:
                return address_refusal(embedded, policy)
            inner = address_refusal(embedded, policy)
            if inner is not None:  # 6to4, Teredo and NAT64 reach the IPv4 address inside them
                return f"an IPv6 address embedding {inner}"
            if address in _NAT64:
                return None  # a public IPv4 host as an IPv6-only network (DNS64) reaches it
        if address in _LOCAL_NAT64:
            return None if policy.allow_private else "a private address (ZAPGATE_WEBHOOK_ALLOW_PRIVATE)"
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_unspecified or address.is_multicast:
        return "not a unicast address"
    if address.is_loopback:
        return None if policy.allow_loopback else "a loopback address (ZAPGATE_WEBHOOK_ALLOW_LOOPBACK)"
    site_local = isinstance(address, ipaddress.IPv6Address) and address.is_site_local  # fec0::/10, deprecated
    private = (
        address.is_private
        or address.is_link_local
        or site_local
        or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED_ADDRESS_SPACE)
    )
    if private:
        kind = "link-local" if address.is_link_local else "site-local" if site_local else "private"
        return None if policy.allow_private else f"a {kind} address (ZAPGATE_WEBHOOK_ALLOW_PRIVATE)"
    if address.is_reserved:
        return "a reserved address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries to (mapped, 6to4, Teredo's client, well-known NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Return `host` as an IP address when it is one, else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def host_refusal(host: str, policy: AddressPolicy) -> str | None:
    """Return why a host *name* (before resolution) may not be called, or None."""
    name = host.rstrip(".").lower()
    if name in METADATA_HOSTS:
        return f"{name} is a cloud metadata host"
    if (name == "localhost" or name.endswith(".localhost")) and not policy.allow_loopback:
        return f"{name} is a loopback host (ZAPGATE_WEBHOOK_ALLOW_LOOPBACK)"
    address = literal_address(name)
    return None if address is None else classify_address(address, policy)


def parse_url(url: str, policy: AddressPolicy) -> WebhookUrl:
    """Check a webhook URL (http or https, a host, no credentials, an allowed literal address); raise InvalidWebhook."""
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise InvalidWebhook(f"url: 1 to {MAX_URL_LENGTH} characters expected", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidWebhook(f"url: not a valid URL ({exc})", field="url") from exc
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise InvalidWebhook("url: only http and https URLs can receive webhooks", field="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhook(
            "url: credentials in the URL are not supported (verify the signature instead)", field="url"
        )
    host = parts.hostname
    if not host:
        raise InvalidWebhook("url: a host is expected", field="url")
    if any(ch.isspace() for ch in url):
        raise InvalidWebhook("url: no spaces allowed", field="url")
    if not url.isprintable():  # a NUL byte, a control character, a lone surrogate: no URL holds them
        raise InvalidWebhook("url: no control characters allowed", field="url")
    refusal = host_refusal(host, policy)
    if refusal is not None:
        raise InvalidWebhook(f"url: refused destination: {refusal}", field="url")
    return WebhookUrl(url=url, scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80))


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Return the hex HMAC-SHA256 of `{timestamp}.{body}` under `secret`."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """Return the signature header's value: `v1=<hex>` per secret, newest first, comma-separated."""
    return ",".join(f"{SIGNATURE_VERSION}={signature(secret, timestamp, body)}" for secret in secrets)


def outcome_of(status: int) -> Outcome:
    """Classify an HTTP answer: 2xx delivered; 408, 429 and 5xx retried; anything else final."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in (408, 429) or status >= 500:
        return Outcome.RETRY
    return Outcome.FAILED


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Parse a Retry-After header (seconds, or an HTTP date) into seconds from `now`; None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²" is a digit to isdigit(), not to float()
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    seconds = (when - now).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def attempt_status(
    outcome: Outcome,
    attempts: int,
    retry: RetryPolicy,
    now: datetime,
    *,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> tuple[DeliveryStatus, datetime]:
    """Where a delivery stands after its `attempts`-th attempt came to `outcome` at `now`, and when it is next due."""
    if outcome is Outcome.DELIVERED:
        return DeliveryStatus.DELIVERED, now
    if outcome is Outcome.RETRY and not retry.gives_up(attempts):
        return DeliveryStatus.PENDING, now + timedelta(seconds=retry.delay(attempts, retry_after, rng))
    return DeliveryStatus.DEAD, now


@dataclass(frozen=True, slots=True)
class Webhook:
    """An endpoint of a client's that receives its events."""

    id: str
    url: str
    events: tuple[str, ...] | None  # None: every event type
    sessions: tuple[str, ...] | None  # None: every session
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    enabled: bool
    description: str | None
    cursor: int
    created_at: datetime
    updated_at: datetime

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets that sign a request made at `now`: the current one, and the previous one while it overlaps."""
        expires = self.previous_secret_expires_at
        if self.previous_secret and expires is not None and now < expires:
            return [self.secret, self.previous_secret]
        return [self.secret]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event on its way to one webhook, with the outcome of its last attempt."""

    id: int
    webhook_id: str
    event_id: int
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None  # only while pending
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    response_body: str | None
    duration_ms: int | None
    delivered_at: datetime | None
    created_at: datetime


def delivery_request(
    webhook: Webhook, delivery_id: int, event: Event, now: datetime, timestamp: int
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one delivery of `event` to `webhook`, signed with its secrets at `now`."""
    body = json.dumps(event_body(event), separators=(",", ":"), ensure_ascii=False).encode()
    headers = {
        "Content-Type": "application/json",
        EVENT_ID_HEADER: str(event.id),
        EVENT_TYPE_HEADER: event.type,
        DELIVERY_ID_HEADER: str(delivery_id),
        WEBHOOK_ID_HEADER: webhook.id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature_header(webhook.signing_secrets(now), timestamp, body),
    }
    return body, headers
