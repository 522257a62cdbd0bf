"""Executor: build and remove a lab's namespaces, bridge, veths, addresses, routes and sysctls.

Everything is created inside lab namespaces (the node-side veths live in the node namespace,
never in the root one), so deleting the lab namespaces deletes every interface and rule too.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from pyroute2 import IPRoute, netns as pyroute_netns

from kernsplit.agent.lab.plan import BRIDGE_IP, POD_NET_PREFIXLEN, SERVICE_CIDR, LabPlan, PodPlan
from kernsplit.agent.netns import NETNS_RUN_DIR, entered


@contextlib.contextmanager
def _netlink(target: str) -> Iterator[IPRoute]:
    """A netlink socket opened inside the target namespace (it stays bound to it). Unlike
    pyroute2's NetNS this needs no helper process: nothing forks while the lab is built."""
    with entered(target):
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def _sysctls(target: str, values: dict[str, str]) -> None:
    """Write /proc/sys/net sysctls of one namespace: they are per-netns, and the calling thread
    is inside the target, so the root namespace's values are never touched."""
    with entered(target):
        for key, value in values.items():
            path = Path("/proc/sys") / key.replace(".", "/")
            if path.exists():
                path.write_text(value)


def _build_node(plan: LabPlan) -> None:
    pyroute_netns.create(plan.node_netns)
    with _netlink(plan.node_netns) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        ns.link("add", ifname=plan.bridge, kind="bridge")
        br = ns.link_lookup(ifname=plan.bridge)[0]
        ns.addr("add", index=br, address=BRIDGE_IP, prefixlen=POD_NET_PREFIXLEN)
        ns.link("set", index=br, state="up")
        # A real node forwards service traffic it did not DNAT (default route); ours routes
        # the service range onto the bridge instead, so such packets pass the FORWARD chain
        # (where a refusing split rejects them) and still never leave the lab.
        ns.route("add", dst=SERVICE_CIDR, oif=br, scope="link")
    _sysctls(plan.node_netns, {
        "net.ipv4.ip_forward": "1",
        # pods reach each other through the node on the same bridge: a redirect would teach
        # them to bypass the node (and its conntrack), breaking DNAT replies.
        "net.ipv4.conf.all.send_redirects": "0",
        "net.ipv4.conf.default.send_redirects": "0",
        f"net.ipv4.conf.{plan.bridge}.send_redirects": "0",
        # traffic is routed, never bridged between pods; keep bridge-netfilter out of it.
        "net.bridge.bridge-nf-call-iptables": "0",
        "net.bridge.bridge-nf-call-ip6tables": "0",
    })


def _build_pod(plan: LabPlan, pod: PodPlan) -> None:
    pyroute_netns.create(pod.netns)
    with _netlink(plan.node_netns) as ns:
        ns.link("add", ifname=pod.host_veth, kind="veth",
                peer={"ifname": "eth0", "net_ns_fd": str(NETNS_RUN_DIR / pod.netns)})
        idx = ns.link_lookup(ifname=pod.host_veth)[0]
        br = ns.link_lookup(ifname=plan.bridge)[0]
        ns.link("set", index=idx, master=br)
        ns.link("set", index=idx, state="up")
    with _netlink(pod.netns) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
        eth = ns.link_lookup(ifname="eth0")[0]
        ns.addr("add", index=eth, address=pod.ip, prefixlen=32)
        ns.link("set", index=eth, state="up")
        ns.route("add", dst=f"{BRIDGE_IP}/32", oif=eth, scope="link")
        ns.route("add", dst="0.0.0.0/0", gateway=BRIDGE_IP, oif=eth)
    _sysctls(pod.netns, {
        # thousands of short connections per test to the same service address
        "net.ipv4.ip_local_port_range": "1024 65000",
        "net.ipv4.tcp_tw_reuse": "1",
        "net.core.somaxconn": "4096",
    })


def build(plan: LabPlan) -> None:
    """Create the whole topology. Raises on failure; the caller tears down by prefix."""
    _build_node(plan)
    for pod in plan.pods:
        _build_pod(plan, pod)


def lab_netns(prefix: str) -> list[str]:
    """Every namespace of a lab, found by name prefix (works after a crash, without state)."""
    if not NETNS_RUN_DIR.is_dir():
        return []
    return sorted(n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(f"{prefix}-"))


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(NETNS_RUN_DIR / name).st_ino
    except OSError:
        return None


def remove_netns(names: list[str]) -> list[str]:
    """Remove namespaces; returns those that could not be removed (with the reason)."""
    failed = []
    for name in names:
        try:
            pyroute_netns.remove(name)
        except OSError as exc:
            failed.append(f"netns {name}: {exc}")
    return failed
