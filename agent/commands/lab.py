"""`kernsplit lab up | demo | down | exec`: the seed scenario on network namespaces."""
from __future__ import annotations

import os
import signal
import sys

import click

from kernsplit.agent.lab import state
from kernsplit.agent.lab.lab import (DATAPLANES, INTERCEPTIONS, SOURCES, LabError, down, leftover_prefixes,
                                     open_lab, pod_exec_argv)
from kernsplit.agent.lab.manifests import SEED_WEIGHTS, SPLIT_FILE, render_split
from kernsplit.agent.lab.observe import wait_applied
from kernsplit.agent.lab.plan import check_prefix, new_prefix

_dataplane = click.option("--dataplane", type=click.Choice(DATAPLANES), default=None,
                          help="how the node agent enforces splits (default: iptables; ebpf with "
                               "--interception ebpf)")
_interception = click.option("--interception", type=click.Choice(INTERCEPTIONS), default="iptables",
                             show_default=True,
                             help="how the client pod's traffic reaches its proxy: proxy-init's iptables "
                                  "rules, or the node's eBPF programs (no rule in any pod; needs "
                                  "--dataplane ebpf, the default then)")

_source = click.option("--source", type=click.Choice(SOURCES), default="kubernetes", show_default=True,
                       help="where the lab's agent reads objects: the lab's Kubernetes API server "
                            "(manifests applied with kubectl) or the manifest files themselves")


def _choose_dataplane(dataplane: str | None, interception: str) -> str:
    if dataplane is None:
        return "ebpf" if interception == "ebpf" else "iptables"
    if interception == "ebpf" and dataplane != "ebpf":
        raise click.UsageError("--interception ebpf needs --dataplane ebpf: the node agent loads the "
                               "interception programs with its eBPF split programs")
    return dataplane


def _sigterm_as_interrupt() -> None:
    """SIGTERM tears the lab down like Ctrl-C does (the finally blocks run)."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


def _need_root() -> None:
    if os.geteuid() != 0:
        raise click.ClickException("the lab creates network namespaces and cgroups: run as root")


def _prefix_option(value: str | None) -> str:
    try:
        return check_prefix(value) if value else new_prefix()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
def lab() -> None:
    """A lab of network namespaces running the seed canary scenario."""


@lab.command()
@_dataplane
@_interception
@_source
@click.option("--prefix", help="lab prefix ksl<4 hex> (default: a new random one)")
def up(dataplane: str | None, interception: str, source: str, prefix: str | None) -> None:
    """Build a lab with the seed TrafficSplit (900m/100m) and leave it running."""
    dataplane = _choose_dataplane(dataplane, interception)
    _need_root()
    _sigterm_as_interrupt()
    the_lab = open_lab(_prefix_option(prefix), dataplane, interception, source)
    try:
        the_lab.up(split=render_split(SEED_WEIGHTS))
        wait_applied(the_lab, {svc: int(w.rstrip("m")) for svc, w in SEED_WEIGHTS})
    except LabError as exc:
        raise click.ClickException(str(exc)) from None
    p, m = the_lab.prefix, the_lab.manifests
    if source == "kubernetes":
        objects = f"""  Kubernetes API (the agent watches it; edit with kubectl):
                 export KUBECONFIG={the_lab.kubeconfig}
                 kubectl get trafficsplits,services,endpointslices
  applied:       {m}/services.yaml, {m}/{SPLIT_FILE}
