"""`kernsplit agent`: program the node's dataplane from manifests, once or continuously."""
from __future__ import annotations

import errno
import logging
import signal
import sys
import threading

import click

from kernsplit.agent import caps, logs
from kernsplit.agent.commands.params import NETNS, cluster_domain_option, iptables_wait_option

log = logging.getLogger("kernsplit.agent")

# Loopback only by default, as kube-proxy binds its metrics: a DaemonSet that Prometheus scrapes
# over the pod network passes 0.0.0.0:9464 (deploy/base does).
DEFAULT_METRICS_ADDR = "127.0.0.1:9464"


def dataplane_options(name: str, netns: str | None, iptables_mode: str, cgroup: str | None,
                      bpffs: str | None, split_uids: tuple[int, ...] = (), interception: bool = False,
                      iptables_wait: int | None = None, events=None) -> dict:
    """Constructor keywords for `agent.dataplane.make_dataplane`: each dataplane gets its own,
    and options left unset are not passed, so the dataplane's defaults apply. `events`: what
    counts the iptables dataplane's xtables lock waits (the agent's metrics)."""
    if name == "iptables":
        return {"netns": netns, "mode": iptables_mode,
                **{k: v for k, v in (("lock_wait", iptables_wait), ("events", events)) if v is not None}}
    return {k: v for k, v in (("cgroup", cgroup), ("bpffs", bpffs), ("split_uids", split_uids or None),
                              ("interception", interception or None))
            if v is not None}


def source_options(name: str, config_paths: tuple[str, ...], file_settle: float, kube: dict | None = None) -> dict:
    """Constructor keywords for `agent.source.make_source`. `kube`: the `KubernetesSettings`
    fields given on the command line (kubeconfig, context, namespaces, discovery_interval)."""
    if name == "files":
        return {"paths": list(config_paths), "settle": file_settle}
    from kernsplit.agent.source.kubernetes import KubernetesSettings
    return {"settings": KubernetesSettings(**(kube or {}))}


def check_privileges(dataplane: str, iptables_mode: str, netns: str | None) -> None:
    """Fail at start, naming the capability, rather than deep inside iptables or BCC."""
    role = f"kernsplit agent --dataplane {dataplane}"
    if dataplane == "iptables":
        caps.require(role, caps.iptables_needs(iptables_mode, netns))
    else:
        caps.require(role, caps.ebpf_needs())
        caps.require_bpf_syscall(role)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _metrics(resync_interval: float):
    from kernsplit.agent.metrics import Metrics
    return Metrics(resync_interval)


def _serve_metrics(metrics, address: str, dp) -> None:
    """The metrics endpoint, with per-backend connections read from `dp` at scrape time."""
    from kernsplit.agent.metrics import KernelCollector, serve
    metrics.add_kernel(KernelCollector(dp.observe, getattr(dp, "capacity", None)))   # eBPF: map fill
    try:
        server = serve(metrics, address)
    except (OSError, ValueError) as exc:
        hint = (" (another agent on this host? choose another port with --metrics-addr HOST:PORT, "
                "or serve none with --metrics-addr '')" if getattr(exc, "errno", None) == errno.EADDRINUSE else "")
        raise click.UsageError(f"--metrics-addr {address}: {exc}{hint}") from exc
    log.info("metrics on http://%s:%d/metrics", *server.server_address[:2])


def _preview(reconciler, dataplane: str) -> int:
    try:
        text = reconciler.preview()
    except (OSError, RuntimeError, ValueError) as exc:
        log.error("%s dataplane: %s", dataplane, exc)
        return 1
    if text is None:
        return 1
    click.echo(text, nl=False)
    return 0


@click.command()
@click.option("--source", type=click.Choice(["files", "kubernetes"]), default=None,
              help="Where objects come from: manifest files (--config; the default when --config is "
                   "given) or the Kubernetes API.")
@click.option("--config", "config_paths", multiple=True, type=click.Path(exists=True),
              help="Manifest file or directory (repeatable). Required with --source files.")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), default=None,
              help="kubernetes: kubeconfig file (default: $KUBECONFIG, ~/.kube/config, else the pod's "
                   "service account).")
@click.option("--context", "kube_context", default=None, help="kubernetes: kubeconfig context to use.")
@click.option("--namespace", "namespaces", multiple=True,
              help="kubernetes: watch only this namespace (repeatable). Default: every namespace.")
@click.option("--discovery-interval", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="kubernetes: seconds between API discoveries, which find CRDs installed later.")
@click.option("--file-settle", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="files: apply a change once the files have not changed for this many seconds "
                   "(a file being written is never read half-way).")
@click.option("--dataplane", type=click.Choice(["iptables", "ebpf"]), default="iptables", show_default=True)
@click.option("--once", is_flag=True, help="Apply once and exit (0 ok, 1 config errors: kernel untouched).")
@click.option("--dry-run", is_flag=True,
              help="With --once: print what the sync would write (iptables-restore input per family, or "
                   "the eBPF map operations in flip order) and change nothing.")
