"""`kernsplit agent` with the iptables dataplane, through the CLI as users and the lab run it.

Each test: a throwaway netns holding ClusterIPs and endpoint listeners on `lo` (see Topology), real
manifests in tmp_path, the agent as a subprocess targeting the netns.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernsplit.agent.iptables.exec import save
from kernsplit.agent.iptables.kinds import Family, IptablesBackend
from kernsplit.agent.lab.timescale import scaled

from tests.fixtures import Topology, assert_shares

pytestmark = pytest.mark.kernel

KERNSPLIT = str(Path(sys.executable).parent / "kernsplit")
ROOT_IP, V1, V2 = "10.100.200.30", "10.1.0.1", "10.1.0.2"


def services_yaml(v1: list[str], v2: list[str]) -> str:
    def svc(name, ip):
        return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n"
                f"spec:\n  clusterIP: {ip}\n  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]\n")

    def eps(name, ips):
        addrs = ", ".join(f"{{ip: {i}}}" for i in ips)
        return (f"apiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}, namespace: default}}\n"
                f"subsets:\n- addresses: [{addrs}]\n  ports: [{{name: http, port: 8080, protocol: TCP}}]\n")
    docs = [svc("my-app", ROOT_IP), svc("my-app-v1", "10.100.200.31"), svc("my-app-v2", "10.100.200.32"),
            eps("my-app-v1", v1), eps("my-app-v2", v2)]
    return "---\n".join(docs)


def split_yaml(w1: str, w2: str) -> str:
    return ("apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\n"
            "metadata: {name: my-app-split, namespace: default}\n"
            f"spec:\n  service: my-app\n  backends:\n  - {{service: my-app-v1, weight: {w1}}}\n"
            f"  - {{service: my-app-v2, weight: {w2}}}\n")


@pytest.fixture
def config(tmp_path):
    d = tmp_path / "manifests"
    d.mkdir()
    (d / "services.yaml").write_text(services_yaml([V1], [V2]))
    (d / "split.yaml").write_text(split_yaml("900m", "100m"))
    return d


@pytest.fixture
def topo(netns):
    with Topology(netns) as t:
        t.address(ROOT_IP)
        t.listen(V1, V2)
        yield t


def agent(netns, *args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([KERNSPLIT, "agent", "--netns", netns, *map(str, args)],
                          capture_output=True, text=True, timeout=scaled(30), env=env, **kw)


def _saved(netns):
    text = save(netns, IptablesBackend.NFT, Family.V4, counters=True)
    return "\n".join(l for l in text.splitlines() if not l.startswith("#"))


def test_once_programs_the_split(netns, topo, config):
    r = agent(netns, "--config", config, "--once")
    assert r.returncode == 0, r.stderr
    assert "1 split ports written" in r.stderr
    assert topo.connect(ROOT_IP, 80, n=400) == [0] * 400
    got = topo.accepted()
    assert_shares({"my-app-v1": got[V1], "my-app-v2": got[V2]}, {"my-app-v1": 900, "my-app-v2": 100})


def test_once_with_broken_config_exits_1_and_changes_nothing(netns, topo, config):
    assert agent(netns, "--config", config, "--once").returncode == 0
    before = _saved(netns)
    (config / "split.yaml").write_text(split_yaml("-5", "100m"))
    r = agent(netns, "--config", config, "--once")
    assert r.returncode == 1
    assert f"{config / 'split.yaml'}: TrafficSplit default/my-app-split: spec.backends[0].weight" in r.stderr
    assert _saved(netns) == before


def test_restart_with_same_config_rewrites_nothing(netns, topo, config, tmp_path):
    assert agent(netns, "--config", config, "--once").returncode == 0
    topo.connect(ROOT_IP, 80, n=30)
    topo.accepted()
    time.sleep(scaled(0.3))  # closing connections' last packets settle (built-in chain counters)
    before = _saved(netns)
    # Observe the real iptables-restore being run (or not) through a logging wrapper on PATH.
    shim, calls = tmp_path / "shim", tmp_path / "restore-calls"
    shim.mkdir()
    for tool in ("iptables-nft-restore", "iptables-legacy-restore", "ip6tables-nft-restore", "ip6tables-legacy-restore"):
        real = shutil.which(tool)
        (shim / tool).write_text(f"#!/bin/sh\necho {tool} >> {calls}\nexec {real} \"$@\"\n")
        (shim / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}
    r = agent(netns, "--config", config, "--once", env=env)
    assert r.returncode == 0, r.stderr
    assert "0 split ports written, 0 removed, 1 unchanged" in r.stderr
    assert not calls.exists(), calls.read_text()
    assert _saved(netns) == before


def test_cleanup_restores_exact_prior_state(netns, topo, config):
    foreign = "*nat\n:FOREIGN - [0:0]\n-A FOREIGN -p tcp -j RETURN\n-A OUTPUT -j FOREIGN\nCOMMIT\n"
    subprocess.run(["nsenter", f"--net=/var/run/netns/{netns}", "iptables-nft-restore", "--noflush"],
                   input=foreign, text=True, check=True)
    before = _saved(netns)
    assert agent(netns, "--config", config, "--once").returncode == 0
    assert _saved(netns) != before
    r = agent(netns, "--cleanup")
    assert r.returncode == 0, r.stderr
    assert _saved(netns) == before


class Running:
    """The agent in watch mode, with its log captured to a file."""

    def __init__(self, netns, config, log: Path, *extra):
        self.log = log
        self.proc = subprocess.Popen([KERNSPLIT, "agent", "--netns", netns, "--config", str(config),
                                      *([] if "--metrics-addr" in extra else ["--metrics-addr", "127.0.0.1:0"]), *extra],
                                     stdout=subprocess.DEVNULL, stderr=log.open("w"))

    def text(self) -> str:
        return self.log.read_text()

    def wait_log(self, needle: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + scaled(timeout)
        while needle not in self.text():
            assert self.proc.poll() is None, f"agent exited: {self.text()}"
            assert time.monotonic() < deadline, f"{needle!r} not logged: {self.text()}"
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=scaled(10))


@pytest.fixture
def running(netns, config, tmp_path):
    started = []

    def start(*extra):
        r = Running(netns, config, tmp_path / f"agent{len(started)}.log", *extra)
        started.append(r)
        return r
    yield start
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def _until(check, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _all_to(topo, ip) -> bool:
    topo.connect(ROOT_IP, 80, n=20)
    return topo.accepted()[ip] == 20


def test_watch_applies_edits_keeps_last_good_state_and_exits_cleanly(netns, topo, config, running):
    a = running("--resync-interval", "30")
    a.wait_log("sync (start)")
    # rollout edit: picked up without restarting (the bar is 1 s; we only poll, never time)
    (config / "split.yaml").write_text(split_yaml("0m", "1000m"))
    _until(lambda: _all_to(topo, V2), what="rollout to v2")
    a.wait_log("sync (config changed)")

    # a broken edit: reported with file and field, the 0/1000 split stays, the agent keeps running
    (config / "split.yaml").write_text(split_yaml("0m", "-1"))
    a.wait_log("keeping the last good state")
    assert f"{config / 'split.yaml'}: TrafficSplit default/my-app-split: spec.backends[1].weight" in a.text()
    assert a.proc.poll() is None
    assert _all_to(topo, V2)

    # fixed again: roll back
    (config / "split.yaml").write_text(split_yaml("1", "0"))
    _until(lambda: _all_to(topo, V1), what="rollback to v1")

    assert a.stop() == 0
    assert "KS-SERVICES" in _saved(netns), "rules stay in place when the agent stops"
    assert _all_to(topo, V1)


def test_drift_is_repaired_within_a_resync_interval(netns, topo, config, running):
    a = running("--resync-interval", "0.5")
    a.wait_log("sync (start)")
    want = _saved(netns)
    victim = next(l for l in want.splitlines() if l.startswith("[") and "-A KS-SVC-" in l and "statistic" in l)
    rule = victim.split("] ", 1)[1].replace("-A ", "-D ", 1)
    subprocess.run(f"nsenter --net=/var/run/netns/{netns} iptables-nft -t nat {rule}", shell=True, check=True)
    assert victim not in _saved(netns)
    _until(lambda: "statistic" in "".join(l for l in _saved(netns).splitlines() if "-A KS-SVC-" in l),
           what="drift repair")
    a.wait_log("1 split ports written")
    assert a.stop() == 0


@pytest.fixture
def client_netns(netns):
    """A second namespace routed through the agent's one over a veth (clients in pods): its
    connections reach the agent's rules through PREROUTING, not OUTPUT."""
    from conftest import unique_name
    client, veth = unique_name("cl"), unique_name("ve")
    subprocess.run(["ip", "netns", "add", client], check=True)
    try:
        run = lambda *a: subprocess.run(list(a), check=True)   # noqa: E731
        run("ip", "-n", netns, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", client)
        run("ip", "-n", netns, "addr", "add", "10.9.0.1/24", "dev", veth)
        run("ip", "-n", netns, "link", "set", veth, "up")
        run("ip", "-n", client, "addr", "add", "10.9.0.2/24", "dev", "eth0")
        run("ip", "-n", client, "link", "set", "eth0", "up")
        run("ip", "-n", client, "link", "set", "lo", "up")
        run("ip", "-n", client, "route", "add", "default", "via", "10.9.0.1")
        yield client
    finally:
        subprocess.run(["ip", "netns", "del", client], check=False)


def test_clients_in_other_namespaces_are_split_and_refused(netns, topo, config, client_netns):
    (config / "refuse.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: empty, namespace: default}\n"
        "spec:\n  clusterIP: 10.100.200.40\n  ports: [{name: http, port: 80, protocol: TCP}]\n---\n"
        "apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\nmetadata: {name: empty-split, namespace: default}\n"
        "spec:\n  service: empty\n  backends:\n  - {service: missing, weight: 1}\n")
    topo.listen("10.100.200.40", port=80)   # would accept, were it not for our REJECT
    r = agent(netns, "--config", config, "--once")
    assert r.returncode == 0, r.stderr
    with Topology(client_netns) as client:
        assert client.connect(ROOT_IP, 80, n=400) == [0] * 400
        got = topo.accepted()
        assert_shares({"my-app-v1": got[V1], "my-app-v2": got[V2]}, {"my-app-v1": 900, "my-app-v2": 100})
        start = time.monotonic()
        assert client.connect("10.100.200.40", 80, n=2) == [errno.ECONNREFUSED] * 2
        assert time.monotonic() - start < scaled(2.5), "refusal must not wait for a timeout"
        assert topo.accepted()["10.100.200.40"] == 0


def _in_netns(netns, *argv) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def test_metrics_are_served_on_loopback_9464_by_default_and_a_taken_port_is_a_clear_error(netns, topo, config,
                                                                                            tmp_path):
    """Run inside the lab netns, so 127.0.0.1:9464 is that namespace's loopback, never the host's."""
    log = tmp_path / "agent.log"
    proc = subprocess.Popen(_in_netns(netns, KERNSPLIT, "agent", "--netns", netns, "--config", str(config)),
                            stdout=subprocess.DEVNULL, stderr=log.open("w"))
    try:
        probe = ("import sys, urllib.request\n"
                 "try:\n    r = urllib.request.urlopen('http://127.0.0.1:9464/readyz', timeout=2)\n"
                 "except Exception as e:\n    sys.exit(str(e))\nprint(r.status)")
        _until(lambda: subprocess.run(_in_netns(netns, sys.executable, "-c", probe), capture_output=True,
                                      text=True).stdout.strip() == "200", timeout=20, what="/readyz on 127.0.0.1:9464")
        assert "metrics on http://127.0.0.1:9464/metrics" in log.read_text()

        second = subprocess.run(_in_netns(netns, KERNSPLIT, "agent", "--netns", netns, "--config", str(config)),
                                capture_output=True, text=True, timeout=scaled(30))
        assert second.returncode == 2, second.stderr
        assert "--metrics-addr 127.0.0.1:9464" in second.stderr and "another agent on this host" in second.stderr
        assert "Traceback" not in second.stderr

        off = subprocess.Popen(_in_netns(netns, KERNSPLIT, "agent", "--netns", netns, "--config", str(config),
                                         "--metrics-addr", ""), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
        try:
            _until(lambda: "sync (start)" in off.stderr.readline(), timeout=20, what="the second agent's first sync")
            assert off.poll() is None        # '' serves nothing, so nothing collides
        finally:
            off.terminate()
            off.wait(timeout=scaled(10))
    finally:
        proc.terminate()
        proc.wait(timeout=scaled(10))
