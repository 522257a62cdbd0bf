"""The shared iptables core: jump placement is the owner's parameter, and a plan that jumps to a
chain it does not define is refused before anything is written."""
from __future__ import annotations

import pytest

from kernsplit.agent.iptables.diff import UndefinedTarget, diff
from kernsplit.agent.iptables.kinds import Family
from kernsplit.agent.iptables.ownership import JumpPlacement, Ownership, owned
from kernsplit.agent.iptables.render import render
from kernsplit.agent.iptables.rule import Rule
from kernsplit.agent.iptables.ruleset import Chain, Ruleset, Table
from kernsplit.agent.iptables.saved import parse_save
from tests.fixtures import render_full

OURS = Ownership(lambda c: c.startswith("KS-T-"), ("nat",), JumpPlacement.FIRST)
JUMP = Rule("OUTPUT", ("-j", "KS-T-A"))
WANT = Ruleset(Family.V4, (Table("nat", (Chain("KS-T-A", (Rule("KS-T-A", ("-j", "RETURN")),)),), (JUMP,)),))
# our jump sits below a foreign rule
KERNEL = """*nat
:OUTPUT ACCEPT [0:0]
:KS-T-A - [0:0]
-A OUTPUT -d 1.2.3.4/32 -j RETURN
-A OUTPUT -j KS-T-A
-A KS-T-A -j RETURN
COMMIT
"""


@pytest.mark.parametrize("jumps,first_line", [(JumpPlacement.FIRST, "-I OUTPUT 1 -j KS-T-A"),
                                              (JumpPlacement.APPEND, "-A OUTPUT -j KS-T-A")])
def test_jump_placement_is_a_parameter(jumps, first_line):
    assert first_line in render_full(WANT, jumps).splitlines()


def test_a_buried_jump_moves_to_the_top_only_when_ours_go_first():
    have = owned(OURS, Family.V4, parse_save(KERNEL))
    assert render(diff(WANT, have, JumpPlacement.APPEND)) == ""
    moved = render(diff(WANT, have, JumpPlacement.FIRST)).splitlines()
    assert moved == ["*nat", "-D OUTPUT -j KS-T-A", "-I OUTPUT 1 -j KS-T-A", "COMMIT"]


def test_a_jump_to_an_undefined_chain_is_refused():
    bad = Ruleset(Family.V4, (Table("nat", (Chain("KS-T-A", (Rule("KS-T-A", ("-j", "KS-T-B")),)),), (JUMP,)),))
    with pytest.raises(UndefinedTarget, match="KS-T-B"):
        diff(bad, Ruleset(Family.V4, ()), JumpPlacement.FIRST)
