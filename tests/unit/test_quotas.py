"""Quotas: a client's own values over the deployment's defaults; engines narrowed, never widened."""

import pytest

from zapgate.domain.quotas import QuotaOverrides, Quotas, effective, engine_names
from zapgate.engines import registry

DEFAULTS = Quotas(max_sessions=100, max_webhooks=100, engines=("whatsmeow", "sandbox"))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (None, DEFAULTS),
        (QuotaOverrides(), DEFAULTS),
        (QuotaOverrides(max_sessions=0), Quotas(0, 100, ("whatsmeow", "sandbox"))),
        (QuotaOverrides(max_webhooks=3, engines=("sandbox",)), Quotas(100, 3, ("sandbox",))),
        (QuotaOverrides(engines=("sandbox", "whatsmeow")), DEFAULTS),  # the deployment's order
    ],
)
def test_effective_quotas(overrides: QuotaOverrides | None, expected: Quotas) -> None:
    assert effective(DEFAULTS, overrides) == expected


def test_a_client_list_never_widens_the_deployments() -> None:
    sandbox_only = Quotas(10, 10, ("sandbox",))
    assert effective(sandbox_only, QuotaOverrides(engines=("whatsmeow", "sandbox"))).engines == ("sandbox",)
    assert effective(sandbox_only, QuotaOverrides(engines=("whatsmeow",))).engines == ()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("whatsmeow,sandbox", ("whatsmeow", "sandbox")),
        (" Sandbox ,, sandbox", ("sandbox",)),
        (["whatsmeow"], ("whatsmeow",)),
    ],
)
def test_engine_names(raw: str | list[str], expected: tuple[str, ...]) -> None:
    assert engine_names(raw) == expected


@pytest.mark.parametrize("raw", ["", " , ", "telegram", "sandbox,baileys", []])
def test_engine_names_refused(raw: str | list[str]) -> None:
    with pytest.raises(ValueError, match="engine"):
        engine_names(raw)


def test_workers_run_only_the_engines_offered() -> None:
    assert registry.available(("sandbox",)) == ("sandbox",)
    assert "sandbox" not in registry.available(("whatsmeow",))
