"""The engines this installation can run, how to build each, and what each needs from the worker.

Services ask the registry, never compare engine names: whether an engine keeps WhatsApp keys in a
per-client key store (and so needs one provisioned, and its device forgotten on an offline logout), its
pacing defaults, and how to build it for a worker.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from zapgate.domain.pacing import HUMAN_PACING, NO_PACING, Pacing
from zapgate.engines.base import Engine, EventSink
from zapgate.engines.sandbox import SandboxEngine, SandboxNetwork
from zapgate.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class EngineContext:
    """What a worker gives an engine it builds: where events go, and the services some engines need."""

    on_event: EventSink
    sandbox_network: Callable[[], SandboxNetwork]  # built on demand: only the sandbox needs one
    keystore_dsn: Callable[[str], str]  # client id → DSN of its whatsmeow key store (provisioned first)
    device_name: str = "zapgate"  # what the phone lists under Linked devices


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """One engine kind: its name, its builder and its needs."""

    name: str
    build: Callable[[EngineContext], Engine]
    uses_keystore: bool = False  # keeps WhatsApp keys in a per-client key store (provision, forget)
    pacing: Pacing = NO_PACING  # default pacing of its sessions' sends
    real: bool = False  # talks to the real WhatsApp network
    simulated: bool = False  # the simulated network: its phones link by its own routes, and unlink on logout


def _build_sandbox(context: EngineContext) -> Engine:
    return SandboxEngine(context.on_event, context.sandbox_network())


def _build_whatsmeow(context: EngineContext) -> Engine:
    from zapgate.engines.whatsmeow import WhatsmeowEngine

    return WhatsmeowEngine(context.on_event, context.keystore_dsn, device_name=context.device_name)


_SPECS: dict[str, EngineSpec] = {
    "sandbox": EngineSpec("sandbox", _build_sandbox, simulated=True),
    "whatsmeow": EngineSpec("whatsmeow", _build_whatsmeow, uses_keystore=True, pacing=HUMAN_PACING, real=True),
}


def register(spec: EngineSpec) -> None:
    """Add (or replace) an engine kind: for tests and plug-ins."""
    _SPECS[spec.name] = spec


def unregister(name: str) -> None:
    """Remove an engine kind added with `register`."""
    _SPECS.pop(name, None)


def spec(name: str) -> EngineSpec:
    """Return the engine kind called `name`; raise KeyError for an unknown one."""
    return _SPECS[name]


def simulated(name: str) -> bool:
    """Return whether sessions on engine `name` live on the simulated network (False for unknown names)."""
    found = _SPECS.get(name)
    return found is not None and found.simulated


def uses_keystore(name: str) -> bool:
    """Return whether engine `name` keeps WhatsApp keys in a per-client key store (False for unknown names)."""
    found = _SPECS.get(name)
    return found is not None and found.uses_keystore


def known() -> tuple[str, ...]:
    """Return the names of every engine kind, available here or not."""
    return tuple(_SPECS)


def available(offered: Collection[str] | None = None) -> tuple[str, ...]:
    """Return the engines this installation can run, of those `offered` (ZAPGATE_ENGINES; None: every one).

    whatsmeow needs neonize and its Go library; it is not even imported when not offered.
    """
    names = []
    for name in _SPECS:
        if offered is not None and name not in offered:
            continue
        if name == "whatsmeow":
            try:
                import zapgate.engines.whatsmeow  # noqa: F401
            except ImportError as exc:
                log.warning("engines.whatsmeow_unavailable", error=str(exc))
                continue
        names.append(name)
    return tuple(names)
