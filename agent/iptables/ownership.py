"""Who owns which chains, and reading our part of a namespace's tables back (observed state). Pure.

Two owners share a namespace and never touch each other's rules: proxy-init (`KS-PROXY-INIT-*`,
jumps appended) and the agent's split chains (`KS-SERVICES`, `KS-SVC-*`, ..., jumps first). Each
says what is its own with an `Ownership`; foreign chains and rules are never read into a Ruleset,
so a diff can neither change nor delete them.
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kernsplit.agent.iptables.kinds import Family
from kernsplit.agent.iptables.ruleset import Chain, Rule, Ruleset, Table
from kernsplit.agent.iptables.saved import SavedTable


class JumpPlacement(enum.Enum):
    """Where our jumps go in their built-in chains.

    FIRST: inserted at position 1, and a jump found below a foreign rule is moved back to the top
    (the split must decide before kube-proxy's KUBE-SERVICES DNATs the same address).
    APPEND: appended, position left alone (proxy-init's interception, like linkerd2-proxy-init:
    rules placed before ours, e.g. a CNI's, keep deciding first)."""
    FIRST = "first"
    APPEND = "append"


@dataclass(frozen=True)
class Ownership:
    is_ours: Callable[[str], bool]        # chain name -> ours?
    tables: tuple[str, ...]               # the tables our chains may live in
    jumps: JumpPlacement


def owned(ownership: Ownership, family: Family, saved: Mapping[str, SavedTable]) -> Ruleset:
    """The part of a parsed iptables-save that is ours, as a Ruleset."""
    tables = []
    for name in ownership.tables:
        st = saved.get(name)
        if st is None:
            continue
        table = _owned_table(ownership.is_ours, st)
        if table.chains or table.jumps:
            tables.append(table)
    return Ruleset(family, tuple(tables))


def _owned_table(is_ours: Callable[[str], bool], st: SavedTable) -> Table:
    chains = tuple(Chain(c, tuple(Rule(c, r.args) for r in st.rules_of(c))) for c in st.chains if is_ours(c))
    jumps, buried, position = [], [], {}
    for r in st.rules:
        i = position[r.chain] = position.get(r.chain, -1) + 1      # index in its chain
        if not is_ours(r.chain) and is_ours(r.target or ""):
            jumps.append(Rule(r.chain, r.args))
            if i > 0:
                buried.append(jumps[-1])
    return Table(st.name, chains, tuple(jumps), tuple(buried))
