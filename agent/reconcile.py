"""The node agent loop: a source's object events in, any Dataplane driven to match them.

One design for every source (files, the Kubernetes API): the source runs in its own thread and
only enqueues events (`source.events.EventQueue`); this loop's single worker drains them into the
store (`source.store`), re-resolves the root Services they affect (`source.desired`) and hands the
dataplane the split ports that changed. Events that arrive together make one sync (`source.pacer`).
Every `resync_interval` a full sync compares the whole kernel state and repairs drift.

An object with errors is reported and its last good version stays in force; the others apply.
Nothing is programmed before the source has delivered a complete first view (`Sink.ready`).
Nothing here knows about iptables or BPF: the dataplane is an `agent.dataplane.base.Dataplane`.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kernsplit.agent import heap
from kernsplit.agent.dataplane.base import Dataplane, SyncResult
from kernsplit.agent.model.diagnostics import Diagnostic
from kernsplit.agent.model.names import DEFAULT_CLUSTER_DOMAIN
from kernsplit.agent.source.contract import ObjectKey, Source
from kernsplit.agent.source.desired import Delta, DesiredState, PortKey
from kernsplit.agent.source.events import Delete, Event, EventQueue, Replace, Upsert
from kernsplit.agent.source.packed import key_of
from kernsplit.agent.source.pacer import Pacer, PacerConfig
from kernsplit.agent.source.store import ObjectStore, ServiceKey

if TYPE_CHECKING:      # the metrics (prometheus-client) are loaded only when served
    from kernsplit.agent.metrics import Metrics

log = logging.getLogger("kernsplit.agent")

EXIT_OK = 0
EXIT_FAILED = 1
IDLE_WAIT = 0.1          # seconds between checks of `stop` when nothing happens


@dataclass(frozen=True)
class Timing:
    resync_interval: float = 30.0   # seconds between full syncs (drift repair)
    retry_interval: float = 1.0     # after a failed sync, try again this soon (full) ...
    retry_cap: float = 8.0          # ... doubling while it keeps failing, up to this (or the resync interval)
    pacer: PacerConfig = field(default_factory=PacerConfig)


def _fields(d: Diagnostic) -> dict:
    """A diagnostic's parts as structured log fields (JSON logs)."""
    return {"file": d.file, "object": d.obj, "field": d.field}


_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO}


