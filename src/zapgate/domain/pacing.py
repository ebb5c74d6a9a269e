"""Pacing that keeps numbers alive: how long to show "typing…", how long to wait between sends.

WhatsApp bans numbers that send like machines: bursts of messages with no typing, many first contacts a
day. A session's outbound queue is paced like a person would send: a typing presence whose length grows
with the text (bounded), a random pause between sends, and a daily cap on first contacts (numbers that
never wrote to the session). Each engine brings its defaults (safe ones for whatsmeow, none for the
sandbox); settings override them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Pacing:
    """How a session's sends are paced; all zero means "as fast as the engine goes"."""

    typing_ms_per_char: float = 0.0  # milliseconds of "typing…" per character of text
    typing_max_ms: float = 0.0  # the longest "typing…" shown before one message
    pause_min_ms: float = 0.0  # the shortest pause between two sends of a session
    pause_max_ms: float = 0.0  # the longest pause between two sends of a session
    first_contacts_per_day: int = 0  # new numbers a session may write to in any 24 h; 0: no cap

    @property
    def paced(self) -> bool:
        """Whether sends are paced at all (a paced session sends one message at a time)."""
        return self.typing_max_ms > 0 or self.pause_max_ms > 0

    def typing_seconds(self, text: str) -> float:
        """Return how long to show "typing…" before sending `text`."""
        if self.typing_max_ms <= 0 or self.typing_ms_per_char <= 0:
            return 0.0
        return min(self.typing_max_ms, len(text) * self.typing_ms_per_char) / 1000

    def pause_seconds(self, rng: random.Random | None = None) -> float:
        """Return a random pause before the next send (uniform between the bounds)."""
        if self.pause_max_ms <= 0:
            return 0.0
        low = min(self.pause_min_ms, self.pause_max_ms)
        return (rng or random).uniform(low, self.pause_max_ms) / 1000

    def with_overrides(self, **overrides: float | int | None) -> Pacing:
        """Return this pacing with the settings that are set (not None) in place of the defaults."""
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values.update({name: value for name, value in overrides.items() if value is not None})
        return Pacing(**values)


NO_PACING = Pacing()
# a person types ~5 characters a second; "typing…" never longer than 8 s; 2 to 6 s between messages;
# 50 numbers that never wrote to the session per day (well under what gets new numbers restricted)
HUMAN_PACING = Pacing(
    typing_ms_per_char=50.0, typing_max_ms=8000.0, pause_min_ms=2000.0, pause_max_ms=6000.0, first_contacts_per_day=50
)
