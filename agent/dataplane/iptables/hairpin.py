"""Hairpin: a pod that connects to a split service and is DNATed back to itself. Pure.

The problem: the pod's SYN (pod -> ClusterIP) reaches the node, is DNATed to the pod's own address
and routed back. The pod now receives a packet from its own address to its own address: the kernel
drops it as a martian source (and any reply would go straight to the local socket, never via the
node to be un-NATed). The connection hangs. kube-proxy masquerades exactly this case: its
per-endpoint KUBE-SEP chain marks (0x4000) connections whose source is that endpoint, and
KUBE-POSTROUTING masquerades marked packets. The node's address then is the client, so the reply
comes back through the node and the NAT is undone.

Our layout has no per-endpoint chain: the weighted DNAT rules in one KS-SVC chain choose the
endpoint and rewrite the destination in the same rule, so nothing in PREROUTING/OUTPUT can test
"source == the endpoint chosen". After the DNAT it is trivial, though: in POSTROUTING a hairpinned
packet has source == destination. iptables cannot compare two fields of a packet, so we list them:

    nat POSTROUTING -> KS-POSTROUTING
        -m conntrack ! --ctstate DNAT -j RETURN          every other connection leaves here
        -s IP/32 -d IP/32 -j MASQUERADE                  one per distinct endpoint IP (this family)

Exact: a connection is masqueraded iff we (or anyone) DNATed it and its new destination is its own
source. Every other client keeps its address (backends see real client IPs). Cost: the nat table
sees only a connection's first packet; a connection that was not DNATed pays one rule; a DNATed one
walks the endpoint list (linear in distinct endpoint IPs; not yet measured at 10,000 distinct
endpoint IPs: the bench's split ports share one backend IP). The chain changes only when the set of endpoint IPs changes, and a partial sync
rewrites it then (it holds no counters that `show` needs).

Alternatives considered and not taken:
- Mark bits, kube-proxy style: the mark must be set where the endpoint is known, i.e. a per-endpoint
  chain (what we removed for iptables-nft at scale); `-s EP -j MARK` in the KS-SVC chain before the
  choice would mark connections that then go to another endpoint (not exact). Mark bits also
  collide with kube-proxy's 0x4000/0x8000 and CNIs' own marks.
- ipset `hash:net,net` matched `src,dst` would be O(1) and exact, but it is a second kernel object
  outside the one iptables-restore transaction, and needs the ipset tool on every host.
- Masquerading every DNATed connection from a pod subnet: O(1) but hides every client's address.
"""
from __future__ import annotations

from collections.abc import Iterable

from kernsplit.agent.dataplane.iptables import comments, names
from kernsplit.agent.iptables.ruleset import Chain, Rule
from kernsplit.agent.model.resolved import SplitPort

# Argument order is the one iptables-save prints, so planned and observed rules compare equal.
_SKIP = ("-m", "conntrack", "!", "--ctstate", "DNAT",
         "-m", "comment", "--comment", comments.jump("hairpin needs DNAT"), "-j", "RETURN")
_MASQ_COMMENT = comments.jump("hairpin")     # short: one per endpoint IP


def endpoint_ips(sp: SplitPort) -> tuple[str, ...]:
    """The distinct endpoint IPs of a split port, in order: what its hairpin rules depend on. The
    dataplane keeps these per split port (the model's own strings, so they cost nothing) and
    makes the rules only when it assembles a ruleset."""
    return tuple(dict.fromkeys(we.endpoint.ip for we in sp.endpoints))


def endpoint_rules(ips: Iterable[str]) -> tuple[Rule, ...]:
    """One MASQUERADE rule per endpoint IP (`chain` dedupes across split ports)."""
    return tuple(_masquerade(ip, f"{ip}/{128 if ':' in ip else 32}") for ip in ips)


def _masquerade(ip: str, net: str) -> Rule:
    return Rule(names.HAIRPIN, ("-s", net, "-d", net, "-m", "comment", "--comment", _MASQ_COMMENT, "-j", "MASQUERADE"))


def chain(per_port: Iterable[tuple[Rule, ...]]) -> Chain:
    """KS-POSTROUTING from the endpoint rules of every served split port of one family, each
    endpoint IP once, in the order of first appearance (the split ports come sorted)."""
    rules = dict.fromkeys(r for rules in per_port for r in rules)
    return Chain(names.HAIRPIN, (Rule(names.HAIRPIN, _SKIP), *rules))