@click.option("--netns", type=NETNS, default=None, help="Target network namespace: name or path (iptables).")
@click.option("--cgroup", default=None, help="cgroup v2 directory to attach to (ebpf).")
@click.option("--bpffs", default=None, help="bpffs directory for pins (ebpf).")
@click.option("--split-uid", "split_uids", multiple=True, type=click.IntRange(0, 2**32 - 2),
              help="ebpf: split only connect()s made by this uid, the mesh proxy's (repeatable, "
                   "at most 8). Other connects pass unchanged, so the app's connection reaches its "
                   "proxy with the ClusterIP as original destination. Default: split every connect.")
@click.option("--interception", is_flag=True,
              help="ebpf: also attach the interception programs, with which `proxy-init --mode ebpf` "
                   "registers pods (no NAT rule in the pods).")
@click.option("--resync-interval", type=click.FloatRange(min=0.05), default=30.0, show_default=True,
              help="Seconds between full resyncs that repair drift.")
@click.option("--metrics-addr", default=DEFAULT_METRICS_ADDR, show_default=True, metavar="HOST:PORT",
              help="Serve Prometheus /metrics, /healthz and /readyz here (e.g. 0.0.0.0:9464; [::1]:9464; "
                   "port 0: any free port, logged). '' serves nothing.")
@click.option("--log-format", type=click.Choice(logs.FORMATS), default="plain", show_default=True)
@click.option("--log-level", type=click.Choice(logs.LEVELS), default="info", show_default=True)
@click.option("--cleanup", is_flag=True, help="Remove every kernel object of ours and exit.")
@click.option("--iptables-mode", type=click.Choice(["auto", "legacy", "nft"]), default="auto", show_default=True)
@iptables_wait_option
@cluster_domain_option
def agent(source, config_paths, kubeconfig, kube_context, namespaces, discovery_interval, file_settle, dataplane,
          once, dry_run, netns, cgroup, bpffs, split_uids, interception, resync_interval, metrics_addr, log_format,
          log_level, cleanup, iptables_mode, iptables_wait, cluster_domain):
    """Enforce the TrafficSplits / routes in PATH in the kernel, and keep them enforced."""
    logs.setup(log_format, log_level)
    source = source or "files"
    if not cleanup and source == "files" and not config_paths:
        raise click.UsageError("--config PATH is required with --source files (unless --cleanup)")
    if config_paths and source != "files":
        raise click.UsageError(f"--config is for --source files, not --source {source}")
    if source != "kubernetes" and (kubeconfig or kube_context or namespaces):
        raise click.UsageError("--kubeconfig, --context and --namespace are for --source kubernetes")
    kube = {"kubeconfig": kubeconfig, "context": kube_context, "namespaces": tuple(namespaces),
            "discovery_interval": discovery_interval}
    if netns and dataplane == "ebpf":
        log.debug("--netns is not used by the ebpf dataplane (it attaches to --cgroup)")
    if interception and dataplane != "ebpf":
        raise click.UsageError("--interception applies to --dataplane ebpf only (the interception programs "
                               "are loaded with the eBPF split programs)")
    if dry_run and (cleanup or not once):
        raise click.UsageError("--dry-run previews one sync: use it with --once (and without --cleanup)")
    if split_uids and dataplane != "ebpf":
        raise click.UsageError("--split-uid applies to --dataplane ebpf only (iptables splits on the "
                               "node, after the proxy)")
    # Imported here: the reconcile loop pulls in the model and (for ebpf) BCC only when needed.
    from kernsplit.agent.dataplane import make_dataplane
    from kernsplit.agent.reconcile import Reconciler, Timing
    from kernsplit.agent.source import SourceUnavailable, make_source

    try:
        src = None if cleanup else make_source(source, **source_options(source, config_paths, file_settle, kube))
    except SourceUnavailable as exc:
        log.error("%s", exc)
        sys.exit(1)
    if once and not hasattr(src, "load"):
        raise click.UsageError(f"--once reads files: it does not work with --source {source}")
    try:
        check_privileges(dataplane, iptables_mode, netns)
    except caps.NotPermitted as exc:
        log.error("%s", exc)
        sys.exit(1)
    # Made before the dataplane, which counts its lock waits there as they happen.
    metrics = _metrics(resync_interval) if metrics_addr and not (once or cleanup) else None
    if metrics is not None and source == "kubernetes":
        src.watch_observer = metrics          # counts relists and watch restarts
    try:
        dp = make_dataplane(dataplane, **dataplane_options(dataplane, netns, iptables_mode, cgroup, bpffs,
                                                           split_uids, interception, iptables_wait, metrics))
        if cleanup:
            dp.cleanup()
            log.info("cleanup done: kernsplit %s objects removed", dataplane)
            sys.exit(0)
    except (OSError, RuntimeError, ValueError) as exc:
        log.error("%s dataplane: %s", dataplane, exc)
        sys.exit(1)
    if metrics is not None:
        _serve_metrics(metrics, metrics_addr, dp)
    reconciler = Reconciler(dp, src, Timing(resync_interval=resync_interval), cluster_domain=cluster_domain,
                            metrics=metrics)
    if dry_run:
        sys.exit(_preview(reconciler, dataplane))
    if once:
        sys.exit(reconciler.once())
    stop = _stop_on_signals()
    log.info("agent running: dataplane %s, source %s%s", dataplane, source,
             f", watching {', '.join(config_paths)}" if config_paths else "",
             extra={"dataplane": dataplane, "source": source, "resync_interval": resync_interval})
    sys.exit(reconciler.run(stop))
