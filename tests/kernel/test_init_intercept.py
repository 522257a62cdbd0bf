"""proxy-init intercepts real traffic: a throwaway "pod" namespace with a veth pair into a throwaway
"outside" namespace, real listeners on both sides, in every mode: iptables (both backends) and eBPF
(the node's programs loaded by the agent's dataplane, attached to a cgroup of the test's own that
this test process joins for the module).

Each listener answers with its tag and, for the stand-in proxies, the SO_ORIGINAL_DST it read, so a
test sees exactly where a connection landed and what destination the proxy would forward to.
"""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from kernsplit.agent import mounts
from kernsplit.agent.lab.timescale import scaled
from kernsplit.agent.netns import entered
from kernsplit.init.cli import main
from conftest import IS_ROOT, unique_name  # tests/conftest.py (pytest puts tests/ on sys.path)

pytestmark = pytest.mark.kernel
MODES = ["legacy", "nft", "ebpf"]
SO_ORIGINAL_DST = 80        # IPv4 and IPv6 (IP6T_SO_ORIGINAL_DST) share the number


@contextmanager
def joined_cgroup(cgroup: Path):
    """This test process (and so its children) inside `cgroup`, then back where it was."""
    home = Path(open("/proc/self/cgroup").read().split("0::", 1)[1].splitlines()[0])
    (cgroup / "cgroup.procs").write_text(str(os.getpid()))
    try:
        yield
    finally:
        (mounts.cgroup2() / home.relative_to("/") / "cgroup.procs").write_text(str(os.getpid()))


@contextmanager
def node_programs():
    """What `kernsplit agent --dataplane ebpf --interception` does on a node, on a cgroup and a
    pin directory of our own; this process joins the cgroup. Yields the pin directory."""
    from kernsplit.agent.dataplane.ebpf.dataplane import EbpfDataplane
    cgroup = mounts.cgroup2() / unique_name("cg")
    cgroup.mkdir()
    dp = EbpfDataplane(cgroup=cgroup, bpffs=Path("/sys/fs/bpf") / unique_name("bf"), interception=True)
    try:
        dp.sync([])
        with joined_cgroup(cgroup):
            yield dp.pins.root
    finally:
        dp.cleanup()
        cgroup.rmdir()


@pytest.fixture(scope="module")
def ebpf_node():
    if not IS_ROOT:
        pytest.skip("needs root")
    with node_programs() as pins:
        yield pins


@pytest.fixture(params=MODES)
def mode(request) -> list[str]:
    """proxy-init's flags for one interception mode."""
    if request.param == "ebpf":
        return ["--mode", "ebpf", "--bpffs", str(request.getfixturevalue("ebpf_node"))]
    return ["--iptables-mode", request.param]


