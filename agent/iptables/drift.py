"""Drift: how the kernel's copy of our rules differs from what it should hold, as repairs. Pure.

A full resync rewrites whatever differs; these say what was repaired, one by one, so that the
owner can log each (table, chain, jump) and count it. What the kernel should hold is what we last
wrote when that is known (`expected`), else what any state of ours implies (`adopted`): the jumps
into chains of ours that exist, and the chains those jumps reach.
"""
from __future__ import annotations

from dataclasses import dataclass

from kernsplit.agent.iptables.diff import TableChanges, diff
from kernsplit.agent.iptables.ownership import JumpPlacement
from kernsplit.agent.iptables.ruleset import Chain, Rule, Ruleset, Table


@dataclass(frozen=True)
class Repair:
    kind: str        # "jump" or "chain" (the metrics label)
    table: str
    chain: str       # the built-in chain holding the jump, or the chain of ours
    text: str        # what was found and done

    def __str__(self) -> str:
        return self.text


def _jump(table: str, rule: Rule) -> str:
    return f"jump {table} {rule.chain} -j {rule.target}"


def _table_repairs(observed: Table | None, changes: TableChanges) -> list[Repair]:
    name = changes.name
    out = []
    for j in changes.add_jumps:
        if j in changes.del_jumps:
            out.append(Repair("jump", name, j.chain, f"{_jump(name, j)} was not the first rule of {j.chain} "
                                                      "(a rule was inserted above it): moved back to position 1"))
        else:
            out.append(Repair("jump", name, j.chain, f"{_jump(name, j)} was missing: added back"))
    out += [Repair("jump", name, j.chain, f"{_jump(name, j)} was not written by us (a copy or a stale "
                                          "jump): deleted")
            for j in changes.del_jumps if j not in changes.add_jumps]
    for c in changes.write:
        found = observed.chain(c.name) if observed else None
        state = "was missing: created again" if found is None else \
            f"held {len(found.rules)} rules instead of the {len(c.rules)} written: rewritten"
        out.append(Repair("chain", name, c.name, f"chain {name} {c.name} {state}"))
    out += [Repair("chain", name, c, f"chain {name} {c} was not written by us: deleted") for c in changes.delete]
    return out


def repairs(expected: Ruleset, observed: Ruleset, jumps: JumpPlacement) -> list[Repair]:
    """Every difference between what the kernel should hold of ours and what it holds."""
    found = []
    for t in diff(expected, observed, jumps).tables:
        found += _table_repairs(observed.table(t.name), t)
    return found


def adopted(want: Ruleset, observed: Ruleset) -> Ruleset:
    """What the kernel should hold when we do not know what we last wrote (the first sync after
    a start, or after a failed write): in each table that holds chains of ours and still should,
    those chains as they are, the wanted jumps, and the chains those jumps reach. Differences in
    what the chains hold are the desired state's business, not drift."""
    tables = []
    for have in observed.tables:
        wanted = want.table(have.name)
        if wanted is None or not have.chains:
            continue
        targets = sorted({j.target for j in wanted.jumps if j.target and have.chain(j.target) is None})
        # Only their existence is checked: empty, they jump nowhere the check would miss.
        chains = (*have.chains, *(Chain(t, ()) for t in targets))
        tables.append(Table(have.name, chains, wanted.jumps))
    return Ruleset(want.family, tuple(tables))
