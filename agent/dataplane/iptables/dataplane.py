"""IptablesDataplane: the executor that makes a namespace's iptables match the plan.

All decisions are made by the pure modules (plan, diff, carry, render, observe); this class only
reads the kernel (iptables-save, or `iptables -S CHAIN -v` for a few chains) and writes with one
`iptables-restore --noflush --counters` per family.

Counters: rewriting a chain (a weight change) would reset its rules' packet counters, which are the
per-backend connection counts of `kernsplit show`. Before a write, the counters of the rules being
replaced are read and written back onto the new rules of the same endpoint (`carry`). Endpoints
that lose their rule (removed, or weight 0) lose their count.

A full sync reads the kernel back: whatever differs from what the last sync wrote (a jump deleted
by hand, a chain flushed) is repaired in the same restore and logged at warning level, each repair
naming table, chain and jump (`drift`), and listed in the result (`SyncResult.repaired`: the
metrics count them). Writes wait for the xtables lock (legacy backend) at most `lock_wait`
seconds; past that the sync fails naming the lock, and the kernel keeps its last state until the
next sync. Each wait is reported to `events` (the agent's metrics) as it happens.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from kernsplit.agent.dataplane.base import Desired, Events, NoEvents, ObservedSplit, PortKey, SyncResult, by_key
from kernsplit.agent.dataplane.iptables import carry, comments, names, partial
from kernsplit.agent.dataplane.iptables.observe import observe_tables
from kernsplit.agent.dataplane.iptables.plan import PortPlan, assemble, port_plan
from kernsplit.agent.iptables import drift, nft_tables, xlock
from kernsplit.agent.iptables import exec as ipt
from kernsplit.agent.iptables.diff import Changes, diff
from kernsplit.agent.iptables.exec import IptablesError, XtablesLockHeld
from kernsplit.agent.iptables.kinds import Family, IptablesBackend
from kernsplit.agent.iptables.ownership import owned
from kernsplit.agent.iptables.render import render
from kernsplit.agent.iptables.rule import target_of
from kernsplit.agent.iptables.ruleset import Ruleset
from kernsplit.agent.iptables.saved import SavedTable, parse_save
from kernsplit.agent.model.resolved import SplitPort

log = logging.getLogger("kernsplit.dataplane.iptables")

# A partial sync reads the counters of the chains it rewrites with one `iptables -S CHAIN -v` each,
# up to this many chains, else with one `iptables-save -c`. Measured with 10,000 split ports
# installed: nft lists one chain in 3 ms and saves the nat table in 390 ms; legacy needs 100 ms for
# either listing (it always fetches the whole table) and 165 ms for the save.
PER_CHAIN_READS = {IptablesBackend.NFT: 64, IptablesBackend.LEGACY: 1}

MODES = ("auto", "legacy", "nft")
FAMILIES = (Family.V4, Family.V6)


def _entry_keys(rs: Ruleset) -> dict[tuple[str, int], tuple[str, ...]]:
    """(cluster ip, port) -> entry rule args, for every split port in a ruleset."""
    keys = {}
    for table in rs.tables:
        for chain in table.chains:
            if chain.name not in (names.SERVICES, names.REJECT):
                continue
            for rule in chain.rules:
                root = next((c for c in comments.decode_rule(rule.args) if isinstance(c, comments.RootComment)), None)
                if root:
                    keys[(root.ip, root.port)] = rule.args
    return keys


class IptablesDataplane:
    name = "iptables"

    def __init__(self, netns: str | os.PathLike | None = None, mode: str = "auto",
                 lock_wait: int = xlock.DEFAULT_WAIT, events: Events | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown iptables mode {mode!r}: choose one of {', '.join(MODES)}")
        if lock_wait < 1:
            raise ValueError(f"xtables lock wait must be at least 1 second, not {lock_wait}")
        self.netns = netns
        self.mode = mode
        self.lock_wait = lock_wait
        self.events: Events = events or NoEvents()
        self._backend: IptablesBackend | None = None if mode == "auto" else IptablesBackend(mode)
        # The plan of every split port of the last sync, by key. Derived from the desired state
        # alone; a sync re-plans only the split ports the caller says changed.
        self._plans: dict[PortKey, PortPlan] = {}
        # The kernel holds exactly what `_plans` renders (the last write succeeded): a partial
        # sync may then compare against the plans instead of reading the kernel.
        self._trusted = False

    # -- backend -------------------------------------------------------------------------------

    def _ours_with(self, backend: IptablesBackend) -> bool:
        for fam in FAMILIES:
            rs = self._read(fam, backend)
            if rs is not None and rs.tables:
                return True
        return False

    @property
    def backend(self) -> IptablesBackend:
        """Chosen once per instance: where our chains already are (a restarted agent adopts them),
        else proxy-init's rule (legacy if legacy rules exist, else nft if it works)."""
        if self._backend is None:
            found = next((b for b in (IptablesBackend.NFT, IptablesBackend.LEGACY) if self._ours_with(b)), None)
            if found is not None:
                self._backend, why = found, "kernsplit chains already present there"
            else:
                self._backend, why = ipt.detect_backend(self.netns)
            log.info("iptables backend %s for netns %s: %s", self._backend.value,
                     self.netns or "(current)", why)
        return self._backend

    # -- reading -------------------------------------------------------------------------------

    def _saved(self, family: Family, backend: IptablesBackend | None = None) -> dict[str, SavedTable] | None:
        """The kernel's tables with counters, parsed; None when this family's iptables is unusable."""
        try:
            return parse_save(ipt.save_lines(self.netns, backend or self.backend, family, counters=True))
        except IptablesError as exc:
            log.debug("cannot read %s tables: %s", family.value, exc)
            return None

    def _read(self, family: Family, backend: IptablesBackend | None = None) -> Ruleset | None:
        """Our part of the kernel's tables; None when this family's iptables is unusable."""
        saved = self._saved(family, backend)
        return None if saved is None else owned(names.OWNERSHIP, family, saved)

    # -- Dataplane protocol --------------------------------------------------------------------

    def sync(self, desired: Desired, *, full: bool = False, changed: frozenset[PortKey] | None = None) -> SyncResult:
        """Make this namespace's tables match `desired`; see `base.Dataplane.sync`.

        Rewritten chains keep the packet counters of the rules that stay (same backend and
        endpoint); rules that disappear (endpoint removed, weight 0) take theirs with them.
        """
        desired = by_key(desired)
        trusted, old = self._trusted, self._plans
        plans = self._replan(desired, changed)
        partial = not full and trusted and changed is not None
        self._trusted = False                  # until every family is written
        written = removed = unchanged = 0
        repaired: list[str] = []
        for fam in FAMILIES:
            if partial:
                w, r = self._sync_partial(fam, old, plans, changed)
                written, removed = written + w, removed + r
                continue
            want = assemble(plans.values(), fam)
            saved = None
            if not full and trusted:
                have = assemble(old.values(), fam)    # what the last sync wrote
            else:
                saved = self._saved(fam)
                have = None if saved is None else owned(names.OWNERSHIP, fam, saved)
            if have is None:
                if want.tables:
                    raise IptablesError(f"cannot read {fam.value} iptables in netns "
                                        f"{self.netns or '(current)'}, but {fam.value} splits are configured")
                continue
            repairs = [] if saved is None else drift.repairs(
                assemble(old.values(), fam) if trusted else drift.adopted(want, have), have, names.OWNERSHIP.jumps)
            changes = self._apply(fam, want, have, saved)
            repaired += self._report(fam, repairs)
            w, r, u = self._count(want, have, changes)
            written, removed, unchanged = written + w, removed + r, unchanged + u
        self._trusted = True
        if partial:
            unchanged = len(plans) - written
        return SyncResult(written=written, removed=removed, unchanged=unchanged, repaired=tuple(repaired))

    def preview(self, desired: Desired) -> str:
        """The restore text a full sync would apply per family (without the counter prefixes it
        adds to carry counters over); reads the kernel, writes nothing."""
        plans = [port_plan(sp) for sp in by_key(desired).values()]
        out = []
        for fam in FAMILIES:
            want = assemble(plans, fam)
            saved = self._saved(fam)
            if saved is None:
                if want.tables:
                    raise IptablesError(f"cannot read {fam.value} iptables in netns "
                                        f"{self.netns or '(current)'}, but {fam.value} splits are configured")
                continue
            changes = diff(want, owned(names.OWNERSHIP, fam, saved), names.OWNERSHIP.jumps)
            tool = ipt.binary("restore", self.backend, fam)
            if changes.empty:
                out.append(f"# {fam.value}: {tool}: up to date, nothing to write\n")
            else:
                out.append(f"# {fam.value}: input for {tool} --noflush --counters\n{render(changes)}")
        return "".join(out)

    def _replan(self, desired: Mapping[PortKey, SplitPort], changed: frozenset[PortKey] | None) -> dict[PortKey, PortPlan]:
        """Plans for `desired`: the previous ones, except for the changed split ports."""
        if changed is not None:
            plans = dict(self._plans)
            for key in changed:
                sp = desired.get(key)
                if sp is None:
                    plans.pop(key, None)
                else:
                    plans[key] = port_plan(sp)
            if len(plans) == len(desired):     # else the caller's `changed` missed something
                self._plans = plans
                return plans
        self._plans = {key: port_plan(sp) for key, sp in desired.items()}
        return self._plans

    def _sync_partial(self, fam: Family, old: Mapping[PortKey, PortPlan], new: Mapping[PortKey, PortPlan],
                      changed: frozenset[PortKey]) -> tuple[int, int]:
        """Write what the changed split ports need; returns (written, removed)."""
        found = partial.pair(old, new, changed, fam)
        if found is None:
            return 0, 0
        want, have = found
        changes = diff(want, have, names.OWNERSHIP.jumps)
        if not changes.empty:
            try:
                self._write(fam, changes, have, None)
            except XtablesLockHeld:
                raise                       # retrying now would only wait as long again
            except IptablesError as exc:
                # Our picture of the kernel was wrong (someone changed it): compare with the kernel.
                log.warning("partial restore failed, retrying against the kernel's state: %s", exc)
                saved = self._saved(fam) or {}
                self._apply(fam, assemble(new.values(), fam), owned(names.OWNERSHIP, fam, saved), saved)
        mine = [k for k in changed if (new.get(k) or old.get(k)).family is fam]
        written = sum(1 for k in mine if k in new and (k not in old or old[k] != new[k]))
        return written, sum(1 for k in mine if k in old and k not in new)

    def _report(self, fam: Family, repairs: list[drift.Repair]) -> list[str]:
        """Log each repair; returns their metrics labels ("iptables_jump", "iptables_chain")."""
        for r in repairs:
            log.warning("drift repaired (%s, iptables-%s, netns %s): %s", fam.value, self.backend.value,
                        self.netns or "(current)", r,
                        extra={"family": fam.value, "table": r.table, "chain": r.chain, "repair": r.kind})
        return [f"iptables_{r.kind}" for r in repairs]

    def _counts_for(self, fam: Family, changes: Changes, have: Ruleset,
                    saved: dict[str, SavedTable] | None) -> carry.Counts:
        """Current counters of the rules that `changes` replaces."""
        places = carry.rewritten(changes, have)
        if not places:
            return {}
        if saved is None and len(places) <= PER_CHAIN_READS[self.backend]:
            # A weight change touches one chain: listing it costs one short command, where a whole
            # `iptables-save -c` grows with every split installed.
            counts: dict = {}
            for table, chain in places:
                try:
                    text = ipt.list_chain(self.netns, self.backend, fam, table, chain, counters=True,
                                          wait=self.lock_wait)
                except XtablesLockHeld:
                    self.events.record_lock_wait()
                    raise
                except IptablesError as exc:       # gone behind our back: nothing left to carry
                    log.debug("cannot read counters of %s %s: %s", table, chain, exc)
                    continue
                counts.update(carry.from_listing(table, chain, text))
            return counts
        if saved is None:
            saved = self._saved(fam) or {}
        return carry.from_saved(saved, places)

    def _write(self, fam: Family, changes: Changes, have: Ruleset, saved: dict[str, SavedTable] | None) -> None:
        counts = self._counts_for(fam, changes, have, saved)
        self._restore(self.backend, fam, render(changes, carry.lookup(counts)), counters=bool(counts))

    def _restore(self, backend: IptablesBackend, fam: Family, text: str, counters: bool = False) -> None:
        try:
            held = ipt.restore(self.netns, backend, fam, text, counters=counters, wait=self.lock_wait)
        except XtablesLockHeld:
            self.events.record_lock_wait()
            raise
        if held:
            self.events.record_lock_wait()

    def _apply(self, fam: Family, want: Ruleset, have: Ruleset, saved: dict[str, SavedTable] | None) -> Changes:
        changes = diff(want, have, names.OWNERSHIP.jumps)
        if changes.empty:
            return changes
        try:
            self._write(fam, changes, have, saved)
        except XtablesLockHeld:
            raise
        except IptablesError as exc:
            # Our picture of the kernel was wrong (someone changed it): re-read, retry once.
            log.warning("partial restore failed, retrying against the kernel's state: %s", exc)
            saved = self._saved(fam) or {}
            have = owned(names.OWNERSHIP, fam, saved)
            changes = diff(want, have, names.OWNERSHIP.jumps)
            if not changes.empty:
                self._write(fam, changes, have, saved)
        return changes

    @staticmethod
    def _count(want: Ruleset, have: Ruleset, changes: Changes) -> tuple[int, int, int]:
        want_keys, have_keys = _entry_keys(want), _entry_keys(have)
        rewritten = changes.written()
        written = unchanged = 0
        for key, args in want_keys.items():
            # an entry rule's target is its SVC chain, which holds the split port's DNAT rules
            if have_keys.get(key) == args and target_of(args) not in rewritten:
                unchanged += 1
            else:
                written += 1
        return written, len(set(have_keys) - set(want_keys)), unchanged

    def _backends_to_scan(self) -> tuple[IptablesBackend, ...]:
        return (IptablesBackend.NFT, IptablesBackend.LEGACY) if self.mode == "auto" else (IptablesBackend(self.mode),)

    def cleanup(self) -> None:
        for backend in self._backends_to_scan():
            for fam in FAMILIES:
                have = self._read(fam, backend)
                if have is None or not have.tables:
                    continue
                changes = diff(Ruleset(fam, ()), have, names.OWNERSHIP.jumps)
                self._restore(backend, fam, render(changes))
                log.info("removed kernsplit chains (%s, %s)", backend.value, fam.value)
                if backend is IptablesBackend.NFT:
                    nft_tables.delete_if_empty(self.netns, fam, [t.name for t in have.tables])
        self._plans, self._trusted = {}, False

    def installed(self) -> bool:
        return any(self._ours_with(b) for b in self._backends_to_scan())

    def problems(self) -> list[str]:
        return []      # a missing jump shows as drift in the agent's log; `show` reads the chains only

    def observe(self) -> list[ObservedSplit]:
        found: list[ObservedSplit] = []
        for backend in self._backends_to_scan():
            for fam in FAMILIES:
                saved = self._saved(fam, backend)
                if saved is not None:
                    found += observe_tables(saved)
            if found:   # one backend holds our rules; do not report a stale copy twice
                break
        return found
