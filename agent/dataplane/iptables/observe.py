"""Reading our splits back from `iptables-save -c` output, for `kernsplit show`. Pure.

Everything comes from the kernel: the entry rule's comments give root, split and configured
backends; the connection count of a backend is the sum of the packet counters of its endpoints' DNAT
rules in the split port's KS-SVC chain (the nat table sees only the first packet of each connection,
so packets = connections). Those counters run since the rule was installed; a weight change carries
them over for endpoints that keep a rule (see `carry`).
"""
from __future__ import annotations

from collections import Counter
from fractions import Fraction

from kernsplit.agent.dataplane.base import ObservedBackend, ObservedSplit
from kernsplit.agent.dataplane.iptables import comments, names
from kernsplit.agent.iptables.saved import SavedRule, SavedTable

DATAPLANE = "iptables"
REFUSED = "refused"     # counts key (REFUSED, backend): that backend has a refused slot


def _split(rule: SavedRule, metadata: list[SavedRule], refuse: bool, counts: Counter) -> ObservedSplit | None:
    """An entry rule (root metadata) and the rules holding its backend metadata."""
    parsed = [comments.parse(c) for r in (rule, *metadata) for c in comments.all_comments(r.args)]
    root = next((p for p in parsed if p and "root" in p), None)
    if root is None:
        return None
    backends = tuple(
        ObservedBackend(service=p["backend"], weight=int(p.get("weight", 0)),
                        share=Fraction(p.get("share", "0")), connections=counts.get(p["backend"], 0),
                        terminating=p.get("terminating") == "yes", refused=(REFUSED, p["backend"]) in counts)
        for p in parsed if p and "backend" in p)
    namespace, _, service = root["root"].partition("/")
    split = root.get("split", "").partition("/")[2]
    return ObservedSplit(dataplane=DATAPLANE, namespace=namespace, service=service, split=split,
                         cluster_ip=root.get("ip", ""), port=int(root.get("port", 0)),
                         refuse=refuse, backends=backends)


def _counts(nat: SavedTable, svc_chain: str) -> Counter:
    """Connections per backend name, summed over the slot rules (DNAT or refused) of this SVC chain."""
    counts: Counter = Counter()
    for rule in nat.rules_of(svc_chain):
        # A kernel still holding the earlier layout (SVC -> KS-SEP chain -> DNAT) is read too, so
        # `show` keeps working between an upgrade and the agent's first sync.
        dnats = nat.rules_of(rule.target) if (rule.target or "").startswith(names.LEGACY_SEP) else [rule]
        for dnat in dnats:
            meta = comments.parse(dnat.comment)
            if meta and "backend" in meta and dnat.target in ("DNAT", names.REFUSE):
                counts[meta["backend"]] += dnat.packets or 0
                if dnat.target == names.REFUSE:
                    counts[(REFUSED, meta["backend"])] = 1
    return counts


def observe_tables(saved: dict[str, SavedTable]) -> list[ObservedSplit]:
    found: list[ObservedSplit] = []
    nat = saved.get("nat")
    if nat is not None:
        for rule in nat.rules_of(names.SERVICES):
            svc = rule.target or ""
            metadata = [r for r in nat.rules_of(svc) if r.target is None]
            refusing = not any(r.target == "DNAT" for r in nat.rules_of(svc))
            split = _split(rule, metadata, refusing, _counts(nat, svc))
            if split:
                found.append(split)
    flt = saved.get("filter")
    if flt is not None:
        for rule in flt.rules_of(names.REJECT):
            split = _split(rule, [], True, Counter())
            if split:
                found.append(split)
    return found
