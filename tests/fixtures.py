"""What the unit, kernel and fault tests share: one split-port builder, the scenario table, the
4-sigma share check, golden files, and helpers around the agent's iptables chains.

The scenario table (`SCENARIOS`) drives, as Istio's capture tests do, both the golden files
(iptables restore text, eBPF map operations, `kernsplit show`) and the real-namespace tests that
apply each scenario and send connections through it (tests/kernel/test_scenario_table.py).
Refresh golden files after an intended change with KS_UPDATE_GOLDEN=1 and review the diff.
"""
from __future__ import annotations

import errno
import math
import os
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest

from kernsplit.agent import mounts
from kernsplit.agent.iptables.kinds import Family
from kernsplit.agent.lab.timescale import scaled
from kernsplit.agent.model.resolved import BackendShare, Endpoint, RefusedShare, SplitPort, WeightedEndpoint
from kernsplit.agent.netns import entered
from tests.conftest import unique_name

GOLDEN = Path(__file__).parent / "unit" / "golden"


# --- split ports ----------------------------------------------------------------------------------

def split_port(weights: Mapping[str, int], endpoints: Mapping[str, Sequence[str | tuple[str, int]]], *,
               ip: str = "10.100.200.30", port: int = 80, service: str = "my-app", split: str = "my-app-split",
               kind: str = "TrafficSplit", ep_port: int = 8080, terminating: Sequence[str] = ()) -> SplitPort:
    """A resolved split port as the model hands it over: each backend's share is its weight over
    the weights that can serve, split equally among its endpoints (an endpoint is "IP", served on
    `ep_port`, or (IP, port)). A route (`kind="HTTPRoute"`) refuses the share of a weighted backend
    with no endpoint instead of leaving it out, as Gateway API asks."""
    route = kind == "HTTPRoute"
    live = {b: w for b, w in weights.items() if w and (endpoints.get(b) or route)}
    total = sum(live.values())
    share = {b: Fraction(w, total) for b, w in live.items()}
    eps = []
    for b in live:
        for e in endpoints.get(b, ()):
            ep = Endpoint(*e) if isinstance(e, tuple) else Endpoint(e, ep_port)
            eps.append(WeightedEndpoint(b, ep, share[b] / len(endpoints[b])))
    backends = tuple(BackendShare(b, w, share.get(b, Fraction(0)), bool(endpoints.get(b)), terminating=b in terminating)
                     for b, w in weights.items())
    refused = tuple(RefusedShare(b, share[b]) for b in live if not endpoints.get(b))
    return SplitPort("default", service, split, kind, ip, port, "http", "TCP",
                     tuple(sorted(eps, key=lambda e: (e.backend, e.endpoint))), backends,
                     *((refused,) if refused else ()))


def manifests(ip: str, endpoint: str, *, refusing_ip: str | None = None) -> str:
    """Manifests for the agent's file source: the TrafficSplit my-app (at `ip`:80) sending all to
    my-app-v1 served by `endpoint`:8080; with `refusing_ip`, also a split there whose only backend
    has no endpoints (it refuses: the agent then writes the filter table too)."""
    def svc(name: str, at: str) -> str:
        return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n"
                f"spec: {{clusterIP: {at}, ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]}}\n")

    def split(name: str, backend: str) -> str:
        return (f"apiVersion: split.smi-spec.io/v1alpha1\nkind: TrafficSplit\n"
                f"metadata: {{name: {name}-split, namespace: default}}\n"
                f"spec: {{service: {name}, backends: [{{service: {backend}, weight: 1}}]}}\n")
    base = ip.rsplit(".", 1)[0]
    docs = [svc("my-app", ip), svc("my-app-v1", f"{base}.201"),
            f"apiVersion: v1\nkind: Endpoints\nmetadata: {{name: my-app-v1, namespace: default}}\n"
            f"subsets:\n- addresses: [{{ip: {endpoint}}}]\n  ports: [{{name: http, port: 8080, protocol: TCP}}]\n",
            split("my-app", "my-app-v1")]
    if refusing_ip:
        docs += [svc("empty", refusing_ip), svc("empty-v1", f"{base}.202"), split("empty", "empty-v1")]
    return "---\n".join(docs)


# --- the scenario table -----------------------------------------------------------------------------

SEED = split_port({"my-app-v1": 900, "my-app-v2": 100},
                  {"my-app-v1": ["10.1.0.1", "10.1.0.2", "10.1.0.3"], "my-app-v2": ["10.1.0.4", "10.1.0.5", "10.1.0.6"]})
SEVENTY = split_port({"a": 70, "b": 30, "c": 0}, {"a": ["10.1.1.1"], "b": ["10.1.1.2"], "c": ["10.1.1.3"]},
                     ip="10.100.200.31", service="three")
