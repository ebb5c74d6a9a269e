"""How an event of the log looks to API clients: the same body over SSE, Socket.IO and webhooks."""

from __future__ import annotations

from zapgate.domain.events import event_body

__all__ = ["event_body"]
