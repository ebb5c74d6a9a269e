"""Signed, expiring links to a client's media, pure: what a webhook consumer fetches without the API key.

A link names the client, the file and when it expires, and carries an HMAC-SHA256 of those three under the
client's own link key: it cannot be forged, altered to reach another file or another client's, or used
after it expires. Rotating the client's key revokes every link made before.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from zapgate.errors import AuthenticationFailed

SIGNATURE_BYTES = 32


def signature(key: bytes, client_id: str, media_id: str, expires: int) -> str:
    """The signature of a link to `media_id` of `client_id` valid until `expires` (Unix seconds)."""
    message = f"zapgate-media\n{client_id}\n{media_id}\n{expires}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def verify(key: bytes, client_id: str, media_id: str, expires: int, given: str, *, now: float) -> None:
    """Refuse (AuthenticationFailed) a link that is expired, altered or signed with another key."""
    if expires < now:
        raise AuthenticationFailed("this media link has expired: ask the API for a new one")
    expected = signature(key, client_id, media_id, expires)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise AuthenticationFailed("this media link is not valid (altered, or its key was rotated)")