TEN = split_port({f"b{i}": 1 for i in range(10)}, {f"b{i}": [f"10.1.2.{i + 1}"] for i in range(10)},
                 ip="10.100.200.32", service="ten")
REFUSE = split_port({"gone": 1}, {}, ip="10.100.200.33", service="empty")
# A Gateway route whose backendRef `gone` does not resolve: it keeps weight 1 and its quarter is refused.
ROUTE = split_port({"v1": 3, "gone": 1}, {"v1": ["10.1.3.1"]}, ip="10.100.200.34", service="routed", split="r",
                   kind="HTTPRoute")
V6 = split_port({"v1": 900, "v2": 100}, {"v1": ["fd00:1::1"], "v2": ["fd00:1::2"]}, ip="fd00:200::30",
                service="six")


@dataclass(frozen=True)
class Scenario:
    ports: tuple[SplitPort, ...]
    family: Family          # the family whose iptables restore text is the golden file


SCENARIOS = {
    "seed-90-10": Scenario((SEED,), Family.V4),
    "70-30-0": Scenario((SEVENTY,), Family.V4),
    "ten-equal": Scenario((TEN,), Family.V4),
    "refuse": Scenario((REFUSE,), Family.V4),
    "mixed": Scenario((SEED, REFUSE, V6), Family.V4),
    "route-refused-share": Scenario((ROUTE,), Family.V4),
    "ipv6": Scenario((V6, SEED), Family.V6),
}


# --- labs -------------------------------------------------------------------------------------------

PORT = 8080        # the endpoints' port in the scenario table and the topology


class Topology:
    """Addresses on lo and listeners inside one namespace; closes its sockets on exit."""

    def __init__(self, netns: str):
        self.netns = netns
        self.listeners: dict[str, socket.socket] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for s in self.listeners.values():
            s.close()

    def address(self, *ips: str) -> None:
        for ip in ips:
            plen = 128 if ":" in ip else 32
            extra = ["nodad"] if ":" in ip else []
            subprocess.run(["ip", "-n", self.netns, "addr", "add", f"{ip}/{plen}", "dev", "lo", *extra], check=True)

    def listen(self, *ips: str, port: int = PORT) -> None:
        self.address(*ips)
        with entered(self.netns):
            for ip in ips:
                s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((ip, port))
                s.listen(4096)
                s.setblocking(False)
                self.listeners[ip] = s

    def connect(self, ip: str, port: int, n: int = 1, timeout: float = 3.0) -> list[int]:
        """Open n connections; 0 for each that connected, else its errno."""
        results = []
        with entered(self.netns):
            for _ in range(n):
                s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(scaled(timeout))
                try:
                    s.connect((ip, port))
                    results.append(0)
                except OSError as exc:
                    results.append(exc.errno if exc.errno is not None else errno.ETIMEDOUT)
                finally:
                    s.close()
        return results

    def accepted(self) -> dict[str, int]:
        """Connections each listener received since the last call."""
        counts = {}
        for ip, s in self.listeners.items():
            n = 0
            while True:
                try:
                    c, _ = s.accept()
                except BlockingIOError:
                    break
                c.close()
                n += 1
            counts[ip] = n
        return counts


# Runs in a child: join the cgroup, enter the netns, connect N times, report what it saw.
CLIENT = r"""
import ctypes, json, os, socket, sys
from kernsplit.agent.lab.timescale import scaled
cgroup, netns, host, port, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
open(os.path.join(cgroup, "cgroup.procs"), "w").write(str(os.getpid()))
fd = os.open(netns, os.O_RDONLY)
assert ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) == 0
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
out = []
for _ in range(n):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(scaled(2))
    try:
        s.connect((host, port))
        peer = s.getpeername()[:2]
        out.append({"label": s.recv(64).decode(), "peer": [peer[0], peer[1]]})
    except OSError as e:
        out.append({"error": e.errno})
    finally:
        s.close()
print(json.dumps(out))
"""


