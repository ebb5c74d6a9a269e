"""The one error tree of zapgate.

    ZapgateError                    anything zapgate raises on purpose
    ├── InvalidRequest              the caller's input is malformed (never retried)
    │   ├── InvalidClientId         a client id outside ^[a-z0-9][a-z0-9_]{0,47}$
    │   ├── InvalidSessionId        a session id outside ^[A-Za-z0-9_-]{1,64}$
    │   ├── IdempotencyKeyReused    an Idempotency-Key sent again with a different request
    │   ├── InvalidWebhook          a webhook URL, event name or destination that cannot be used
    │   ├── EngineNotOffered        an engine this deployment does not run (ZAPGATE_ENGINES)
    │   ├── InvalidMedia            a media file too large, of a type not allowed, or undecodable (`field`, `code`)
    │   ├── UnknownContact          a recipient named by a contact id the client has no contact under (`field`)
    │   └── UnstorableData          a value the database refuses to store (never worth a retry)
    ├── RateLimited                 too many sends for the session now (`retry_after` seconds)
    │   ├── TooManyConnections      the API key holds as many realtime connections as it may
    │   ├── TooManyRequests         over the API key's request rate (ZAPGATE_REQUEST_RATE)
    │   └── TooManyFailures         too many wrong admin keys from this address: it waits
    ├── SessionNotConnected         the session is in a state that cannot send (logged out, failed, ...)
    ├── NotFound                    the named thing does not exist (for this client)
    │   ├── ClientNotFound
    │   ├── SessionNotFound
    │   ├── ContactNotFound
    │   ├── ChatNotFound
    │   ├── MessageNotFound
    │   ├── WebhookNotFound
    │   ├── DeliveryNotFound
    │   ├── MediaNotFound           no media (or no stored bytes) under this id or store key for this client
    │   ├── GroupNotFound           no such group with the session in it
    │   └── InviteNotFound          an invite link or code that names no group (revoked, or never given)
    ├── Conflict                    the request collides with existing state
    │   ├── ClientExists
    │   ├── DuplicateRecord         a unique key (session id, message id, ...) is taken
    │   ├── QuotaExceeded           the client holds as many sessions or webhooks as it may (`quota`, `limit`)
    │   ├── MessageNotEditable      a message WhatsApp would not let the session edit or delete (now)
    │   ├── InvalidTransition       a session status change its state machine does not allow
    │   └── GroupFull               the group has as many participants as WhatsApp allows
    ├── EngineCallFailed            the session's worker could not do what was asked (`reason` says why)
    │   └── EngineCallTimedOut      no worker answered in time (the session may be moving between workers)
    ├── AuthenticationFailed        a missing or wrong API key
    ├── PermissionDenied            the caller is known but may not do this (e.g. admin API disabled)
    │   ├── EngineNotAllowed        an engine the deployment offers but this client may not use
    │   └── GroupActionForbidden    the session's role in a group does not allow this (not an admin, ...)
    ├── DatabaseError               the database failed us (retryable unless said otherwise)
    │   └── DatabaseUnavailable     the server cannot be reached
    └── MediaStoreError             the media store (PostgreSQL chunks or an S3 bucket) failed us (retryable)

Services raise these; `api/problems.py` alone turns them into HTTP status codes and the CLI into one line.
Data travels in attributes (`code`, `retryable`, ...), never inside the message text.
"""

from __future__ import annotations


class ZapgateError(Exception):
    """Base of every error zapgate raises on purpose."""

    code: str = "zapgate_error"
    retryable: bool = False

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(ZapgateError):
    """The caller's input is malformed."""

    code = "invalid_request"


class InvalidClientId(InvalidRequest):
    """A client id that does not match ^[a-z0-9][a-z0-9_]{0,47}$."""

    code = "invalid_client_id"


class InvalidSessionId(InvalidRequest):
    """A session id that does not match ^[A-Za-z0-9_-]{1,64}$."""

    code = "invalid_session_id"


class IdempotencyKeyReused(InvalidRequest):
    """An Idempotency-Key that was used before for a different request."""

    code = "idempotency_key_reused"


class InvalidWebhook(InvalidRequest):
    """A webhook URL, event name or destination that cannot be used; `field` names the culprit."""

    code = "invalid_webhook"


class EngineNotOffered(InvalidRequest):
    """An engine this deployment does not run (not in ZAPGATE_ENGINES); `engine` names it."""

    code = "engine_not_offered"


class InvalidMedia(InvalidRequest):
    """A media file WhatsApp would refuse; `field` names it, `code` says why (the three codes below)."""

    code = "invalid_media"
    TOO_LARGE = "media_too_large"
    TYPE_NOT_ALLOWED = "media_type_not_allowed"
    UNDECODABLE = "media_undecodable"

    def __init__(self, message: str, *, field: str, code: str, **details: object) -> None:
        super().__init__(message, field=field, **details)
        self.field = field
        self.code = code


