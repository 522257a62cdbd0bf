"""A mistyped --netns is a usage error naming the namespace, never a silent plan against nothing."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from kernsplit.agent.cli import main as kernsplit
from kernsplit.init.cli import main as proxy_init

MISSING = "ks-no-such-netns-4f2a"


@pytest.mark.parametrize("cmd,args", [
    (proxy_init, ["--netns", MISSING]),
    (kernsplit, ["agent", "--config", "tests/unit/manifests/seed", "--once", "--netns", MISSING]),
    (kernsplit, ["show", "--netns", MISSING]),
])
def test_missing_netns_is_a_usage_error(cmd, args):
    result = CliRunner().invoke(cmd, args)
    assert result.exit_code == 2
    assert f"network namespace '{MISSING}' not found" in result.output
    assert f"ip netns add {MISSING}" in result.output


def test_simulate_may_target_a_namespace_that_is_not_here():
    result = CliRunner().invoke(proxy_init, ["--simulate", "--no-ipv6", "--netns", MISSING])
    assert result.exit_code == 0, result.output
    assert "-j REDIRECT --to-ports 4140" in result.output
    assert "input for iptables-nft-restore" in result.output   # what a fresh namespace would get
