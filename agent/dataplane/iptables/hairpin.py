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
        -d 0.0.0.7/0.0.0.255 -j KS-HAIRPIN-07            one per last byte that some endpoint IP has
    KS-HAIRPIN-07
        -s IP/32 -d IP/32 -j MASQUERADE                  one per distinct endpoint IP ending in 7

Exact: a connection is masqueraded iff we (or anyone) DNATed it and its new destination is its own
source. Every other client keeps its address (backends see real client IPs). Cost: the nat table
sees only a connection's first packet; a connection that was not DNATed pays one rule; a DNATed one
walks at most 256 dispatch rules and then its shard: at 60,000 distinct endpoint IPs about 500
rules instead of 60,000. The shards are what keeps an endpoint change cheap as well: it rewrites
the one KS-HAIRPIN chain of the address that came or went (a few hundred rules at that scale), not
every endpoint's rule; the dispatcher is written again only when a shard is created or emptied.
None of these chains holds a counter that `show` needs.

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

import ipaddress
from collections.abc import Collection, Iterable

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
    """One MASQUERADE rule per endpoint IP, in its shard's chain (`chains` dedupes across split ports)."""
    return tuple(_masquerade(ip, f"{ip}/{128 if ':' in ip else 32}") for ip in ips)


def _masquerade(ip: str, net: str) -> Rule:
    return Rule(names.hairpin_shard(shard(ip)),
                ("-s", net, "-d", net, "-m", "comment", "--comment", _MASQ_COMMENT, "-j", "MASQUERADE"))


def shard(ip: str) -> int:
    """The address's last byte: the KS-HAIRPIN chain that holds its rule. (Canonical text: only
    IPv6 has a colon.)"""
    return ipaddress.IPv6Address(ip).packed[-1] if ":" in ip else int(ip[ip.rfind(".") + 1:])


def _dispatch(n: int, v6: bool) -> Rule:
    """POSTROUTING's jump to shard n, as iptables-save prints it (a mask on the last byte only)."""
    net = (f"::{n:x}/::ff" if n else "::/::ff") if v6 else f"0.0.0.{n}/0.0.0.255"
    return Rule(names.HAIRPIN, ("-d", net, "-m", "comment", "--comment", _MASQ_COMMENT, "-j", names.hairpin_shard(n)))


def _sharded(per_port: Iterable[tuple[str, ...]], only: Collection[int] | None) -> dict[int, dict[str, None]]:
    """Endpoint IPs by shard, each once, in order of first appearance (the split ports come sorted)."""
    shards: dict[int, dict[str, None]] = {}
    for ips in per_port:
        for ip in ips:
            n = shard(ip)
            if only is None or n in only:
                shards.setdefault(n, {})[ip] = None
    return shards


def chains(per_port: Iterable[tuple[str, ...]], only: Collection[int] | None = None) -> tuple[Chain, ...]:
    """KS-POSTROUTING and its KS-HAIRPIN chains from the endpoint IPs of every served split port of
    one family. With `only`, just those shards' chains (an empty shard has none), without the
    dispatcher: what an endpoint change rewrites when no shard came or went."""
    shards = _sharded(per_port, only)
    made = tuple(Chain(names.hairpin_shard(n), endpoint_rules(ips)) for n, ips in sorted(shards.items()))
    if only is not None:
        return made
    v6 = any(":" in ip for ips in shards.values() for ip in ips)
    dispatch = tuple(_dispatch(n, v6) for n in sorted(shards))
    return (Chain(names.HAIRPIN, (Rule(names.HAIRPIN, _SKIP), *dispatch)), *made)


def shards_of(ips: Iterable[str]) -> set[int]:
    return {shard(ip) for ip in ips}
