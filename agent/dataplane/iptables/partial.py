"""Partial sync: only the split ports the reconciler says changed, as a (want, have) pair. Pure.

kube-proxy's partial sync skips services outside `UpdatedServices`; here the reconciler passes
the keys of the changed split ports, and the dataplane keeps the plan of every split port it last
wrote (`PortPlan`, derived from the desired state alone). When a change touches only the split
ports' own KS-SVC chains (a weight change, an endpoint replaced), the pair holds just those chains
(and KS-POSTROUTING, made again, when an endpoint address comes or goes) and the write is one
short restore. When it touches the chain of every split port's entry (a port added or removed) or
refusal starts or ends, the pair is the whole family, still compared against the previous plans
rather than read back from the kernel.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping

from kernsplit.agent.dataplane.iptables import hairpin, refuse
from kernsplit.agent.dataplane.iptables.plan import PortPlan, assemble, in_order
from kernsplit.agent.iptables.ruleset import Chain, Ruleset, Table
from kernsplit.agent.iptables.kinds import Family

PortKey = tuple[str, int, str]


def _own_chain_only(old: PortPlan | None, new: PortPlan | None) -> bool:
    """The change stays inside the split port's own KS-SVC chain, and perhaps KS-POSTROUTING."""
    return old is not None and new is not None and old.entry == new.entry and old.marks == new.marks


def _hairpin(plans: Mapping[PortKey, PortPlan], family: Family, only: set[int] | None = None) -> tuple[Chain, ...]:
    """KS-POSTROUTING and its shards as `assemble` makes them, or just the shards `only`."""
    ports = in_order(plans.values(), family)
    return hairpin.chains((pp.hairpin_ips for pp in ports), only) if ports else ()


def pair(old: Mapping[PortKey, PortPlan], new: Mapping[PortKey, PortPlan], changed: Collection[PortKey],
         family: Family) -> tuple[Ruleset, Ruleset] | None:
    """(want, have) for `changed` in one family, or None when none of them is of that family."""
    touched = [(old.get(k), new.get(k)) for k in changed]
    touched = [(o, n) for o, n in touched if (o or n) is not None and (o or n).family is family]
    if not touched:
        return None
    if not all(_own_chain_only(o, n) for o, n in touched):
        return assemble(new.values(), family), assemble(old.values(), family)
    # KS-REFUSE is there already when a touched chain refuses a share (refusal did not start or
    # end); listed on both sides it is not written, and the chains that jump to it stay checked.
    static = (refuse.nat_chain(),) if any(n.marks for _, n in touched) else ()

    # An endpoint address added or removed changes the KS-HAIRPIN chain of its last byte: those
    # chains are made again from every split port's endpoint IPs (no other rule is) and compared
    # whole. Only when a shard is created or emptied does the dispatcher (and so every shard, which
    # it names) take part.
    moved = hairpin.shards_of(ip for o, n in touched for ip in set(o.hairpin_ips) ^ set(n.hairpin_ips))
    hairpins: tuple[tuple[Chain, ...], tuple[Chain, ...]] = ((), ())
    if moved:
        want, have = _hairpin(new, family, moved), _hairpin(old, family, moved)
        if {c.name for c in want} != {c.name for c in have}:
            want, have = _hairpin(new, family), _hairpin(old, family)
        hairpins = (want, have)

    def only(chains, more) -> Ruleset:
        # No jumps on either side: they are not touched, so the diff leaves them alone.
        return Ruleset(family, (Table("nat", (*chains, *static, *more), ()),))
    pairs = [(o.chain, n.chain) for o, n in touched]
    return (only((n for o, n in pairs if o != n), hairpins[0]),
            only((o for o, n in pairs if o != n), hairpins[1]))
