"""The scenario table's golden files beyond iptables restore text: the eBPF map operations a first
sync applies (flip order), and what `kernsplit show` prints for the scenario as read back from the
rules. tests/kernel/test_scenario_table.py applies the same scenarios to real namespaces and
checks that the real `show` prints these same files.
"""
from __future__ import annotations

import json
import re

import pytest

from kernsplit.agent.commands.show import as_json, as_tables, in_order
from kernsplit.agent.dataplane.ebpf import plan as ebpf_plan
from kernsplit.agent.dataplane.ebpf import preview
from kernsplit.agent.dataplane.iptables.observe import observe_tables
from kernsplit.agent.dataplane.iptables.plan import plan
from kernsplit.agent.iptables.kinds import Family
from kernsplit.agent.iptables.saved import parse_save
from tests.fixtures import SCENARIOS, agent_render_full, assert_golden


def observed(ports):
    """The splits `show` finds after a restore of the scenario into empty tables (no traffic yet)."""
    found = []
    for family in Family:
        text = re.sub(r"^-I (\S+) 1 ", r"-A \1 ", agent_render_full(plan(ports, family)), flags=re.M)
        found += observe_tables(parse_save(text))
    return in_order(found)


@pytest.mark.parametrize("case", sorted(SCENARIOS))
def test_ebpf_map_operations(case):
    ops = ebpf_plan.plan(ebpf_plan.images(SCENARIOS[case].ports), {}).ops
    assert_golden(f"ebpf/{case}.golden", preview.render(ops))


@pytest.mark.parametrize("case", sorted(SCENARIOS))
def test_show(case):
    splits = observed(SCENARIOS[case].ports)
    assert_golden(f"show/{case}.golden", as_tables(splits) + "\n")
    assert_golden(f"show/{case}.json.golden", json.dumps([as_json(s) for s in splits], indent=2) + "\n")
