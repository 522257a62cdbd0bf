"""Least privilege: each role runs with exactly the capabilities the manifests grant it, and with
one fewer it stops at start with an error naming the missing capability (no traceback, nothing
written to the kernel).

Each program runs as a container runs it: uid 0 whose bounding set is cut to the granted
capabilities (so they are all it can have), no inheritable capabilities, no_new_privs, already
inside the pod's network namespace (a container with hostNetwork or a pod netns never calls setns).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kernsplit.agent import mounts
from kernsplit.agent.lab.timescale import scaled
from conftest import unique_name  # tests/conftest.py (pytest puts tests/ on sys.path)
from deploy_manifests import added_capabilities, agent, proxy_init

pytestmark = pytest.mark.kernel

BIN = Path(sys.executable).parent
SEED = Path(__file__).parents[1] / "unit" / "manifests" / "seed"
# The sets tested are the ones the manifests grant (deploy/overlays/*, deploy/examples/proxy-init).
PROXY_INIT = added_capabilities(proxy_init())
AGENT_IPTABLES = added_capabilities(agent("overlays/iptables"))
AGENT_EBPF = added_capabilities(agent("overlays/ebpf"))
# With --iptables-mode=nft (no legacy backend, so no raw socket), as README says.
AGENT_IPTABLES_NFT = tuple(c for c in AGENT_IPTABLES if c != "NET_RAW")


def run_with(netns: str, capabilities: tuple[str, ...], argv: list[str]) -> subprocess.CompletedProcess:
    bounding = ",".join(["-all", *(f"+{c.lower()}" for c in capabilities)])
    return subprocess.run(["nsenter", f"--net=/run/netns/{netns}", "setpriv", "--no-new-privs",
                           "--inh-caps=-all", f"--bounding-set={bounding}", "--", *argv],
                          capture_output=True, text=True, timeout=scaled(60))


def nat_chains(netns: str, backend: str = "both") -> str:
    """The nat table as iptables-save prints it: one backend's, or both backends' together."""
    backends = ("legacy", "nft") if backend == "both" else (backend,)
    return "".join(subprocess.run(["ip", "netns", "exec", netns, f"iptables-{b}-save", "-t", "nat"],
                                  capture_output=True, text=True, check=True).stdout for b in backends)


def one_fewer(granted: tuple[str, ...]):
    return [pytest.param(granted, missing, id=f"without-{missing}") for missing in granted]


def assert_refused_clearly(proc: subprocess.CompletedProcess, missing: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert f"lacks CAP_{missing}" in proc.stderr, proc.stderr
    assert f"Add {missing} to the container's securityContext" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


# --- proxy-init, iptables mode ----------------------------------------------------------------
PROXY_INIT_ARGV = [str(BIN / "proxy-init"), "-p", "4143", "-o", "4140", "-u", "2102", "--no-ipv6"]


@pytest.mark.parametrize("backend", ["legacy", "nft"])
def test_proxy_init_works_with_net_admin_and_net_raw(netns, backend):
    proc = run_with(netns, PROXY_INIT, [*PROXY_INIT_ARGV, "--iptables-mode", backend])
    assert proc.returncode == 0, proc.stderr
    assert "KS-PROXY-INIT-REDIRECT" in nat_chains(netns, backend)


@pytest.mark.parametrize("granted, missing", one_fewer(PROXY_INIT))
def test_proxy_init_without_one_names_it(netns, granted, missing):
    kept = tuple(c for c in granted if c != missing)
    proc = run_with(netns, kept, [*PROXY_INIT_ARGV, "--iptables-mode", "legacy"])
    assert_refused_clearly(proc, missing)
    assert "KS-PROXY-INIT" not in nat_chains(netns)


# --- the agent, iptables dataplane ------------------------------------------------------------
def agent_iptables(mode: str) -> list[str]:
    return [str(BIN / "kernsplit"), "agent", "--once", "--config", str(SEED), "--dataplane", "iptables",
            "--iptables-mode", mode]


@pytest.mark.parametrize("mode, granted", [("legacy", AGENT_IPTABLES), ("auto", AGENT_IPTABLES),
                                           ("nft", AGENT_IPTABLES_NFT)])
def test_agent_iptables_works_with_its_set(netns, mode, granted):
    proc = run_with(netns, granted, agent_iptables(mode))
    assert proc.returncode == 0, proc.stderr
    assert "KS-SERVICES" in nat_chains(netns)


@pytest.mark.parametrize("granted, missing", one_fewer(AGENT_IPTABLES))
def test_agent_iptables_without_one_names_it(netns, granted, missing):
    kept = tuple(c for c in granted if c != missing)
    proc = run_with(netns, kept, agent_iptables("auto"))
    assert_refused_clearly(proc, missing)
    assert "KS-SERVICES" not in nat_chains(netns)


def test_agent_iptables_nft_without_net_admin_names_it(netns):
    proc = run_with(netns, (), agent_iptables("nft"))
    assert_refused_clearly(proc, "NET_ADMIN")


# --- the agent, eBPF dataplane ----------------------------------------------------------------
@pytest.fixture
def ebpf_target(netns):
    """A cgroup of our own to attach to and a bpffs folder for the pins; removed afterwards."""
    cgroup = mounts.cgroup2() / unique_name("cg")
    cgroup.mkdir()
    bpffs = mounts.BPFFS / unique_name("bf")
    assert mounts.ensure_bpffs(bpffs)
    try:
        yield netns, cgroup, bpffs
    finally:
        subprocess.run([str(BIN / "kernsplit"), "agent", "--cleanup", "--dataplane", "ebpf", "--cgroup",
                        str(cgroup), "--bpffs", str(bpffs)], capture_output=True, timeout=scaled(60))
        cgroup.rmdir()


def agent_ebpf(cgroup: Path, bpffs: Path) -> list[str]:
    return [str(BIN / "kernsplit"), "agent", "--once", "--config", str(SEED), "--dataplane", "ebpf",
            "--cgroup", str(cgroup), "--bpffs", str(bpffs)]


def attached(cgroup: Path) -> str:
    return subprocess.run(["bpftool", "cgroup", "show", str(cgroup)], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.bpf
def test_agent_ebpf_works_with_bpf_and_net_admin(ebpf_target):
    netns, cgroup, bpffs = ebpf_target
    proc = run_with(netns, AGENT_EBPF, agent_ebpf(cgroup, bpffs))
    assert proc.returncode == 0, proc.stderr
    assert "cgroup_inet4_connect" in attached(cgroup)
    assert any(bpffs.iterdir())


@pytest.mark.bpf
@pytest.mark.parametrize("pin", ["progs/sock4_connect", "maps/ks_slots", "links/sock6_connect"])
def test_agent_ebpf_repairs_a_removed_pin_with_its_set(ebpf_target, pin):
    netns, cgroup, bpffs = ebpf_target
    assert run_with(netns, AGENT_EBPF, agent_ebpf(cgroup, bpffs)).returncode == 0
    (bpffs / pin).unlink()
    proc = run_with(netns, AGENT_EBPF, agent_ebpf(cgroup, bpffs))     # no CAP_SYS_ADMIN to reopen by id
    assert proc.returncode == 0, proc.stderr
    repaired = [line for line in proc.stderr.splitlines() if "repaired" in line and Path(pin).name in line]
    assert repaired and "another schema" not in proc.stderr, proc.stderr
    assert (bpffs / pin).exists()
    assert attached(cgroup).count("cgroup_inet4_connect") == 1


@pytest.mark.bpf
@pytest.mark.parametrize("granted, missing", one_fewer(AGENT_EBPF))
def test_agent_ebpf_without_one_names_it(ebpf_target, granted, missing):
    netns, cgroup, bpffs = ebpf_target
    kept = tuple(c for c in granted if c != missing)
    proc = run_with(netns, kept, agent_ebpf(cgroup, bpffs))
    assert_refused_clearly(proc, missing)
    assert "cgroup_inet4_connect" not in attached(cgroup)
