"""The pure planner: resolved split ports in, the iptables ruleset we want out.

No subprocess, no files. Layout (kube-proxy's, with weights):

    nat    PREROUTING, OUTPUT -> KS-SERVICES        (every jump is the first rule of its built-in chain)
           KS-SERVICES: -d CLUSTERIP -p tcp --dport PORT -> KS-SVC-<hash>     (one rule per split port)
           KS-SVC-<hash>: rule i `-m statistic --probability p_i` then `-j DNAT --to-destination IP:PORT`
                          for a served share or `-j KS-REFUSE` for a refused one; last unconditional
           KS-REFUSE: mark the connection, end the nat walk                    (static, see `refuse`)
           POSTROUTING -> KS-POSTROUTING: masquerade hairpin connections only      (see `hairpin`)
    filter INPUT, FORWARD, OUTPUT -> KS-REJECT
           KS-REJECT: marked new connections -> REJECT --reject-with tcp-reset  (static, see `refuse`)

A split port that refuses everything (nothing can serve it) is a KS-SVC chain whose only slot is
KS-REFUSE, and a Gateway route's refused share is one more slot beside the DNATs: one mechanism,
decided in nat alone, so a served <-> refused change touches one table (see `refuse`).

The DNAT rules sit directly in the KS-SVC chain (no per-endpoint KS-SEP chain as in kube-proxy):
one chain per split port instead of one per endpoint. iptables-nft's cost grows faster than
linearly with the number of chains (10,000 seed splits: 30,001 chains took 38.7 s to restore), while
rules are cheap. Each slot rule's packet counter still counts exactly the connections sent to its
endpoint (or refused for its backend), because the nat table only sees a connection's first packet;
the dataplane carries those counters over when a weight change rewrites the chain (see `carry`).
"""
from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kernsplit.agent.dataplane.iptables import comments, hairpin, names, probability, refuse
from kernsplit.agent.iptables.ruleset import Chain, Rule, Ruleset, Table
from kernsplit.agent.iptables.kinds import Family
from kernsplit.agent.model.resolved import Choice, RefusedShare, SplitPort

NAT_HOOKS = ("PREROUTING", "OUTPUT")


def family_of(sp: SplitPort) -> Family:
    return Family.V6 if sp.family == 6 else Family.V4


def _order(sp: SplitPort) -> tuple:
    return (ipaddress.ip_address(sp.cluster_ip), sp.port, sp.protocol)


def _match(sp: SplitPort) -> tuple[str, ...]:
    """Destination match of a split port, in the canonical order iptables-save prints."""
    host = 128 if sp.family == 6 else 32
    proto = sys.intern(sp.protocol.lower())
    return ("-d", f"{sp.cluster_ip}/{host}", "-p", proto, "-m", proto, "--dport", sys.intern(str(sp.port)))


def _comments(texts: list[str]) -> tuple[str, ...]:
    return tuple(w for t in texts for w in ("-m", "comment", "--comment", t))


def _backends(sp: SplitPort) -> list[str]:
    return [comments.backend(b) for b in sp.backends]


def _entry(chain: str, sp: SplitPort, metadata: list[str], target: tuple[str, ...]) -> Rule:
    return Rule(chain, (*_match(sp), *_comments([comments.root(sp), *metadata]), *target))


def _service_chain(sp: SplitPort) -> Chain:
    """KS-SVC for one split port: the weighted choice, and the DNATs or refusals, in one chain."""
    svc = names.svc_chain(sp)
    choices = sp.choices
    probs = probability.conditional_probabilities([c.share for c in choices])
    # First rule: no target, only the configured backends for `show` (it also counts every new
    # connection to the split port). Kept here rather than on the KS-SERVICES entry so that a weight
    # change rewrites this chain only, not the top chain shared by every split.
    rules = [Rule(svc, _comments(_backends(sp)))]
    for i, (choice, p) in enumerate(zip(choices, probs)):
        last = i == len(choices) - 1
        stat = () if last else ("-m", "statistic", "--mode", "random", "--probability", probability.render(p))
        rules.append(_slot(svc, sp, choice, stat))
    return Chain(svc, tuple(rules))


