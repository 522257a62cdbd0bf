"""Cleanup leaves no table it created behind (nft), and nothing of anyone else's is lost.

In a fresh namespace, `kernsplit agent --cleanup` and `proxy-init --cleanup` leave `nft list
ruleset` empty: iptables-nft created the nat (and filter) tables for our rules, and they are
deleted once nothing but their empty base chains is left. A table that also holds a foreign chain
or rule stays, with them. With the legacy backend the kernel keeps its tables (README says so):
nothing of ours is left in them, and no nft table appears.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kernsplit.agent.lab.timescale import scaled

from tests.fixtures import manifests

pytestmark = pytest.mark.kernel

BIN = Path(sys.executable).parent
# One served split and one refusing one: the agent then writes to both nat and filter.
MANIFESTS = manifests("10.100.200.30", "10.1.0.1", refusing_ip="10.100.200.33")
FOREIGN = ("*nat\n:FOREIGN - [0:0]\n-A FOREIGN -p tcp -j RETURN\nCOMMIT\n"
           "*filter\n-A OUTPUT -p tcp -m tcp --dport 7 -j ACCEPT\nCOMMIT\n")


@pytest.fixture(params=["nft", "legacy"])
def mode(request):
    return request.param


def _run(*argv: str) -> subprocess.CompletedProcess:
    r = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=scaled(60))
    assert r.returncode == 0, r.stderr
    return r


def _in(netns: str, *argv: str, stdin: str | None = None) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], input=stdin, capture_output=True, text=True,
                          check=True).stdout


def _agent(netns: str, mode: str, config: Path) -> None:
    _run("kernsplit", "agent", "--netns", netns, "--iptables-mode", mode, "--config", str(config), "--once")
    assert "KS-SERVICES" in _in(netns, f"iptables-{mode}-save")
    assert "KS-REJECT" in _in(netns, f"iptables-{mode}-save", "-t", "filter")
    _run("kernsplit", "agent", "--netns", netns, "--iptables-mode", mode, "--cleanup")


def _proxy_init(netns: str, mode: str) -> None:
    _run("proxy-init", "--netns", netns, "--iptables-mode", mode, "--ipv6")
    assert "KS-PROXY-INIT" in _in(netns, f"ip6tables-{mode}-save")
    _run("proxy-init", "--netns", netns, "--iptables-mode", mode, "--cleanup")


def _legacy_holds_only_builtins(netns: str) -> None:
    for tool in ("iptables-legacy-save", "ip6tables-legacy-save"):
        lines = [l for l in _in(netns, tool).splitlines() if l and not l.startswith("#")]
        assert all(l.startswith(("*", "COMMIT")) or (l.startswith(":") and " - " not in l) for l in lines), lines


@pytest.mark.parametrize("owner", ["agent", "proxy-init"])
def test_cleanup_in_a_fresh_namespace_leaves_no_table(netns, mode, owner, tmp_path):
    config = tmp_path / "split.yaml"
    config.write_text(MANIFESTS)
    _agent(netns, mode, config) if owner == "agent" else _proxy_init(netns, mode)
    assert _in(netns, "nft", "list", "ruleset") == ""
    if mode == "legacy":
        _legacy_holds_only_builtins(netns)        # the kernel keeps legacy tables: nothing of ours left


@pytest.mark.parametrize("owner", ["agent", "proxy-init"])
def test_a_table_with_foreign_rules_or_chains_stays(netns, owner, tmp_path):
    config = tmp_path / "split.yaml"
    config.write_text(MANIFESTS)
    _in(netns, "iptables-nft-restore", "--noflush", stdin=FOREIGN)
    _agent(netns, "nft", config) if owner == "agent" else _proxy_init(netns, "nft")
    saved = _in(netns, "iptables-nft-save")
    assert ":FOREIGN - [0:0]" in saved and "-A FOREIGN -p tcp -j RETURN" in saved
    assert "-A OUTPUT -p tcp -m tcp --dport 7 -j ACCEPT" in saved
    assert "KS-" not in saved
    assert "table ip6" not in _in(netns, "nft", "list", "ruleset")    # proxy-init's ip6 nat table went
