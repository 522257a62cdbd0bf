"""`proxy-init` / `kernsplit init`: linkerd2-proxy-init's flags, kernsplit's guarantees.

Flags are validated into a frozen InitConfig before anything is read or written; a bad flag is a
usage error (exit 2) and the namespace is untouched. Exit 1: applying or --validate failed.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from kernsplit.agent import caps
from kernsplit.agent.commands.params import iptables_wait_option, missing_netns
from kernsplit.agent.iptables.exec import Family, IptablesError
from kernsplit.agent.logs import setup as setup_logging
from kernsplit.init import apply
from kernsplit.init.config import IPTABLES_MODES, LOG_FORMATS, MODES, ConfigError, build_config
from kernsplit.init.namespace import set_close_wait_timeout
from kernsplit.init.probe import validate

_PORTS_HELP = "comma list of ports and a-b ranges; may be repeated"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-p", "--incoming-proxy-port", default="4143", show_default=True,
              help="port the proxy listens on for inbound traffic")
@click.option("-o", "--outgoing-proxy-port", default="4140", show_default=True,
              help="port the proxy listens on for outbound traffic")
@click.option("-u", "--proxy-uid", default="2102", show_default=True,
              help="uid the proxy runs as: its traffic is not redirected (-1: none)")
@click.option("-g", "--proxy-gid", default=None, help="gid the proxy runs as: its traffic is not redirected")
@click.option("-r", "--ports-to-redirect", multiple=True,
              help=f"inbound ports to redirect (default: all TCP); {_PORTS_HELP}")
@click.option("--inbound-ports-to-ignore", multiple=True, help=f"inbound ports not redirected; {_PORTS_HELP}")
@click.option("--outbound-ports-to-ignore", multiple=True, help=f"outbound ports not redirected; {_PORTS_HELP}")
@click.option("--subnets-to-ignore", multiple=True,
              help="CIDRs not redirected, both directions (inbound by source, outbound by destination); "
                   "comma list, may be repeated")
@click.option("--ipv6/--no-ipv6", default=None,
              help="also program ip6tables (default: on when the namespace has an IPv6 address besides ::1)")
@click.option("--iptables-mode", type=click.Choice(IPTABLES_MODES), default="auto", show_default=True,
              help="auto: legacy if legacy rules exist, else nft if it works, else legacy")
@click.option("--firewall-bin-path", default=None, help="accepted for linkerd compatibility (used by plain mode)")
@click.option("--firewall-save-bin-path", default=None, help="accepted for linkerd compatibility")
@click.option("--netns", default=None, help="network namespace: a name under /var/run/netns or a path")
@click.option("--simulate", "--dry-run", "simulate", is_flag=True,
              help="print the iptables-restore input per family; change nothing")
@click.option("-w", "--use-wait-flag", is_flag=True,
              help="accepted for linkerd compatibility: restores always wait for the xtables lock, "
                   "at most --iptables-wait seconds")
@iptables_wait_option
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="plain", show_default=True)
@click.option("--log-level", type=click.Choice(["debug", "info", "warn", "warning", "error"],
                                               case_sensitive=False), default="info", show_default=True)
@click.option("--mode", default="iptables", show_default=True,
              help=f"one of {', '.join(MODES)}; ebpf registers the pod with the node agent's programs "
                   "(no NAT rule in the pod)")
@click.option("--bpffs", default=None, help="ebpf: the node agent's pin directory (its --bpffs; "
                                             "default /sys/fs/bpf/kernsplit)")
@click.option("--fallback", default="none", show_default=True,
              help="ebpf: `iptables` applies the iptables mode when the node's programs are not loaded")
@click.option("--cleanup", is_flag=True, help="remove our chains and jumps (both families); nothing else")
@click.option("--validate", "validate_after", is_flag=True,
              help="after applying, prove an outbound connection is redirected (SO_ORIGINAL_DST)")
@click.option("--validate-only", is_flag=True, help="only prove interception works; apply nothing")
@click.option("--timeout-close-wait-secs", default="0", show_default=True,
              help="conntrack CLOSE_WAIT timeout set in the namespace (0: leave the kernel default)")
def main(incoming_proxy_port, outgoing_proxy_port, proxy_uid, proxy_gid, ports_to_redirect,
         inbound_ports_to_ignore, outbound_ports_to_ignore, subnets_to_ignore, ipv6, iptables_mode,
         firewall_bin_path, firewall_save_bin_path, netns, simulate, use_wait_flag, iptables_wait, log_format, log_level,
         mode, bpffs, fallback, cleanup, validate_after, validate_only, timeout_close_wait_secs):
    """Redirect a pod's TCP traffic to its local proxy (drop-in for linkerd2-proxy-init)."""
    try:
        cfg = build_config(
            incoming_proxy_port=incoming_proxy_port, outgoing_proxy_port=outgoing_proxy_port,
            proxy_uid=proxy_uid, proxy_gid=proxy_gid, ports_to_redirect=ports_to_redirect,
            inbound_ports_to_ignore=inbound_ports_to_ignore, outbound_ports_to_ignore=outbound_ports_to_ignore,
            subnets_to_ignore=subnets_to_ignore, ipv6=ipv6, iptables_mode=iptables_mode, netns=netns,
            use_wait_flag=use_wait_flag, iptables_wait=iptables_wait, timeout_close_wait_secs=timeout_close_wait_secs, mode=mode,
            bpffs=bpffs, fallback=fallback)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if cleanup and (validate_after or validate_only):
        raise click.UsageError("--cleanup cannot be combined with --validate/--validate-only")
    # --simulate only prints: it may plan for a namespace that does not exist here.
    if netns and not simulate and missing_netns(netns):
        raise click.BadParameter(missing_netns(netns), param_hint="'--netns'")
    setup_logging(log_format, log_level)
    log = logging.getLogger("kernsplit.init")
    if firewall_save_bin_path or (firewall_bin_path and iptables_mode != "plain"):
        log.info("--firewall-bin-path/--firewall-save-bin-path accepted; the restore binary is chosen "
                 "per backend (iptables-<legacy|nft>-restore)")

    if validate_only:
        _finish_validation(cfg, log)
        return
    if cfg.mode != "ebpf" or _run_ebpf(cfg, log, cleanup=cleanup, simulate=simulate):
        _run_iptables(cfg, log, cleanup=cleanup, simulate=simulate, firewall_bin=firewall_bin_path)
    if cleanup or simulate:
        return
    if cfg.timeout_close_wait_secs:
        set_close_wait_timeout(cfg.netns, cfg.timeout_close_wait_secs)
        log.info("conntrack CLOSE_WAIT timeout set to %ss", cfg.timeout_close_wait_secs)
    if validate_after:
        _finish_validation(cfg, log)


