"""Partial sync planning: desired ruleset vs what the kernel holds -> only the changes.

Like kube-proxy since 1.26: chains whose rules are identical are not written (so their packet
counters, which `show` reads, keep counting); changed chains are flushed and refilled; chains of ours
no longer desired are deleted; jumps from built-in chains are added only when absent.

Our jumps must be the first rule of their built-in chain: on a node with kube-proxy, its
`-j KUBE-SERVICES` DNATs the root ClusterIP before a later jump of ours is reached (the split never
applies), and a foreign `FORWARD -j ACCEPT` above KS-REJECT turns a refusal into a hang. Jumps are
inserted at position 1, and a jump that is present but no longer first (kube-proxy restarted after us
and inserted its own at the top) is deleted and inserted again at the top, in the same restore.
Pure: the observed side comes from `agent.iptables.saved.parse_save`, decided on parsed rules.
"""
from __future__ import annotations

from dataclasses import dataclass

from kernsplit.agent.dataplane.iptables import names
from kernsplit.agent.dataplane.iptables.ruleset import Chain, Rule, Ruleset, Table
from kernsplit.agent.iptables.kinds import Family
from kernsplit.agent.iptables.saved import SavedTable

TABLES = ("nat", "filter")


@dataclass(frozen=True)
class TableChanges:
    name: str
    write: tuple[Chain, ...]        # (re)created and filled with exactly these rules
    delete: tuple[str, ...]         # ours, no longer desired
    add_jumps: tuple[Rule, ...]
    del_jumps: tuple[Rule, ...]     # exactly as observed, so `-D` matches them

    @property
    def empty(self) -> bool:
        return not (self.write or self.delete or self.add_jumps or self.del_jumps)


@dataclass(frozen=True)
class Changes:
    family: Family
    tables: tuple[TableChanges, ...]   # only tables with something to do

    @property
    def empty(self) -> bool:
        return not self.tables

    def written(self) -> set[str]:
        return {c.name for t in self.tables for c in t.write}


def owned(family: Family, saved: dict[str, SavedTable]) -> Ruleset:
    """The part of a parsed iptables-save that is ours, as a Ruleset (observed state)."""
    tables = []
    for name in TABLES:
        st = saved.get(name)
        if st is None:
            continue
        ours = [c for c in st.chains if names.is_ours(c)]
        chains = tuple(Chain(c, tuple(Rule(c, r.args) for r in st.rules_of(c))) for c in ours)
        jumps, buried, position = [], [], {}
        for r in st.rules:
            i = position[r.chain] = position.get(r.chain, -1) + 1      # index in its chain
            if not names.is_ours(r.chain) and names.is_ours(r.target or ""):
                jumps.append(Rule(r.chain, r.args))
                if i > 0:
                    buried.append(jumps[-1])
        if chains or jumps:
            tables.append(Table(name, chains, tuple(jumps), tuple(buried)))
    return Ruleset(family, tuple(tables))


def _table_changes(name: str, want: Table | None, have: Table | None) -> TableChanges:
    want_chains = {c.name: c for c in (want.chains if want else ())}
    have_chains = {c.name: c for c in (have.chains if have else ())}
    write = tuple(c for n, c in want_chains.items()
                  if n not in have_chains or have_chains[n].rules != c.rules)
    delete = tuple(n for n in have_chains if n not in want_chains)
    want_jumps = list(want.jumps if want else ())
    have_jumps = list(have.jumps if have else ())
    buried = list(have.buried if have else ())
    # A wanted jump that is present but not first is deleted and inserted again at the top.
    add = tuple(j for j in want_jumps if j not in have_jumps or j in buried)
    # Everything observed beyond one copy of each wanted jump goes (stale targets, duplicates).
    remaining = list(want_jumps)
    dels = []
    for j in have_jumps:
        if j in remaining and j not in buried:
            remaining.remove(j)
        else:
            dels.append(j)
    return TableChanges(name, write, delete, add, tuple(dels))


def diff(desired: Ruleset, observed: Ruleset) -> Changes:
    """Tables come in the order each commit alone is safe in: while the filter table (the static
    reject of connections nat marks) is wanted, it is written before nat, which may start marking;
    when it goes, nat (which stops marking) is written first."""
    found = []
    for name in (("filter", "nat") if desired.table("filter") is not None else TABLES):
        tc = _table_changes(name, desired.table(name), observed.table(name))
        if not tc.empty:
            found.append(tc)
    return Changes(desired.family, tuple(found))
