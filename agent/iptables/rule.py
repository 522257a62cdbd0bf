"""One iptables rule as data, and its `iptables-restore` line. Shared by proxy-init's planner
(`init.plan`) and the iptables dataplane (`agent.dataplane.iptables`).

A rule is its argument vector after `-A CHAIN` (already split, never a shell string), so a planned
rule and a rule read back with `agent.iptables.saved.parse_save` compare as plain tuples.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def target_of(args: Sequence[str]) -> str | None:
    """The `-j`/`-g` target of a rule's arguments; None for a rule without one."""
    for i, a in enumerate(args[:-1]):
        if a in ("-j", "-g"):
            return args[i + 1]
    return None


@dataclass(frozen=True, slots=True)
class Rule:
    chain: str
    args: tuple[str, ...]        # everything after `-A CHAIN`, as iptables-save prints it

    @property
    def target(self) -> str | None:
        return target_of(self.args)


def quote(arg: str) -> str:
    """Quote one argument the way iptables-restore reads it (double quotes only)."""
    if arg and not any(ch.isspace() or ch in '"\'\\#' for ch in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def restore_line(op: str, rule: Rule, *position: str) -> str:
    """e.g. `-A CHAIN args...` or `-I CHAIN 1 args...`, quoted for iptables-restore."""
    return " ".join([op, rule.chain, *position, *(quote(a) for a in rule.args)])
