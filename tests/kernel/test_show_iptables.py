"""`kernsplit show` reads splits and per-backend connection counts from the kernel alone
(the agent is not running: `--once` has exited)."""
from __future__ import annotations

import json
import subprocess

import pytest

from test_agent_iptables_cli import KERNSPLIT, ROOT_IP, V1, V2, agent, config, split_yaml, topo  # noqa: F401
from kernsplit.agent.lab.timescale import scaled

pytestmark = pytest.mark.kernel


def show(netns, *args) -> subprocess.CompletedProcess:
    return subprocess.run([KERNSPLIT, "show", "--netns", netns, *args], capture_output=True, text=True,
                          timeout=scaled(30))


def test_show_counts_match_connections_made(netns, topo, config):
    assert agent(netns, "--config", config, "--once").returncode == 0
    assert topo.connect(ROOT_IP, 80, n=150) == [0] * 150
    got = topo.accepted()

    r = show(netns, "-o", "json")
    assert r.returncode == 0, r.stderr
    [split] = json.loads(r.stdout)
    assert (split["dataplane"], split["namespace"], split["service"], split["split"], split["cluster_ip"],
            split["port"], split["refuse"], split["connections"]) == \
        ("iptables", "default", "my-app", "my-app-split", ROOT_IP, 80, False, 150)
    backends = {b["service"]: b for b in split["backends"]}
    assert backends["my-app-v1"]["connections"] == got[V1]
    assert backends["my-app-v2"]["connections"] == got[V2]
    assert (backends["my-app-v1"]["weight"], backends["my-app-v1"]["desired_share_exact"]) == (900, "9/10")
    assert backends["my-app-v2"]["observed_share"] == pytest.approx(got[V2] / 150)

    table = show(netns, "default/my-app").stdout
    assert "default/my-app  10.100.200.30:80  split my-app-split" in table
    v2_line = next(l for l in table.splitlines() if l.strip().startswith("my-app-v2"))
    assert v2_line.split()[1:4] == ["100", "10.0%", str(got[V2])]


def test_show_keeps_counting_across_a_weight_change_and_filters(netns, topo, config):
    assert agent(netns, "--config", config, "--once").returncode == 0
    topo.connect(ROOT_IP, 80, n=40)
    before = topo.accepted()
    (config / "split.yaml").write_text(split_yaml("0m", "1000m"))
    assert agent(netns, "--config", config, "--once").returncode == 0
    topo.connect(ROOT_IP, 80, n=10)
    [split] = json.loads(show(netns, "-o", "json", "my-app").stdout)
    counts = {b["service"]: (b["weight"], b["connections"]) for b in split["backends"]}
    # v2 keeps its DNAT rule across the rewrite, and its counter is carried over with it;
    # v1 at weight 0 has no rule any more, hence nothing counted
    assert counts == {"my-app-v1": (0, 0), "my-app-v2": (1000, before[V2] + 10)}
    assert json.loads(show(netns, "-o", "json", "other-service").stdout) == []


def test_show_without_dataplane_says_so(netns):
    r = show(netns)
    assert r.returncode == 1
    assert "no kernsplit dataplane installed" in r.stderr
