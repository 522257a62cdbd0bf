"""The pure planner: flags (a validated InitConfig) -> the rules we want, as a Ruleset. No
subprocess, no kernel. Reading our rules back, diffing and rendering restore text is the shared
iptables core's (`agent.iptables`: ownership, diff, render), as for the agent's split chains.

Rules follow linkerd2-proxy-init (same chains' shape, same order), renamed into our prefix:

  nat PREROUTING -> KS-PROXY-INIT-REDIRECT   ignored inbound ports RETURN, ignored source subnets
                                             RETURN, -p tcp [only --ports-to-redirect] REDIRECT IN
  nat OUTPUT     -> KS-PROXY-INIT-OUTPUT     proxy uid RETURN, proxy gid RETURN, -o lo RETURN,
                                             ignored destination subnets RETURN, ignored outbound
                                             ports RETURN, -p tcp REDIRECT OUT

`-o lo RETURN` keeps linkerd's semantics: whatever leaves through loopback (127.0.0.0/8, ::1 and
the pod's own addresses) is never sent to the outbound proxy, and since locally generated packets
do not traverse PREROUTING, they are not sent to the inbound proxy either. A pod calling itself
therefore bypasses its proxy, exactly as under Linkerd.

Rules are written in the canonical form `iptables-save` prints (both backends print the same), so
the reconciler can compare the kernel's parsed rules with ours and leave a correct kernel alone.
Our jumps are appended (`JumpPlacement.APPEND`), as linkerd2-proxy-init does.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from kernsplit.agent.iptables.kinds import Family
from kernsplit.agent.iptables.ownership import JumpPlacement, Ownership
from kernsplit.agent.iptables.rule import Rule
from kernsplit.agent.iptables.ruleset import Chain, Ruleset, Table
from kernsplit.init.config import InitConfig, IpNetwork, PortRange

TABLE = "nat"
CHAIN_PREFIX = "KS-PROXY-INIT-"
REDIRECT_CHAIN = "KS-PROXY-INIT-REDIRECT"     # inbound, jumped to from PREROUTING
OUTPUT_CHAIN = "KS-PROXY-INIT-OUTPUT"         # outbound, jumped to from OUTPUT
COMMENT_PREFIX = "kernsplit/proxy-init: "
MULTIPORT_SLOTS = 15                          # xt_multiport's limit per rule; a range takes two


def is_ours(chain: str) -> bool:
    return chain.startswith(CHAIN_PREFIX)


OWNERSHIP = Ownership(is_ours, (TABLE,), JumpPlacement.APPEND)
FAMILY = {4: Family.V4, 6: Family.V6}


def _comment(text: str) -> tuple[str, ...]:
    return ("-m", "comment", "--comment", COMMENT_PREFIX + text)


def chunk_ports(ports: Sequence[PortRange], slots: int = MULTIPORT_SLOTS) -> list[tuple[PortRange, ...]]:
    """Split a port list into groups that each fit one multiport match (ranges cost two slots)."""
    groups: list[list[PortRange]] = []
    used = slots
    for p in ports:
        if used + p.multiport_cost > slots:
            groups.append([])
            used = 0
        groups[-1].append(p)
        used += p.multiport_cost
    return [tuple(g) for g in groups]


def _ports_rules(chain: str, ports: Sequence[PortRange], what: str, tail: tuple[str, ...]) -> list[Rule]:
    rules = []
    for group in chunk_ports(ports):
        listed = ",".join(p.render() for p in group)
        rules.append(Rule(chain, ("-p", "tcp", "-m", "multiport", "--dports", listed,
                                  *_comment(f"{what} {listed}"), *tail)))
    return rules


def _subnet_rules(chain: str, flag: str, subnets: Iterable[IpNetwork], what: str) -> list[Rule]:
    return [Rule(chain, (flag, str(n), *_comment(f"{what} {n}"), "-j", "RETURN")) for n in subnets]


def inbound_rules(cfg: InitConfig, version: int) -> tuple[Rule, ...]:
    c = REDIRECT_CHAIN
    to_proxy = ("-j", "REDIRECT", "--to-ports", str(cfg.incoming_proxy_port))
    rules = _ports_rules(c, cfg.inbound_ports_to_ignore, "ignore inbound ports", ("-j", "RETURN"))
    rules += _subnet_rules(c, "-s", cfg.subnets(version), "ignore inbound from subnet")
    if cfg.ports_to_redirect:
        rules += _ports_rules(c, cfg.ports_to_redirect, f"redirect to inbound proxy {cfg.incoming_proxy_port} ports",
                              to_proxy)
    else:
        rules.append(Rule(c, ("-p", "tcp", *_comment(f"redirect all inbound to proxy {cfg.incoming_proxy_port}"),
                              *to_proxy)))
    return tuple(rules)


def outbound_rules(cfg: InitConfig, version: int) -> tuple[Rule, ...]:
    c = OUTPUT_CHAIN
    rules: list[Rule] = []
    if cfg.proxy_uid is not None:
        rules.append(Rule(c, ("-m", "owner", "--uid-owner", str(cfg.proxy_uid),
                              *_comment(f"ignore proxy uid {cfg.proxy_uid}"), "-j", "RETURN")))
    if cfg.proxy_gid is not None:
        rules.append(Rule(c, ("-m", "owner", "--gid-owner", str(cfg.proxy_gid),
                              *_comment(f"ignore proxy gid {cfg.proxy_gid}"), "-j", "RETURN")))
    rules.append(Rule(c, ("-o", "lo", *_comment("ignore loopback"), "-j", "RETURN")))
    rules += _subnet_rules(c, "-d", cfg.subnets(version), "ignore outbound to subnet")
    rules += _ports_rules(c, cfg.outbound_ports_to_ignore, "ignore outbound ports", ("-j", "RETURN"))
    rules.append(Rule(c, ("-p", "tcp", *_comment(f"redirect all outbound to proxy {cfg.outgoing_proxy_port}"),
                          "-j", "REDIRECT", "--to-ports", str(cfg.outgoing_proxy_port))))
    return tuple(rules)


def desired_ruleset(cfg: InitConfig, version: int) -> Ruleset:
    """The rules of one IP version (4 or 6); subnets of the other version are left out."""
    jumps = (
        Rule("PREROUTING", (*_comment("inbound to proxy"), "-j", REDIRECT_CHAIN)),
        Rule("OUTPUT", (*_comment("outbound to proxy"), "-j", OUTPUT_CHAIN)),
    )
    chains = (Chain(REDIRECT_CHAIN, inbound_rules(cfg, version)), Chain(OUTPUT_CHAIN, outbound_rules(cfg, version)))
    return Ruleset(FAMILY[version], (Table(TABLE, chains, jumps),))
