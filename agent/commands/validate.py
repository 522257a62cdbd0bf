"""`kernsplit validate PATH... [-o text|json]`: read manifests, resolve splits, report problems.

Exit status: 1 when the configuration has errors (the agent would refuse it), 0 otherwise
(warnings included).
"""
from __future__ import annotations

import json

import click

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
    if port.refuse:
        return f"{head} -> refuse connections (no endpoints)"
    counts: dict[str, int] = {}
    shares: dict[str, object] = {}
    for weighted in port.endpoints:
        counts[weighted.backend] = counts.get(weighted.backend, 0) + 1
        shares[weighted.backend] = shares.get(weighted.backend, 0) + weighted.share
    parts = [f"{name} {float(shares[name]) * 100:.4g}% ({_plural(counts[name], 'endpoint')})" for name in counts]
    return f"{head} -> " + ", ".join(parts)


@click.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text: one line per problem and per split port, then a summary; json: everything.")
def validate(paths: tuple[str, ...], output: str) -> None:
    """Check Kubernetes manifests (files or directories) and show how each split resolves."""
    config = load_config(paths)
    if output == "json":
        click.echo(json.dumps(config.to_json(), indent=2))
    else:
        for diagnostic in config.diagnostics:
            click.echo(f"{diagnostic.severity}: {diagnostic}")
        for port in config.split_ports:
            click.echo(_describe(port))
        click.echo(summary(config))
    raise SystemExit(1 if config.has_errors else 0)