class UnknownContact(InvalidRequest):
    """A recipient named by a contact id the client has no contact under."""

    code = "unknown_contact"


class UnstorableData(InvalidRequest):
    """A value the database refuses to store as it is (a NUL byte, an invalid encoding, a value too big for an index):
    never retried."""

    code = "unstorable_data"


class RateLimited(ZapgateError):
    """Over the session's send rate; `retry_after` says in how many seconds a send may go."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, **details: object) -> None:
        super().__init__(message, retry_after=retry_after, **details)
        self.retry_after = retry_after


class TooManyConnections(RateLimited):
    """The API key already holds ZAPGATE_MAX_STREAMS_PER_KEY streams and sockets in this API process."""

    code = "too_many_connections"


class TooManyRequests(RateLimited):
    """Over the API key's request rate in this API process (ZAPGATE_REQUEST_RATE, ZAPGATE_REQUEST_BURST)."""

    code = "too_many_requests"


class TooManyFailures(RateLimited):
    """Too many wrong admin keys or media links came from this address lately (ZAPGATE_ADMIN_MAX_FAILURES): it waits."""

    code = "too_many_failures"


class SessionNotConnected(ZapgateError):
    """The session is in a state from which nothing will be sent without someone's action."""

    code = "session_not_connected"


class NotFound(ZapgateError):
    """The named thing does not exist for this client."""

    code = "not_found"


class ClientNotFound(NotFound):
    """No client with this id is registered."""

    code = "client_not_found"


class SessionNotFound(NotFound):
    """No session with this id exists for this client."""

    code = "session_not_found"


class ContactNotFound(NotFound):
    """No contact with this id exists for this client."""

    code = "contact_not_found"


class ChatNotFound(NotFound):
    """No chat with this id (a contact's id) exists for this client."""

    code = "chat_not_found"


class MessageNotFound(NotFound):
    """No message with this id exists for this client."""

    code = "message_not_found"


class WebhookNotFound(NotFound):
    """No webhook with this id exists for this client."""

    code = "webhook_not_found"


class DeliveryNotFound(NotFound):
    """No delivery with this id exists for this webhook."""

    code = "delivery_not_found"


class MediaNotFound(NotFound):
    """No media with this id for this client, or no stored bytes under this store key."""

    code = "media_not_found"


class Conflict(ZapgateError):
    """The request collides with existing state."""

    code = "conflict"


class ClientExists(Conflict):
    """A client with this id is already registered."""

    code = "client_exists"


class DuplicateRecord(Conflict):
    """A unique key (session id, message id, ...) is already taken."""

    code = "duplicate_record"


class QuotaExceeded(Conflict):
    """The client holds as many of something as it may; `quota` names it (sessions, webhooks), `limit` is it."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, quota: str, limit: int, **details: object) -> None:
        super().__init__(message, quota=quota, limit=limit, **details)
        self.quota = quota
        self.limit = limit


class MessageNotEditable(Conflict):
    """A message WhatsApp would not let the session edit or delete: not its own, not sent, too old, deleted."""

    code = "message_not_editable"


class InvalidTransition(Conflict):
    """A session status change that the session state machine does not allow."""

    code = "invalid_transition"


class EngineCallFailed(ZapgateError):
    """The session's worker could not do what was asked of WhatsApp; `reason` is the engine's error code."""

    code = "engine_call_failed"
    retryable = True


class EngineCallTimedOut(EngineCallFailed):
    """No worker answered an engine call in time (the session may be moving between workers): try again."""

    code = "engine_call_timed_out"


class AuthenticationFailed(ZapgateError):
    """A missing or wrong API key."""

    code = "authentication_failed"


class PermissionDenied(ZapgateError):
    """The caller may not do this."""

    code = "permission_denied"


class DatabaseError(ZapgateError):
    """The database failed an operation."""

    code = "database_error"
    retryable = True


class DatabaseUnavailable(DatabaseError):
    """The database server cannot be reached."""

    code = "database_unavailable"


class EngineNotAllowed(PermissionDenied):
    """An engine the deployment offers that this client may not use (its quotas); `engine` names it."""

    code = "engine_not_allowed"


class MediaStoreError(ZapgateError):
    """The media store failed to store, read or delete bytes (the database or the bucket failed us)."""

    code = "media_store_error"
    retryable = True


class GroupNotFound(NotFound):
    """No group with this id has the session in it."""

    code = "group_not_found"


class InviteNotFound(NotFound):
    """The invite link or code names no group (revoked, or never given)."""

    code = "invite_not_found"


class GroupFull(Conflict):
    """The group has as many participants as WhatsApp allows."""

    code = "group_full"


class GroupActionForbidden(PermissionDenied):
    """The session's role in the group does not allow this (only admins may; the group is locked; ...)."""

    code = "group_forbidden"
