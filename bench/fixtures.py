"""Throwaway kernel objects and synthetic configs for benchmarks. Everything is created with a
unique `ksbench` name and removed on exit, even when the benchmark fails."""
from __future__ import annotations

import contextlib
import re
import subprocess
import uuid
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

from kernsplit.agent import mounts
from kernsplit.agent.model.resolved import BackendShare, Endpoint, SplitPort, WeightedEndpoint

# Seconds after an agent's first sync before its RSS is read: what it keeps, not its work.
SETTLE = 2.0

BACKEND_IP = "10.1.0.1"      # lives on the bench netns' loopback; every split points at it


def split_port(i: int, v2: Fraction = Fraction(1, 10), backend_ip: str | None = None) -> SplitPort:
    """Split port number i: the seed scenario (v1 90 %, v2 10 %) on its own ClusterIP, with endpoints
    on their own pod IPs (as at scale: per-endpoint state like hairpin rules is exercised), or all
    on `backend_ip` (to make real connections)."""
    vip = f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}"
    shares = {"app-v1": 1 - v2, "app-v2": v2}
    eps = tuple(WeightedEndpoint(b, Endpoint(backend_ip or f"10.{200 + j}.{i // 256 % 256}.{i % 256}", 8080 + j), s)
                for j, (b, s) in enumerate(shares.items()) if s)
    backends = tuple(BackendShare(b, int(s * 1000), s, True) for b, s in shares.items())
    return SplitPort("bench", f"app{i}", f"app{i}-split", "TrafficSplit", vip, 80, "http", "TCP", eps, backends)


def split_ports(n: int) -> list[SplitPort]:
    return [split_port(i) for i in range(n)]


def memory(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM (peak) of a process, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return tuple(int(re.search(rf"{k}:\s+(\d+) kB", status).group(1)) / 1024 for k in ("VmRSS", "VmHWM"))


def _tag() -> str:
    return "ksbench" + uuid.uuid4().hex[:6]


@contextlib.contextmanager
def netns() -> Iterator[str]:
    """A fresh netns with loopback up and BACKEND_IP on it."""
    name = _tag()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", name, "addr", "add", f"{BACKEND_IP}/32", "dev", "lo"], check=True)
        # ClusterIPs need a route for connect() to reach nat OUTPUT (where the iptables dataplane
        # DNATs); the eBPF hook rewrites before routing. Loopback keeps everything in this netns.
        subprocess.run(["ip", "-n", name, "route", "add", "default", "dev", "lo"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def cgroup2_mount() -> Path:
    found = mounts.find("cgroup2")
    if found is None:
        raise SystemExit("no cgroup2 mount: the eBPF benchmarks need cgroup v2")
    return found


@contextlib.contextmanager
def cgroup() -> Iterator[Path]:
    """A child cgroup of our own (never the root cgroup)."""
    path = cgroup2_mount() / _tag()
    path.mkdir()
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.rmdir()


@contextlib.contextmanager
def dataplane(name: str, ns: str) -> Iterator[object]:
    """A dataplane aimed at bench-owned targets only; everything of ours removed afterwards.
    `name` is ebpf, iptables (backend chosen as the agent would: nft in a fresh namespace), or
    iptables-legacy / iptables-nft."""
    from kernsplit.agent.dataplane import make_dataplane
    with contextlib.ExitStack() as stack:
        if name == "ebpf":
            cg = stack.enter_context(cgroup())
            dp = make_dataplane("ebpf", cgroup=str(cg), bpffs=f"/sys/fs/bpf/{cg.name}")
        else:
            dp = make_dataplane("iptables", netns=ns, mode=name.partition("-")[2] or "auto")
        try:
            yield dp
        finally:
            dp.cleanup()
