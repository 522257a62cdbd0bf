"""The pure planner: config -> rules as data -> iptables-restore text. No subprocess, no kernel.

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
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kernsplit.agent.iptables.rule import Rule, restore_line
from kernsplit.agent.iptables.saved import SavedTable
from kernsplit.init.config import InitConfig, IpNetwork, PortRange

TABLE = "nat"
CHAIN_PREFIX = "KS-PROXY-INIT-"
REDIRECT_CHAIN = "KS-PROXY-INIT-REDIRECT"     # inbound, jumped to from PREROUTING
OUTPUT_CHAIN = "KS-PROXY-INIT-OUTPUT"         # outbound, jumped to from OUTPUT
COMMENT_PREFIX = "kernsplit/proxy-init: "
MULTIPORT_SLOTS = 15                          # xt_multiport's limit per rule; a range takes two
BUILTIN_TARGETS = frozenset({"RETURN", "REDIRECT", "ACCEPT", "DROP", "DNAT", "SNAT", "MASQUERADE"})


@dataclass(frozen=True)
class Ruleset:
    """What one family's nat table must hold of ours: our chains with their rules, in order, and
    the jumps from built-in chains into them."""
    chains: tuple[tuple[str, tuple[Rule, ...]], ...]
    jumps: tuple[Rule, ...]

    @property
    def chain_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.chains)

    def all_rules(self) -> tuple[Rule, ...]:
        return tuple(r for _, rules in self.chains for r in rules) + self.jumps


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
    return Ruleset(chains=((REDIRECT_CHAIN, inbound_rules(cfg, version)),
                           (OUTPUT_CHAIN, outbound_rules(cfg, version))),
                   jumps=jumps)


def is_ours(chain: str) -> bool:
    return chain.startswith(CHAIN_PREFIX)


def _observed_jumps(observed: SavedTable) -> list[Rule]:
    """Rules outside our chains that jump into one of ours (must go before our chain can go)."""
    return [Rule(r.chain, r.args) for r in observed.rules
            if not is_ours(r.chain) and r.target is not None and is_ours(r.target)]


def ruleset_from_observed(observed: SavedTable | None) -> Ruleset | None:
    """What of ours a table holds, as a Ruleset (to put it back after a failed multi-family apply).
    None when nothing of ours is there."""
    if observed is None:
        return None
    chains = tuple((name, tuple(Rule(r.chain, r.args) for r in observed.rules_of(name)))
                   for name in observed.chains if is_ours(name))
    if not chains:
        return None
    return Ruleset(chains=chains, jumps=tuple(_observed_jumps(observed)))


def is_up_to_date(desired: Ruleset, observed: SavedTable | None) -> bool:
    if observed is None:
        return False
    ours = [c for c in observed.chains if is_ours(c)]
    if sorted(ours) != sorted(desired.chain_names):
        return False
    for name, rules in desired.chains:
        if tuple(Rule(r.chain, r.args) for r in observed.rules_of(name)) != rules:
            return False
    return Counter(_observed_jumps(observed)) == Counter(desired.jumps)


def reconcile(desired: Ruleset | None, observed: SavedTable | None) -> str | None:
    """The iptables-restore --noflush input that turns `observed` into `desired` for what is ours,
    touching nothing else; None when there is nothing to do. `desired=None` means clean up.

    In one transaction: `:CHAIN - [0:0]` creates or flushes each chain of ours; jumps that are not
    wanted (stale shapes, duplicates, or all of them on cleanup) are deleted with `-D` using the
    exact arguments read back; our rules are appended; missing jumps are appended; chains of ours no
    longer wanted are deleted with `-X`. The kernel applies all of it or none of it.
    """
    observed_chains = [c for c in (observed.chains if observed else {}) if is_ours(c)]
    observed_jumps = _observed_jumps(observed) if observed else []
    if desired is None:
        if not observed_chains and not observed_jumps:
            return None
        wanted_chains: tuple[str, ...] = ()
        wanted_jumps: tuple[Rule, ...] = ()
    else:
        if is_up_to_date(desired, observed):
            return None
        wanted_chains, wanted_jumps = desired.chain_names, desired.jumps

    stale = [c for c in observed_chains if c not in wanted_chains]
    keep = Counter(wanted_jumps)
    deletes, present = [], Counter()
    for jump in observed_jumps:
        if present[jump] < keep[jump]:
            present[jump] += 1
        else:
            deletes.append(jump)

    lines = [f"*{TABLE}"]
    lines += [f":{name} - [0:0]" for name in (*wanted_chains, *stale)]
    lines += [restore_line("-D", j) for j in deletes]
    if desired is not None:
        lines += [restore_line("-A", r) for _, rules in desired.chains for r in rules]
        lines += [restore_line("-A", j) for j in desired.jumps if present[j] == 0]
    lines += [f"-X {name}" for name in stale]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def undefined_targets(ruleset: Ruleset) -> list[str]:
    """Jump targets that are neither built-in targets nor chains of the ruleset (must be empty)."""
    known = set(ruleset.chain_names) | BUILTIN_TARGETS
    return sorted({r.target for r in ruleset.all_rules() if r.target and r.target not in known})