@dataclass(frozen=True)
class Lab:
    pod: str
    out: str
    pod_ip: str = "10.211.0.2"
    out_ip: str = "10.211.0.1"
    out_ip2: str = "10.211.1.1"          # second outside subnet, for --subnets-to-ignore
    pod_ip6: str = "fd00:211::2"
    out_ip6: str = "fd00:211::1"
    out_ip6_2: str = "fd00:212::1"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def lab(root_required):
    lab = Lab(unique_name("po"), unique_name("ou"))
    vpod, vout = unique_name("vp"), unique_name("vo")
    _ip("netns", "add", lab.pod)
    try:
        _ip("netns", "add", lab.out)
        _ip("-n", lab.pod, "link", "add", vpod, "type", "veth", "peer", "name", vout, "netns", lab.out)
        for ns, dev, addrs in ((lab.pod, vpod, [f"{lab.pod_ip}/24", f"{lab.pod_ip6}/64"]),
                               (lab.out, vout, [f"{lab.out_ip}/24", f"{lab.out_ip2}/24",
                                                f"{lab.out_ip6}/64", f"{lab.out_ip6_2}/64"])):
            for a in addrs:
                _ip("-n", ns, "addr", "add", a, "dev", dev, *(["nodad"] if ":" in a else []))
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", lab.pod, "route", "add", "default", "via", lab.out_ip)
        _ip("-n", lab.pod, "-6", "route", "add", "default", "via", lab.out_ip6)
        yield lab
    finally:
        subprocess.run(["ip", "netns", "del", lab.out], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", lab.pod], check=False, capture_output=True)


def _original_dst(conn: socket.socket) -> str:
    if conn.family == socket.AF_INET6:
        raw = conn.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        port, = struct.unpack_from("!H", raw, 2)
        return f"[{socket.inet_ntop(socket.AF_INET6, raw[8:24])}]:{port}"
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, = struct.unpack_from("!H", raw, 2)
    return f"{socket.inet_ntoa(raw[4:8])}:{port}"


@contextmanager
def listener(netns: str, port: int, tag: str, family=socket.AF_INET, proxy: bool = False):
    """A TCP server in `netns` answering "<tag>[ <original dst>]" to every connection."""
    with entered(netns):
        srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    srv.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    srv.listen(16)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:          # shutdown() below wakes accept(): we are done
                return
            with conn:
                reply = f"{tag} {_original_dst(conn)}" if proxy else tag
                conn.sendall(reply.encode() + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        srv.shutdown(socket.SHUT_RDWR)
        thread.join()
        srv.close()


def connect(netns: str, host: str, port: int, source: str | None = None) -> str:
    """Connect from inside `netns` and return what the server answered ("" when nothing did)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with entered(netns):
        s = socket.socket(family, socket.SOCK_STREAM)
    with s:
        s.settimeout(scaled(2))
        if source:
            s.bind((source, 0))
        s.connect((host, port))
        return s.makefile().readline().strip()


_AS_UID = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
print(s.makefile().readline().strip())
"""


def connect_as(uid: int, netns: str, host: str, port: int) -> str:
    """Connect from a child process running as `uid`/`gid` (no passwd entry needed)."""
    proc = subprocess.run(["nsenter", f"--net=/var/run/netns/{netns}", "setpriv", f"--reuid={uid}",
                           f"--regid={uid}", "--clear-groups", "/usr/bin/python3", "-c", _AS_UID, host, str(port),
                           str(scaled(2))],
                          capture_output=True, text=True, timeout=scaled(10))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def proxy_init(*args: str) -> None:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.stderr}"


@contextmanager
def servers(lab: Lab, v6: bool = False):
    """Outside: real peers on 8080/4567. Pod: stand-in proxies on 4140/4143, the app on 8080/4191."""
    fams = [socket.AF_INET, socket.AF_INET6] if v6 else [socket.AF_INET]
    with ExitStack() as stack:
        for fam in fams:
            stack.enter_context(listener(lab.out, 8080, "outside", fam))
            stack.enter_context(listener(lab.out, 4567, "outside", fam))
            stack.enter_context(listener(lab.pod, 4140, "proxy-out", fam, proxy=True))
            stack.enter_context(listener(lab.pod, 4143, "proxy-in", fam, proxy=True))
            stack.enter_context(listener(lab.pod, 8080, "app", fam))
            stack.enter_context(listener(lab.pod, 4191, "app", fam))
        yield


def test_outbound_is_redirected_except_proxy_uid_ignored_ports_subnets_and_loopback(lab, mode):
    proxy_init("--netns", lab.pod, *mode, "--no-ipv6",
               "--outbound-ports-to-ignore", "4567-4568", "--subnets-to-ignore", "10.211.1.0/24")
    with servers(lab):
        assert connect(lab.pod, lab.out_ip, 8080) == f"proxy-out {lab.out_ip}:8080"
        assert connect_as(2102, lab.pod, lab.out_ip, 8080) == "outside"
        assert connect_as(2103, lab.pod, lab.out_ip, 8080) == f"proxy-out {lab.out_ip}:8080"
        assert connect(lab.pod, lab.out_ip, 4567) == "outside"                  # ignored port
        assert connect(lab.pod, lab.out_ip2, 8080) == "outside"                 # ignored subnet
        assert connect(lab.pod, "127.0.0.1", 8080) == "app"                     # -o lo: linkerd semantics
        assert connect(lab.pod, lab.pod_ip, 8080) == "app"


def test_proxy_gid_bypasses(lab, mode):
    proxy_init("--netns", lab.pod, *mode, "--no-ipv6", "-u", "-1", "-g", "2105")
    with servers(lab):
        assert connect_as(2105, lab.pod, lab.out_ip, 8080) == "outside"
        assert connect_as(2102, lab.pod, lab.out_ip, 8080) == f"proxy-out {lab.out_ip}:8080"


def test_inbound_reaches_4143_except_ignored_ports_and_subnets(lab, mode):
    proxy_init("--netns", lab.pod, *mode, "--no-ipv6",
               "--inbound-ports-to-ignore", "4190,4191", "--subnets-to-ignore", "10.211.1.0/24")
    with servers(lab):
        assert connect(lab.out, lab.pod_ip, 8080) == f"proxy-in {lab.pod_ip}:8080"
        assert connect(lab.out, lab.pod_ip, 4191) == "app"                      # ignored port
        assert connect(lab.out, lab.pod_ip, 8080, source=lab.out_ip2) == "app"  # ignored source subnet


def test_ports_to_redirect_limits_inbound(lab, mode):
    proxy_init("--netns", lab.pod, *mode, "--no-ipv6", "-r", "8080")
    with servers(lab):
        assert connect(lab.out, lab.pod_ip, 8080) == f"proxy-in {lab.pod_ip}:8080"
        assert connect(lab.out, lab.pod_ip, 4191) == "app"


def test_ipv6_interception_auto_enabled(lab, mode):
    # no --ipv6: the pod has IPv6 addresses besides ::1, so the IPv6 pass is on by default
    proxy_init("--netns", lab.pod, *mode,
               "--subnets-to-ignore", "10.211.1.0/24,fd00:212::/64", "--inbound-ports-to-ignore", "4191")
    with servers(lab, v6=True):
        assert connect(lab.pod, lab.out_ip6, 8080) == f"proxy-out [{lab.out_ip6}]:8080"
        assert connect(lab.pod, lab.out_ip6_2, 8080) == "outside"               # ignored v6 subnet
        assert connect(lab.out, lab.pod_ip6, 8080) == f"proxy-in [{lab.pod_ip6}]:8080"
        assert connect(lab.out, lab.pod_ip6, 4191) == "app"
        assert connect_as(2102, lab.pod, lab.out_ip6, 8080) == "outside"
        assert connect(lab.pod, lab.out_ip, 8080) == f"proxy-out {lab.out_ip}:8080"   # v4 still on


def test_validate_passes_with_rules_and_fails_without(lab, mode):
    base = ["--netns", lab.pod, *mode]
    ok = CliRunner().invoke(main, [*base, "--validate"])
    assert ok.exit_code == 0, ok.stderr
    assert "validated: a connection to 192.0.2.1:15002 was redirected to port 4140" in ok.stderr
    assert CliRunner().invoke(main, [*base, "--validate-only"]).exit_code == 0

    assert CliRunner().invoke(main, [*base, "--cleanup"]).exit_code == 0
    bad = CliRunner().invoke(main, [*base, "--validate-only"])
    assert bad.exit_code == 1
    assert "interception not working: connecting to 192.0.2.1:15002 did not reach" in bad.stderr


def test_validate_refuses_when_the_proxy_port_is_taken(lab, mode):
    proxy_init("--netns", lab.pod, *mode)
    with listener(lab.pod, 4140, "real-proxy"):
        bad = CliRunner().invoke(main, ["--netns", lab.pod, *mode, "--validate-only"])
    assert bad.exit_code == 1
    assert "port 4140 is already in use" in bad.stderr
