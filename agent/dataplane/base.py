"""The interface every dataplane implements, and what `show` reads back from the kernel."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

from kernsplit.agent.model.resolved import SplitPort


@dataclass(frozen=True)
class SyncResult:
    written: int      # split ports (re)programmed in this sync
    removed: int      # split ports of ours removed (no longer desired)
    unchanged: int    # split ports already correct in the kernel, left untouched


@dataclass(frozen=True)
class ObservedBackend:
    service: str          # backend Service name
    weight: int           # configured (normalised) weight, as recorded in the kernel
    share: Fraction       # desired share, as programmed
    connections: int      # new connections the kernel sent to (or refused for) this backend since install
    terminating: bool = False   # served by terminating endpoints (none ready), as recorded in the kernel
    refused: bool = False       # its share is refused (a Gateway route's backendRef that cannot serve)


@dataclass(frozen=True)
class ObservedSplit:
    """One split port as found in the kernel (not in the config)."""
    dataplane: str
    namespace: str
    service: str
    split: str
    cluster_ip: str
    port: int
    refuse: bool
    backends: tuple[ObservedBackend, ...]


class Dataplane(Protocol):
    name: str

    def sync(self, desired: Sequence[SplitPort], *, full: bool = False) -> SyncResult:
        """Make the kernel match `desired` exactly (for objects we own), atomically per split.

        Idempotent: when the kernel already matches, writes nothing. `full=True` re-reads the
        whole kernel state (periodic resync: repairs drift); otherwise the dataplane may compare
        against what it last wrote. Objects of ours that are not desired are removed.
        """
        ...

    def preview(self, desired: Sequence[SplitPort]) -> str:
        """What `sync(desired, full=True)` would write, as text, in the order it would be applied;
        reads the kernel, changes nothing (`kernsplit agent --once --dry-run`)."""
        ...

    def cleanup(self) -> None:
        """Remove every kernel object of ours; leave everything else exactly as it was."""
        ...

    def installed(self) -> bool:
        """True when objects of ours exist in the kernel for this target."""
        ...

    def observe(self) -> list[ObservedSplit]:
        """Read the splits and their per-backend connection counters back from the kernel."""
        ...
