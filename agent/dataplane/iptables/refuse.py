"""Refusing connections: decided in nat, carried out by one static rule in filter.

REJECT is not allowed in the nat table, where the split is chosen. So the nat table only *marks* a
connection it refuses, and one rule in the filter table, the same for every split port, rejects
marked connections with a TCP reset (connect() fails at once with ECONNREFUSED, never hangs):

    nat     KS-SVC-<hash>: ... -m statistic ... -j KS-REFUSE     (a refused share: a slot like a DNAT)
            KS-REFUSE:     -j MARK --set-xmark MARK/MARK         (`--or-mark MARK`, as iptables-save prints it)
                           -j ACCEPT                             (ends the nat walk: no later DNAT, e.g.
                                                                  kube-proxy's, may serve it after all)
    filter  INPUT, FORWARD, OUTPUT -> KS-REJECT
            KS-REJECT:     -p tcp -m mark --mark MARK/MARK -m conntrack --ctstate NEW -j REJECT --reject-with tcp-reset

This keeps every decision about a split port in one table, and a table commits atomically: a
restore that is cut short (a kill, a failed write) leaves each split port wholly old or wholly new,
served or refused, never neither and never both. The filter part does not depend on which port
refuses: it exists while any slot of the family refuses (so a namespace that never refuses gets no
filter table from us). The executor orders the tables so that each commit alone is safe: the
filter rule goes in before any nat rule that sets the mark, and comes out after the last is gone.

The mark is one bit, 0x1000, set with OR and matched under its own mask, so other bits of the
packet mark are neither changed nor looked at. Chosen beside the bits others use on Kubernetes
nodes: kube-proxy 0x4000 (masquerade) and 0x8000 (drop); the CNI portmap plugin's masquerade mark
0x2000; Calico's default mark mask 0xffff0000; kube-router and Weave 0x10000-0x40000; Istio's
TPROXY mark 1337 (0x539); the AWS VPC CNI's connmark 0x80. A packet is marked only as the first
packet of a connection that must be refused, and the filter rule looks only at new connections.
"""
from __future__ import annotations

from kernsplit.agent.dataplane.iptables import comments, names
from kernsplit.agent.iptables.ruleset import Chain, Rule

MARK = 0x1000
_MASKED = f"{MARK:#x}/{MARK:#x}"
FILTER_HOOKS = ("INPUT", "FORWARD", "OUTPUT")
JUMP_PURPOSE = "refuse split connections marked in nat"

# Argument order is the one iptables-save prints, so planned and observed rules compare equal.
_NAT_RULES = (
    ("-m", "comment", "--comment", comments.jump("mark a refused split connection"),
     "-j", "MARK", "--set-xmark", _MASKED),
    ("-m", "comment", "--comment", comments.jump("refused: no DNAT"), "-j", "ACCEPT"),
)
_FILTER_RULE = ("-p", "tcp", "-m", "mark", "--mark", _MASKED, "-m", "conntrack", "--ctstate", "NEW",
                "-m", "comment", "--comment", comments.jump("refuse connections marked in nat"),
                "-j", "REJECT", "--reject-with", "tcp-reset")


def target() -> tuple[str, ...]:
    """The target of a refused slot in a KS-SVC chain."""
    return ("-j", names.REFUSE)


def nat_chain() -> Chain:
    return Chain(names.REFUSE, tuple(Rule(names.REFUSE, args) for args in _NAT_RULES))


def filter_chain() -> Chain:
    return Chain(names.REJECT, (Rule(names.REJECT, _FILTER_RULE),))
