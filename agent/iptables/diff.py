"""Desired ruleset vs what the kernel holds of ours -> only the changes. Pure.

Like kube-proxy since 1.26: chains whose rules are identical are not written (so their packet
counters keep counting); changed chains are flushed and refilled; chains of ours no longer desired
are deleted; jumps from built-in chains are added only when absent, and every observed jump beyond
one copy of each wanted one goes (stale shapes, duplicates, all of them on cleanup).

Jump placement (`ownership.JumpPlacement`) is the owner's choice. With FIRST, a wanted jump that is
present but no longer first (kube-proxy restarted after us and inserted its own at the top) is
deleted and inserted again at the top, in the same restore. With APPEND, position is not looked at.

Tables come in the desired ruleset's order, then tables that hold ours but are no longer desired:
the planner orders its tables so that each commit alone is safe.
"""
from __future__ import annotations

from dataclasses import dataclass

from kernsplit.agent.iptables.kinds import Family
from kernsplit.agent.iptables.ownership import JumpPlacement
from kernsplit.agent.iptables.ruleset import Chain, Rule, Ruleset, Table, undefined_targets


class UndefinedTarget(ValueError):
    """A planned rule jumps to a chain the plan does not have (a planner bug, caught before writing)."""


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
    jumps: JumpPlacement

    @property
    def empty(self) -> bool:
        return not self.tables

    def written(self) -> set[str]:
        return {c.name for t in self.tables for c in t.write}


def _jump_changes(want: Table | None, have: Table | None, jumps: JumpPlacement) -> tuple[tuple, tuple]:
    want_jumps = list(want.jumps if want else ())
    have_jumps = list(have.jumps if have else ())
    buried = list(have.buried if have and jumps is JumpPlacement.FIRST else ())
    add = tuple(j for j in want_jumps if j not in have_jumps or j in buried)
    remaining = list(want_jumps)
    dels = []
    for j in have_jumps:
        if j in remaining and j not in buried:
            remaining.remove(j)
        else:
            dels.append(j)
    return add, tuple(dels)


def _table_changes(name: str, want: Table | None, have: Table | None, jumps: JumpPlacement) -> TableChanges:
    want_chains = {c.name: c for c in (want.chains if want else ())}
    have_chains = {c.name: c for c in (have.chains if have else ())}
    write = tuple(c for n, c in want_chains.items()
                  if n not in have_chains or have_chains[n].rules != c.rules)
    delete = tuple(n for n in have_chains if n not in want_chains)
    add, dels = _jump_changes(want, have, jumps)
    if want is not None:
        missing = undefined_targets(want, (*(r for c in write for r in c.rules), *add))
        if missing:
            raise UndefinedTarget(f"{name} table: planned rules jump to {', '.join(missing)}, "
                                  "which the plan does not define")
    return TableChanges(name, write, delete, add, dels)


def diff(desired: Ruleset, observed: Ruleset, jumps: JumpPlacement) -> Changes:
    names = [t.name for t in desired.tables] + [t.name for t in observed.tables
                                                  if desired.table(t.name) is None]
    found = []
    for name in names:
        tc = _table_changes(name, desired.table(name), observed.table(name), jumps)
        if not tc.empty:
            found.append(tc)
    return Changes(desired.family, tuple(found), jumps)
