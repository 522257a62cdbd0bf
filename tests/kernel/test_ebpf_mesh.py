"""Mesh-aware splitting (--split-uid): with proxy-init's redirect in a pod namespace, the app's
connect to the ClusterIP reaches its proxy with the ClusterIP as SO_ORIGINAL_DST, and only the
proxy's (uid 2102) onward connect is split onto a backend. Real iptables (our own netns), real
cgroup, real BPF; the proxy is a child process running as uid 2102 in the cgroup."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import program_ids
from tests.fixtures import split_port
from tests.fixtures import lab, labels  # noqa: F401 - `lab` is a fixture
from kernsplit.agent.lab.timescale import scaled

pytestmark = [pytest.mark.kernel, pytest.mark.bpf]

PROXY_UID = 2102
PROXY_PORT = 4140
VIP = ("10.100.200.30", 80)

# The pod's transparent proxy: joins the cgroup and netns, listens on 4140, drops to uid 2102;
# per accepted connection: read SO_ORIGINAL_DST, connect there, answer the app with what it saw.
PROXY = r"""
import ctypes, json, os, socket, struct, sys
from kernsplit.agent.lab.timescale import scaled
import encodings.idna  # noqa: F401 - loaded while root: uid 2102 cannot read the interpreter's tree
cgroup, netns, uid, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
open(os.path.join(cgroup, "cgroup.procs"), "w").write(str(os.getpid()))
fd = os.open(netns, os.O_RDONLY)
assert ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) == 0
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 4140))
srv.listen(64)
os.setgroups([]); os.setgid(uid); os.setuid(uid)
print("ready", flush=True)
for _ in range(n):
    c, _ = srv.accept()
    raw = c.getsockopt(socket.SOL_IP, 80, 16)
    orig = [socket.inet_ntoa(raw[4:8]), struct.unpack_from("!H", raw, 2)[0]]
    seen = {"orig": orig, "uid": os.getuid()}
    try:
        up = socket.create_connection(tuple(orig), timeout=scaled(2))
        seen["label"] = up.recv(64).decode()
        seen["peer"] = list(up.getpeername())
        up.close()
    except OSError as e:
        seen["error"] = e.errno
    c.sendall(json.dumps(seen).encode())
    c.close()
"""

# The app: uid 0, in the same cgroup and netns; connects to the ClusterIP like any client.
APP = r"""
import ctypes, json, os, socket, sys
from kernsplit.agent.lab.timescale import scaled
cgroup, netns, host, port, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
open(os.path.join(cgroup, "cgroup.procs"), "w").write(str(os.getpid()))
fd = os.open(netns, os.O_RDONLY)
assert ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) == 0
out = []
for _ in range(n):
    s = socket.create_connection((host, port), timeout=scaled(5))
    peer = list(s.getpeername())
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    s.close()
    try:
        out.append({"app_peer": peer, **json.loads(data)})     # the proxy's report
    except ValueError:
        out.append({"app_peer": peer, "direct": data.decode()})  # a backend answered directly
