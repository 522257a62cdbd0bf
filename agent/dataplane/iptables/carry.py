"""Carrying packet counters over when one of our chains is rewritten. Pure.

A weight change rewrites a KS-SVC chain whole (`:CHAIN - [0:0]` flushes it inside the restore),
which would reset the per-endpoint DNAT counters that `kernsplit show` reports. So before writing,
the dataplane reads the counters of the rules being replaced, and the new rules get them back as
`[pkts:bytes]` prefixes applied by `iptables-restore --counters`. Old and new rules are matched by
what they stand for, not by their text (which changes with the weights):

    DNAT rule       ("endpoint", backend, endpoint)   same backend and endpoint keeps its count
    entry rule      ("root", cluster ip, port)        KS-SERVICES and KS-REJECT
    metadata rule   ("metadata",)                     first KS-SVC rule, no target

Limits, on purpose: an endpoint that loses its rule (endpoint removed, or its backend's weight went
to 0: weight-0 endpoints get no rule at all) loses its count, and starts from zero if it comes back;
the remaining backends keep their whole history, so a rollout still shows it. Connections counted
between the read and the write of one sync are lost (the window is one restore). Counters of the
earlier per-endpoint KS-SEP chain layout are not carried into the new layout.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from kernsplit.agent.dataplane.iptables import comments, names
from kernsplit.agent.iptables.diff import Changes
from kernsplit.agent.iptables.render import Counters
from kernsplit.agent.iptables.rule import Rule, target_of
from kernsplit.agent.iptables.ruleset import Ruleset
from kernsplit.agent.iptables.saved import SavedTable, split_words

Key = tuple[str, ...]
Place = tuple[str, str]                         # (table, chain)
Counts = Mapping[tuple[str, str, Key], tuple[int, int]]   # (table, chain, key) -> (packets, bytes)


def rule_key(args: Iterable[str]) -> Key | None:
    """What a rule of ours stands for, independent of weights; None for rules we do not carry."""
    args = tuple(args)
    found = comments.decode_rule(args)
    for c in found:
        if isinstance(c, comments.SlotComment):
            return ("endpoint", c.backend, c.endpoint)
    for c in found:
        if isinstance(c, comments.RootComment):
            return ("root", c.ip, str(c.port))
    if found and target_of(args) is None:
        return ("metadata",)
    return None


def lookup(counts: Counts) -> Counters:
    """`counts` as the renderer asks for them: a rule of a rewritten chain -> the (packets, bytes)
    of the replaced rule that stood for the same thing."""
    def found(table: str, rule: Rule) -> tuple[int, int] | None:
        return counts.get((table, rule.chain, rule_key(rule.args)))
    return found


def rewritten(changes: Changes, have: Ruleset) -> list[Place]:
    """Chains this change set flushes and refills that already hold rules in the kernel: the only
    ones whose counters need reading (new chains start at zero anyway)."""
    places = []
    for t in changes.tables:
        table = have.table(t.name)
        for c in t.write:
            if c.name == names.HAIRPIN or c.name.startswith(names.HAIRPIN_SHARD):   # no counter `show` reports
                continue
            old = table.chain(c.name) if table else None
            if old is not None and old.rules:
                places.append((t.name, c.name))
    return places


def _add(out: dict, table: str, chain: str, args: tuple[str, ...], packets: int, nbytes: int) -> None:
    key = rule_key(args)
    if key is None:
        return
    # A duplicated rule (hand edit) counted real connections too: keep their sum.
    p, b = out.get((table, chain, key), (0, 0))
    out[(table, chain, key)] = (p + packets, b + nbytes)


def from_saved(saved: Mapping[str, SavedTable], places: Iterable[Place]) -> dict:
    """Counters of the rules in `places`, from a parsed `iptables-save -c`."""
    out: dict = {}
    for table, chain in places:
        st = saved.get(table)
        for r in st.rules_of(chain) if st else ():
            _add(out, table, chain, r.args, r.packets or 0, r.bytes or 0)
    return out


def from_listing(table: str, chain: str, text: str) -> dict:
    """Counters from `iptables -t TABLE -S CHAIN -v`, which prints `-c PKTS BYTES` inside each rule."""
    out: dict = {}
    for line in text.splitlines():
        words = split_words(line)
        if len(words) < 2 or words[0] != "-A" or words[1] != chain or "-c" not in words:
            continue
        i = words.index("-c")
        args = tuple(words[2:i] + words[i + 3:])
        _add(out, table, chain, args, int(words[i + 1]), int(words[i + 2]))
    return out
