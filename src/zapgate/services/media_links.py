"""Fetching the file of a media message sent by `link`, with the protections of webhooks.

The address is checked where each connection is made (`webhook_sender.GuardedTransport`): no loopback or
private address unless the deployment allows them for webhooks, on every redirect too (at most
MAX_REDIRECTS). The body streams to a file and stops at the kind's size limit; one deadline covers the
whole fetch. A link that cannot be fetched is the caller's error, named by its field (`image.link`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import httpx

from zapgate import __version__
from zapgate.domain.webhooks import AddressPolicy
from zapgate.errors import InvalidRequest
from zapgate.services.webhook_sender import GuardedTransport, refusal_of

MAX_REDIRECTS = 3
FETCH_TIMEOUT = 60.0  # seconds for the whole fetch of one link
USER_AGENT = f"zapgate-media/{__version__}"


@dataclass(frozen=True, slots=True)
class Fetched:
    """A file fetched from a link: its size and what the server said it was (never trusted for the type)."""

    size: int
    content_type: str | None
    filename: str | None  # from Content-Disposition or the URL's last segment


class LinkFetcher:
    """Fetch links to files, guarded as webhooks are; one instance per process, closed with it."""

    def __init__(self, policy: AddressPolicy, *, timeout: float = FETCH_TIMEOUT) -> None:
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=8)
        self._client = httpx.AsyncClient(
            transport=GuardedTransport(policy, limits),
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
            trust_env=False,
        )
        self.timeout = timeout

    async def close(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str, dest: Path, *, limit: int, field: str) -> Fetched:
        """Stream the file at `url` into `dest` (at most `limit` bytes); InvalidRequest names `field` on failure."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._fetch(url, dest, limit=limit, field=field)
        except TimeoutError as exc:
            raise InvalidRequest(f"{field}: the file did not arrive within {self.timeout:g} s", field=field) from exc
        except httpx.TooManyRedirects as exc:
            raise InvalidRequest(f"{field}: more than {MAX_REDIRECTS} redirects", field=field) from exc
        except httpx.InvalidURL as exc:
            raise InvalidRequest(f"{field}: not a URL that can be fetched ({exc})", field=field) from exc
        except httpx.HTTPError as exc:
            refused = refusal_of(exc)
            reason = refused or (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            raise InvalidRequest(f"{field}: the file could not be fetched ({reason})", field=field) from exc

    async def _fetch(self, url: str, dest: Path, *, limit: int, field: str) -> Fetched:
        async with self._client.stream("GET", url) as response:
            if response.status_code != 200:
                raise InvalidRequest(
                    f"{field}: the server answered HTTP {response.status_code} (200 with the file expected)",
                    field=field,
                )
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise InvalidRequest(f"{field}: {_mb(int(declared))} is over the {_mb(limit)} limit", field=field)
            size = 0
            with dest.open("wb") as out:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise InvalidRequest(f"{field}: the file is over the {_mb(limit)} limit", field=field)
                    out.write(chunk)
            if size == 0:
                raise InvalidRequest(f"{field}: the server sent an empty file", field=field)
            return Fetched(size, response.headers.get("content-type"), _filename(response))


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def _filename(response: httpx.Response) -> str | None:
    disposition = response.headers.get("content-disposition", "")
    for part in disposition.split(";"):
        name, _, value = part.strip().partition("=")
        if name.lower() == "filename" and value:
            return value.strip('"') or None
    last = response.url.path.rsplit("/", 1)[-1]
    return last or None
