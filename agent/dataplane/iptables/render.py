"""Rendering changes as `iptables-restore --noflush` input (one transaction per table).

With --noflush, declaring `:CHAIN - [0:0]` creates the chain or flushes it if it exists, so a
rewritten chain is replaced whole inside the same commit. Order inside a table: declare every chain
we write or delete, fill the written ones, delete jumps, insert jumps at position 1 (`-I CHAIN 1`),
then `-X` the deleted chains (their referrers were flushed or deleted above in the same transaction).

With `counts` (see `carry`), rules of rewritten chains that stand for the same thing as a replaced
rule start with its `[pkts:bytes]`; such text must be applied with `iptables-restore --counters`.
"""
from __future__ import annotations

from collections.abc import Mapping

from kernsplit.agent.dataplane.iptables import carry
from kernsplit.agent.dataplane.iptables.diff import Changes, diff
from kernsplit.agent.dataplane.iptables.ruleset import Rule, Ruleset
from kernsplit.agent.iptables.rule import restore_line


def _filled(table: str, rule: Rule, counts: Mapping) -> str:
    line = restore_line("-A", rule)
    if not counts:
        return line
    found = counts.get((table, rule.chain, carry.rule_key(rule.args)))
    return f"[{found[0]}:{found[1]}] {line}" if found else line


def render_changes(changes: Changes, counts: carry.Counts | None = None) -> str:
    out: list[str] = []
    for t in changes.tables:
        out.append(f"*{t.name}")
        out += [f":{c.name} - [0:0]" for c in t.write]
        out += [f":{name} - [0:0]" for name in t.delete]
        for c in t.write:
            out += [_filled(t.name, r, counts or {}) for r in c.rules]
        out += [restore_line("-D", r) for r in t.del_jumps]
        # At the top: a foreign rule earlier in the built-in chain (kube-proxy's KUBE-SERVICES,
        # an ACCEPT in FORWARD) must not decide before our split does (see `diff`).
        out += [restore_line("-I", r, "1") for r in t.add_jumps]
        out += [f"-X {name}" for name in t.delete]
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def render_full(ruleset: Ruleset) -> str:
    """The whole ruleset, as it would be applied to a namespace holding nothing of ours."""
    return render_changes(diff(ruleset, Ruleset(ruleset.family, ())))
