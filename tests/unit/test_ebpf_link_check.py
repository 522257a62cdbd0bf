"""What the eBPF resync finds wrong with a pinned link, from what the kernel reports for it (no kernel)."""
from __future__ import annotations

from pathlib import Path

import pytest

from kernsplit.agent.dataplane.ebpf.links import link_problem
from kernsplit.agent.dataplane.ebpf.pins import Repair

CGROUP = Path("/sys/fs/cgroup/unified/kubepods")


@pytest.mark.parametrize("target, expected", [
    ((7, 42), None),
    (None, "its link pin was missing"),
    ((7, 0), "it was detached (or its cgroup was removed)"),
    ((7, 41), "it was attached to cgroup id 41, not to /sys/fs/cgroup/unified/kubepods (id 42): the cgroup "
              "was removed and recreated, or --cgroup changed"),
    ((8, 42), "it ran program id 8, not the pinned one (id 7)"),
])
def test_a_link_is_right_only_on_our_program_and_cgroup(target, expected):
    assert link_problem(target, 7, 42, CGROUP) == expected


def test_a_repair_names_its_object_and_its_metric_label():
    r = Repair("map pin", "ks_counters", "pin /x was missing: pinned the same object again")
    assert str(r) == "map pin ks_counters: pin /x was missing: pinned the same object again"
    assert r.metric == "ebpf_map_pin"
    assert Repair("link", "sock4_connect", "").metric == "ebpf_link"
