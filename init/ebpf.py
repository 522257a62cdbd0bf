"""proxy-init --mode ebpf, the executor: register the pod with the node's interception programs.

The node agent (`kernsplit agent --dataplane ebpf --interception`) loads, pins and attaches the
programs; here we only (1) write the pod's entry, keyed by its network-namespace cookie, into the
pinned `ks_pods` map and (2) attach the pinned tc program to the ingress of the pod's interfaces
(inbound steering), from inside the pod's namespace. No NAT rule is written in the pod.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute

from kernsplit.agent.dataplane.ebpf import bpfsys
from kernsplit.agent.dataplane.ebpf.pins import INTERCEPT_PROGRAMS, Pins, TC_PROGRAM
from kernsplit.agent.dataplane.ebpf.pods import PodMaps, PodSettings, describe, netns_cookie
from kernsplit.agent.netns import entered
from kernsplit.init.config import InitConfig
from kernsplit.init.pod_entry import pod_settings

DEFAULT_BPFFS = Path("/sys/fs/bpf/kernsplit")
TC_PARENT_INGRESS = "ffff:fff2"            # clsact's ingress hook
TC_PRIO = 0x4b53                           # "KS": our filter's place among others on the hook
IFF_LOOPBACK = 0x8


class NotLoadedError(RuntimeError):
    """The node's interception programs are not there: nothing can be registered."""


@dataclass(frozen=True)
class Registration:
    cookie: int
    settings: PodSettings
    interfaces: tuple[str, ...]


def node_ready(pins: Pins) -> None:
    """Raise NotLoadedError unless the node agent has loaded and attached the programs."""
    missing = [p for p in (pins.map("ks_pods"), pins.map("ks_pod_counters"), pins.prog(TC_PROGRAM))
               if not p.exists()]
    if missing or not pins.intercepting():
        what = missing[0] if missing else pins.link(next(iter(INTERCEPT_PROGRAMS)))
        raise NotLoadedError(
            f"the node's eBPF interception programs are not loaded ({what} is missing): run the node "
            "agent with `kernsplit agent --dataplane ebpf --interception` (same --bpffs), or use "
            "--fallback iptables")


def _label(cfg: InitConfig) -> str:
    # In a pod (no --netns) the UTS namespace is the pod's too: its hostname is the pod's name.
    return cfg.netns or socket.gethostname()


def _netns_facts(netns) -> tuple[list[str], list[tuple[int, str]]]:
    """(addresses, [(ifindex, name)] of the interfaces other than loopback) in the namespace."""
    with entered(netns):
        ipr = IPRoute()
    with ipr:
        addrs = [m.get("IFA_ADDRESS") for m in ipr.get_addr()]
        links = [(link["index"], link.get("ifname")) for link in ipr.get_links()
                 if not link["flags"] & IFF_LOOPBACK]
    return [a for a in addrs if a], links


def planned(cfg: InitConfig, ipv6: bool) -> Registration:
    """What would be registered, read from the namespace; changes nothing (--simulate)."""
    addrs, links = _netns_facts(cfg.netns)
    return Registration(netns_cookie(cfg.netns), pod_settings(cfg, _label(cfg), ipv6, addrs),
                        tuple(name for _i, name in links))


def register(cfg: InitConfig, ipv6: bool, pins: Pins, log: logging.Logger) -> Registration:
    node_ready(pins)
    reg = planned(cfg, ipv6)
    with PodMaps(pins) as maps:
        changed = maps.register(reg.cookie, reg.settings)
    log.info("pod %s registered for eBPF interception (netns cookie %d): %s%s", reg.settings.netns, reg.cookie,
             describe(reg.settings), "" if changed else " (already registered, unchanged)")
    _attach_ingress(cfg.netns, pins, log)
    return reg


def unregister(cfg: InitConfig, pins: Pins, log: logging.Logger) -> None:
    """Remove the pod's entry and our tc filters; only ours. Works when the node's programs are
    gone already (then there is no entry to remove)."""
    cookie = netns_cookie(cfg.netns)
    if pins.map("ks_pods").exists():
        with PodMaps(pins) as maps:
            removed = maps.unregister(cookie)
        log.info("pod entry %s (netns cookie %d)", "removed" if removed else "was not registered", cookie)
    _detach_ingress(cfg.netns, log)


def _ours(flt) -> bool:
    opts = flt.get("TCA_OPTIONS")
    name = opts.get("TCA_BPF_NAME") if opts is not None else None
    return bool(name) and name.startswith("ks_ic_")


def _attach_ingress(netns, pins: Pins, log: logging.Logger) -> None:
    """clsact + our bpf filter (direct action) on the ingress of every interface but loopback."""
    prog_fd = bpfsys.obj_get(pins.prog(TC_PROGRAM))
    try:
        with entered(netns):
            ipr = IPRoute()
        with ipr:
            for index, name in [(link["index"], link.get("ifname")) for link in ipr.get_links()
                                if not link["flags"] & IFF_LOOPBACK]:
                if not any(q.get("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=index)):
                    ipr.tc("add", "clsact", index)
                ipr.tc("replace-filter", "bpf", index, ":1", fd=prog_fd, name=TC_PROGRAM,
                       parent=TC_PARENT_INGRESS, prio=TC_PRIO, classid=1, direct_action=True)
                log.info("inbound: %s ingress steered by %s", name, TC_PROGRAM)
    finally:
        os.close(prog_fd)


def _detach_ingress(netns, log: logging.Logger) -> None:
    with entered(netns):
        ipr = IPRoute()
    with ipr:
        for link in ipr.get_links():
            index = link["index"]
            filters = ipr.get_filters(index=index, parent=TC_PARENT_INGRESS)
            if not any(_ours(f) for f in filters):
                continue
            ipr.tc("del-filter", "bpf", index, ":1", parent=TC_PARENT_INGRESS, prio=TC_PRIO)
            log.info("inbound: our filter removed from %s", link.get("ifname"))
            if not [f for f in ipr.get_filters(index=index, parent=TC_PARENT_INGRESS) if f.get("TCA_OPTIONS")]:
                ipr.tc("del", "clsact", index)     # nothing else uses it
