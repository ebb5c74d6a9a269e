"""Webhook rules without I/O: URLs and addresses, signatures, retries; and the connect-time address check."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import random
import socket
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from zapgate.domain.records import Event
from zapgate.domain.webhooks import (
    AddressPolicy,
    DeliveryStatus,
    Outcome,
    RetryPolicy,
    Webhook,
    attempt_status,
    checked_secret,
    classify_address,
    delivery_cursor,
    delivery_request,
    delivery_status,
    event_names,
    new_secret,
    outcome_of,
    parse_url,
    retry_after_seconds,
    rotation_overlap,
    secret_hint,
    session_names,
    signature,
    signature_header,
)
from zapgate.errors import InvalidRequest, InvalidSessionId, InvalidWebhook
from zapgate.services.webhook_sender import RESOLVER_THREADS, AddressRefused, _GuardedBackend, resolve
from zapgate.services.webhooks import WebhookService

STRICT = AddressPolicy()
OPEN = AddressPolicy(allow_loopback=True, allow_private=True)


@pytest.mark.parametrize(
    ("address", "strict", "opened"),
    [
        ("93.184.215.14", None, None),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", None, None),
        ("127.0.0.1", "loopback", None),
        ("127.8.9.10", "loopback", None),
        ("::1", "loopback", None),
        ("::ffff:127.0.0.1", "loopback", None),
        ("10.0.0.1", "private", None),
        ("172.16.5.4", "private", None),
        ("192.168.1.1", "private", None),
        ("100.64.0.1", "private", None),
        ("fd12:3456::1", "private", None),
        ("169.254.10.10", "link-local", None),
        ("fe80::1", "link-local", None),
        ("169.254.169.254", "metadata", "metadata"),
        ("fd00:ec2::254", "metadata", "metadata"),
        ("0.0.0.0", "not a unicast", "not a unicast"),
        ("224.0.0.1", "not a unicast", "not a unicast"),
        ("2002:7f00:1::1", "embedding a loopback", None),  # 6to4 of 127.0.0.1
        ("2002:c0a8:101::1", "embedding a private", None),  # 6to4 of 192.168.1.1
        ("2002:a9fe:a9fe::1", "embedding a cloud metadata", "embedding a cloud metadata"),
        ("2002:5db8:d70e::1", None, None),  # 6to4 of a public address
        ("fec0::1", "site-local", None),
        ("64:ff9b::a00:1", "embedding a private", None),  # NAT64 of 10.0.0.1
        ("64:ff9b::7f00:1", "embedding a loopback", None),
        ("64:ff9b::a9fe:a9fe", "embedding a cloud metadata", "embedding a cloud metadata"),
        ("64:ff9b::5db8:d70e", None, None),  # NAT64 of a public address: how an IPv6-only network reaches it
        ("64:ff9b:1::1", "private", None),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "embedding a private", None),  # Teredo, client 192.0.2.45
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "embedding a loopback", None),  # client 127.0.0.1
    ],
)
def test_addresses_are_classified(address: str, strict: str | None, opened: str | None) -> None:
    ip = ipaddress.ip_address(address)
    for policy, expected in ((STRICT, strict), (OPEN, opened)):
        reason = classify_address(ip, policy)
        assert (reason is None) == (expected is None), (address, policy, reason)
        if expected is not None:
            assert reason is not None and expected in reason


def test_urls_are_checked() -> None:
    checked = parse_url("  https://Example.com:8443/hook?x=1 ", STRICT)
    assert (checked.url, checked.scheme, checked.host, checked.port) == (
        "https://Example.com:8443/hook?x=1",
        "https",
        "example.com",
        8443,
    )
    assert parse_url("http://example.com/", STRICT).port == 80
    assert parse_url("http://localhost:8080/", OPEN).host == "localhost"
    for bad, reason in [
        ("ftp://example.com/", "only http and https"),
        ("example.com/hook", "only http and https"),
        ("http:///path", "a host is expected"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://a:b@example.com/", "credentials"),
        ("http://localhost/", "loopback"),
        ("http://sub.localhost/", "loopback"),
        ("http://metadata.google.internal/", "metadata"),
        ("http://[::1]/", "loopback"),
        ("https://" + "a" * 2100 + ".com/", "characters"),
    ]:
        with pytest.raises(InvalidWebhook) as caught:
            parse_url(bad, STRICT)
        assert reason in caught.value.message, (bad, caught.value.message)


def test_event_names() -> None:
    assert event_names(None) is None and event_names(["*"]) is None
    assert event_names(["message-status", "qr-code", "qr-code"]) == ["message-status", "qr-code"]
    with pytest.raises(InvalidWebhook, match="unknown event name 'message-sent'"):
        event_names(["message-sent"])
    with pytest.raises(InvalidWebhook):
        event_names([])


def test_signatures_are_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"eventId":1}'
    expected = hmac.new(b"secret-0123456789", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("secret-0123456789", 1700000000, body) == expected
    header = signature_header(["new-secret-000000", "secret-0123456789"], 1700000000, body)
    assert header.split(",")[1] == f"v1={expected}" and header.startswith("v1=")


def test_answers_are_classified() -> None:
    assert [outcome_of(s) for s in (200, 204, 299)] == [Outcome.DELIVERED] * 3
    assert [outcome_of(s) for s in (408, 429, 500, 502, 503, 599)] == [Outcome.RETRY] * 6
    assert [outcome_of(s) for s in (301, 400, 401, 403, 404, 410, 422)] == [Outcome.FAILED] * 7


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy()  # the defaults: 12 attempts, 1 s doubling to 10 min
    rng = random.Random(7)
    for attempt in range(1, 12):
        full = min(600.0, 2.0 ** (attempt - 1))
        delays = [policy.delay(attempt, rng=rng) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays) and len(set(delays)) > 1
    assert policy.delay(30, rng=rng) <= 600.0
    assert policy.delay(1, retry_after=120, rng=rng) == 120  # Retry-After asks for longer: honoured
    assert policy.delay(1, retry_after=10**9, rng=rng) == 3600  # within reason
    assert not policy.gives_up(11) and policy.gives_up(12)
    total = sum(min(600.0, 2.0 ** (n - 1)) for n in range(1, 12))
    assert 20 * 60 < total < 30 * 60  # the last attempt comes about half an hour after the first


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    now = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("30", now) == 30
    assert retry_after_seconds("Sun, 29 Nov 2026 12:01:00 GMT", now) == 60
    assert retry_after_seconds((now - timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S GMT"), now) == 0
    assert retry_after_seconds(None, now) is None and retry_after_seconds("soon", now) is None
    assert retry_after_seconds("²", now) is None and retry_after_seconds("3²", now) is None  # a receiver's header


@pytest.mark.parametrize(
    ("sessions", "expected"),
    [
        (None, None),
        (["b", "a", "b"], ["a", "b"]),
        (["only"], ["only"]),
        ([], InvalidWebhook),
        (["no spaces"], InvalidSessionId),
    ],
)
def test_session_names(sessions: list[str] | None, expected: Any) -> None:
    if isinstance(expected, type):
        with pytest.raises(expected):
            session_names(sessions)
    else:
        assert session_names(sessions) == expected


@pytest.mark.parametrize(
    ("secret", "accepted"),
    [
        ("x" * 16, True),
        ("x" * 256, True),
        ("whsec_" + "A1-_" * 4, True),
        ("x" * 15, False),
        ("x" * 257, False),
        (" " + "x" * 20, False),
        ("x" * 20 + "\n", False),
        ("x" * 10 + "\t" + "x" * 10, False),
    ],
)
def test_chosen_secrets_are_checked(secret: str, accepted: bool) -> None:
    if accepted:
        assert checked_secret(secret) == secret
    else:
        with pytest.raises(InvalidWebhook, match="secret"):
            checked_secret(secret)


def test_new_secrets_are_random_and_shown_by_their_last_four_characters() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second and checked_secret(first) == first
    assert secret_hint(first) == "…" + first[-4:]


def test_a_chosen_secret_shows_no_more_than_its_last_four_characters() -> None:
    chosen = "my-own-secret-0123"  # 18 characters: ten of them would be most of it
    assert secret_hint(chosen) == "…0123"


@pytest.mark.parametrize(
    ("overlap", "accepted"),
    [(0.0, True), (86_400.0, True), (7 * 86_400.0, True), (-1.0, False), (7 * 86_400.0 + 1, False)],
)
def test_rotation_overlap(overlap: float, accepted: bool) -> None:
    if accepted:
        assert rotation_overlap(overlap) == overlap
    else:
        with pytest.raises(InvalidWebhook, match="overlapSeconds"):
            rotation_overlap(overlap)


@pytest.mark.parametrize(
    ("status", "cursor", "expected"),
    [
        (None, None, (None, None)),
        ("pending", "42", (DeliveryStatus.PENDING, 42)),
        ("dead", str(2**63 - 1), (DeliveryStatus.DEAD, 2**63 - 1)),
        (None, "9" * 19, "cursor"),  # past bigint
        (None, "²", "cursor"),
        ("lost", None, "status: one of pending, delivered, dead"),
        (None, "9" * 20, "cursor"),
        (None, "-1", "cursor"),
        (None, "abc", "cursor"),
    ],
)
def test_delivery_listing_filters(status: str | None, cursor: str | None, expected: Any) -> None:
    if isinstance(expected, str):
        with pytest.raises(InvalidRequest, match=expected):
            delivery_status(status), delivery_cursor(cursor)
    else:
        assert (delivery_status(status), delivery_cursor(cursor)) == expected


NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("outcome", "attempts", "retry_after", "status", "wait"),
    [
        (Outcome.DELIVERED, 1, None, DeliveryStatus.DELIVERED, (0, 0)),
        (Outcome.DELIVERED, 12, None, DeliveryStatus.DELIVERED, (0, 0)),
        (Outcome.RETRY, 1, None, DeliveryStatus.PENDING, (0.5, 1)),
        (Outcome.RETRY, 4, None, DeliveryStatus.PENDING, (4, 8)),
        (Outcome.RETRY, 1, 120.0, DeliveryStatus.PENDING, (120, 120)),
        (Outcome.RETRY, 11, None, DeliveryStatus.PENDING, (300, 600)),
        (Outcome.RETRY, 12, None, DeliveryStatus.DEAD, (0, 0)),
        (Outcome.FAILED, 1, None, DeliveryStatus.DEAD, (0, 0)),
        (Outcome.FAILED, 1, 120.0, DeliveryStatus.DEAD, (0, 0)),
    ],
)
def test_an_attempt_leaves_its_delivery_delivered_pending_or_dead(
    outcome: Outcome, attempts: int, retry_after: float | None, status: DeliveryStatus, wait: tuple[float, float]
) -> None:
    found, next_at = attempt_status(
        outcome, attempts, RetryPolicy(), NOW, retry_after=retry_after, rng=random.Random(3)
    )
    assert found is status
    assert wait[0] <= (next_at - NOW).total_seconds() <= wait[1]


def test_a_delivery_request_is_the_event_body_signed_by_every_current_secret() -> None:
    hook = Webhook(
        id="hook1",
        url="https://example.com/hook",
        events=None,
        sessions=None,
        secret="new-secret-000000",
        previous_secret="old-secret-000000",
        previous_secret_expires_at=NOW + timedelta(hours=1),
        enabled=True,
        description=None,
        cursor=0,
        created_at=NOW,
        updated_at=NOW,
    )
    event = Event(7, "alice", "message-received", {"text": "Olá"}, NOW)
    body, headers = delivery_request(hook, 99, event, NOW, 1700000000)
    assert body.decode() == (
        '{"eventId":7,"type":"message-received","sessionId":"alice","createdAt":"2026-11-29T12:00:00+00:00",'
        '"text":"Olá"}'
    )
    assert headers == {
        "Content-Type": "application/json",
        "X-Zapgate-Event-Id": "7",
        "X-Zapgate-Event-Type": "message-received",
        "X-Zapgate-Delivery-Id": "99",
        "X-Zapgate-Webhook-Id": "hook1",
        "X-Zapgate-Timestamp": "1700000000",
        "X-Zapgate-Signature": signature_header(["new-secret-000000", "old-secret-000000"], 1700000000, body),
    }
    _, later = delivery_request(hook, 99, event, NOW + timedelta(hours=2), 1700000000)
    assert later["X-Zapgate-Signature"] == signature_header(["new-secret-000000"], 1700000000, body)


async def test_names_are_resolved_and_checked_when_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: a name that now resolves to a refused address is refused at connect time."""

    def rebound(host: str, port: int, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebound)
    with pytest.raises(AddressRefused, match=r"hooks\.example\.com resolves to a loopback address") as refused:
        await _GuardedBackend(STRICT).connect_tcp("hooks.example.com", 443)
    assert "127.0.0.1" not in str(refused.value)
    with pytest.raises(AddressRefused, match="metadata"):
        await _GuardedBackend(OPEN).connect_tcp("169.254.169.254", 80)


