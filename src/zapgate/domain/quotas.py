"""Quotas: how many sessions and webhooks one client may hold, and which engines it may use.

The deployment sets the defaults (ZAPGATE_MAX_SESSIONS_PER_CLIENT, ZAPGATE_MAX_WEBHOOKS_PER_CLIENT, and
ZAPGATE_ENGINES for the engines offered at all); the admin API overrides them per client. A client's engines
are always among those the deployment offers: an override can narrow them, never widen them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

KNOWN_ENGINES = ("whatsmeow", "sandbox")  # every engine zapgate has; a deployment offers some of them


@dataclass(frozen=True, slots=True)
class Quotas:
    """What one client may hold and use."""

    max_sessions: int
    max_webhooks: int
    engines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QuotaOverrides:
    """A client's own quotas; None: the deployment's default."""

    max_sessions: int | None = None
    max_webhooks: int | None = None
    engines: tuple[str, ...] | None = None


def effective(defaults: Quotas, overrides: QuotaOverrides | None) -> Quotas:
    """Return the quotas that apply to a client with `overrides`, given the deployment's `defaults`."""
    if overrides is None:
        return defaults
    engines = defaults.engines
    if overrides.engines is not None:  # narrowed, in the deployment's order
        engines = tuple(name for name in defaults.engines if name in overrides.engines)
    return Quotas(
        max_sessions=defaults.max_sessions if overrides.max_sessions is None else overrides.max_sessions,
        max_webhooks=defaults.max_webhooks if overrides.max_webhooks is None else overrides.max_webhooks,
        engines=engines,
    )


def engine_names(raw: str | Sequence[str]) -> tuple[str, ...]:
    """Parse a list of engine names ("whatsmeow,sandbox" or a sequence): known, without repeats, in order.

    Raises:
        ValueError: an unknown name, or none at all.
    """
    parts = raw.split(",") if isinstance(raw, str) else list(raw)
    names: list[str] = []
    for part in parts:
        name = part.strip().lower() if isinstance(part, str) else part
        if name == "":
            continue
        if name not in KNOWN_ENGINES:
            raise ValueError(f"unknown engine {str(name)[:40]!r}: expected some of {', '.join(KNOWN_ENGINES)}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError(f"expected at least one engine of {', '.join(KNOWN_ENGINES)}")
    return tuple(names)
