"""The interface every dataplane implements, and what `show` reads back from the kernel."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

from kernsplit.agent.model.resolved import SplitPort


PortKey = tuple[str, int, str]          # SplitPort.key: (cluster ip, port, protocol)
# The desired split ports: by key (what the reconciler keeps), or a sequence (first of a key wins).
Desired = Mapping[PortKey, SplitPort] | Sequence[SplitPort]


def by_key(desired: Desired) -> Mapping[PortKey, SplitPort]:
    if isinstance(desired, Mapping):
        return desired
    found: dict[PortKey, SplitPort] = {}
    for sp in desired:
        found.setdefault(sp.key, sp)
    return found


@dataclass(frozen=True)
class SyncResult:
    written: int      # split ports (re)programmed in this sync
    removed: int      # split ports of ours removed (no longer desired)
    unchanged: int    # split ports already correct in the kernel, left untouched
    # One entry per kernel object a full sync found broken and repaired (drift outside the
    # split ports themselves: a pin, a link, a jump); each is the `what` label of the
    # kernsplit_kernel_repairs metric, e.g. "ebpf_link". The dataplane logs the details.
    repaired: tuple[str, ...] = ()


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


class Events(Protocol):
    """What a dataplane reports as it happens, failed syncs included (repairs, made only by
    syncs that succeed, are in `SyncResult.repaired`); the agent's `metrics.Metrics` counts them."""

    def record_lock_wait(self) -> None:
        """A kernel write found a lock held by another program (the xtables lock) and waited."""


class NoEvents:
    """Events nobody counts (a dataplane built without metrics: tests, `show`, `--once`)."""

    def record_lock_wait(self) -> None:
        pass


class Dataplane(Protocol):
    name: str

    def sync(self, desired: Desired, *, full: bool = False, changed: frozenset[PortKey] | None = None) -> SyncResult:
        """Make the kernel match `desired` exactly (for objects we own), atomically per split.

        Idempotent: when the kernel already matches, writes nothing. Objects of ours that are not
        desired are removed.
        `changed`: the keys of the split ports whose desired state may differ from the previous
        sync's `desired` (added, modified or removed); the others are taken as they were, and are
        neither re-planned nor compared. None: anything may have changed.
        `full=True` compares with the whole kernel state, read back (periodic resync: repairs
        drift); otherwise, after a successful sync, the dataplane compares with what it wrote,
        and with `changed` it writes only those split ports' kernel objects.
        """
        ...

    def preview(self, desired: Desired) -> str:
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

    def problems(self) -> list[str]:
        """What keeps the observed splits from being enforced (e.g. a program no longer attached),
        as `show` warns about it; the agent's next full resync repairs each."""
        ...