@pytest.fixture
def lab(netns):
    """eBPF tests: a netns with addresses on lo, listeners that answer with their label, and a cgroup."""
    path = f"/var/run/netns/{netns}"
    subprocess.run(["ip", "-n", netns, "addr", "add", "10.1.0.1/32", "dev", "lo"], check=True)
    subprocess.run(["ip", "-n", netns, "addr", "add", "10.1.0.2/32", "dev", "lo"], check=True)
    subprocess.run(["ip", "-n", netns, "-6", "addr", "add", "fd00:5::1/128", "dev", "lo", "nodad"], check=True)
    subprocess.run(["ip", "-n", netns, "-6", "addr", "add", "fd00:5::2/128", "dev", "lo", "nodad"], check=True)
    cgroup = mounts.cgroup2() / unique_name("cg")   # wherever this host mounts cgroup v2
    cgroup.mkdir()
    bpffs = Path("/sys/fs/bpf") / unique_name("bf")
    stop = threading.Event()
    sockets = []

    def listen(ip, port, label):
        with entered(path):
            s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, port))
        s.listen(512)
        s.settimeout(0.2)
        sockets.append(s)

        def serve():
            while not stop.is_set():
                try:
                    c, _ = s.accept()
                except (socket.timeout, OSError):
                    continue
                c.sendall(label.encode())
                c.close()
        threading.Thread(target=serve, daemon=True).start()

    def client(host, port, n):
        proc = subprocess.run([sys.executable, "-c", CLIENT, str(cgroup), path, host, str(port), str(n)],
                              capture_output=True, text=True, timeout=scaled(60))
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    class Lab:
        pass
    lab = Lab()
    lab.netns, lab.cgroup, lab.bpffs, lab.listen, lab.client = path, cgroup, bpffs, listen, client
    try:
        yield lab
    finally:
        stop.set()
        for s in sockets:
            s.close()
        from kernsplit.agent.dataplane.ebpf.links import remove
        from kernsplit.agent.dataplane.ebpf.pins import Pins
        remove(Pins(bpffs))
        cgroup.rmdir()


def labels(results):
    """Answers of the eBPF lab's client by listener label ("errno N" for a failed connect)."""
    out = {}
    for r in results:
        key = r.get("label", f"errno {r.get('error')}")
        out[key] = out.get(key, 0) + 1
    return out


def make(lab):
    from kernsplit.agent.dataplane.ebpf import EbpfDataplane
    return EbpfDataplane(cgroup=lab.cgroup, bpffs=lab.bpffs)


# --- checks -----------------------------------------------------------------------------------------

def assert_shares(counts: Mapping[str, int], weights: Mapping[str, int | Fraction], sigmas: float = 4.0) -> None:
    """Every weighted backend within `sigmas` binomial standard deviations of its share;
    weight 0 (or absent from `weights`) gets exactly zero."""
    n = sum(counts.values())
    total = sum(weights.values())
    problems = []
    for backend in sorted(set(counts) | set(weights)):
        got = counts.get(backend, 0)
        w = weights.get(backend, 0)
        if w == 0:
            if got != 0:
                problems.append(f"{backend}: weight 0 but received {got} of {n}")
            continue
        p = w / total
        sd = math.sqrt(n * p * (1 - p))
        if abs(got - n * p) > sigmas * sd:
            problems.append(f"{backend}: {got} of {n} ({got / n:.2%}), expected {float(p):.2%} "
                            f"+- {sigmas * sd / n:.2%}")
    assert not problems, "; ".join(problems)


def assert_golden(relative: str, text: str) -> None:
    path = GOLDEN / relative
    if os.environ.get("KS_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}: run with KS_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{path} differs (KS_UPDATE_GOLDEN=1 rewrites it; review the diff)"


# --- eBPF -------------------------------------------------------------------------------------------

def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, as a kubelet stops the agent; SIGKILL if it does not stop."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def program_ids(dp) -> dict[str, int]:
    """Kernel ids of the programs pinned by an EbpfDataplane: equal ids mean nothing was reloaded."""
    from kernsplit.agent.dataplane.ebpf import links, pins
    return {name: links.prog_id(dp.pins.prog(name)) for name in pins.PROGRAMS
            if dp.pins.prog(name).exists()}


# --- the agent's iptables chains, through the one ownership core ---------------------------------

def agent_owned(family, saved):
    from kernsplit.agent.dataplane.iptables import names
    from kernsplit.agent.iptables.ownership import owned
    return owned(names.OWNERSHIP, family, saved)


def agent_diff(want, have):
    from kernsplit.agent.dataplane.iptables import names
    from kernsplit.agent.iptables.diff import diff
    return diff(want, have, names.OWNERSHIP.jumps)


def agent_render(changes, counts=None):
    from kernsplit.agent.dataplane.iptables import carry
    from kernsplit.agent.iptables.render import render
    return render(changes, carry.lookup(counts) if counts else None)


def render_full(ruleset, jumps):
    """The whole ruleset, as it would be applied to a namespace holding nothing of ours."""
    from kernsplit.agent.iptables.diff import diff
    from kernsplit.agent.iptables.render import render
    from kernsplit.agent.iptables.ruleset import Ruleset
    return render(diff(ruleset, Ruleset(ruleset.family, ()), jumps))


def agent_render_full(ruleset):
    from kernsplit.agent.dataplane.iptables import names
    return render_full(ruleset, names.OWNERSHIP.jumps)
