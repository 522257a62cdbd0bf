"""When to sync: events that arrive together make one sync (kube-proxy's minSyncPeriod idea).

After a quiet period, the first event syncs at once (a lone weight edit pays no wait). While syncs
follow each other, the next one waits until `min_interval` after the previous one, so a burst of
events (a rollout touching hundreds of objects, a relist) is coalesced instead of syncing per event.
`quiet` optionally waits for the events to stop for that long, but never more than `max_delay`
after the first waiting event: a steady stream of events cannot starve the kernel of updates.
Pure: times are passed in.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PacerConfig:
    min_interval: float = 0.1     # seconds between the starts of two syncs
    quiet: float = 0.0            # seconds without events before a sync (0: do not wait)
    max_delay: float = 1.0        # bound on the wait of an event, whatever follows it

    def __post_init__(self) -> None:
        if min(self.min_interval, self.quiet, self.max_delay) < 0:
            raise ValueError("pacer intervals must not be negative")
        if self.max_delay < self.min_interval:
            raise ValueError("max_delay must be at least min_interval")


class Pacer:
    def __init__(self, config: PacerConfig = PacerConfig()) -> None:
        self.config = config
        self._first: float | None = None     # the oldest event not synced yet
        self._last: float | None = None      # the newest one
        self._synced: float | None = None    # start of the last sync

    @property
    def pending(self) -> bool:
        return self._first is not None

    def event(self, now: float) -> None:
        if self._first is None:
            self._first = now
        self._last = now

    def due(self) -> float | None:
        """When the next sync should start; None when nothing waits."""
        if self._first is None or self._last is None:
            return None
        c = self.config
        at = self._last + c.quiet
        if self._synced is not None:
            at = max(at, self._synced + c.min_interval)
        return min(at, max(self._first + c.max_delay, (self._synced or 0.0) + c.min_interval))

    def started(self, now: float) -> None:
        """A sync starts now and takes every event so far."""
        self._first = self._last = None
        self._synced = now
