"""Connection rates over a recent window, from cumulative kernel counters (pure).

The kernel counts connections per backend since its rules were installed, so a share computed from
those totals mixes every weight the split ever had: after a rollout to 0/100 the old backend still
shows most of the traffic. `RateWindow` keeps timestamped samples of the counters and answers with
the deltas over the last `window` seconds, as `linkerd viz stat` does over its time window. A
counter that went down was reset (rules rewritten, programs replaced): its current value is then the
increase since the reset, as Prometheus' rate() treats resets.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Recent:
    delta: int          # connections counted within the window
    seconds: float      # span the delta covers (0 before a second sample)

    @property
    def rate(self) -> float:
        return self.delta / self.seconds if self.seconds > 0 else 0.0


class RateWindow:
    def __init__(self, window: float) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = window
        self._samples: deque[tuple[float, dict[Hashable, int]]] = deque()

    def add(self, now: float, counters: Mapping[Hashable, int]) -> None:
        self._samples.append((now, dict(counters)))
        # keep the newest sample at or before the window's start: it is the baseline
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()

    def recent(self, key: Hashable) -> Recent:
        if len(self._samples) < 2:
            return Recent(0, 0.0)
        delta = 0
        previous = None
        for _, counters in self._samples:
            value = counters.get(key)
            if value is None:
                previous = None          # the key appeared later: count from its first sample
                continue
            if previous is not None:
                delta += value - previous if value >= previous else value
            previous = value
        return Recent(delta, self._samples[-1][0] - self._samples[0][0])
