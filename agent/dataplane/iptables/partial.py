"""Partial sync: only the split ports the reconciler says changed, as a (want, have) pair. Pure.

kube-proxy's partial sync skips services outside `UpdatedServices`; here the reconciler passes
the keys of the changed split ports, and the dataplane keeps the plan of every split port it last
wrote (`PortPlan`, derived from the desired state alone). When a change touches only the split
ports' own KS-SVC chains (a weight change, an endpoint replaced), the pair holds just those chains
and the write is one short restore whatever the number of split ports installed. When it touches a
chain shared by all split ports (the KS-SERVICES entry of an added or removed port, the hairpin
rules of a new endpoint address, refusal starting or ending), the pair is the whole family, still
compared against the previous plans rather than read back from the kernel.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping

from kernsplit.agent.dataplane.iptables import refuse
from kernsplit.agent.dataplane.iptables.plan import PortPlan, assemble
from kernsplit.agent.iptables.ruleset import Ruleset, Table
from kernsplit.agent.iptables.kinds import Family

PortKey = tuple[str, int, str]


def _own_chain_only(old: PortPlan | None, new: PortPlan | None) -> bool:
    """The change stays inside the split port's own KS-SVC chain."""
    return (old is not None and new is not None and old.entry == new.entry and old.hairpin_ips == new.hairpin_ips
            and old.marks == new.marks)


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

    def only(chains) -> Ruleset:
        # No jumps on either side: they are not touched, so the diff leaves them alone.
        return Ruleset(family, (Table("nat", (*chains, *static), ()),))
    return (only(n.chain for o, n in touched if o.chain != n.chain),
            only(o.chain for o, n in touched if o.chain != n.chain))
