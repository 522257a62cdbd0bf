"""What transparent interception costs a request: app -> proxy -> backend, one small request per new
connection, with iptables interception (proxy-init's REDIRECT rules), eBPF interception (the node's
programs, proxy-init --mode ebpf) and no interception (the app dials the proxy itself).

Three pod namespaces, one per mode, each wired by a veth to one "outside" namespace that runs the
backend; each pod runs the same small proxy as uid 2102 (SO_ORIGINAL_DST in the intercepted modes,
a fixed upstream without interception). The app makes sequential requests; the modes take turns in
rounds so that noise on a shared machine hits them alike. Reported: requests per second (the median
of the rounds' rates: one stalled round does not decide it) and the p50/p99 latency per mode, and
each as a ratio to no interception.
"""
from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import fixtures

PROXY_UID = 2102
MODES = ("none", "iptables", "ebpf")
ROUNDS = 10

# The pod's proxy: joins cgroup and netns, listens on 4140, drops to the proxy uid, then forwards
# one request/response per connection to SO_ORIGINAL_DST (or a fixed upstream).
PROXY = r"""
import ctypes, os, socket, struct, sys
cgroup, netns, uid, upstream = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if cgroup:
    open(os.path.join(cgroup, "cgroup.procs"), "w").write(str(os.getpid()))
fd = os.open(netns, os.O_RDONLY)
assert ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) == 0
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 4140)); srv.listen(128)
os.setgroups([]); os.setgid(uid); os.setuid(uid)
LINGER0 = struct.pack("ii", 1, 0)
print("ready", flush=True)
while True:
    c, _ = srv.accept()
    if upstream:
        host, port = upstream.split(":"); dst = (host, int(port))
    else:
        raw = c.getsockopt(socket.SOL_IP, 80, 16)
        dst = (socket.inet_ntoa(raw[4:8]), struct.unpack_from("!H", raw, 2)[0])
    u = socket.socket(); u.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
    u.connect(dst); u.sendall(c.recv(256)); c.sendall(u.recv(256)); u.close(); c.close()
"""

BACKEND = r"""
import ctypes, os, socket, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
assert ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) == 0
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 8080)); srv.listen(128)
print("ready", flush=True)
while True:
    c, _ = srv.accept(); c.recv(256); c.sendall(b"ok\n"); c.close()
"""

APP = r"""
import ctypes, json, os, socket, struct, sys, time
cgroup, netns, host, port, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
if cgroup:
    open(os.path.join(cgroup, "cgroup.procs"), "w").write(str(os.getpid()))
fd = os.open(netns, os.O_RDONLY)
assert ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) == 0
LINGER0 = struct.pack("ii", 1, 0)
out = []
for _ in range(n):
    t = time.perf_counter()
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
    s.connect((host, port)); s.sendall(b"ping\n")
    assert s.recv(256) == b"ok\n"
    s.close()
    out.append(time.perf_counter() - t)
print(json.dumps(out))
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _started(argv: list[str], stack: contextlib.ExitStack) -> None:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    stack.callback(lambda: (proc.kill(), proc.wait()))
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"bench process did not start: {argv[:3]}")


@contextlib.contextmanager
def _topology(stack: contextlib.ExitStack) -> Iterator[tuple[str, dict[str, str]]]:
    """The outside namespace and one pod namespace per mode (pod i: 10.220.i.2, its peer .1)."""
    out = stack.enter_context(fixtures.netns())
    pods = {}
    for i, mode in enumerate(MODES):
        pod = stack.enter_context(fixtures.netns())
        _ip("-n", pod, "link", "add", f"ksb{i}p", "type", "veth", "peer", "name", f"ksb{i}o", "netns", out)
        _ip("-n", pod, "addr", "add", f"10.220.{i}.2/24", "dev", f"ksb{i}p")
        _ip("-n", out, "addr", "add", f"10.220.{i}.1/24", "dev", f"ksb{i}o")
        _ip("-n", pod, "link", "set", f"ksb{i}p", "up")
        _ip("-n", out, "link", "set", f"ksb{i}o", "up")
        _ip("-n", pod, "route", "replace", "default", "via", f"10.220.{i}.1")
        pods[mode] = pod
    yield out, pods


def _intercept(mode: str, pod: str, cgroup: Path, stack: contextlib.ExitStack) -> str:
    """Set the mode up in its pod; returns the cgroup its processes join ("" for none)."""
    proxy_init = str(Path(sys.executable).with_name("proxy-init"))
    if mode == "iptables":
        subprocess.run([proxy_init, "--netns", pod, "--no-ipv6"], check=True, capture_output=True)
        return ""
    if mode == "ebpf":
        from kernsplit.agent.dataplane.ebpf.dataplane import EbpfDataplane
        dp = EbpfDataplane(cgroup=cgroup, bpffs=Path("/sys/fs/bpf") / fixtures._tag(), interception=True)
        stack.callback(dp.cleanup)
        dp.sync([])
        subprocess.run([proxy_init, "--netns", pod, "--no-ipv6", "--mode", "ebpf", "--bpffs", str(dp.pins.root)],
                       check=True, capture_output=True)
        return str(cgroup)
    return ""


def _app(cgroup: str, pod: str, target: tuple[str, int], n: int) -> list[float]:
    out = subprocess.run([sys.executable, "-c", APP, cgroup, f"/var/run/netns/{pod}", target[0], str(target[1]),
                          str(n)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def _summary(rounds: list[list[float]]) -> dict[str, float]:
    q = statistics.quantiles([t for r in rounds for t in r], n=100)
    return {"rate": statistics.median(len(r) / sum(r) for r in rounds), "p50": q[49] * 1e6, "p99": q[98] * 1e6}


def measure(requests: int = 3000) -> dict[str, float]:
    with contextlib.ExitStack() as stack:
        cgroup = stack.enter_context(fixtures.cgroup())
        out, pods = stack.enter_context(_topology(stack))
        _started([sys.executable, "-c", BACKEND, f"/var/run/netns/{out}"], stack)
        cgroups, targets = {}, {}
        for i, mode in enumerate(MODES):
            cgroups[mode] = _intercept(mode, pods[mode], cgroup, stack)
            upstream = f"10.220.{i}.1:8080" if mode == "none" else ""
            _started([sys.executable, "-c", PROXY, cgroups[mode], f"/var/run/netns/{pods[mode]}", str(PROXY_UID),
                      upstream], stack)
            targets[mode] = ("127.0.0.1", 4140) if mode == "none" else (f"10.220.{i}.1", 8080)
        times: dict[str, list[list[float]]] = {m: [] for m in MODES}
        for _ in range(ROUNDS):
            for mode in MODES:
                times[mode].append(_app(cgroups[mode], pods[mode], targets[mode], requests // ROUNDS))
    stats = {m: _summary(t) for m, t in times.items()}
    result = {}
    for mode in MODES:
        label = "no interception (app dials the proxy)" if mode == "none" else f"{mode} interception"
        result[f"intercept: {label}: requests/s (/s)"] = stats[mode]["rate"]
        result[f"intercept: {label}: p50 (µs)"] = stats[mode]["p50"]
        result[f"intercept: {label}: p99 (µs)"] = stats[mode]["p99"]
        if mode != "none":
            for k in ("rate", "p50", "p99"):
                result[f"intercept: {mode} / none, {k} (x)"] = stats[mode][k] / stats["none"][k]
    return result


if __name__ == "__main__":
    for key, value in measure().items():
        print(f"{key:<70} {value:12.3f}")
