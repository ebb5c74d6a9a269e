"""Pacing rules: typing time grows with the text up to a bound; pauses fall between their bounds."""

import random

import pytest

from zapgate.domain.pacing import HUMAN_PACING, NO_PACING, Pacing


@pytest.mark.parametrize(
    ("pacing", "text", "seconds"),
    [
        (Pacing(typing_ms_per_char=50, typing_max_ms=8000), "hello", 0.25),
        (Pacing(typing_ms_per_char=50, typing_max_ms=8000), "x" * 1000, 8.0),  # bounded
        (Pacing(typing_ms_per_char=50, typing_max_ms=0), "hello", 0.0),
        (Pacing(typing_ms_per_char=0, typing_max_ms=8000), "hello", 0.0),
        (NO_PACING, "hello", 0.0),
    ],
)
def test_typing_grows_with_the_text_and_is_bounded(pacing: Pacing, text: str, seconds: float) -> None:
    assert pacing.typing_seconds(text) == pytest.approx(seconds)


def test_pauses_fall_between_their_bounds() -> None:
    pacing = Pacing(pause_min_ms=2000, pause_max_ms=6000)
    rng = random.Random(7)
    pauses = [pacing.pause_seconds(rng) for _ in range(500)]
    assert all(2.0 <= p <= 6.0 for p in pauses)
    assert max(pauses) - min(pauses) > 3  # random, not fixed
    assert NO_PACING.pause_seconds() == 0.0


def test_only_settings_that_are_set_override_the_engine_defaults() -> None:
    changed = HUMAN_PACING.with_overrides(pause_max_ms=1000, first_contacts_per_day=None)
    assert changed.pause_max_ms == 1000 and changed.first_contacts_per_day == HUMAN_PACING.first_contacts_per_day
    assert HUMAN_PACING.paced and not NO_PACING.paced
    assert HUMAN_PACING.first_contacts_per_day > 0 and NO_PACING.first_contacts_per_day == 0