async def test_refusals_of_resolved_names_do_not_tell_the_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    """What an internal DNS server answers is not the caller's to learn: the refusal names kinds only."""

    def internal(host: str, port: int, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.20.30.40", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.20.30.41", port)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fd12:3456::7", port, 0, 0)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", internal)
    with pytest.raises(AddressRefused) as refused:
        await _GuardedBackend(STRICT).connect_tcp("intranet.example.com", 443)
    assert str(refused.value) == (
        "refused destination: intranet.example.com resolves to a private address (ZAPGATE_WEBHOOK_ALLOW_PRIVATE)"
    )
    service = WebhookService(None, policy=STRICT)  # type: ignore[arg-type]  # the URL check needs no database
    with pytest.raises(InvalidWebhook) as invalid:
        await service._check_url("https://intranet.example.com/hook")
    assert "10.20" not in invalid.value.message and "fd12" not in invalid.value.message
    assert "resolves to a private address" in invalid.value.message


async def test_names_are_looked_up_on_a_small_pool_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lookups that hang hold at most RESOLVER_THREADS threads, and never the loop's default executor."""
    release = threading.Event()
    running: list[str] = []

    def hanging(host: str, port: int, **kwargs: Any) -> list[Any]:
        running.append(threading.current_thread().name)
        release.wait(10)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port))]

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    lookups = [asyncio.ensure_future(resolve(f"host{i}.example.com", 443)) for i in range(3 * RESOLVER_THREADS)]
    try:
        await asyncio.sleep(0.2)
        assert len(running) == RESOLVER_THREADS
        assert all(name.startswith("zapgate-dns") for name in running)
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.run_in_executor(None, lambda: "free"), 1.0) == "free"
    finally:
        release.set()
    assert all(found == ["93.184.215.14"] for found in await asyncio.gather(*lookups))
