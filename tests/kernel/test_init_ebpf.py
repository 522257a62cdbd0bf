"""proxy-init --mode ebpf beyond the shared interception suite: only registered pods are intercepted,
each with its own settings; no NAT rule in the pod; a node without the programs is a clear error
(or, with --fallback iptables, the iptables mode); `show --pods` lists pods and counts; cleanup
removes exactly ours."""
from __future__ import annotations

import json
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from kernsplit.agent.cli import main as kernsplit
from kernsplit.init.cli import main
from conftest import unique_name
from test_init_intercept import _ip, connect, ebpf_node, lab, listener, proxy_init, servers  # noqa: F401

pytestmark = [pytest.mark.kernel, pytest.mark.bpf]
SAVES = ("iptables-legacy-save", "ip6tables-legacy-save", "iptables-nft-save", "ip6tables-nft-save")


@contextmanager
def second_pod(lab):
    """Another pod namespace wired to the same outside namespace (10.213.0.2)."""
    pod, vpod, vout = unique_name("p2"), unique_name("vp"), unique_name("vo")
    _ip("netns", "add", pod)
    try:
        _ip("-n", pod, "link", "add", vpod, "type", "veth", "peer", "name", vout, "netns", lab.out)
        _ip("-n", pod, "addr", "add", "10.213.0.2/24", "dev", vpod)
        _ip("-n", lab.out, "addr", "add", "10.213.0.1/24", "dev", vout)
        for ns, dev in ((pod, vpod), (lab.out, vout), (pod, "lo")):
            _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", pod, "route", "add", "default", "via", "10.213.0.1")
        yield pod
    finally:
        subprocess.run(["ip", "netns", "del", pod], check=False, capture_output=True)


def show_pods(pins) -> list[dict]:
    result = CliRunner().invoke(kernsplit, ["show", "--pods", "--bpffs", str(pins), "-o", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def saved_rules(netns: str) -> dict[str, str]:
    return {tool: subprocess.run(["nsenter", f"--net=/var/run/netns/{netns}", tool], capture_output=True,
                                 text=True, check=True).stdout for tool in SAVES}


def ingress_filters(netns: str) -> str:
    links = json.loads(subprocess.run(["ip", "-n", netns, "-j", "link", "show"], capture_output=True, text=True,
                                      check=True).stdout)
    return "".join(subprocess.run(["nsenter", f"--net=/var/run/netns/{netns}", "tc", "filter", "show", "dev",
                                   link["ifname"], "ingress"], capture_output=True, text=True).stdout
                   for link in links if link["ifname"] != "lo")


def test_only_registered_pods_are_intercepted_each_with_its_own_settings(lab, ebpf_node):
    ebpf = ["--mode", "ebpf", "--bpffs", str(ebpf_node), "--no-ipv6"]
    proxy_init("--netns", lab.pod, *ebpf)
    with second_pod(lab) as pod2, servers(lab), listener(pod2, 4140, "pod2-4140", proxy=True), \
            listener(pod2, 5140, "pod2-proxy", proxy=True):
        assert connect(pod2, lab.out_ip, 8080) == "outside"                    # not registered
        proxy_init("--netns", pod2, *ebpf, "-o", "5140", "--outbound-ports-to-ignore", "4567")
        assert connect(pod2, lab.out_ip, 8080) == f"pod2-proxy {lab.out_ip}:8080"
        assert connect(pod2, lab.out_ip, 4567) == "outside"                    # its own ignore list
        assert connect(lab.pod, lab.out_ip, 4567) == f"proxy-out {lab.out_ip}:4567"
        assert connect(lab.pod, lab.out_ip, 8080) == f"proxy-out {lab.out_ip}:8080"
        by_netns = {p["netns"]: p for p in show_pods(ebpf_node)}
    assert by_netns[pod2]["settings"]["outbound_port"] == 5140
    assert by_netns[pod2]["settings"]["outbound_ports_to_ignore"] == ["4567"]
    assert (by_netns[pod2]["outbound"], by_netns[lab.pod]["outbound"]) == (1, 2)


def test_no_nat_rule_in_the_pod_counters_and_cleanup(lab, ebpf_node):
    ebpf = ["--netns", lab.pod, "--mode", "ebpf", "--bpffs", str(ebpf_node), "--no-ipv6"]
    before = saved_rules(lab.pod)
    proxy_init(*ebpf)
    proxy_init(*ebpf)                                                          # a re-run changes nothing
    assert saved_rules(lab.pod) == before == dict.fromkeys(SAVES, "")
    assert "ks_ic_ingress" in ingress_filters(lab.pod)
    with servers(lab):
        assert connect(lab.pod, lab.out_ip, 8080) == f"proxy-out {lab.out_ip}:8080"
        assert connect(lab.out, lab.pod_ip, 8080) == f"proxy-in {lab.pod_ip}:8080"
        [pod] = [p for p in show_pods(ebpf_node) if p["netns"] == lab.pod]
        assert (pod["outbound"], pod["inbound"]) == (1, 1)
        proxy_init(*ebpf, "--cleanup")
        assert connect(lab.pod, lab.out_ip, 8080) == "outside"
        assert connect(lab.out, lab.pod_ip, 8080) == "app"
    assert lab.pod not in {p["netns"] for p in show_pods(ebpf_node)}
    assert ingress_filters(lab.pod) == ""


def test_a_node_without_programs_is_a_clear_error_or_the_iptables_fallback(lab):
    absent = ["--netns", lab.pod, "--mode", "ebpf", "--bpffs", str(Path("/sys/fs/bpf") / unique_name("bf"))]
    bad = CliRunner().invoke(main, absent)
    assert bad.exit_code == 1
    assert "the node's eBPF interception programs are not loaded" in bad.stderr
    assert "kernsplit agent --dataplane ebpf --interception" in bad.stderr
    assert saved_rules(lab.pod) == dict.fromkeys(SAVES, "")

    fallback = CliRunner().invoke(main, [*absent, "--fallback", "iptables", "--no-ipv6"])
    assert fallback.exit_code == 0, fallback.stderr
    assert "--fallback iptables: applying the iptables mode instead" in fallback.stderr
    with servers(lab):
        assert connect(lab.pod, lab.out_ip, 8080) == f"proxy-out {lab.out_ip}:8080"
        proxy_init(*absent, "--fallback", "iptables", "--cleanup")
        assert connect(lab.pod, lab.out_ip, 8080) == "outside"
    assert "KS-PROXY-INIT" not in "".join(saved_rules(lab.pod).values())


def test_simulate_prints_the_entry_and_changes_nothing(lab, ebpf_node):
    result = CliRunner().invoke(main, ["--netns", lab.pod, "--mode", "ebpf", "--bpffs", str(ebpf_node),
                                       "--simulate", "-o", "5140", "--inbound-ports-to-ignore", "4190-4191"])
    assert result.exit_code == 0, result.stderr
    assert "# ebpf: ks_pods entry for netns cookie" in result.stdout
    assert "inbound->4143  outbound->5140  uid 2102  gid -  ignore-in 4190-4191  ipv4+ipv6" in result.stdout
    assert f"own addresses (connects to them stay local): {lab.pod_ip}" in result.stdout
    assert lab.pod not in {p["netns"] for p in show_pods(ebpf_node)}
    assert ingress_filters(lab.pod) == ""
