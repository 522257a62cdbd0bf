"""The node agent loop: config in, any Dataplane driven to match it, forever (or once).

Desired state is the last *good* config: a config with errors is reported and ignored, so whatever
was in force stays in force. Changes to the config trigger a partial sync (the dataplane compares
with what it last wrote); every `resync_interval` a full sync re-reads the kernel and repairs drift.
Nothing here knows about iptables or BPF: the dataplane is a `agent.dataplane.base.Dataplane`.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from kernsplit.agent.dataplane.base import Dataplane, SyncResult
from kernsplit.agent.model import Config, SplitPort, load_config
from kernsplit.agent.model.names import DEFAULT_CLUSTER_DOMAIN
from kernsplit.agent.watch import Watcher

log = logging.getLogger("kernsplit.agent")

EXIT_OK = 0
EXIT_FAILED = 1


@dataclass(frozen=True)
class Timing:
    resync_interval: float = 30.0   # seconds between full syncs (drift repair)
    poll_interval: float = 0.2      # seconds between config checks
    retry_interval: float = 1.0     # after a failed sync, try again this soon (full)


def _fields(d) -> dict:
    """A diagnostic's parts as structured log fields (JSON logs)."""
    return {"file": d.file, "object": d.obj, "field": d.field}


class Reconciler:
    def __init__(self, dataplane: Dataplane, paths: Sequence[str | os.PathLike],
                 timing: Timing = Timing(), *, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> None:
        self.dataplane = dataplane
        self.paths = [os.fspath(p) for p in paths]
        self.timing = timing
        self.cluster_domain = cluster_domain

    def load(self) -> Config | None:
        """The config, or None when it has errors (each one logged: file, object, field)."""
        config = load_config(self.paths, cluster_domain=self.cluster_domain)
        for d in config.warnings:
            log.warning("config: %s", d, extra=_fields(d))
        for d in config.errors:
            log.error("config: %s", d, extra=_fields(d))
        if config.has_errors:
            return None
        return config

    def sync(self, split_ports: Sequence[SplitPort], *, full: bool, reason: str) -> SyncResult | None:
        """One sync; failures are logged and reported as None (the loop retries)."""
        start = time.monotonic()
        try:
            result = self.dataplane.sync(split_ports, full=full)
        except Exception as exc:  # the agent must outlive a failed kernel write; it retries
            log.error("sync (%s) failed: %s", reason, exc, extra={"reason": reason})
            return None
        log.info("sync (%s): %d split ports written, %d removed, %d unchanged", reason,
                 result.written, result.removed, result.unchanged,
                 extra={"reason": reason, "full": full, "written": result.written, "removed": result.removed,
                        "unchanged": result.unchanged, "dataplane": self.dataplane.name,
                        "seconds": round(time.monotonic() - start, 4)})
        return result

    def preview(self) -> str | None:
        """What one full sync would write (the dataplane's dry run); None when the config has errors."""
        config = self.load()
        if config is None:
            log.error("config has errors: nothing would be written")
            return None
        return self.dataplane.preview(config.split_ports)

    def once(self) -> int:
        config = self.load()
        if config is None:
            log.error("config has errors: nothing changed in the kernel")
            return EXIT_FAILED
        return EXIT_OK if self.sync(config.split_ports, full=True, reason="once") else EXIT_FAILED

    def run(self, stop: threading.Event) -> int:
        """Until `stop` is set. Returns the exit code (0: stopped on request)."""
        watcher = Watcher(self.paths)          # before the first load: no change can slip between
        desired: tuple[SplitPort, ...] | None = None
        config = self.load()
        if config is None:
            log.error("config has errors: nothing applied, waiting for a corrected config")
        else:
            desired = config.split_ports
        next_full = time.monotonic()           # first sync is full: adopt what the kernel holds
        reason = "start"
        while True:
            if watcher.poll():
                config = self.load()
                if config is None:
                    log.error("config has errors: keeping the last good state in force")
                else:
                    desired = config.split_ports
                    if self.sync(desired, full=False, reason="config changed") is None:
                        next_full = time.monotonic() + self.timing.retry_interval
            if desired is not None and time.monotonic() >= next_full:
                ok = self.sync(desired, full=True, reason=reason) is not None
                reason = "resync"
                next_full = time.monotonic() + (self.timing.resync_interval if ok else self.timing.retry_interval)
            if stop.wait(self.timing.poll_interval):
                log.info("stopping; kernel state left in place")
                return EXIT_OK
