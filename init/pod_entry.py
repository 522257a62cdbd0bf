"""proxy-init --mode ebpf, the pure part: flags (InitConfig) + what the namespace holds -> the
pod's entry for the node's interception programs. Nothing here touches the kernel."""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from kernsplit.agent.dataplane.ebpf.pods import PodSettings
from kernsplit.init.config import InitConfig, PortRange


def _ports(ranges: Iterable[PortRange]) -> tuple[tuple[int, int], ...]:
    return tuple((r.first, r.last) for r in ranges)


def own_addresses(addresses: Iterable[str]) -> tuple:
    """The pod's addresses that a connect() can reach without leaving the pod, besides loopback
    (which the programs know): sorted, IPv4 first, loopback and duplicates left out."""
    found = {ipaddress.ip_address(a.split("%")[0]) for a in addresses}
    return tuple(sorted((a for a in found if not a.is_loopback), key=lambda a: (a.version, a)))


def pod_settings(cfg: InitConfig, netns_label: str, ipv6: bool, addresses: Iterable[str]) -> PodSettings:
    return PodSettings(
        netns=netns_label, inbound_port=cfg.incoming_proxy_port, outbound_port=cfg.outgoing_proxy_port,
        proxy_uid=cfg.proxy_uid, proxy_gid=cfg.proxy_gid, redirect=_ports(cfg.ports_to_redirect),
        inbound_ignore=_ports(cfg.inbound_ports_to_ignore), outbound_ignore=_ports(cfg.outbound_ports_to_ignore),
        subnets=cfg.subnets_to_ignore, addresses=own_addresses(addresses), ipv6=ipv6)
