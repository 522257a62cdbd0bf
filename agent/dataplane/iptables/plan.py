"""The pure planner: resolved split ports in, the iptables ruleset we want out.

No subprocess, no files. Layout (kube-proxy's, with weights):

    nat    PREROUTING, OUTPUT -> KS-SERVICES        (every jump is the first rule of its built-in chain)
           KS-SERVICES: -d CLUSTERIP -p tcp --dport PORT -> KS-SVC-<hash>     (one rule per split port)
           KS-SVC-<hash>: rule i `-m statistic --probability p_i -j DNAT --to-destination IP:PORT`,
                          last unconditional                                   (one rule per endpoint)
           POSTROUTING -> KS-POSTROUTING: masquerade hairpin connections only      (see `hairpin`)
    filter INPUT, FORWARD, OUTPUT -> KS-REJECT
           KS-REJECT: -d CLUSTERIP -p tcp --dport PORT -j REJECT --reject-with tcp-reset

REJECT is not allowed in the nat table, so refusing split ports live in the filter table. A refused
port has no nat rule, so its packets reach filter with the ClusterIP still as destination (connections
we DNAT carry the endpoint's address by then and never match KS-REJECT). OUTPUT covers local clients;
INPUT (ClusterIP assigned locally) and FORWARD (routed through) cover clients in other namespaces.
The tcp-reset makes connect() fail at once with ECONNREFUSED instead of hanging.

The DNAT rules sit directly in the KS-SVC chain (no per-endpoint KS-SEP chain as in kube-proxy):
one chain per split port instead of one per endpoint. iptables-nft's cost grows faster than
linearly with the number of chains (10,000 seed splits: 30,001 chains took 38.7 s to restore), while
rules are cheap. Each DNAT rule's packet counter still counts exactly the connections sent to its
endpoint, because the nat table only sees a connection's first packet; the dataplane carries those
counters over when a weight change rewrites the chain (see `carry`).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kernsplit.agent.dataplane.iptables import comments, hairpin, names, probability
from kernsplit.agent.dataplane.iptables.ruleset import Chain, Rule, Ruleset, Table
from kernsplit.agent.iptables.exec import Family
from kernsplit.agent.model.resolved import SplitPort

NAT_HOOKS = ("PREROUTING", "OUTPUT")
FILTER_HOOKS = ("INPUT", "FORWARD", "OUTPUT")


def family_of(sp: SplitPort) -> Family:
    return Family.V6 if sp.family == 6 else Family.V4


def _order(sp: SplitPort) -> tuple:
    return (ipaddress.ip_address(sp.cluster_ip), sp.port, sp.protocol)


def _match(sp: SplitPort) -> tuple[str, ...]:
    """Destination match of a split port, in the canonical order iptables-save prints."""
    host = 128 if sp.family == 6 else 32
    proto = sp.protocol.lower()
    return ("-d", f"{sp.cluster_ip}/{host}", "-p", proto, "-m", proto, "--dport", str(sp.port))


def _comments(texts: list[str]) -> tuple[str, ...]:
    return tuple(w for t in texts for w in ("-m", "comment", "--comment", t))


def _backends(sp: SplitPort) -> list[str]:
    return [comments.backend(b) for b in sp.backends]


def _entry(chain: str, sp: SplitPort, metadata: list[str], target: tuple[str, ...]) -> Rule:
    return Rule(chain, (*_match(sp), *_comments([comments.root(sp), *metadata]), *target))


def _service_chain(sp: SplitPort) -> Chain:
    """KS-SVC for one split port: the weighted choice and the DNATs in one chain."""
    svc = names.svc_chain(sp)
    probs = probability.conditional_probabilities([we.share for we in sp.endpoints])
    proto = sp.protocol.lower()
    # First rule: no target, only the configured backends for `show` (it also counts every new
    # connection to the split port). Kept here rather than on the KS-SERVICES entry so that a weight
    # change rewrites this chain only, not the top chain shared by every split.
    rules = [Rule(svc, _comments(_backends(sp)))]
    for i, (we, p) in enumerate(zip(sp.endpoints, probs)):
        last = i == len(sp.endpoints) - 1
        stat = () if last else ("-m", "statistic", "--mode", "random", "--probability", probability.render(p))
        # Argument order is the one iptables-save prints, so planned and observed rules compare equal.
        rules.append(Rule(svc, ("-p", proto, "-m", "comment", "--comment", comments.endpoint(sp, we), *stat,
                                "-j", "DNAT", "--to-destination", str(we.endpoint))))
    return Chain(svc, tuple(rules))


def _jumps(hooks: Sequence[str], target: str, purpose: str) -> tuple[Rule, ...]:
    args = ("-m", "comment", "--comment", comments.jump(purpose), "-j", target)
    return tuple(Rule(h, args) for h in hooks)


@dataclass(frozen=True)
class PortPlan:
    """Everything one split port contributes to the ruleset. Depends on that split port alone, so
    the dataplane caches it per SplitPort: a sync with one changed split plans one split port."""
    key: tuple[str, int, str]           # SplitPort.key
    family: Family
    order: tuple                        # sort key: (ip address, port, protocol)
    refuse: bool
    entry: Rule                         # KS-SERVICES rule (served) or KS-REJECT rule (refused)
    chain: Chain | None                 # its KS-SVC chain (served only)
    hairpin: tuple[Rule, ...]           # KS-POSTROUTING rules for its endpoint IPs


def port_plan(sp: SplitPort) -> PortPlan:
    """The rules of one split port. Pure."""
    if sp.refuse:
        entry = _entry(names.REJECT, sp, _backends(sp), ("-j", "REJECT", "--reject-with", "tcp-reset"))
        return PortPlan(sp.key, family_of(sp), _order(sp), True, entry, None, ())
    entry = _entry(names.SERVICES, sp, [], ("-j", names.svc_chain(sp)))
    return PortPlan(sp.key, family_of(sp), _order(sp), False, entry, _service_chain(sp),
                    hairpin.endpoint_rules(sp))


def assemble(port_plans: Iterable[PortPlan], family: Family = Family.V4) -> Ruleset:
    """The complete set of our chains and jumps for one address family, from per-split-port plans
    (the first plan per (ip, port, protocol) wins). Pure."""
    chosen: dict[tuple, PortPlan] = {}
    for pp in port_plans:
        if pp.family is family:
            chosen.setdefault(pp.key, pp)
    ports = sorted(chosen.values(), key=lambda pp: pp.order)
    served = [pp for pp in ports if not pp.refuse]
    refused = [pp for pp in ports if pp.refuse]
    tables = []
    if served:
        top = Chain(names.SERVICES, tuple(pp.entry for pp in served))
        chains = [top, *(pp.chain for pp in served), hairpin.chain(pp.hairpin for pp in served)]
        jumps = (*_jumps(NAT_HOOKS, names.SERVICES, "split service connections"),
                 *_jumps(("POSTROUTING",), names.HAIRPIN, "masquerade split connections DNATed to their source"))
        tables.append(Table("nat", tuple(chains), jumps))
    if refused:
        reject = Chain(names.REJECT, tuple(pp.entry for pp in refused))
        tables.append(Table("filter", (reject,),
                            _jumps(FILTER_HOOKS, names.REJECT, "refuse split services without endpoints")))
    return Ruleset(family, tuple(tables))


def plan(split_ports: Iterable[SplitPort], family: Family = Family.V4) -> Ruleset:
    """The complete set of our chains and jumps for one address family. Pure."""
    return assemble((port_plan(sp) for sp in split_ports if family_of(sp) is family), family)
