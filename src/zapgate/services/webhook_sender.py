"""One signed POST to a webhook, with the destination checked where the connection is made.

Host names are resolved when the connection is opened and every address is checked against the
`AddressPolicy` there, and the connection goes to the address that was checked: a name that resolved to a
public address when the webhook was created and to 127.0.0.1 now (DNS rebinding) is refused. Redirects are
not followed, each attempt has one deadline for everything (resolving, connecting, sending, the answer),
and only the first bytes of an answer are read.

Names are looked up on a few threads of their own (`resolve`): `getaddrinfo` blocks a thread for as long as
a DNS server takes, and on the loop's default executor slow lookups would starve everything else that uses it.
Refusals name the kind of address a host resolved to, never the address: what an internal DNS server
answers is not the caller's to learn.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpcore
import httpx

from zapgate import __version__
from zapgate.domain.webhooks import (
    AddressPolicy,
    Outcome,
    address_refusal,
    host_refusal,
    literal_address,
    outcome_of,
    retry_after_seconds,
)
from zapgate.log import get_logger

log = get_logger(__name__)

RESPONSE_LIMIT = 1024  # bytes of an answer kept
USER_AGENT = f"zapgate-webhooks/{__version__}"
RESOLVER_THREADS = 4  # host names looked up at once, per process (each lookup holds a thread)

_resolver = ThreadPoolExecutor(max_workers=RESOLVER_THREADS, thread_name_prefix="zapgate-dns")


async def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, in order and without repeats (OSError when it does not resolve)."""
    lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    found = await asyncio.get_running_loop().run_in_executor(_resolver, lookup)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


class AddressRefused(httpcore.ConnectError):
    """The destination resolved to no address the policy allows."""


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one POST came to."""

    outcome: Outcome
    status_code: int | None
    error: str | None
    response_body: str | None
    duration: float  # seconds
    retry_after: float | None = None  # seconds the endpoint asked us to wait (429, 503)


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to addresses the policy allows, resolving names itself."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        refusal = host_refusal(host, self._policy)
        if refusal is not None:
            raise AddressRefused(f"refused destination: {refusal}")
        literal = literal_address(host)
        if literal is not None:
            candidates = [str(literal)]
        else:
            try:
                candidates = await resolve(host, port)
            except OSError as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        allowed: list[str] = []
        refusals: dict[str, None] = {}  # the kinds refused, each once, in order (never the addresses)
        for candidate in candidates:
            parsed = literal_address(candidate)
            reason = "not an address" if parsed is None else address_refusal(parsed, self._policy)
            if reason is None:
                allowed.append(candidate)
            else:
                refusals[reason] = None
        if not allowed:
            raise AddressRefused(f"refused destination: {host} resolves to {'; '.join(refusals) or 'nothing'}")
        error: Exception | None = None
        for address in allowed[:3]:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("refused destination: unix sockets")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over the guarded network backend."""

    def __init__(self, policy: AddressPolicy, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(policy),
        )


class WebhookSender:
    """POSTs signed bodies to webhooks: one deadline per attempt, answers read up to RESPONSE_LIMIT bytes.

    Requests go straight to httpx's transport: no cookies (one webhook's endpoint must not set what another
    receives), no redirects, no authentication flows, and less work per request.
    """

    def __init__(self, policy: AddressPolicy, *, timeout: float = 10.0, max_connections: int = 64) -> None:
        self.timeout = timeout
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._transport = GuardedTransport(policy, limits)
        self._timeouts = httpx.Timeout(timeout).as_dict()

    async def close(self) -> None:
        """Close every connection."""
        await self._transport.aclose()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> AttemptResult:
        """POST `body` to `url`; never raises for what the endpoint or the network does."""
        started = time.perf_counter()
        try:
            request = httpx.Request(
                "POST",
                _parsed(url),
                content=body,
                headers={"User-Agent": USER_AGENT, **headers},
                extensions={"timeout": self._timeouts},
            )
            async with asyncio.timeout(self.timeout):
                response = await self._transport.handle_async_request(request)
                try:
                    kept = await _read_prefix(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            return _failure(Outcome.RETRY, f"no answer within {self.timeout:g} s", started)
        except httpx.TransportError as exc:
            refused = refusal_of(exc)
            if refused is not None:
                return _failure(Outcome.RETRY, refused, started)
            if isinstance(exc, httpx.UnsupportedProtocol):
                return _failure(Outcome.FAILED, f"unsupported URL: {exc}", started)
            return _failure(Outcome.RETRY, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, started)
        except httpx.InvalidURL as exc:
            return _failure(Outcome.FAILED, f"invalid URL: {exc}", started)
        duration = time.perf_counter() - started
        status = response.status_code
        outcome = outcome_of(status)
        error = None
        if outcome is not Outcome.DELIVERED:
            error = f"HTTP {status}"
            if 300 <= status < 400:
                error += f" (redirects are not followed: {response.headers.get('location', '')[:200]})"
        retry_after = None
        if status in (429, 503):
            retry_after = retry_after_seconds(response.headers.get("retry-after"), datetime.now(UTC))
        text = kept.decode("utf-8", "replace") if kept else None
        return AttemptResult(outcome, status, error, text, duration, retry_after)


@functools.lru_cache(maxsize=4096)
def _parsed(url: str) -> httpx.URL:
    return httpx.URL(url)


async def _read_prefix(response: httpx.Response) -> bytes:
    kept = bytearray()
    async for chunk in response.aiter_raw():
        kept += chunk
        if len(kept) >= RESPONSE_LIMIT:
            break
    return bytes(kept[:RESPONSE_LIMIT])


def _failure(outcome: Outcome, error: str, started: float) -> AttemptResult:
    return AttemptResult(outcome, None, error[:500], None, time.perf_counter() - started)


def refusal_of(exc: BaseException) -> str | None:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, AddressRefused):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    return None
