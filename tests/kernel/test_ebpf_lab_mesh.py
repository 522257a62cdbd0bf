"""In the lab on the eBPF dataplane (agent started with --split-uid 2102), the client app's
connection to the ClusterIP reaches the lab's transparent proxy with the ClusterIP as original
destination, like on the iptables dataplane. SO_ORIGINAL_DST is read from conntrack's original
tuple, so the client pod's conntrack table shows exactly what the proxy saw."""
from __future__ import annotations

import pytest

from kernsplit.agent.lab.lab import down, open_lab
from kernsplit.agent.lab.manifests import render_split
from kernsplit.agent.lab.observe import wait_applied
from kernsplit.agent.lab.plan import PROXY_OUT_PORT, new_prefix

pytestmark = [pytest.mark.kernel, pytest.mark.bpf]

VIP = ("10.100.200.30", 80)


def conntrack(netns: str) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    """(original destination, reply source) of every TCP entry in a namespace."""
    from pyroute2 import NFCTSocket
    sock = NFCTSocket(netns=netns)
    try:
        out = []
        for msg in sock.dump():
            orig, reply = msg.get_attr("CTA_TUPLE_ORIG"), msg.get_attr("CTA_TUPLE_REPLY")

            def ends(t, ip_attr, port_attr):
                return (t.get_attr("CTA_TUPLE_IP").get_attr(ip_attr),
                        t.get_attr("CTA_TUPLE_PROTO").get_attr(port_attr))
            out.append((ends(orig, "CTA_IP_V4_DST", "CTA_PROTO_DST_PORT"),
                        ends(reply, "CTA_IP_V4_SRC", "CTA_PROTO_SRC_PORT")))
        return out
    finally:
        sock.close()


@pytest.fixture
def lab(root_required):
    lab = open_lab(new_prefix(), "ebpf")
    try:
        lab.up(split=render_split([("my-app-v1", "500m"), ("my-app-v2", "500m")]))
        wait_applied(lab, {"my-app-v1": 500, "my-app-v2": 500})
        yield lab
    finally:
        assert down(lab.prefix) == []


def test_proxy_sees_the_cluster_ip_and_the_split_still_happens(lab):
    assert "--split-uid" in lab.agent_argv()
    report = lab.load(40)
    assert report["outcomes"] == {"ok": 40}
    assert set(report["versions"]) == {"v1", "v2"}            # split (by the proxy's connect)
    entries = conntrack(lab.plan.client.netns)
    to_proxy = [orig for orig, reply in entries if reply[1] == PROXY_OUT_PORT]
    assert len(to_proxy) >= 40
    assert set(to_proxy) == {VIP}, to_proxy                   # the proxy's SO_ORIGINAL_DST
