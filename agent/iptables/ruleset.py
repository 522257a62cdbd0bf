"""Rules we own as frozen data: tables of our chains, plus the jumps into them from built-in chains.

One type for both owners in a namespace (proxy-init's interception chains and the agent's split
chains): the desired state a planner returns and the observed state `ownership.owned` reads back
compare as plain values. Rules are `rule.Rule`: argument vectors as iptables-save prints them.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from kernsplit.agent.iptables.kinds import Family
from kernsplit.agent.iptables.rule import Rule

__all__ = ["Rule", "Chain", "Table", "Ruleset", "BUILTIN_TARGETS", "undefined_targets"]

# Targets that are not chains: what a rule may jump to besides a chain of the same table.
BUILTIN_TARGETS = frozenset({"ACCEPT", "DROP", "RETURN", "REJECT", "DNAT", "SNAT", "MASQUERADE", "REDIRECT",
                             "MARK", "CONNMARK", "LOG", "TPROXY"})


@dataclass(frozen=True, slots=True)
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
    # chain (someone, e.g. a restarted kube-proxy, inserted a rule above them).
    buried: tuple[Rule, ...] = ()

    @cached_property
    def _by_name(self) -> dict[str, Chain]:
        return {c.name: c for c in self.chains}

    def chain(self, name: str) -> Chain | None:
        return self._by_name.get(name)     # O(1): tens of thousands of chains at scale


@dataclass(frozen=True)
class Ruleset:
    """Everything of ours in one address family's tables. Tables absent here hold nothing of ours."""
    family: Family
    tables: tuple[Table, ...]

    def table(self, name: str) -> Table | None:
        return next((t for t in self.tables if t.name == name), None)


def undefined_targets(table: Table, rules: tuple[Rule, ...] | None = None) -> list[str]:
    """Targets of `rules` (default: every rule and jump of `table`) that are neither a built-in
    target nor a chain of `table`. A planned ruleset must have none."""
    if rules is None:
        rules = (*(r for c in table.chains for r in c.rules), *table.jumps)
    return sorted({r.target for r in rules
                   if r.target and r.target not in BUILTIN_TARGETS and table.chain(r.target) is None})
