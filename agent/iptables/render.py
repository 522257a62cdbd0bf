"""Changes as `iptables-restore --noflush` input (one transaction per table). Pure.

With --noflush, declaring `:CHAIN - [0:0]` creates the chain or flushes it if it exists, so a
rewritten chain is replaced whole inside the same commit. Order inside a table: declare every chain
we write or delete, fill the written ones, delete jumps, add jumps (`-I CHAIN 1` when ours go first,
`-A` when appended), then `-X` the deleted chains (their referrers were flushed or deleted above in
the same transaction).

`counters` (optional) gives a rule of a written chain the `[pkts:bytes]` it starts with; such text
must be applied with `iptables-restore --counters`.
"""
from __future__ import annotations

from collections.abc import Callable

from kernsplit.agent.iptables.diff import Changes
from kernsplit.agent.iptables.ownership import JumpPlacement
from kernsplit.agent.iptables.rule import Rule, restore_line

Counters = Callable[[str, Rule], "tuple[int, int] | None"]     # (table, rule) -> (packets, bytes)


def _filled(table: str, rule: Rule, counters: Counters | None) -> str:
    line = restore_line("-A", rule)
    found = counters(table, rule) if counters else None
    return f"[{found[0]}:{found[1]}] {line}" if found else line


def render(changes: Changes, counters: Counters | None = None) -> str:
    """The restore text of `changes`; "" when there is nothing to do."""
    first = changes.jumps is JumpPlacement.FIRST
    out: list[str] = []
    for t in changes.tables:
        out.append(f"*{t.name}")
        out += [f":{c.name} - [0:0]" for c in t.write]
        out += [f":{name} - [0:0]" for name in t.delete]
        for c in t.write:
            out += [_filled(t.name, r, counters) for r in c.rules]
        out += [restore_line("-D", r) for r in t.del_jumps]
        out += [restore_line("-I", r, "1") if first else restore_line("-A", r) for r in t.add_jumps]
        out += [f"-X {name}" for name in t.delete]
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""

