"""The iptables plan as frozen data: tables of our chains, plus the jumps into them.

Rules are `agent.iptables.rule.Rule`: argument vectors that compare equal to rules read back with
`agent.iptables.saved.parse_save`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from kernsplit.agent.iptables.kinds import Family
from kernsplit.agent.iptables.rule import Rule

__all__ = ["Rule", "Chain", "Table", "Ruleset"]


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Table:
    """Our chains in one table, and the jump rules built-in chains need to reach them."""
    name: str
    chains: tuple[Chain, ...]
    jumps: tuple[Rule, ...]          # rules in built-in chains (OUTPUT, PREROUTING, ...)
    # Observed state only: jumps of ours that are present but not the first rule of their built-in
    # chain (someone, e.g. a restarted kube-proxy, inserted a rule above them). Planned jumps are
    # always first.
    buried: tuple[Rule, ...] = ()

    @cached_property
    def _by_name(self) -> dict[str, Chain]:
        return {c.name: c for c in self.chains}

    def chain(self, name: str) -> Chain | None:
        return self._by_name.get(name)     # O(1): tens of thousands of chains at scale


@dataclass(frozen=True)
class Ruleset:
    """Everything we want in one address family's tables. Tables absent here hold nothing of ours."""
    family: Family
    tables: tuple[Table, ...]

    def table(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name == name), None)