class Reconciler:
    def __init__(self, dataplane: Dataplane, source: Source, timing: Timing = Timing(), *,
                 cluster_domain: str = DEFAULT_CLUSTER_DOMAIN, metrics: Metrics | None = None) -> None:
        self.dataplane = dataplane
        self.metrics = metrics
        self.source = source
        self.timing = timing
        self.store = ObjectStore(cluster_domain)
        self.desired = DesiredState()
        self.queue = EventQueue()
        self.pacer = Pacer(timing.pacer)
        self._pending: set[PortKey] = set()          # changed since the last successful sync
        self._reported: dict[ObjectKey, tuple[Diagnostic, ...]] = {}
        self._root_reported: dict[ServiceKey, tuple[Diagnostic, ...]] = {}
        # Absorbed into the store and not yet resolved (see `absorb`).
        self._dirty: set[ServiceKey] = set()
        self._touched: set[ObjectKey] = set()
        self._existed: dict[ObjectKey, bool] = {}    # before the first absorb: for the object counts
        self.last_sync: float | None = None          # monotonic end of the last successful sync
        self._failures = 0                           # syncs failed in a row

    # --- events -> store -> desired ----------------------------------------------------------

    def absorb(self, events: Iterable[Event]) -> None:
        """Take a batch of events into the store only; what they affect is resolved at the next
        `apply`. Before the source's first complete view, events are absorbed as they come: each
        list is parsed while the next is fetched and its packed objects are freed at once, instead
        of every resource's list waiting, packed, for the last one (a relist of 60,000 objects
        left about 20 MiB of the heap fragmented that way)."""
        counting = self.metrics is not None
        dirty, touched, existed = self._dirty, self._touched, self._existed
        for ev in events:
            if isinstance(ev, Upsert):
                key = key_of(ev.obj)
                if counting:
                    existed.setdefault(key, self.store.entry(key) is not None)
                dirty |= self.store.upsert(ev.scope, ev.obj)
                touched.add(key)
            elif isinstance(ev, Delete):
                if counting:
                    existed.setdefault(ev.key, self.store.entry(ev.key) is not None)
                dirty |= self.store.delete(ev.scope, ev.key)
                touched.add(ev.key)
            elif isinstance(ev, Replace):
                before = set(self.store.keys())
                dirty |= self.store.replace(ev.scope, ev.objects)
                changed = {key_of(o) for o in ev.objects} | (before - set(self.store.keys()))
                touched |= changed
                if counting:
                    for key in changed:
                        existed.setdefault(key, key in before)

    def apply(self, events: Iterable[Event]) -> Delta:
        """Apply a batch of events; returns what the desired state gained or lost."""
        self.absorb(events)
        dirty, touched, existed = self._dirty, self._touched, self._existed
        self._dirty, self._touched, self._existed = set(), set(), {}
        self._count(existed)
        delta = self.desired.resolve(self.store, dirty)
        self._pending |= delta.changed
        self._report(touched, dirty)
        if delta.sweeping:
            log.warning("this change removes %d and refuses %d of the %d split ports in force: if a "
                        "writer is halfway through rewriting the config, it should replace files "
                        "atomically (write a temporary file, then rename it)", delta.removed, delta.refused,
                        delta.before, extra={"removed": delta.removed, "refused": delta.refused,
                                             "before": delta.before})
        return delta

    def _count(self, existed: dict[ObjectKey, bool]) -> None:
        """Keep the watched-objects gauge by kind from what a batch added and removed (counting
        the whole store per batch would cost more than a weight change's sync)."""
        if self.metrics is None:
            return
        for key, was in existed.items():
            now = self.store.entry(key) is not None
            if now != was:
                self.metrics.count_object(key.kind, 1 if now else -1)

    def _report(self, touched: set[ObjectKey], roots: set[ServiceKey]) -> None:
        """Log each object's diagnostics when they change (never the same ones every sync)."""
        for key in sorted(touched):
            now = self.store.diagnostics(key)
            if self.metrics is not None:
                erred = any(d.severity == "error" for d in self._reported.get(key, ()))
                errs = any(d.severity == "error" for d in now)
                if errs != erred:
                    self.metrics.count_object_errors(key.kind, 1 if errs else -1)
            if now != self._reported.get(key, ()):
                self._emit([d for d in now if d not in self._reported.get(key, ())])
                if any(d.severity == "error" for d in now) and self.store.entry(key) is not None:
                    log.error("%s has errors: keeping the last good state in force for it", key)
                self.source.report(key, now)
            if now:
                self._reported[key] = now
            else:
                self._reported.pop(key, None)
        for root in sorted(roots):
            now = self.desired.diagnostics.get(root, ())
            old = self._root_reported.pop(root, ())
            self._emit([d for d in now if d not in old])
            if now:
                self._root_reported[root] = now

    @staticmethod
    def _emit(diagnostics: Iterable[Diagnostic]) -> None:
        for d in diagnostics:
            log.log(_LEVELS[d.severity], "config: %s", d, extra=_fields(d))

    # --- syncs --------------------------------------------------------------------------------

    def sync(self, *, full: bool, reason: str, everything: bool = False) -> SyncResult | None:
        """One sync of the desired state; failures are logged and reported as None (the loop retries).
        The dataplane is told which split ports changed since the last successful sync, or, with
        `everything`, to take nothing it holds for granted (the first sync)."""
        start = time.monotonic()
        pending = frozenset(self._pending)
        changed = None if everything else pending
        try:
            result = self.dataplane.sync(self.desired.ports, full=full, changed=changed)
        except Exception as exc:  # the agent must outlive a failed kernel write; it retries
            self._failures += 1
            log.error("sync (%s) failed: %s%s", reason, exc,
                      f" (failed {self._failures} times in a row; next try in {self._retry_delay():g}s)"
                      if self._failures > 1 else "", extra={"reason": reason, "failures": self._failures})
            self._record(time.monotonic() - start, full, None)
            return None
        self._failures = 0
        self._pending -= pending
        self.last_sync = time.monotonic()
        self._record(self.last_sync - start, full, result)
        log.info("sync (%s): %d split ports written, %d removed, %d unchanged", reason,
                 result.written, result.removed, result.unchanged,
                 extra={"reason": reason, "full": full, "written": result.written, "removed": result.removed,
                        "unchanged": result.unchanged, "dataplane": self.dataplane.name,
                        "seconds": round(self.last_sync - start, 4)})
        return result

    def _record(self, seconds: float, full: bool, result: SyncResult | None) -> None:
        if self.metrics is None:
            return
        self.metrics.record_sync(self.dataplane.name, seconds, full=full, ok=result is not None)
        self.metrics.split_ports.set(len(self.desired.ports))
        for what in result.repaired if result is not None else ():
            self.metrics.repairs.labels(what).inc()

    def preview(self) -> str | None:
        """Read every object, as `once` does, and return what its sync would write (the dataplane's
        dry run); None when the config has errors."""
        problems = self.source.load(self.queue)
        self.apply(self.queue.drain())
        if problems or self.store.has_errors():
            log.error("config has errors: nothing would be written")
            return None
        return self.dataplane.preview(self.desired.ports)

    def once(self) -> int:
        """Read every object, apply once. Any error: exit 1 and leave the kernel untouched."""
        problems = self.source.load(self.queue)        # only file-like sources can be read once
        self.apply(self.queue.drain())
        if problems or self.store.has_errors():
            log.error("config has errors: nothing changed in the kernel")
            return EXIT_FAILED
        return EXIT_OK if self.sync(full=True, reason="once", everything=True) else EXIT_FAILED

    def run(self, stop: threading.Event) -> int:
        """Until `stop` is set. Returns the exit code (0: stopped on request)."""
        thread = threading.Thread(target=self.source.run, args=(self.queue, stop), name=f"source-{self.source.name}",
                                  daemon=True)
        thread.start()
        next_full: float | None = None                 # None: the first (full) sync is not done yet
        while not stop.is_set():
            if self.metrics is not None:
                self.metrics.heartbeat()
            if self.queue.wait(self._wait(next_full)):
                self.pacer.event(time.monotonic())
            if not self.queue.is_ready:                 # a partial view is never resolved nor programmed
                self.absorb(self.queue.drain())
                continue
            now = time.monotonic()
            if next_full is None or now >= next_full:
                next_full = self._full(now, "start" if next_full is None else "resync")
            elif self.pacer.pending and now >= (self.pacer.due() or now):
                self.pacer.started(now)
                self.apply(self.queue.drain())
                if self._pending and self.sync(full=False, reason="config changed") is None:
                    next_full = now + self._retry_delay()
        log.info("stopping; kernel state left in place")
        return EXIT_OK

    def _full(self, now: float, reason: str) -> float:
        """A full sync of everything received so far; returns when the next one is due."""
        self.pacer.started(now)
        self.apply(self.queue.drain())
        ok = self.sync(full=True, reason=reason, everything=self.last_sync is None) is not None
        heap.release()              # what the full sync built and dropped, back to the kernel
        return time.monotonic() + (self.timing.resync_interval if ok else self._retry_delay())

    def _retry_delay(self) -> float:
        """A kernel that keeps refusing (a target cgroup or netns gone, a lock held for minutes) is
        retried ever less often, so that the log and the kernel are not hammered every second."""
        doubled = self.timing.retry_interval * 2 ** max(self._failures - 1, 0)
        return min(doubled, max(self.timing.retry_cap, self.timing.retry_interval), self.timing.resync_interval)

    def _wait(self, next_full: float | None) -> float:
        now = time.monotonic()
        until = [now + IDLE_WAIT]
        if next_full is not None:
            until.append(next_full)
        due = self.pacer.due()
        if due is not None:
            until.append(due)
        return min(until) - now
