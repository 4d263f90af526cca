"""Capped exponential backoff with full jitter, as data, and an interruptible sleep."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry ``n`` (0-based): ``uniform(0.5, 1) * min(cap, initial * factor**n)``.

    Half-jitter keeps a floor, so a fleet of replicas that lost the API server at the
    same instant spreads out without any of them retrying in a hot loop.
    """

    initial: float = 0.5  # seconds; first retry comes quickly, most faults are blips
    factor: float = 2.0
    cap: float = 30.0  # seconds; an outage costs at most ~2 requests a minute per source

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt``."""
        base = min(self.cap, self.initial * (self.factor ** min(attempt, 32)))
        return base * (rng or _RNG).uniform(0.5, 1.0)


_RNG = random.Random()  # noqa: S311 - jitter, not cryptography


def sleep(stop: threading.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless ``stop`` is set first. Returns True if stopped."""
    return stop.wait(seconds)
