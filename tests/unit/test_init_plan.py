"""proxy-init's planner: rendered iptables-restore text per flag scenario (golden files), jump
targets, multiport splitting, and the reconciler's decisions against observed tables.

Refresh the golden files after an intended change with KS_UPDATE_GOLDEN=1 and review the diff.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from kernsplit.agent.iptables.ownership import owned
from kernsplit.agent.iptables.rule import restore_line
from kernsplit.agent.iptables.ruleset import BUILTIN_TARGETS, Ruleset, undefined_targets
from kernsplit.agent.iptables.saved import parse_save
from kernsplit.init import apply, plan
from kernsplit.init.config import build_config, parse_ports

GOLDEN = Path(__file__).parent / "golden" / "init"

SCENARIOS = {
    "default": {},
    "ports_to_redirect": {"ports_to_redirect": ["8080,9090", "7000-7010"]},
    "ignores_ranges": {"inbound_ports_to_ignore": ["4190,4191,4567,4568"],
                       "outbound_ports_to_ignore": ["4567-4568", "25"]},
    # 20 single ports + 2 ranges: more than one multiport rule per direction
    "ignores_over_15": {"inbound_ports_to_ignore": [",".join(str(p) for p in range(5000, 5040, 2)), "6000-6010",
                                                    "7000-7010"],
                        "outbound_ports_to_ignore": [",".join(str(p) for p in range(100, 132, 2))]},
    "subnets_v4_v6": {"subnets_to_ignore": ["10.0.0.0/8,192.168.1.7", "fd00::/8", "2001:db8::1"]},
    "gid": {"proxy_gid": "2103"},
    "no_uid": {"proxy_uid": "-1", "proxy_gid": "2103"},
    "custom_ports": {"incoming_proxy_port": "15006", "outgoing_proxy_port": "15001", "proxy_uid": "1337"},
}


def reconcile(desired: Ruleset | None, observed) -> str | None:
    """proxy-init's restore text against one observed nat table (a parsed iptables-save table)."""
    family = desired.family if desired is not None else plan.FAMILY[4]
    return apply.restore_text(desired, owned(plan.OWNERSHIP, family, {"nat": observed} if observed else {}))


def chain_names(ruleset: Ruleset) -> list[str]:
    return [c.name for t in ruleset.tables for c in t.chains]


def chain_rules(ruleset: Ruleset) -> list:
    return [r for t in ruleset.tables for c in t.chains for r in c.rules]


def jumps(ruleset: Ruleset) -> list:
    return [j for t in ruleset.tables for j in t.jumps]


def _render(name: str, version: int) -> str:
    cfg = build_config(**SCENARIOS[name])
    return reconcile(plan.desired_ruleset(cfg, version), None)


CASES = [(name, 4) for name in SCENARIOS] + [("default", 6), ("subnets_v4_v6", 6), ("ignores_ranges", 6)]