print(json.dumps(out))
"""


@pytest.fixture
def pod(lab):
    """`lab` plus what a meshed pod has: a route for the service range out of a (dummy) veth,
    proxy-init's rules, and a way to run the proxy for N connections."""
    netns = lab.netns
    name = Path(netns).name
    subprocess.run(["ip", "-n", name, "link", "add", "ksva", "type", "veth", "peer", "name", "ksvb"], check=True)
    for dev in ("ksva", "ksvb"):
        subprocess.run(["ip", "-n", name, "link", "set", dev, "up"], check=True)
    subprocess.run(["ip", "-n", name, "addr", "add", "10.2.0.1/24", "dev", "ksva"], check=True)
    # Off-pod like a real ClusterIP (not via lo: proxy-init lets `-o lo` through untouched).
    subprocess.run(["ip", "-n", name, "route", "add", "10.100.200.0/24", "via", "10.2.0.2"], check=True)
    init = subprocess.run([str(Path(sys.executable).parent / "proxy-init"), "--netns", name, "--no-ipv6"],
                          capture_output=True, text=True)
    assert init.returncode == 0, init.stderr

    def through_proxy(n: int) -> list[dict]:
        proxy = subprocess.Popen([sys.executable, "-c", PROXY, str(lab.cgroup), netns, str(PROXY_UID), str(n)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proxy.stdout.readline().strip() == "ready", proxy.stderr.read()
            app = subprocess.run([sys.executable, "-c", APP, str(lab.cgroup), netns, *map(str, VIP), str(n)],
                                 capture_output=True, text=True, timeout=scaled(60))
        finally:
            proxy.kill()
            proxy.wait()
        assert app.returncode == 0, f"app: {app.stderr}\nproxy: {proxy.stderr.read()}"
        return json.loads(app.stdout)
    lab.through_proxy = through_proxy
    return lab


def two_versions(lab):
    lab.listen("10.1.0.1", 8080, "v1")
    lab.listen("10.1.0.2", 8080, "v2")
    return [split_port({"my-app-v1": 1, "my-app-v2": 1}, {"my-app-v1": ["10.1.0.1"], "my-app-v2": ["10.1.0.2"]},
                       ip=VIP[0], port=VIP[1])]


def test_with_split_uid_the_proxy_sees_the_cluster_ip_and_its_connect_is_split(pod):
    from kernsplit.agent.dataplane.ebpf import EbpfDataplane
    desired = two_versions(pod)
    dp = EbpfDataplane(cgroup=pod.cgroup, bpffs=pod.bpffs, split_uids=[PROXY_UID])
    dp.sync(desired)
    dp.close()
    seen = pod.through_proxy(40)
    assert all(s["orig"] == list(VIP) for s in seen), seen           # service identity kept
    assert all(s["uid"] == PROXY_UID for s in seen)
    assert labels(seen).keys() == {"v1", "v2"}                       # the proxy's connect was split
    assert all(s["peer"] == list(VIP) for s in seen)                  # getpeername on the proxy socket
    assert all(s["app_peer"] == list(VIP) for s in seen)              # the app saw the service too
    [obs] = EbpfDataplane(bpffs=pod.bpffs).observe()                  # show: counted as before
    assert sum(b.connections for b in obs.backends) == 40


def test_without_split_uid_the_app_connect_is_rewritten_before_the_proxy(pod):
    """The default (every connect split), and switching between the two is a map update."""
    from kernsplit.agent.dataplane.ebpf import EbpfDataplane
    desired = two_versions(pod)
    meshed = EbpfDataplane(cgroup=pod.cgroup, bpffs=pod.bpffs, split_uids=[PROXY_UID])
    meshed.sync(desired)
    ids = program_ids(meshed)
    meshed.close()
    plain = EbpfDataplane(cgroup=pod.cgroup, bpffs=pod.bpffs)        # restarted without the flag
    plain.sync(desired)
    assert plain.compile_seconds is None and program_ids(plain) == ids
    plain.close()
    seen = pod.through_proxy(20)
    # The app's connect was rewritten to a pod address before proxy-init's rules saw it: the
    # proxy never learns the service (here the pods are local, so it bypasses the proxy
    # entirely; with remote pods the proxy would see the pod as original destination).
    assert all("orig" not in s for s in seen), seen
    assert {s["direct"] for s in seen} <= {"v1", "v2"}
    assert all(s["app_peer"] == list(VIP) for s in seen)


def test_split_uid_leaves_other_uids_connects_alone(lab):
    """Without a proxy redirect, a connect by a uid that is not listed is not rewritten."""
    from kernsplit.agent.dataplane.ebpf import EbpfDataplane
    desired = two_versions(lab)
    dp = EbpfDataplane(cgroup=lab.cgroup, bpffs=lab.bpffs, split_uids=[PROXY_UID, 2103])
    dp.sync(desired)
    dp.close()
    # Uid 0 dials 10.100.200.30 itself: nothing routes there in this netns.
    assert labels(lab.client(*VIP, 3)) == {"errno 101": 3}          # ENETUNREACH: not rewritten
