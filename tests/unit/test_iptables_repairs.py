"""The pure parts behind repair reports, lock waits and table cleanup: what drifted (each repair
named), who holds the xtables lock (read from /proc/locks text), and when an nft table is empty
enough to delete."""
from __future__ import annotations

import os

from kernsplit.agent.iptables import drift, nft_tables, xlock
from kernsplit.agent.iptables.kinds import Family
from kernsplit.agent.iptables.ownership import JumpPlacement
from kernsplit.agent.iptables.rule import Rule
from kernsplit.agent.iptables.ruleset import Chain, Ruleset, Table

JUMP = Rule("OUTPUT", ("-j", "KS-T-A"))
POST = Rule("POSTROUTING", ("-j", "KS-T-P"))
CHAIN_A = Chain("KS-T-A", (Rule("KS-T-A", ("-j", "RETURN")),))
CHAIN_P = Chain("KS-T-P", (Rule("KS-T-P", ("-s", "10.1.0.1/32", "-j", "MASQUERADE")),))
WRITTEN = Ruleset(Family.V4, (Table("nat", (CHAIN_A, CHAIN_P), (JUMP, POST)),))


def _texts(expected: Ruleset, observed: Ruleset) -> list[str]:
    return [str(r) for r in drift.repairs(expected, observed, JumpPlacement.FIRST)]


def test_nothing_drifted_nothing_reported():
    assert _texts(WRITTEN, WRITTEN) == []


def test_each_repair_names_table_chain_and_jump():
    observed = Ruleset(Family.V4, (Table("nat", (CHAIN_A, Chain("KS-T-P", ()), Chain("KS-T-X", ())), (JUMP,)),))
    assert _texts(WRITTEN, observed) == [
        "jump nat POSTROUTING -j KS-T-P was missing: added back",
        "chain nat KS-T-P held 0 rules instead of the 1 written: rewritten",
        "chain nat KS-T-X was not written by us: deleted",
    ]
    kinds = [r.kind for r in drift.repairs(WRITTEN, observed, JumpPlacement.FIRST)]
    assert kinds == ["jump", "chain", "chain"]


def test_a_buried_jump_is_reported_as_moved():
    observed = Ruleset(Family.V4, (Table("nat", (CHAIN_A, CHAIN_P), (JUMP, POST), buried=(JUMP,)),))
    [moved] = _texts(WRITTEN, observed)
    assert moved.startswith("jump nat OUTPUT -j KS-T-A was not the first rule of OUTPUT")


def test_without_a_record_of_the_last_write_only_jumps_and_their_chains_are_checked():
    # chain contents differ (a config change while the agent was down is not drift) ...
    observed = Ruleset(Family.V4, (Table("nat", (Chain("KS-T-A", ()),), (JUMP,)),))
    assert _texts(drift.adopted(WRITTEN, observed), observed) == [
        "jump nat POSTROUTING -j KS-T-P was missing: added back",
        "chain nat KS-T-P was missing: created again",
    ]
    # ... and a table with nothing of ours yet is a first install, not a repair
    assert drift.adopted(WRITTEN, Ruleset(Family.V4, ())).tables == ()


def test_lock_holders_are_read_from_proc_locks():
    dev = os.makedev(0, 0x1a)
    text = ("1: FLOCK  ADVISORY  WRITE 4242 00:1a:77 0 EOF\n"
            "1: -> FLOCK  ADVISORY  WRITE 4343 00:1a:77 0 EOF\n"
            "2: POSIX  ADVISORY  WRITE 99 00:1a:78 0 EOF\n")
    assert xlock.holders_in(text, dev, 77) == [4242]
    assert xlock.holders_in(text, dev, 79) == []


def _listing(*items: dict) -> dict:
    return {"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "ip", "name": "nat", "handle": 1}},
                         *items]}


def _base(name: str, policy: str = "accept") -> dict:
    return {"chain": {"family": "ip", "table": "nat", "name": name, "handle": 2, "type": "nat",
                      "hook": name.lower(), "prio": -100, "policy": policy}}


def test_only_a_table_of_empty_default_base_chains_is_deletable():
    assert nft_tables.leftover_chains(_listing(_base("OUTPUT"), _base("POSTROUTING")), "nat") == ("OUTPUT", "POSTROUTING")
    assert nft_tables.leftover_chains(_listing(), "nat") == ()
    rule = {"rule": {"family": "ip", "table": "nat", "chain": "OUTPUT", "handle": 3, "expr": []}}
    foreign = {"chain": {"family": "ip", "table": "nat", "name": "FOREIGN", "handle": 4}}
    for extra in (rule, foreign, _base("OUTPUT", policy="drop"), {"set": {"name": "s"}}):
        assert nft_tables.leftover_chains(_listing(_base("OUTPUT"), extra), "nat") is None


def test_the_deletion_removes_the_base_chains_first():
    assert nft_tables.deletion(Family.V6, "nat", ("OUTPUT",)) == "delete chain ip6 nat OUTPUT\ndelete table ip6 nat\n"
