"""The sink a source writes to: a thread-safe queue of object events, drained by one worker.

Sources call it from their own threads and only enqueue (client-go's handlers only enqueue keys);
the reconciler's worker drains a batch and applies it to the store. Consecutive events of one
object are not merged: the store ignores an upsert equal to what it holds, so replaying is cheap.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from kernsplit.agent.source.contract import ObjectKey, RawObject
from kernsplit.agent.source.packed import Packed, pack, packable


# Objects wait here packed (`packed.Packed`): a relist or a re-read file of tens of thousands of
# objects is then never held as dicts all at once.
@dataclass(frozen=True, slots=True)
class Upsert:
    scope: str
    obj: Packed


@dataclass(frozen=True, slots=True)
class Delete:
    scope: str
    key: ObjectKey


@dataclass(frozen=True, slots=True)
class Replace:
    scope: str
    objects: tuple[Packed, ...]


Event = Upsert | Delete | Replace


class EventQueue:
    """Implements `contract.Sink`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._events: list[Event] = []
        self._ready = False
        self._arrivals = 0                    # events ever queued
        self._seen = 0                        # ... when `wait` last returned
        self.arrived: float | None = None     # monotonic time of the oldest undrained event

    def _put(self, event: Event) -> None:
        with self._cond:
            if not self._events:
                self.arrived = time.monotonic()
            self._events.append(event)
            self._arrivals += 1
            self._cond.notify_all()

    def upsert(self, scope: str, obj: RawObject | Packed) -> None:
        if packable(obj):
            self._put(Upsert(scope, pack(obj)))

    def delete(self, scope: str, key: ObjectKey) -> None:
        self._put(Delete(scope, key))

    def replace(self, scope: str, objects: Iterable[RawObject | Packed]) -> None:
        """`objects` may be a generator: each is packed as it comes."""
        self._put(Replace(scope, tuple(pack(o) for o in objects if packable(o))))

    def ready(self) -> None:
        with self._cond:
            self._ready = True
            self._cond.notify_all()

    @property
    def is_ready(self) -> bool:
        return self._ready

    def wait(self, timeout: float) -> bool:
        """Until an event arrives that the previous `wait` did not see (True), or `timeout` passes."""
        with self._cond:
            new = self._cond.wait_for(lambda: self._arrivals != self._seen, timeout=max(timeout, 0.0))
            self._seen = self._arrivals
            return new

    def drain(self) -> list[Event]:
        with self._cond:
            events, self._events = self._events, []
            self.arrived = None
            self._seen = self._arrivals           # taken: nothing left to wake for
            return events
