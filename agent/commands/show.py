"""`kernsplit show`: the splits as the kernel holds them, with per-backend connection counts.

Reads only the kernel (rule comments and counters, or BPF maps), never the config, so it works while
the agent is stopped. Output modelled on `linkerd viz traffic-split show`.
"""
from __future__ import annotations

import json
import sys
import time
from fractions import Fraction

import click

from kernsplit.agent.commands.params import NETNS
from kernsplit.agent.dataplane.base import ObservedSplit
from kernsplit.agent.rates import RateWindow

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


def _heading(split: ObservedSplit, counted: str, refusing: str) -> tuple[str, int]:
    """The split's first line and the BACKEND column width, shared by both tables."""
    head = (f"{split.namespace}/{split.service}  {_address(split)}  split {split.split}  "
            f"[{split.dataplane}]  {counted}")
    if split.refuse:
        head += refusing
    return head, max([len("BACKEND")] + [len(b.service) for b in split.backends])


def as_table(split: ObservedSplit) -> str:
    total = sum(b.connections for b in split.backends)
    head, width = _heading(split, f"{total} connections",
                           "  REFUSING (no backend can serve: connections are reset)")
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


def _key(split: ObservedSplit, backend: str) -> tuple:
    return (split.dataplane, split.namespace, split.service, split.cluster_ip, split.port, backend)


def counters(splits: list[ObservedSplit]) -> dict[tuple, int]:
    return {_key(s, b.service): b.connections for s in splits for b in s.backends}


def as_watch_table(split: ObservedSplit, window: RateWindow) -> str:
    """Like `as_table`, but the observed share is over the recent window (rates from counter
    deltas); CONNS keeps the totals since install."""
    recent = {b.service: window.recent(_key(split, b.service)) for b in split.backends}
    total = sum(b.connections for b in split.backends)
    delta = sum(r.delta for r in recent.values())
    span = max((r.seconds for r in recent.values()), default=0.0)
    rate = f"{delta / span:.1f}/s over the last {span:.0f}s" if span else "rate: waiting for a second sample"
    head, width = _heading(split, f"{total} connections, {rate}", "  REFUSING")
    lines = [head, f"  {'BACKEND':<{width}}  {'WEIGHT':>8}  {'DESIRED':>7}  {'CONNS':>8}  {'RATE':>8}  {'RECENT':>7}"]
    for b in split.backends:
        r = recent[b.service]
        share = _share(r.delta, delta)
        shown = f"{float(share):>7.1%}" if delta else f"{'-':>7}"
        lines.append(f"  {b.service:<{width}}  {b.weight:>8}  {float(b.share):>7.1%}  {b.connections:>8}  "
                     f"{r.rate:>6.1f}/s  {shown}  {'#' * round(share * BAR_WIDTH)}{'  ' + _note(b) if _note(b) else ''}")
    return "\n".join(lines)


def in_order(splits) -> list[ObservedSplit]:
    """The order `show` lists splits in: by root Service, then port and address."""
    return sorted(splits, key=lambda s: (s.namespace, s.service, s.port, s.cluster_ip))


def as_tables(splits: list[ObservedSplit]) -> str:
    """What `kernsplit show` prints for these splits (already in order)."""
    return "\n\n".join(as_table(s) for s in splits)


def _observe(found: list, service: str | None) -> list[ObservedSplit]:
    splits = []
    for dp in found:
        try:
            splits += [s for s in dp.observe() if _matches(s, service)]
        except (OSError, RuntimeError) as exc:   # e.g. a pin removed by hand: say which, no traceback
            raise click.ClickException(f"{dp.name} dataplane: {exc}") from exc
    return in_order(splits)


def _watch(found: list, service: str | None, interval: float, window_seconds: float, count: int) -> None:
    """Refresh in place on a terminal (frames one after another otherwise) until interrupted or
    `count` frames were shown."""
    window = RateWindow(window_seconds)
    tty = sys.stdout.isatty()
    shown = 0
    try:
        while True:
            splits = _observe(found, service)
            window.add(time.monotonic(), counters(splits))
            body = "\n\n".join(as_watch_table(s, window) for s in splits) or "no split found"
            head = f"Every {interval:g}s, shares over the last {window_seconds:g}s: kernsplit show --watch"
            click.echo(("\x1b[H\x1b[2J" if tty else ("\n" if shown else "")) + head + "\n\n" + body)
            shown += 1
            if count and shown >= count:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        pass


@click.command()
@click.argument("service", required=False)
@click.option("--dataplane", type=click.Choice(["auto", "iptables", "ebpf"]), default="auto", show_default=True)
@click.option("--netns", type=NETNS, default=None, help="Network namespace (name or path) of the iptables dataplane.")
@click.option("--bpffs", default=None, help="bpffs directory of the ebpf dataplane's pins.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("-w", "--watch", is_flag=True,
              help="Refresh in place; the share column is then over the recent --window (rates from "
                   "counter deltas), so a rollout shows at once.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="--watch: seconds between refreshes.")
@click.option("--window", "window_seconds", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="--watch: seconds of history the recent share covers.")
@click.option("--count", type=click.IntRange(min=0), default=0,
              help="--watch: stop after this many refreshes (0: until interrupted).")
@click.option("--pods", is_flag=True,
              help="List the pods registered for eBPF interception (proxy-init --mode ebpf), with their "
                   "settings and intercepted-connection counters, instead of the splits.")
def show(service, dataplane, netns, bpffs, output, watch, interval, window_seconds, count, pods):
    """Show each split found in the kernel (optionally only SERVICE: name or ns/name), with the
    connections the kernel counted per backend since the rules were installed."""
    if pods:
        from kernsplit.agent.commands.show_pods import show_pods
        show_pods(bpffs, output)
        return
    found = _dataplanes(dataplane, netns, bpffs)
    if watch and found:
        if output == "json":
            raise click.UsageError("--watch shows tables; use -o json without --watch for scripts")
        _watch(found, service, interval, window_seconds, count)
        return
    splits = _observe(found, service)
    for dp in found:
        for problem in dp.problems():
            click.echo(f"warning: {dp.name} dataplane: {problem}", err=True)
    if output == "json":
        click.echo(json.dumps([as_json(s) for s in splits], indent=2))
    else:
        click.echo(as_tables(splits))
    if not found:
        click.echo(f"no kernsplit dataplane installed{f' in netns {netns}' if netns else ''}", err=True)
        sys.exit(1)
    if not splits:
        click.echo(f"no split found{f' for {service}' if service else ''}", err=True)