"""
    else:
        objects = f"  manifests (the agent watches them): {m}/services.yaml, {m}/{SPLIT_FILE}\n"
    click.echo(f"""lab {p} is up (dataplane {dataplane}, interception {interception}, source {source}); pods: {', '.join(x.name for x in the_lab.plan.pods)}
{objects.rstrip()}
  agent log:     {the_lab.agent_log}
  send requests: kernsplit lab exec --prefix {p} client {sys.executable} -m kernsplit.agent.lab.load -n 1000
  one request:   kernsplit lab exec --prefix {p} client curl -s http://10.100.200.30/
  kernel state:  kernsplit show --netns {the_lab.node}{f' --bpffs {the_lab.bpffs}' if the_lab.bpffs else ''}
  remove it:     kernsplit lab down --prefix {p}""")


@lab.command()
@_dataplane
@_interception
@_source
@click.option("--connections", "-n", type=click.IntRange(1, 1_000_000), default=1000, show_default=True)
@click.option("--keep", is_flag=True, help="leave the lab running at the end")
def demo(dataplane: str | None, interception: str, source: str, connections: int, keep: bool) -> None:
    """The seed scenario: 90/10 canary, then rollout to 0/100, observed for real."""
    dataplane = _choose_dataplane(dataplane, interception)
    _need_root()
    _sigterm_as_interrupt()
    from kernsplit.agent.lab.demo import run_demo
    try:
        run_demo(dataplane, connections, keep, click.echo, interception, source)
    except LabError as exc:
        raise click.ClickException(str(exc)) from None


@lab.command(name="down")
@click.option("--prefix", help="the lab to remove")
@click.option("--all", "everything", is_flag=True, help="every lab (ksl<hex>) found on this host")
def down_cmd(prefix: str | None, everything: bool) -> None:
    """Remove a lab: processes, namespaces, veths, rules, cgroups, BPF pins, files."""
    _need_root()
    if everything:
        prefixes = leftover_prefixes()
    elif prefix:
        prefixes = [_prefix_option(prefix)]
    else:
        prefixes = leftover_prefixes()
        if len(prefixes) > 1:
            raise click.UsageError(f"several labs exist ({', '.join(prefixes)}): "
                                   "give --prefix P or --all")
    failed = False
    for p in prefixes:
        problems = down(p)
        for problem in problems:
            click.echo(f"lab {p}: {problem}", err=True)
        failed |= bool(problems)
        click.echo(f"lab {p} removed" + (" (with problems)" if problems else ""))
    if not prefixes:
        click.echo("no lab found")
    sys.exit(1 if failed else 0)


@lab.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.option("--prefix", help="the lab (default: the only one running)")
@click.option("--uid", type=int, help="run as this uid (e.g. 2102: bypasses the proxy)")
@click.argument("pod")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_cmd(prefix: str | None, uid: int | None, pod: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside POD (its network namespace and cgroup)."""
    _need_root()
    if prefix is None:
        running = state.known_prefixes()
        if len(running) != 1:
            raise click.UsageError("give --prefix P: labs running: " + (", ".join(running) or "none"))
        prefix = running[0]
    argv = list(command)
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable   # the venv's interpreter, which has the agent.lab modules
    try:
        full = pod_exec_argv(_prefix_option(prefix), pod, argv, uid)
    except LabError as exc:
        raise click.UsageError(str(exc)) from None
    os.execvp(full[0], full)


@lab.command(name="apiserver")
@click.option("--port", type=click.IntRange(0, 65535), default=6443, show_default=True,
              help="TCP port on 127.0.0.1 (0: any free port)")
@click.option("--kubeconfig", "kubeconfig_path", type=click.Path(dir_okay=False),
              default="kernsplit-lab.kubeconfig", show_default=True, help="the kubeconfig file to write")
def apiserver_cmd(port: int, kubeconfig_path: str) -> None:
    """Run the lab's in-memory Kubernetes API server (on 127.0.0.1) until interrupted."""
    from kernsplit.agent.lab.apiserver.server import LabApiServer
    _sigterm_as_interrupt()
    try:
        server = LabApiServer(port=port).start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    path = server.write_kubeconfig(os.path.abspath(kubeconfig_path))
    click.echo(f"lab API server at {server.url} (in memory; Ctrl-C stops it)\nexport KUBECONFIG={path}",
               nl=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
