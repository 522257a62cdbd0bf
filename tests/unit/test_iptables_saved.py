"""Parsing iptables-save text: words split exactly as a shell would, rules indexed by chain."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from kernsplit.agent.iptables.saved import parse_save, split_words

GOLDEN = sorted((Path(__file__).parent / "golden").rglob("*.golden"))
TRICKY = [
    '-A KS-SVC-X -m comment --comment "kernsplit: default/my-app -> \\"v2\\" 1/10" -j KS-SEP-Y',
    '-A OUTPUT -m comment --comment "back\\\\slash and  two  spaces" -j RETURN',
    '-A OUTPUT -m comment --comment "" -j RETURN',
    "-A OUTPUT -p tcp -m multiport --dports 80,443 -j RETURN",
]


@pytest.mark.parametrize("line", TRICKY)
def test_split_words_matches_shell_quoting(line):
    assert split_words(line) == shlex.split(line)


def test_split_words_matches_shlex_on_every_golden_ruleset():
    assert GOLDEN, "no golden files found"
    lines = [ln for path in GOLDEN for ln in path.read_text().splitlines() if ln.startswith("-A ")]
    assert lines
    for line in lines:
        assert split_words(line) == shlex.split(line), line


def test_rules_are_indexed_by_chain_in_file_order():
    text = "\n".join([
        "*nat", ":PREROUTING ACCEPT [0:0]", ":KS-A - [0:0]", ":KS-B - [0:0]",
        "[3:180] -A KS-A -j KS-B", '-A KS-B -m comment --comment "x y" -j RETURN', "-A KS-A -j RETURN",
        "COMMIT", ""])
    nat = parse_save(text)["nat"]
    assert [r.args for r in nat.rules_of("KS-A")] == [("-j", "KS-B"), ("-j", "RETURN")]
    assert nat.rules_of("KS-A")[0].packets == 3
    assert nat.rules_of("KS-B")[0].comment == "x y"
    assert nat.rules_of("PREROUTING") == []
    assert [r.chain for r in nat.rules] == ["KS-A", "KS-B", "KS-A"]
