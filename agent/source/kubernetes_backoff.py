"""Capped exponential backoff with jitter, as client-go's `wait.Backoff` retries a reflector.

Jitter spreads the retries of many agents (one per node) so that an API server coming back is not
hit by all of them in the same second.
"""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    initial: float = 0.8      # seconds before the first retry
    factor: float = 2.0
    cap: float = 30.0         # no wait is longer than this (before jitter)
    jitter: float = 0.5       # each wait is stretched by up to this fraction, at random

    def __post_init__(self) -> None:
        if not (self.initial > 0 and self.factor >= 1 and self.cap >= self.initial and self.jitter >= 0):
            raise ValueError(f"backoff: need initial > 0, factor >= 1, cap >= initial, jitter >= 0: {self}")


class Backoff:
    """The waits of one retrying loop: each failure doubles the next wait up to the cap; `reset`
    after a success starts again from `initial`."""

    def __init__(self, policy: BackoffPolicy = BackoffPolicy(), rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng or random.Random()
        self._failures = 0

    def next(self) -> float:
        """The wait before the next attempt (counts one more failure)."""
        p = self.policy
        base = min(p.cap, p.initial * p.factor ** min(self._failures, 64))
        self._failures += 1
        return base * (1 + p.jitter * self._rng.random())

    def reset(self) -> None:
        self._failures = 0

    @property
    def failures(self) -> int:
        return self._failures
