"""What a split costs an application: connect()+close() to the service vs straight to the backend.

A child process joins the dataplane's target (the bench netns, and for eBPF the bench cgroup) and
times loops of connect()+close() to BACKEND_IP:8080 and to the split's ClusterIP:80, alternating,
so that noise hits both alike. Sockets close with RST (SO_LINGER 0) so that no TIME_WAIT piles up.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager

from kernsplit.agent.netns import entered

from fixtures import BACKEND_IP, split_port

CHILD = r"""
import ctypes, json, os, socket, struct, sys, time
cgroup, netns, vip, backend, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
if cgroup:
    open(os.path.join(cgroup, "cgroup.procs"), "w").write(str(os.getpid()))
fd = os.open(netns, os.O_RDONLY)
assert ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) == 0
# Close with RST: tens of thousands of connects to one backend would otherwise fill the ephemeral
# port range with TIME_WAIT sockets, and port search (not the split) would dominate the timing.
LINGER0 = struct.pack("ii", 1, 0)
times = {"direct": [], "service": []}
for rnd in range(6):
    for label, addr in (("direct", (backend, 8080)), ("service", (vip, 80))):
        t = time.perf_counter()
        for _ in range(n):
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
            s.connect(addr); s.close()
        times[label].append((time.perf_counter() - t) / n * 1e6)
print(json.dumps({k: sorted(v)[len(v) // 2] for k, v in times.items()}))
"""


@contextmanager
def _listener(ns: str):
    with entered(f"/var/run/netns/{ns}"):
        lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((BACKEND_IP, 8080))
    lst.listen(4096)
    lst.settimeout(0.2)
    stop = threading.Event()

    def drain():
        while not stop.is_set():
            try:
                lst.accept()[0].close()
            except OSError:
                pass
    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        lst.close()


def measure(dp, ns: str, cgroup: str = "", n: int = 2000) -> dict[str, float]:
    """Median µs per connect()+close(), direct and through the split (one endpoint, share 1)."""
    sp = split_port(1, v2=0, backend_ip=BACKEND_IP)
    dp.sync([sp], full=True)
    with _listener(ns):
        out = subprocess.run([sys.executable, "-c", CHILD, cgroup, f"/var/run/netns/{ns}", sp.cluster_ip,
                              BACKEND_IP, str(n)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)
