"""The image, built by `make image` and run with podman as the manifests run it: only the
capabilities and seccomp profile they grant, a read-only root filesystem.

The node's network namespace is a lab namespace here (`--network ns:`): the agent must never
write the firewall of the machine running the tests, which `--network host` would target.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kernsplit.agent import mounts
from kernsplit.agent.lab.timescale import scaled
from conftest import unique_name  # tests/conftest.py (pytest puts tests/ on sys.path)
from deploy_manifests import added_capabilities, agent, proxy_init

pytestmark = [pytest.mark.kernel, pytest.mark.slow]

REPO = Path(__file__).parents[2]
SEED = REPO / "tests" / "unit" / "manifests" / "seed"
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": str(REPO / "containers.conf")}


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=scaled(timeout),
                          env=PODMAN_ENV)


@pytest.fixture(scope="module")
def image() -> str:
    """The image the manifests name, built (or found up to date) by `make image`."""
    if os.geteuid() != 0 or shutil.which("podman") is None:
        pytest.skip("needs root and podman (`make image-tools` installs it)")
    tag = agent("overlays/iptables")["image"]
    assert proxy_init()["image"] == tag
    built = subprocess.run(["make", "-C", str(REPO), "image", f"IMAGE={tag}"],
                           capture_output=True, text=True, timeout=scaled(1800))
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return tag


def security_flags(container: dict) -> list[str]:
    """podman flags for a container spec's securityContext (capabilities, seccomp, read-only)."""
    sc = container["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    flags = ["--cap-drop=ALL", "--security-opt=no-new-privileges"]
    flags += [f"--cap-add={cap}" for cap in added_capabilities(container)]
    if sc.get("seccompProfile", {}).get("type") == "Unconfined":
        flags.append("--security-opt=seccomp=unconfined")
    if sc.get("readOnlyRootFilesystem"):
        flags.append("--read-only")          # podman adds tmpfs /tmp and /run, as the emptyDirs do
    return flags


def nat_rules(netns: str) -> str:
    return "".join(subprocess.run(["ip", "netns", "exec", netns, f"iptables-{b}-save", "-t", "nat"],
                                  capture_output=True, text=True, check=True).stdout
                   for b in ("legacy", "nft"))


def test_proxy_init_simulates_with_no_capability_at_all(image):
    proc = podman("run", "--rm", "--network=none", "--cap-drop=ALL", "--read-only", "--entrypoint=proxy-init",
                  image, "--simulate", "-p", "4143", "-o", "4140", "-u", "2102")
    assert proc.returncode == 0, proc.stderr
    assert "*nat" in proc.stdout and "-j REDIRECT --to-ports 4143" in proc.stdout


def test_proxy_init_intercepts_in_a_pod_namespace_with_its_manifest_capabilities(image, netns):
    proc = podman("run", "--rm", f"--network=ns:/run/netns/{netns}", *security_flags(proxy_init()),
                  "--entrypoint=proxy-init", image, "-p", "4143", "-o", "4140", "-u", "2102")
    assert proc.returncode == 0, proc.stderr
    assert "KS-PROXY-INIT-REDIRECT" in nat_rules(netns)


def test_agent_iptables_once_on_a_lab_namespace(image, netns):
    proc = podman("run", "--rm", f"--network=ns:/run/netns/{netns}", *security_flags(agent("overlays/iptables")),
                  "-v", f"{SEED}:/config:ro", image,
                  "agent", "--once", "--config", "/config", "--dataplane", "iptables")
    assert proc.returncode == 0, proc.stderr
    assert "1 split ports written" in proc.stderr
    assert "KS-SVC-" in nat_rules(netns)


def test_cleanup_from_the_image_leaves_no_table(image, netns):
    """The image has `nft`, with which cleanup deletes the tables iptables-nft made for our rules."""
    for args in (["--once", "--config", "/config"], ["--cleanup"]):
        proc = podman("run", "--rm", f"--network=ns:/run/netns/{netns}", *security_flags(agent("overlays/iptables")),
                      "-v", f"{SEED}:/config:ro", image, "agent", "--dataplane", "iptables", *args)
        assert proc.returncode == 0, proc.stderr
    assert subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "ruleset"], capture_output=True, text=True,
                          check=True).stdout == ""


@pytest.fixture
def lab_cgroup_and_pins():
    cgroup = mounts.cgroup2() / unique_name("cg")
    cgroup.mkdir()
    pins = mounts.BPFFS / unique_name("bf")
    assert mounts.ensure_bpffs(pins)
    try:
        yield cgroup, pins
    finally:
        subprocess.run([str(Path(sys.executable).parent / "kernsplit"), "agent", "--cleanup", "--dataplane",
                        "ebpf", "--cgroup", str(cgroup), "--bpffs", str(pins)], capture_output=True,
                       timeout=scaled(60))
        cgroup.rmdir()


@pytest.mark.bpf
def test_agent_ebpf_compiles_and_attaches_from_the_image(image, netns, lab_cgroup_and_pins):
    """BCC compiles in the image, which holds no compiler program (clang and LLVM are libraries of
    libbpfcc), against the kernel-header fallback built from the host kernel's config."""
    cgroup, pins = lab_cgroup_and_pins
    no_compiler = podman("run", "--rm", "--entrypoint=sh", image, "-c", "command -v gcc cc clang cpp")
    assert no_compiler.stdout == "" and no_compiler.returncode != 0
    proc = podman("run", "--rm", f"--network=ns:/run/netns/{netns}", *security_flags(agent("overlays/ebpf")),
                  "-v", f"{SEED}:/config:ro", "-v", f"{cgroup}:/host/sys/fs/cgroup",
                  "-v", f"{mounts.BPFFS}:{mounts.BPFFS}", image,
                  "agent", "--once", "--config", "/config", "--dataplane", "ebpf",
                  "--cgroup", "/host/sys/fs/cgroup", "--bpffs", str(pins), "--split-uid", "2102")
    assert proc.returncode == 0, proc.stderr
    attached = subprocess.run(["bpftool", "cgroup", "show", str(cgroup)], capture_output=True, text=True,
                              check=True).stdout
    assert "cgroup_inet4_connect" in attached and "cgroup_inet6_connect" in attached
    assert (pins / "maps").is_dir()