def _slot(svc: str, sp: SplitPort, choice: Choice, stat: tuple[str, ...]) -> Rule:
    # Argument order is the one iptables-save prints, so planned and observed rules compare equal.
    if isinstance(choice, RefusedShare):
        return Rule(svc, ("-p", sys.intern(sp.protocol.lower()), "-m", "comment", "--comment", comments.refused(sp, choice),
                          *stat, *refuse.target()))
    return Rule(svc, ("-p", sys.intern(sp.protocol.lower()), "-m", "comment", "--comment", comments.endpoint(sp, choice), *stat,
                      "-j", "DNAT", "--to-destination", str(choice.endpoint)))


def _jumps(hooks: Sequence[str], target: str, purpose: str) -> tuple[Rule, ...]:
    args = ("-m", "comment", "--comment", comments.jump(purpose), "-j", target)
    return tuple(Rule(h, args) for h in hooks)


@dataclass(frozen=True, slots=True)
class PortPlan:
    """Everything one split port contributes to the ruleset. Depends on that split port alone, so
    the dataplane keeps one per SplitPort: a sync with one changed split plans one split port.

    Only the split port is held (the desired state's own object); the rules are made when asked.
    Held as rules for every split port they would cost about 4 KB each (45 MiB at 10,000), for
    work that is redone only when a whole ruleset is assembled (a full sync)."""
    sp: SplitPort

    @property
    def key(self) -> tuple[str, int, str]:
        return self.sp.key

    @property
    def family(self) -> Family:
        return family_of(self.sp)

    @property
    def order(self) -> tuple:
        """Sort key: (ip address, port, protocol)."""
        return _order(self.sp)

    @property
    def marks(self) -> bool:
        """Some slot refuses: needs KS-REFUSE and the filter reject rule."""
        return any(isinstance(c, RefusedShare) for c in self.sp.choices)

    @property
    def entry(self) -> Rule:
        """Its KS-SERVICES rule."""
        return _entry(names.SERVICES, self.sp, [], ("-j", names.svc_chain(self.sp)))

    @property
    def chain(self) -> Chain:
        """Its KS-SVC chain."""
        return _service_chain(self.sp)

    @property
    def hairpin_ips(self) -> tuple[str, ...]:
        """Its endpoint IPs, each with a KS-POSTROUTING rule."""
        return hairpin.endpoint_ips(self.sp)



def port_plan(sp: SplitPort) -> PortPlan:
    """The rules of one split port (made when asked). Pure."""
    return PortPlan(sp)


def in_order(port_plans: Iterable[PortPlan], family: Family) -> list[PortPlan]:
    """The plans of one family as a ruleset lists them: the first per key, sorted by address."""
    chosen: dict[tuple, PortPlan] = {}
    for pp in port_plans:
        if pp.family is family:
            chosen.setdefault(pp.key, pp)
    return sorted(chosen.values(), key=lambda pp: pp.order)


def assemble(port_plans: Iterable[PortPlan], family: Family = Family.V4) -> Ruleset:
    """The complete set of our chains and jumps for one address family, from per-split-port plans
    (the first plan per (ip, port, protocol) wins). Pure.

    KS-REFUSE and the filter table's static reject rule exist while some slot of the family
    refuses. The filter table comes first: applied in this order, its reject rule is in place
    before any nat rule can mark a connection (see `refuse`)."""
    ports = in_order(port_plans, family)
    if not ports:
        return Ruleset(family, ())
    marks = any(pp.marks for pp in ports)
    top = Chain(names.SERVICES, tuple(pp.entry for pp in ports))
    chains = [top, *(pp.chain for pp in ports), *([refuse.nat_chain()] if marks else []),
              *hairpin.chains(pp.hairpin_ips for pp in ports)]
    jumps = (*_jumps(NAT_HOOKS, names.SERVICES, "split service connections"),
             *_jumps(("POSTROUTING",), names.HAIRPIN, "masquerade split connections DNATed to their source"))
    nat = Table("nat", tuple(chains), jumps)
    if not marks:
        return Ruleset(family, (nat,))
    reject = Table("filter", (refuse.filter_chain(),), _jumps(refuse.FILTER_HOOKS, names.REJECT, refuse.JUMP_PURPOSE))
    return Ruleset(family, (reject, nat))


def plan(split_ports: Iterable[SplitPort], family: Family = Family.V4) -> Ruleset:
    """The complete set of our chains and jumps for one address family. Pure."""
    return assemble((port_plan(sp) for sp in split_ports if family_of(sp) is family), family)
