"""Measurements of the eBPF dataplane (report, never assert): `python -m agent.dataplane.ebpf.measure`.

Needs root. Uses its own throwaway cgroup, netns and bpffs directory, removed at the end:
compile time, full sync of N splits, one weight change with N installed, connect() cost through
the hook vs straight to the backend.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from fractions import Fraction
from pathlib import Path

from agent.dataplane.ebpf import EbpfDataplane, loader
from agent.model.resolved import BackendShare, Endpoint, SplitPort, WeightedEndpoint
from agent.netns import entered

CONNECT_LOOP = r"""
import ctypes, os, socket, sys, time
cgroup, netns, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
open(os.path.join(cgroup, "cgroup.procs"), "w").write(str(os.getpid()))
fd = os.open(netns, os.O_RDONLY); ctypes.CDLL(None).setns(fd, 0x40000000)
res = {}
for label, host in (("direct", "10.1.0.1"), ("service", "10.100.0.1"), ("direct2", "10.1.0.1"), ("service2", "10.100.0.1")):
    t = time.perf_counter()
    for _ in range(n):
        s = socket.socket(); s.connect((host, 8080 if label.startswith("direct") else 80)); s.close()
    res[label] = (time.perf_counter() - t) / n * 1e6
print(res)
"""


def split(i: int, weights=(900, 100)) -> SplitPort:
    total = sum(weights)
    ip = f"10.{100 + i // 65536}.{i // 256 % 256}.{i % 256}"
    backends = tuple(BackendShare(f"svc-v{j}", w, Fraction(w, total), True) for j, w in enumerate(weights))
    eps = tuple(WeightedEndpoint(b.service, Endpoint("10.1.0.1", 8080 + j), b.share)
                for j, b in enumerate(backends) if b.weight)
    return SplitPort("default", f"svc{i}", f"split{i}", "TrafficSplit", ip, 80, None, "TCP", eps, backends)


def main(n: int = 10_000) -> None:
    tag = "ksm" + uuid.uuid4().hex[:6]
    cgroup = loader.cgroup2_root() / tag
    bpffs = Path("/sys/fs/bpf") / tag
    cgroup.mkdir()
    subprocess.run(["ip", "netns", "add", tag], check=True)
    try:
        subprocess.run(["ip", "-n", tag, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", tag, "addr", "add", "10.1.0.1/32", "dev", "lo"], check=True)
        dp = EbpfDataplane(cgroup=cgroup, bpffs=bpffs)
        desired = [split(i) for i in range(n)]
        t = time.perf_counter()
        dp.sync(desired[:1])
        print(f"first sync (compile+load+pin+attach): {time.perf_counter() - t:.3f} s "
              f"(BCC compile+load {dp.compile_seconds:.3f} s)")
        t = time.perf_counter()
        r = dp.sync(desired)
        print(f"full sync of {n} splits: {time.perf_counter() - t:.3f} s ({r})")
        t = time.perf_counter()
        r = dp.sync(desired, full=True)
        print(f"full resync (re-read kernel), nothing to do: {time.perf_counter() - t:.3f} s ({r})")
        changed = list(desired)
        changed[n // 2] = split(n // 2, (500, 500))
        t = time.perf_counter()
        r = dp.sync(changed)
        print(f"one weight change with {n} installed: sync() {1000 * (time.perf_counter() - t):.2f} ms ({r})")
        from agent.dataplane.ebpf import plan
        img = plan.image(split(n // 2, (100, 900)))
        p = plan.plan([img], {img.key: dp._known[img.key]})
        t = time.perf_counter()
        dp._maps.apply(p.ops)
        print(f"  of which map updates ({len(p.ops)} ops): {1000 * (time.perf_counter() - t):.3f} ms")
        dp.sync([])
        # connect() cost: one listener, the split points at it.
        with entered(f"/var/run/netns/{tag}"):
            lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("10.1.0.1", 8080))
        lst.listen(4096)
        one = SplitPort("default", "svc", "s", "TrafficSplit", "10.100.0.1", 80, None, "TCP",
                        (WeightedEndpoint("v1", Endpoint("10.1.0.1", 8080), Fraction(1)),),
                        (BackendShare("v1", 1, Fraction(1), True),))
        dp.sync([one])
        import threading
        stop = threading.Event()

        def drain():
            lst.settimeout(0.2)
            while not stop.is_set():
                try:
                    lst.accept()[0].close()
                except OSError:
                    pass
        threading.Thread(target=drain, daemon=True).start()
        out = subprocess.run([sys.executable, "-c", CONNECT_LOOP, str(cgroup), f"/var/run/netns/{tag}", "3000"],
                             capture_output=True, text=True)
        stop.set()
        lst.close()
        print(f"connect()+close() µs per call (same cgroup): {out.stdout.strip() or out.stderr[-500:]}")
        dp.cleanup()
    finally:
        loader.remove(loader.Pins(bpffs))
        subprocess.run(["ip", "netns", "del", tag], check=False)
        cgroup.rmdir()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
