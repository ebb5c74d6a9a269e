"""How a worker treats its engines and sessions, beyond capacity and timings: built from the settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from zapgate.domain.pacing import Pacing
from zapgate.engines import registry
from zapgate.services.outbox import OutboxPolicy
from zapgate.settings import Settings


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How a worker treats its engines and sessions beyond capacity and timings (settings, usually)."""

    engine_timeout: float = 15.0  # seconds a start, stop or logout may take before it is given up on
    max_abandoned: int = 10  # engine clients a worker may abandon in its life before it drains and exits
    reconnect_window: float = 300.0  # seconds a session may stay reconnecting before it is failed
    keep_stories: bool = False  # store contacts' stories (status@broadcast) as messages of kind "story"
    erase_deleted: bool = False  # erase the content of messages deleted for everyone (else keep it, marked)
    outbox: OutboxPolicy = field(default_factory=OutboxPolicy)
    pacing: Mapping[str, Pacing] = field(default_factory=dict)  # per engine, in place of its defaults
    device_name: str = "zapgate"  # what the phone lists under Linked devices


def worker_options(settings: Settings) -> WorkerOptions:
    """Return the worker options the settings ask for."""
    overrides = {
        "typing_ms_per_char": settings.pace_typing_ms_per_char,
        "typing_max_ms": settings.pace_typing_max_ms,
        "pause_min_ms": settings.pace_pause_min_ms,
        "pause_max_ms": settings.pace_pause_max_ms,
        "first_contacts_per_day": settings.first_contacts_per_day,
    }
    pacing = {}
    real = None
    for name in registry.known():
        spec = registry.spec(name)
        if spec.real:
            real = pacing[name] = spec.pacing.with_overrides(**overrides)
    if settings.sandbox_paced and real is not None:
        pacing.update({name: real for name in registry.known() if registry.simulated(name)})
    return WorkerOptions(
        engine_timeout=settings.engine_timeout,
        max_abandoned=settings.max_abandoned_clients,
        reconnect_window=settings.reconnect_window,
        keep_stories=settings.keep_stories,
        erase_deleted=settings.erase_deleted_messages,
        outbox=OutboxPolicy(recipient_ttl=settings.recipient_cache_ttl, max_attempts=settings.send_max_attempts),
        pacing=pacing,
        device_name=settings.device_name,
    )