def _require(log, needs) -> None:
    try:
        caps.require("proxy-init", needs)
    except caps.NotPermitted as exc:
        log.error("%s", exc)
        sys.exit(1)


def _run_iptables(cfg, log, *, cleanup: bool, simulate: bool, firewall_bin: str | None) -> None:
    if not simulate:
        _require(log, caps.iptables_needs(cfg.iptables_mode, cfg.netns))
    fams = apply.CLEANUP_FAMILIES if cleanup else apply.families(cfg, log)
    try:
        plans = apply.make_plans(cfg, fams, log, cleanup=cleanup, firewall_bin=firewall_bin,
                                 tolerate_unreadable=simulate or cleanup)
        if simulate:
            _print_plans(plans)
            return
        apply.execute(cfg, plans, log)
        if cleanup:
            apply.delete_empty_tables(cfg, plans)
    except IptablesError as exc:
        log.error("%s", exc)
        sys.exit(1)
    if cleanup:
        log.info("cleanup done: kernsplit proxy-init chains and jumps removed")


def _run_ebpf(cfg, log, *, cleanup: bool, simulate: bool) -> bool:
    """Register (or with --cleanup, unregister) the pod. Returns True when the iptables mode must
    run after all: the node has no programs and --fallback iptables, or a cleanup that also
    removes what an earlier fallback run left."""
    from kernsplit.init import ebpf   # pyroute2 and libbpf only for this mode
    pins = ebpf.Pins(Path(cfg.bpffs) if cfg.bpffs else ebpf.DEFAULT_BPFFS)
    if not simulate:
        _require(log, caps.ebpf_needs())
    try:
        if cleanup:
            ebpf.unregister(cfg, pins, log)
            log.info("cleanup done: eBPF registration and tc filters removed")
            return cfg.fallback == "iptables"
        if simulate:
            _print_registration(ebpf.planned(cfg, _ipv6(cfg, log)), pins, ebpf)
            return False
        ebpf.register(cfg, _ipv6(cfg, log), pins, log)
        return False
    except ebpf.NotLoadedError as exc:
        if cfg.fallback != "iptables":
            log.error("%s", exc)
            sys.exit(1)
        log.warning("%s; --fallback iptables: applying the iptables mode instead", exc)
        return True
    except (OSError, ValueError) as exc:
        log.error("eBPF registration failed: %s", exc)
        sys.exit(1)


def _ipv6(cfg, log) -> bool:
    return Family.V6 in apply.families(cfg, log)


def _print_registration(reg, pins, ebpf) -> None:
    try:
        ebpf.node_ready(pins)
        node = f"node programs loaded under {pins.root}"
    except ebpf.NotLoadedError as exc:
        node = f"not applicable now: {exc}"
    click.echo(f"# ebpf: ks_pods entry for netns cookie {reg.cookie} ({node})")
    click.echo(f"pod {reg.settings.netns}: {ebpf.describe(reg.settings)}")
    if reg.settings.addresses:
        click.echo(f"own addresses (connects to them stay local): {', '.join(map(str, reg.settings.addresses))}")
    click.echo(f"tc ingress filter {ebpf.TC_PROGRAM} on: {', '.join(reg.interfaces) or 'no interface'}")


def _print_plans(plans) -> None:
    for p in plans:
        if p.text is None:
            click.echo(f"# {p.family.value}: iptables-{p.backend.value} already up to date; nothing to apply")
        else:
            click.echo(f"# {p.family.value}: input for {p.command()}")
            click.echo(p.text, nl=False)


def _finish_validation(cfg, log) -> None:
    result = validate(cfg)
    if not result.ok:
        log.error("%s", result.message)
        sys.exit(1)
    log.info("%s", result.message)
