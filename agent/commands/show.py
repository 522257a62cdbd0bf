"""`kernsplit show`: the splits as the kernel holds them, with per-backend connection counts.

Reads only the kernel (rule comments and counters, or BPF maps), never the config, so it works while
the agent is stopped. Output modelled on `linkerd viz traffic-split show`.
"""
from __future__ import annotations

import json
import sys
from fractions import Fraction

import click

from kernsplit.agent.commands.params import NETNS
from kernsplit.agent.dataplane.base import ObservedSplit

BAR_WIDTH = 20


def _dataplanes(choice: str, netns: str | None, bpffs: str | None) -> list:
    """Dataplanes to read: the one asked for, or (auto) every one that has objects installed."""
    from kernsplit.agent.dataplane import make_dataplane
    from kernsplit.agent.commands.agent import dataplane_options

    names = ["iptables", "ebpf"] if choice == "auto" else [choice]
    found = []
    for name in names:
        try:
            dp = make_dataplane(name, **dataplane_options(name, netns, "auto", None, bpffs))
            if choice != "auto" or dp.installed():
                found.append(dp)
        except Exception as exc:   # auto: a dataplane this host cannot even load is simply not installed
            if choice != "auto":
                raise click.ClickException(f"{name} dataplane: {exc}") from exc
    return found


def _matches(split: ObservedSplit, service: str | None) -> bool:
    if not service:
        return True
    if "/" in service:
        return service == f"{split.namespace}/{split.service}"
    return service == split.service


def _share(part: int, total: int) -> Fraction:
    return Fraction(part, total) if total else Fraction(0)


def _address(split: ObservedSplit) -> str:
    return f"[{split.cluster_ip}]:{split.port}" if ":" in split.cluster_ip else f"{split.cluster_ip}:{split.port}"


def as_json(split: ObservedSplit) -> dict:
    total = sum(b.connections for b in split.backends)
    return {
        "dataplane": split.dataplane, "namespace": split.namespace, "service": split.service,
        "split": split.split, "cluster_ip": split.cluster_ip, "port": split.port, "refuse": split.refuse,
        "connections": total,
        "backends": [{"service": b.service, "weight": b.weight, "desired_share": float(b.share),
                      "desired_share_exact": str(b.share), "connections": b.connections,
                      "refused": b.refused, "terminating": b.terminating,
                      "observed_share": float(_share(b.connections, total))} for b in split.backends],
    }


def as_table(split: ObservedSplit) -> str:
    total = sum(b.connections for b in split.backends)
    head = (f"{split.namespace}/{split.service}  {_address(split)}  split {split.split}  "
            f"[{split.dataplane}]  {total} connections")
    if split.refuse:
        head += "  REFUSING (no backend can serve: connections are reset)"
    width = max([len("BACKEND")] + [len(b.service) for b in split.backends])
    lines = [head, f"  {'BACKEND':<{width}}  {'WEIGHT':>8}  {'DESIRED':>7}  {'CONNS':>8}  {'OBSERVED':>8}"]
    for b in split.backends:
        observed = _share(b.connections, total)
        bar = "#" * round(observed * BAR_WIDTH)
        note = _note(b)
        lines.append(f"  {b.service:<{width}}  {b.weight:>8}  {float(b.share):>7.1%}  {b.connections:>8}  "
                     f"{float(observed):>8.1%}  {bar}{'  ' + note if note else ''}")
    return "\n".join(lines)


def _note(b) -> str:
    if b.refused:
        return "(refused: cannot serve; its connections are reset)"
    if b.terminating:
        return "(terminating endpoints: none is ready, the last resort)"
    return ""


@click.command()
@click.argument("service", required=False)
@click.option("--dataplane", type=click.Choice(["auto", "iptables", "ebpf"]), default="auto", show_default=True)
@click.option("--netns", type=NETNS, default=None, help="Network namespace (name or path) of the iptables dataplane.")
@click.option("--bpffs", default=None, help="bpffs directory of the ebpf dataplane's pins.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def show(service, dataplane, netns, bpffs, output):
    """Show each split found in the kernel (optionally only SERVICE: name or ns/name), with the
    connections the kernel counted per backend since the rules were installed."""
    found = _dataplanes(dataplane, netns, bpffs)
    splits = [s for dp in found for s in dp.observe() if _matches(s, service)]
    splits.sort(key=lambda s: (s.namespace, s.service, s.port, s.cluster_ip))
    if output == "json":
        click.echo(json.dumps([as_json(s) for s in splits], indent=2))
    else:
        click.echo("\n\n".join(as_table(s) for s in splits))
    if not found:
        click.echo(f"no kernsplit dataplane installed{f' in netns {netns}' if netns else ''}", err=True)
        sys.exit(1)
    if not splits:
        click.echo(f"no split found{f' for {service}' if service else ''}", err=True)