@pytest.mark.parametrize("name,version", CASES, ids=[f"{n}-v{v}" for n, v in CASES])
def test_golden(name, version):
    text = _render(name, version)
    path = GOLDEN / f"{name}.v{version}.golden"
    if os.environ.get("KS_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}: run with KS_UPDATE_GOLDEN=1"
    assert text == path.read_text()


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.parametrize("version", [4, 6])
def test_every_jump_target_exists(name, version):
    ruleset = plan.desired_ruleset(build_config(**SCENARIOS[name]), version)
    assert [undefined_targets(t) for t in ruleset.tables] == [[]]
    # and in the rendered text: every -j names a chain declared in it or a built-in target
    text = reconcile(ruleset, None)
    declared = {line[1:].split()[0] for line in text.splitlines() if line.startswith(":")}
    for line in text.splitlines():
        if line.startswith("-A "):
            words = shlex.split(line)
            target = words[words.index("-j") + 1]
            assert target in declared | BUILTIN_TARGETS, line


@pytest.mark.parametrize("name", SCENARIOS)
def test_names_prefixed_short_and_commented(name):
    ruleset = plan.desired_ruleset(build_config(**SCENARIOS[name]), 4)
    for chain in chain_names(ruleset):
        assert chain.startswith("KS-") and len(chain) <= 28
    for rule in chain_rules(ruleset) + jumps(ruleset):
        comment = rule.args[rule.args.index("--comment") + 1]
        assert comment.startswith("kernsplit/proxy-init: ")


def test_multiport_never_exceeds_15_slots():
    ports = parse_ports([",".join(str(p) for p in range(1000, 1100, 2)), "2000-2005,3000-3005"], "x")
    groups = plan.chunk_ports(ports)
    assert sum(len(g) for g in groups) == len(ports)
    assert [p for g in groups for p in g] == list(ports)           # order kept, nothing lost
    assert all(sum(p.multiport_cost for p in g) <= 15 for g in groups)
    assert len(groups) == 4                                          # 50 singles + 2 ranges = 54 slots


def test_subnets_of_the_other_family_are_left_out():
    cfg = build_config(subnets_to_ignore=["10.0.0.0/8", "fd00::/8"])
    v4 = reconcile(plan.desired_ruleset(cfg, 4), None)
    v6 = reconcile(plan.desired_ruleset(cfg, 6), None)
    assert "10.0.0.0/8" in v4 and "fd00::/8" not in v4
    assert "fd00::/8" in v6 and "10.0.0.0/8" not in v6
    # both directions: inbound by source, outbound by destination
    assert "-A KS-PROXY-INIT-REDIRECT -s 10.0.0.0/8" in v4 and "-A KS-PROXY-INIT-OUTPUT -d 10.0.0.0/8" in v4


FOREIGN = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FOREIGN - [0:0]
-A OUTPUT -d 1.2.3.4/32 -j FOREIGN
-A FOREIGN -j RETURN
COMMIT
"""


def _as_saved(desired: Ruleset, extra: str = "") -> str:
    """Simulate iptables-save output of a table holding FOREIGN plus `desired`."""
    head, _, _ = FOREIGN.rpartition("COMMIT")
    lines = [head.rstrip("\n")]
    lines += [f":{c} - [0:0]" for c in chain_names(desired)]
    lines += [restore_line("-A", r) for r in (*jumps(desired), *chain_rules(desired))]
    lines += [extra] if extra else []
    return "\n".join(lines) + "\nCOMMIT\n"


def test_reconcile_is_a_no_op_when_the_kernel_matches():
    desired = plan.desired_ruleset(build_config(), 4)
    observed = parse_save(_as_saved(desired))["nat"]
    assert reconcile(desired, observed) is None


def test_reconcile_converges_without_re_adding_present_jumps():
    old = plan.desired_ruleset(build_config(), 4)
    new = plan.desired_ruleset(build_config(outbound_ports_to_ignore=["22"]), 4)
    text = reconcile(new, parse_save(_as_saved(old))["nat"])
    assert ":KS-PROXY-INIT-OUTPUT - [0:0]" in text            # flushed and refilled in one go
    assert "--dports 22" in text
    assert "-A PREROUTING" not in text and "-A OUTPUT " not in text
    assert "FOREIGN" not in text


def test_reconcile_removes_duplicate_and_stale_jumps_and_chains():
    desired = plan.desired_ruleset(build_config(), 4)
    extra = "\n".join([
        restore_line("-A", jumps(desired)[1]),                           # duplicate jump
        "-A OUTPUT -p tcp -j KS-PROXY-INIT-OUTPUT",                     # old jump shape
        ":KS-PROXY-INIT-OLD - [0:0]",
        "-A PREROUTING -j KS-PROXY-INIT-OLD",
    ])
    observed = parse_save(_as_saved(desired, extra))["nat"]
    text = reconcile(desired, observed)
    assert text.count("-D OUTPUT") == 2
    assert "-D PREROUTING -j KS-PROXY-INIT-OLD" in text
    assert text.index("-D PREROUTING -j KS-PROXY-INIT-OLD") < text.index("-X KS-PROXY-INIT-OLD")
    assert "-A OUTPUT" not in text and "-A PREROUTING" not in text


def test_cleanup_removes_only_ours():
    desired = plan.desired_ruleset(build_config(), 4)
    text = reconcile(None, parse_save(_as_saved(desired))["nat"])
    assert text.splitlines() == [
        "*nat",
        ":KS-PROXY-INIT-REDIRECT - [0:0]",
        ":KS-PROXY-INIT-OUTPUT - [0:0]",
        '-D PREROUTING -m comment --comment "kernsplit/proxy-init: inbound to proxy" -j KS-PROXY-INIT-REDIRECT',
        '-D OUTPUT -m comment --comment "kernsplit/proxy-init: outbound to proxy" -j KS-PROXY-INIT-OUTPUT',
        "-X KS-PROXY-INIT-REDIRECT",
        "-X KS-PROXY-INIT-OUTPUT",
        "COMMIT",
    ]
    assert reconcile(None, parse_save(FOREIGN)["nat"]) is None
    assert reconcile(None, None) is None


def test_what_is_read_back_is_what_was_planned():
    desired = plan.desired_ruleset(build_config(subnets_to_ignore=["10.0.0.0/8"]), 4)
    back = owned(plan.OWNERSHIP, desired.family, parse_save(_as_saved(desired)))
    assert chain_names(back) == chain_names(desired) and chain_rules(back) == chain_rules(desired)
    assert apply.restore_text(desired, back) is None and apply.restore_text(back, back) is None
    assert owned(plan.OWNERSHIP, desired.family, parse_save(FOREIGN)).tables == ()


def test_jumps_are_appended_and_a_jump_below_a_foreign_rule_is_left_there():
    # linkerd2-proxy-init appends; a CNI rule placed above ours keeps deciding first.
    desired = plan.desired_ruleset(build_config(), 4)
    assert "-A PREROUTING -m comment" in reconcile(desired, None)
    assert reconcile(desired, parse_save(_as_saved(desired))["nat"]) is None      # OUTPUT jump below FOREIGN's
