"""Reading our splits back from `iptables-save -c` output, for `kernsplit show`. Pure.

Everything comes from the kernel: the entry rule's comments give root, split and configured
backends; the connection count of a backend is the sum of the packet counters of its endpoints' DNAT
rules in the split port's KS-SVC chain (the nat table sees only the first packet of each connection,
so packets = connections). Those counters run since the rule was installed; a weight change carries
them over for endpoints that keep a rule (see `carry`).
"""
from __future__ import annotations

from collections import Counter

from kernsplit.agent.dataplane.base import ObservedBackend, ObservedSplit
from kernsplit.agent.dataplane.iptables import comments, names
from kernsplit.agent.iptables.saved import SavedRule, SavedTable

DATAPLANE = "iptables"
REFUSED = "refused"     # counts key (REFUSED, backend): that backend has a refused slot


def _split(rule: SavedRule, metadata: list[SavedRule], refuse: bool, counts: Counter) -> ObservedSplit | None:
    """An entry rule (root metadata) and the rules holding its backend metadata."""
    decoded = [c for r in (rule, *metadata) for c in comments.decode_rule(r.args)]
    root = next((c for c in decoded if isinstance(c, comments.RootComment)), None)
    if root is None:
        return None
    backends = tuple(
        ObservedBackend(service=c.backend, weight=c.weight, share=c.share, connections=counts.get(c.backend, 0),
                        terminating=c.terminating, refused=(REFUSED, c.backend) in counts)
        for c in decoded if isinstance(c, comments.BackendComment))
    namespace, _, service = root.root.partition("/")
    return ObservedSplit(dataplane=DATAPLANE, namespace=namespace, service=service,
                         split=root.split.partition("/")[2], cluster_ip=root.ip, port=root.port,
                         refuse=refuse, backends=backends)


def _counts(nat: SavedTable, svc_chain: str) -> Counter:
    """Connections per backend name, summed over the slot rules (DNAT or refused) of this SVC chain."""
    counts: Counter = Counter()
    for rule in nat.rules_of(svc_chain):
        # A kernel still holding the earlier layout (SVC -> KS-SEP chain -> DNAT) is read too, so
        # `show` keeps working between an upgrade and the agent's first sync.
        dnats = nat.rules_of(rule.target) if (rule.target or "").startswith(names.LEGACY_SEP) else [rule]
        for dnat in dnats:
            meta = comments.decode(dnat.comment)
            if isinstance(meta, (comments.SlotComment, comments.BackendComment)) \
                    and dnat.target in ("DNAT", names.REFUSE):
                counts[meta.backend] += dnat.packets or 0
                if dnat.target == names.REFUSE:
                    counts[(REFUSED, meta.backend)] = 1
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
