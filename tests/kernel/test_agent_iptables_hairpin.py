"""Hairpin: an endpoint that connects to its own split service and is DNATed back to itself.

Topology: a node namespace (our rules) with a bridge; two pod namespaces on it, each with one
address and a default route via the node. The pod's SYN to the ClusterIP reaches the node, is
DNATed to the pod's own address and routed back; without masquerading the pod drops it (martian
source: its own address) and the connection hangs. Another pod's connection must keep its source
address (only true hairpin is masqueraded).
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess

import pytest

from kernsplit.agent.dataplane.iptables import IptablesDataplane
from kernsplit.agent.lab.timescale import scaled
from kernsplit.agent.netns import entered
from conftest import throwaway_netns, unique_name

from test_agent_iptables_dataplane import mode  # noqa: F401 (fixture)
from tests.fixtures import PORT, split_port

pytestmark = pytest.mark.kernel

NODE_IP = "10.1.0.254"
CLUSTER_IP = "10.100.200.30"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


@contextlib.contextmanager
def pods_on_bridge(node: str, *addresses: str):
    """One pod namespace per address, wired to a bridge in `node`; yields their names."""
    ip("-n", node, "link", "add", "br0", "type", "bridge")
    ip("-n", node, "addr", "add", f"{NODE_IP}/24", "dev", "br0")
    ip("-n", node, "link", "set", "br0", "up")
    # Routed through the node, as in the lab: no ICMP redirects (pods would bypass the node), and
    # no bridge-netfilter (it would treat the DNAT back to the same port as a bridged frame).
    # br_netfilter is a module on distribution kernels, loaded by nobody: when it is absent there is
    # no bridge-netfilter to turn off (and no sysctl for it).
    bridge_nf = ["net.bridge.bridge-nf-call-iptables=0"] if os.path.exists("/proc/sys/net/bridge") else []
    subprocess.run(["ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                    "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.br0.send_redirects=0",
                    *bridge_nf], check=True)
    with contextlib.ExitStack() as stack:
        pods = []
        for i, addr in enumerate(addresses):
            pod = stack.enter_context(throwaway_netns())
            host_end = unique_name("ve")
            ip("link", "add", host_end, "netns", node, "type", "veth", "peer", "name", "eth0", "netns", pod)
            ip("-n", node, "link", "set", host_end, "master", "br0", "up")
            # /32 and everything via the node, as the lab's pods (and most CNIs') are wired
            ip("-n", pod, "addr", "add", f"{addr}/32", "dev", "eth0")
            ip("-n", pod, "link", "set", "eth0", "up")
            ip("-n", pod, "route", "add", f"{NODE_IP}/32", "dev", "eth0", "scope", "link")
            ip("-n", pod, "route", "add", "default", "via", NODE_IP)
            pods.append(pod)
        yield pods


def _listen(pod: str, addr: str) -> socket.socket:
    with entered(pod):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, PORT))
        s.listen(256)
        s.settimeout(scaled(2))
        return s


def _connect_and_see_peer(pod: str, listener: socket.socket, n: int) -> list[str]:
    """n connections from `pod` to the ClusterIP; the client address the listener saw for each
    (a connection that does not complete within 2 s, scaled, fails the test)."""
    peers = []
    with entered(pod):
        for _ in range(n):
            with socket.create_connection((CLUSTER_IP, 80), timeout=scaled(2)):
                conn, peer = listener.accept()
                conn.close()
                peers.append(peer[0])
    return peers


def test_endpoint_connecting_to_its_own_service_lands_on_itself(netns, mode):
    me, other = "10.1.0.1", "10.1.0.2"
    with pods_on_bridge(netns, me, other) as (pod, client):
        listener = _listen(pod, me)
        try:
            IptablesDataplane(netns=netns, mode=mode).sync([split_port({"v1": 1}, {"v1": [me]}, ip=CLUSTER_IP)])
            # hairpin: masqueraded to the node's address, so the reply goes back through the node
            assert _connect_and_see_peer(pod, listener, 20) == [NODE_IP] * 20
            # any other client keeps its own address
            assert _connect_and_see_peer(client, listener, 5) == [other] * 5
        finally:
            listener.close()
