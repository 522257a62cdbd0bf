"""`kernsplit show --pods`: the pods registered for eBPF interception, as the kernel holds them.

Read from the pinned ks_pods and ks_pod_counters maps of the node's install (never from a config),
so it works while the agent is stopped.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from kernsplit.agent.dataplane.ebpf.pods import RegisteredPod, describe

DEFAULT_BPFFS = Path("/sys/fs/bpf/kernsplit")


def registered(bpffs: str | None) -> list[RegisteredPod]:
    from kernsplit.agent.dataplane.ebpf.pins import MissingPins, Pins
    from kernsplit.agent.dataplane.ebpf.pods import PodMaps
    pins = Pins(Path(bpffs) if bpffs else DEFAULT_BPFFS)
    if not pins.map("ks_pods").exists():
        raise click.ClickException(f"no eBPF interception install under {pins.root} "
                                   "(kernsplit agent --dataplane ebpf --interception)")
    missing = [pins.map(m) for m in ("ks_pod_addrs", "ks_pod_counters") if not pins.map(m).exists()]
    if missing:
        raise click.ClickException(str(MissingPins(pins, missing)))
    with PodMaps(pins) as maps:
        return maps.registered()


def as_json(pod: RegisteredPod) -> dict:
    s = pod.settings
    ranges = lambda rs: [f"{a}" if a == b else f"{a}-{b}" for a, b in rs]  # noqa: E731
    return {"netns": s.netns, "cookie": pod.cookie, "outbound": pod.outbound, "inbound": pod.inbound,
            "settings": {"inbound_port": s.inbound_port, "outbound_port": s.outbound_port,
                         "proxy_uid": s.proxy_uid, "proxy_gid": s.proxy_gid, "ports_to_redirect": ranges(s.redirect),
                         "inbound_ports_to_ignore": ranges(s.inbound_ignore),
                         "outbound_ports_to_ignore": ranges(s.outbound_ignore),
                         "subnets_to_ignore": [str(n) for n in s.subnets],
                         "addresses": [str(a) for a in s.addresses], "ipv6": s.ipv6}}


def as_table(pods: list[RegisteredPod]) -> str:
    width = max([len("POD NETNS")] + [len(p.settings.netns) for p in pods])
    lines = [f"{'POD NETNS':<{width}}  {'COOKIE':>8}  {'OUTBOUND':>9}  {'INBOUND':>9}  SETTINGS"]
    for p in pods:
        lines.append(f"{p.settings.netns:<{width}}  {p.cookie:>8}  {p.outbound:>9}  {p.inbound:>9}  "
                     f"{describe(p.settings)}")
    return "\n".join(lines)


def show_pods(bpffs: str | None, output: str) -> None:
    pods = registered(bpffs)
    if output == "json":
        click.echo(json.dumps([as_json(p) for p in pods], indent=2))
    elif pods:
        click.echo(as_table(pods))
    else:
        click.echo("no pod registered for eBPF interception", err=True)
