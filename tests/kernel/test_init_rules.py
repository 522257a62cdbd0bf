"""proxy-init's rules in a real namespace, both backends: re-run changes nothing, other flags
converge, cleanup restores the exact prior iptables-save (foreign chains and rules preloaded),
auto backend choice, all-or-nothing apply, the close-wait sysctl, and the installed console script.
"""
from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kernsplit.agent.iptables import exec as ipt
from kernsplit.agent.iptables.exec import IptablesError
from kernsplit.agent.iptables.kinds import Family, IptablesBackend
from kernsplit.agent.iptables.ownership import owned
from kernsplit.agent.iptables.saved import parse_save
from kernsplit.agent.lab.timescale import scaled
from kernsplit.agent.netns import entered
from kernsplit.init import apply, plan
from kernsplit.init.cli import main
from kernsplit.init.config import build_config
from kernsplit.init.namespace import CLOSE_WAIT_SYSCTL
from conftest import throwaway_netns  # tests/conftest.py (pytest puts tests/ on sys.path)
from tests.fixtures import render_full

pytestmark = pytest.mark.kernel
BACKENDS = ["legacy", "nft"]
FAMILIES = [Family.V4, Family.V6]

FOREIGN = {
    Family.V4: """*nat
:FOREIGN-NAT - [0:0]
-A PREROUTING -p udp -m udp --dport 53 -j REDIRECT --to-ports 5353
-A OUTPUT -d 203.0.113.7/32 -p tcp -m tcp --dport 9 -j FOREIGN-NAT
-A FOREIGN-NAT -j RETURN
COMMIT
*filter
:FOREIGN-FILTER - [0:0]
-A OUTPUT -j FOREIGN-FILTER
-A FOREIGN-FILTER -p tcp -m tcp --dport 7 -j ACCEPT
COMMIT
""",
    Family.V6: """*nat
:FOREIGN-NAT - [0:0]
-A OUTPUT -d 2001:db8::7/128 -p tcp -m tcp --dport 9 -j FOREIGN-NAT
-A FOREIGN-NAT -j RETURN
COMMIT
""",
}


