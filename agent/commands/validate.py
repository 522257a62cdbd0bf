"""`kernsplit validate PATH... [-o text|json]`: read manifests, resolve splits, report problems.

Exit status: 1 when the configuration has errors (the agent would refuse it), 0 otherwise
(warnings included).
"""
from __future__ import annotations

import json
from fractions import Fraction

import click

from kernsplit.agent.commands.params import cluster_domain_option
from kernsplit.agent.model import Config, load_config
from kernsplit.agent.model.resolved import SplitPort


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def summary(config: Config) -> str:
    return ", ".join([_plural(len(config.splits), "split"), _plural(len(config.split_ports), "split port"),
                      _plural(len(config.errors), "error"), _plural(len(config.warnings), "warning")])


def _describe(port: SplitPort) -> str:
    head = f"{port.split_kind} {port.namespace}/{port.split}: {port.service} {port.cluster_ip}:{port.port}"
    if port.port_name:
        head += f" ({port.port_name})"
    counts: dict[str, int] = {}
    shares: dict[str, Fraction] = {}
    for weighted in port.endpoints:
        counts[weighted.backend] = counts.get(weighted.backend, 0) + 1
        shares[weighted.backend] = shares.get(weighted.backend, Fraction(0)) + weighted.share
    draining = {b.service for b in port.backends if b.terminating}
    parts = [f"{name} {_percent(shares[name])} ({_plural(counts[name], 'endpoint')}"
             f"{', terminating: the last resort' if name in draining else ''})" for name in counts]
    parts += [f"{r.backend} {_percent(r.share)} refused" for r in port.refused]
    if port.refuse:
        return f"{head} -> refuse connections (no endpoints: " + ", ".join(parts) + ")"
    return f"{head} -> " + ", ".join(parts)


def _percent(share: Fraction) -> str:
    return f"{float(share) * 100:.4g}%"


@click.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text: one line per problem and per split port, then a summary; json: everything.")
@cluster_domain_option
def validate(paths: tuple[str, ...], output: str, cluster_domain: str) -> None:
    """Check Kubernetes manifests (files or directories) and show how each split resolves."""
    config = load_config(paths, cluster_domain=cluster_domain)
    if output == "json":
        click.echo(json.dumps(config.to_json(), indent=2))
    else:
        for diagnostic in config.diagnostics:
            click.echo(f"{diagnostic.severity}: {diagnostic}")
        for port in config.split_ports:
            click.echo(_describe(port))
        click.echo(summary(config))
    raise SystemExit(1 if config.has_errors else 0)
