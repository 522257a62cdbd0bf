"""Structured reading of iptables-save text (observed state), for reconcilers and `show`.

Decisions are made on parsed chains and rules, never on regexes over the whole text.
"""
from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

from kernsplit.agent.iptables.rule import target_of

# iptables-save quotes only with double quotes (comments), escaping `"` and `\` inside; every
# other word is plain. A C-level regex splits such lines ~10x faster than shlex, which matters at
# tens of thousands of rules.
_WORD = re.compile(r'"(?:[^"\\]|\\.)*"|\S+')
_ESCAPE = re.compile(r"\\(.)")


def split_words(line: str) -> list[str]:
    """shlex.split for iptables-save lines."""
    if '"' not in line:
        return line.split()
    if "'" in line:          # never produced by iptables-save; keep exact shell semantics
        return shlex.split(line)
    return [_ESCAPE.sub(r"\1", w[1:-1]) if w[0] == '"' else w for w in _WORD.findall(line)]


@dataclass(frozen=True, slots=True)
class SavedRule:
    chain: str
    args: tuple[str, ...]          # everything after "-A CHAIN", shell-split
    packets: int | None = None     # with `iptables-save -c`
    bytes: int | None = None

    @property
    def comment(self) -> str | None:
        args = self.args
        for i, a in enumerate(args[:-1]):
            if a == "--comment":
                return args[i + 1]
        return None

    @property
    def target(self) -> str | None:
        return target_of(self.args)


@dataclass
class SavedTable:
    name: str
    chains: dict[str, str] = field(default_factory=dict)   # chain -> policy ("-" for user chains)
    rules: list[SavedRule] = field(default_factory=list)   # in file order
    _by_chain: dict[str, list[SavedRule]] = field(default_factory=dict, repr=False, compare=False)

    def add(self, rule: SavedRule) -> None:
        self.rules.append(rule)
        self._by_chain.setdefault(rule.chain, []).append(rule)

    def rules_of(self, chain: str) -> list[SavedRule]:
        return list(self._by_chain.get(chain, ()))


def parse_save(text: str | Iterable[str]) -> dict[str, SavedTable]:
    """`text`: the whole output, or its lines as they are read (`exec.save_lines`). Words are
    interned: at thousands of rules, most of them ("-m", "comment", chain names) repeat."""
    tables: dict[str, SavedTable] = {}
    current: SavedTable | None = None
    for raw in (text.splitlines() if isinstance(text, str) else text):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = tables.setdefault(line[1:], SavedTable(line[1:]))
            continue
        if current is None or line == "COMMIT":
            continue
        packets = nbytes = None
        if line.startswith("["):  # counters, from `iptables-save -c`: [pkts:bytes] -A ...
            head, _, line = line.partition("] ")
            p, _, b = head[1:].partition(":")
            packets, nbytes = int(p), int(b)
        if line.startswith(":"):
            parts = line[1:].split()
            current.chains[parts[0]] = parts[1] if len(parts) > 1 else "-"
        elif line.startswith("-A "):
            words = [sys.intern(w) for w in split_words(line)]
            current.add(SavedRule(words[1], tuple(words[2:]), packets, nbytes))
    return tables
