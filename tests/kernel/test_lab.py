"""`kernsplit lab up | exec | down | demo` as a user runs them, and `lab down` after a crash."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernsplit.agent.lab import cgroups, kubeapi, procs, state, topology
from kernsplit.agent.lab.lab import BPFFS_ROOT, down
from kernsplit.agent.lab.plan import new_prefix
from kernsplit.agent.lab.timescale import scaled
from tests.fixtures import assert_shares

KERNSPLIT = str(Path(sys.executable).with_name("kernsplit"))
DATAPLANES = [pytest.param("iptables", marks=pytest.mark.kernel),
              pytest.param("ebpf", marks=[pytest.mark.kernel, pytest.mark.bpf])]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([KERNSPLIT, "lab", *args], capture_output=True, text=True,
                          timeout=scaled(timeout))


def _traces(prefix: str) -> list[str]:
    """Everything of a lab still on the host: namespaces, interfaces (in the root namespace),
    cgroups, pins, files."""
    found = [f"netns {n}" for n in os.listdir("/var/run/netns") if n.startswith(prefix)] \
        if os.path.isdir("/var/run/netns") else []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if prefix in line]
    for path in (cgroups.lab_cgroup(prefix), BPFFS_ROOT / prefix, state.lab_root(prefix)):
        if path.exists():
            found.append(str(path))
    return found


@pytest.fixture
def prefix(root_required):
    p = new_prefix()
    try:
        yield p
    finally:
        down(p)   # whatever the test did, leave nothing behind


def _wait_for(predicate, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("dataplane", DATAPLANES)
@pytest.mark.parametrize("kill_when", ["building", "agent-started"])
def test_down_after_sigkilled_up_leaves_nothing(prefix, dataplane, kill_when):
    up = subprocess.Popen([KERNSPLIT, "lab", "up", "--prefix", prefix, "--dataplane", dataplane],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if kill_when == "building":
            _wait_for(lambda: any(n.startswith(prefix) for n in os.listdir("/var/run/netns")),
                      what="the first lab namespace")
        else:
            _wait_for(lambda: "agent" in ((state.load(prefix) or state.LabState("", "", "")).pids),
                      what="the agent to start")
            time.sleep(scaled(0.3))
    finally:
        up.send_signal(signal.SIGKILL)
        up.wait()
    saved = state.load(prefix)
    pids = list(saved.pids.values()) if saved else []
    assert _traces(prefix), "the killed lab up left nothing to clean: the test proves nothing"
    result = _run("down", "--prefix", prefix)
    assert result.returncode == 0, result.stderr
    assert _traces(prefix) == []
    assert [p for p in pids if procs.alive(p)] == []


@pytest.mark.kernel
def test_up_exec_down(prefix):
    result = _run("up", "--prefix", prefix)
    assert result.returncode == 0, result.stderr
    for hint in ("lab exec", f"kernsplit show --netns {prefix}-node", "split.yaml", "lab down", "export KUBECONFIG="):
        assert hint in result.stdout
    kubeconfig = Path(result.stdout.split("export KUBECONFIG=")[1].split()[0])
    got = kubeapi.kubectl(kubeconfig, "get", "trafficsplits", "-A", "-o", "name")
    assert got.returncode == 0 and got.stdout.split() == ["trafficsplit.split.smi-spec.io/my-app-split"], got.stderr
    load = _run("exec", "--prefix", prefix, "client", "python3", "-m", "kernsplit.agent.lab.load", "-n", "400")
    assert load.returncode == 0, load.stderr
    report = json.loads(load.stdout)
    assert report["outcomes"] == {"ok": 400}
    assert_shares(report["versions"], {"v1": 900, "v2": 100})        # the seed split, 90/10
    assert _run("down", "--prefix", prefix).returncode == 0
    assert _traces(prefix) == []


@pytest.mark.parametrize("dataplane, source", [
    *(pytest.param(d.values[0], "kubernetes", marks=d.marks) for d in DATAPLANES),
    pytest.param("iptables", "files", marks=pytest.mark.kernel)])
def test_demo_runs_the_seed_scenario_and_cleans_up(root_required, dataplane, source):
    before = set(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else set()
    args = ("--source", source) if source == "files" else ()     # the Kubernetes source is the default
    result = _run("demo", "--dataplane", dataplane, "--connections", "300", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "canary 90/10" in out and "rollout 0/100" in out
    assert f"source {source}" in out
    if source == "kubernetes":      # the rollout went through kubectl and the API server holds it
        assert "$ kubectl patch trafficsplit my-app-split --type merge" in out
        assert "my-app-v1=0m my-app-v2=1000m" in out.split("rollout 0/100")[1]
    rollout = out.split("rollout 0/100")[1]
    assert "v2                300    100.0%" in rollout      # every request answered by v2
    prefix = out.split("building lab ")[1].split()[0]
    after = set(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else set()
    assert {n for n in after - before if n.startswith("ksl")} == set()   # others share the host
    assert _traces(prefix) == []


@pytest.mark.kernel
def test_interrupted_demo_still_tears_down(root_required):
    demo = subprocess.Popen([KERNSPLIT, "lab", "demo", "--connections", "1000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = demo.stdout.readline()
        prefix = first.split("building lab ")[1].split()[0]
        _wait_for(lambda: "agent" in ((state.load(prefix) or state.LabState("", "", "")).pids),
                  what="the demo's agent")
        time.sleep(scaled(1.0))               # the demo is now sending requests
        demo.send_signal(signal.SIGTERM)      # like Ctrl-C
        out, _ = demo.communicate(timeout=scaled(60))
    finally:
        if demo.poll() is None:
            demo.kill()
    try:
        assert "tearing down" in out
        assert _traces(prefix) == []
    finally:
        down(prefix)


@pytest.mark.kernel
@pytest.mark.bpf
def test_demo_with_ebpf_interception_writes_no_iptables_rule_in_any_pod(root_required):
    result = _run("demo", "--interception", "ebpf", "--connections", "300", "--keep")
    prefix = result.stdout.split("building lab ")[1].split()[0] if "building lab " in result.stdout else None
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        rollout = result.stdout.split("rollout 0/100")[1]
        assert "v2                300    100.0%" in rollout
        assert "OUTBOUND" in rollout and " 600 " in rollout.split("show --pods")[1]   # 2 x 300 intercepted
        pods = [n for n in topology.lab_netns(prefix) if not n.endswith("-node")]
        assert len(pods) == 7                                  # 6 backends and the client
        for netns in pods:
            for tool in ("iptables-legacy-save", "ip6tables-legacy-save", "iptables-nft-save", "ip6tables-nft-save"):
                saved = subprocess.run(["nsenter", f"--net=/var/run/netns/{netns}", tool], capture_output=True,
                                       text=True, check=True).stdout
                assert saved == "", f"{tool} in {netns}:\n{saved}"
    finally:
        if prefix:
            assert down(prefix) == []
    assert _traces(prefix) == []