def run(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, f"{result.stdout}\n{result.stderr}"
    return result


def state(netns: str, backend: str, counters: bool = False) -> dict[Family, str]:
    """iptables-save of both families, without the timestamp comments."""
    return {f: "".join(line + "\n" for line in ipt.save(netns, IptablesBackend(backend), f, counters=counters).splitlines()
                       if not line.startswith("#"))
            for f in FAMILIES}


def preload(netns: str, backend: str) -> None:
    for family, text in FOREIGN.items():
        ipt.restore(netns, IptablesBackend(backend), family, text)


def _poke(netns: str) -> None:
    """Send a packet through nat OUTPUT (a refused loopback connection) to move rule counters."""
    subprocess.run(["nsenter", f"--net=/var/run/netns/{netns}", sys.executable, "-c",
                    "import socket\ntry: socket.create_connection(('127.0.0.1', 1), timeout=%s)\n"
                    "except OSError: pass" % scaled(1)], check=True)


FLAGS = ["--ipv6", "--inbound-ports-to-ignore", "4190-4191", "--outbound-ports-to-ignore", "4567,4568",
         "--subnets-to-ignore", "10.9.0.0/16,fd00:9::/64,2001:db8::1"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_rerun_is_byte_identical_and_rewrites_nothing(netns, backend):
    run("--netns", netns, "--iptables-mode", backend, *FLAGS)
    _poke(netns)
    before = state(netns, backend, counters=True)
    again = run("--netns", netns, "--iptables-mode", backend, *FLAGS)
    assert state(netns, backend, counters=True) == before      # counters too: nothing was rewritten
    assert "ipv4: rules already in place, nothing changed" in again.stderr
    assert "ipv6: rules already in place, nothing changed" in again.stderr
    # the kernel's canonical form is exactly what the planner renders
    cfg = build_config(ipv6=True, inbound_ports_to_ignore=["4190-4191"], outbound_ports_to_ignore=["4567,4568"],
                       subnets_to_ignore=["10.9.0.0/16,fd00:9::/64,2001:db8::1"])
    for family, version in ((Family.V4, 4), (Family.V6, 6)):
        observed = owned(plan.OWNERSHIP, family, parse_save(before[family]))
        assert apply.restore_text(plan.desired_ruleset(cfg, version), observed) is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_rerun_with_other_flags_converges(netns, backend):
    run("--netns", netns, "--iptables-mode", backend, *FLAGS)
    other = ["--ipv6", "-r", "8080,9090", "-g", "2200", "--outbound-ports-to-ignore", "25",
             "--subnets-to-ignore", "10.1.0.0/16"]
    run("--netns", netns, "--iptables-mode", backend, *other)
    with throwaway_netns() as fresh:
        run("--netns", fresh, "--iptables-mode", backend, *other)
        assert state(netns, backend) == state(fresh, backend)
    nat = parse_save(state(netns, backend)[Family.V4])["nat"]
    assert [r.target for r in nat.rules_of("OUTPUT")] == ["KS-PROXY-INIT-OUTPUT"]
    assert [r.target for r in nat.rules_of("PREROUTING")] == ["KS-PROXY-INIT-REDIRECT"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_cleanup_restores_the_exact_prior_state(netns, backend):
    preload(netns, backend)
    before = state(netns, backend)
    run("--netns", netns, "--iptables-mode", backend, *FLAGS)
    applied = state(netns, backend)
    assert "KS-PROXY-INIT-OUTPUT" in applied[Family.V4] and "KS-PROXY-INIT-OUTPUT" in applied[Family.V6]
    assert "FOREIGN-NAT" in applied[Family.V4]
    run("--netns", netns, "--iptables-mode", backend, "--cleanup")
    assert state(netns, backend) == before
    # a second cleanup has nothing to do and still succeeds
    run("--netns", netns, "--iptables-mode", backend, "--cleanup")
    assert state(netns, backend) == before


def test_cleanup_in_auto_mode_finds_rules_in_either_backend(netns):
    run("--netns", netns, "--iptables-mode", "nft", "--no-ipv6")
    preload(netns, "legacy")          # now auto would pick legacy for applying
    legacy_before = state(netns, "legacy")
    run("--netns", netns, "--cleanup")
    assert "KS-PROXY-INIT" not in state(netns, "nft")[Family.V4]
    assert state(netns, "legacy") == legacy_before


def test_auto_picks_nft_in_a_fresh_namespace_and_legacy_when_legacy_rules_exist(netns):
    result = run("--netns", netns, "--no-ipv6")
    assert "ipv4: using iptables-nft (no legacy rules present" in result.stderr
    assert "KS-PROXY-INIT-OUTPUT" in state(netns, "nft")[Family.V4]
    with throwaway_netns() as other:
        preload(other, "legacy")
        result = run("--netns", other, "--no-ipv6")
        assert "ipv4: using iptables-legacy (legacy rules already present" in result.stderr
        assert "KS-PROXY-INIT-OUTPUT" in state(other, "legacy")[Family.V4]
        assert "KS-PROXY-INIT" not in ipt.save(other, IptablesBackend.NFT, Family.V4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_family_rolls_the_other_back(netns, backend):
    """IPv4 applied, then the IPv6 transaction fails: IPv4 is put back to what it was."""
    log = logging.getLogger("test-init")
    run("--netns", netns, "--iptables-mode", backend, "--no-ipv6", "--outbound-ports-to-ignore", "22")
    before = state(netns, backend)
    cfg = build_config(netns=netns, iptables_mode=backend, ipv6=True, outbound_ports_to_ignore=["25"])
    v4, v6 = apply.make_plans(cfg, FAMILIES, log)
    broken = dataclasses.replace(v6, text="*nat\n:KS-PROXY-INIT-OUTPUT - [0:0]\n-A KS-NO-SUCH-CHAIN -j RETURN\nCOMMIT\n")
    with pytest.raises(IptablesError):
        apply.execute(cfg, [v4, broken], log)
    after = state(netns, backend)
    assert after[Family.V4] == before[Family.V4]
    # (legacy instantiates the empty IPv6 nat table while parsing the failed input: no rules in it)
    assert "-A " not in after[Family.V6]


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_restore_is_all_or_nothing(netns, backend):
    cfg = build_config(netns=netns)
    good = render_full(plan.desired_ruleset(cfg, 4), plan.OWNERSHIP.jumps)
    bad = good.replace("COMMIT", "-A KS-PROXY-INIT-OUTPUT -j KS-NO-SUCH-CHAIN\nCOMMIT")
    before = state(netns, backend)
    with pytest.raises(IptablesError, match="iptables-.*-restore"):
        ipt.restore(netns, IptablesBackend(backend), Family.V4, bad)
    assert "KS-PROXY-INIT" not in state(netns, backend)[Family.V4]
    assert state(netns, backend)[Family.V6] == before[Family.V6]


def close_wait_timeout(netns) -> int:
    with entered(netns):
        return int(CLOSE_WAIT_SYSCTL.read_text().strip())


def test_close_wait_timeout_is_set_in_the_namespace_only(netns):
    root_value = CLOSE_WAIT_SYSCTL.read_text()
    run("--netns", netns, "--no-ipv6", "--timeout-close-wait-secs", "33")
    assert close_wait_timeout(netns) == 33
    assert CLOSE_WAIT_SYSCTL.read_text() == root_value


def test_console_script_applies_in_a_fresh_namespace(netns):
    exe = Path(sys.executable).with_name("proxy-init")
    proc = subprocess.run([str(exe), "--netns", netns, "--log-format", "json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert '"backend": "nft"' in proc.stderr
    assert "KS-PROXY-INIT-REDIRECT" in state(netns, "nft")[Family.V4]


def test_switching_backend_moves_our_rules(netns):
    run("--netns", netns, "--iptables-mode", "legacy", "--no-ipv6")
    run("--netns", netns, "--iptables-mode", "nft", "--no-ipv6")
    assert "KS-PROXY-INIT" not in state(netns, "legacy")[Family.V4]
    assert "KS-PROXY-INIT-OUTPUT" in state(netns, "nft")[Family.V4]


@pytest.mark.parametrize("backend", BACKENDS)
def test_use_wait_flag_is_accepted_by_both_backends(netns, backend):
    run("--netns", netns, "--iptables-mode", backend, "--no-ipv6", "-w")
    assert "KS-PROXY-INIT-OUTPUT" in state(netns, backend)[Family.V4]


@pytest.mark.parametrize("backend", BACKENDS)
def test_simulate_changes_nothing_and_prints_what_a_run_would_apply(netns, backend):
    preload(netns, backend)
    before = state(netns, backend)
    sim = run("--netns", netns, "--iptables-mode", backend, "--ipv6", "--simulate")
    assert state(netns, backend) == before
    assert f"# ipv4: input for iptables-{backend}-restore --noflush" in sim.stdout
    run("--netns", netns, "--iptables-mode", backend, "--ipv6")
    again = run("--netns", netns, "--iptables-mode", backend, "--ipv6", "--dry-run")
    assert f"# ipv4: iptables-{backend} already up to date; nothing to apply" in again.stdout


def test_ipv6_is_off_by_default_when_the_namespace_has_only_loopback(netns):
    result = run("--netns", netns, "--iptables-mode", "nft")
    assert "IPv6 disabled: no IPv6 address besides ::1" in result.stderr
    assert "KS-PROXY-INIT" not in state(netns, "nft")[Family.V6]
    assert "KS-PROXY-INIT-OUTPUT" in state(netns, "nft")[Family.V4]


def test_kernsplit_init_is_the_same_command(netns):
    exe = Path(sys.executable).with_name("kernsplit")
    proc = subprocess.run([str(exe), "init", "--netns", netns, "--iptables-mode", "legacy", "--no-ipv6"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "KS-PROXY-INIT-REDIRECT" in state(netns, "legacy")[Family.V4]
