"""proxy-init's configuration: parsed and validated once, at the edge, into frozen values.

Everything past this module works with ints, port ranges and ip_network objects; no flag text
travels further. A bad flag raises ConfigError naming the flag, and nothing is applied.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from kernsplit.agent.iptables.xlock import DEFAULT_WAIT

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MODES = ("iptables", "ebpf")
FALLBACKS = ("none", "iptables")
IPTABLES_MODES = ("auto", "legacy", "nft", "plain")
LOG_FORMATS = ("plain", "json")
_MAX_ID = 2**32 - 2          # (uid_t)-1 means "no change" to the kernel: not a usable id


class ConfigError(ValueError):
    """A flag value that cannot be used; the message names the flag."""


@dataclass(frozen=True, order=True)
class PortRange:
    first: int
    last: int

    @property
    def multiport_cost(self) -> int:
        """What this entry costs of multiport's 15 slots: a range takes two."""
        return 1 if self.first == self.last else 2

    def render(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"

    def __contains__(self, port: int) -> bool:
        return self.first <= port <= self.last


def _port(text: str, flag: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise ConfigError(f"{flag}: port {value} is out of range 1-65535")
    return value


def parse_port(text: str | int, flag: str) -> int:
    return _port(str(text).strip(), flag)


def parse_ports(values: Iterable[str], flag: str) -> tuple[PortRange, ...]:
    """Comma lists of ports and `a-b` ranges, from one or more flag occurrences.

    Returned sorted with overlapping and adjacent entries merged, so equivalent flags give the same
    rules (and a re-run with a reordered list changes nothing in the kernel).
    """
    ranges: list[PortRange] = []
    for value in values:
        for item in str(value).split(","):
            item = item.strip()
            if not item:
                continue
            low, sep, high = item.partition("-")
            first = _port(low.strip(), flag)
            last = _port(high.strip(), flag) if sep else first
            if last < first:
                raise ConfigError(f"{flag}: range {item!r} is reversed (did you mean {last}-{first}?)")
            ranges.append(PortRange(first, last))
    merged: list[PortRange] = []
    for r in sorted(ranges):
        if merged and r.first <= merged[-1].last + 1:
            merged[-1] = PortRange(merged[-1].first, max(merged[-1].last, r.last))
        else:
            merged.append(r)
    return tuple(merged)


def parse_subnets(values: Iterable[str], flag: str) -> tuple[IpNetwork, ...]:
    """Comma lists of IPv4/IPv6 CIDRs (a bare address is a /32 or /128). Host bits are masked,
    as iptables itself does, so the rule we compare with `iptables-save` is the canonical one."""
    nets: list[IpNetwork] = []
    for value in values:
        for item in str(value).split(","):
            item = item.strip()
            if not item:
                continue
            try:
                net = ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ConfigError(f"{flag}: {item!r} is not an IPv4 or IPv6 CIDR") from None
            if net not in nets:
                nets.append(net)
    return tuple(sorted(nets, key=lambda n: (n.version, n)))


def parse_id(value: int | str | None, flag: str) -> int | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        number = int(str(value), 10)
    except ValueError:
        raise ConfigError(f"{flag}: {value!r} is not a number") from None
    if number < 0:
        return None          # linkerd uses -1 for "not set"
    if number > _MAX_ID:
        raise ConfigError(f"{flag}: {number} is larger than {_MAX_ID}")
    return number


@dataclass(frozen=True)
class InitConfig:
    incoming_proxy_port: int = 4143
    outgoing_proxy_port: int = 4140
    proxy_uid: int | None = 2102
    proxy_gid: int | None = None
    ports_to_redirect: tuple[PortRange, ...] = ()          # inbound only; empty = all TCP ports
    inbound_ports_to_ignore: tuple[PortRange, ...] = ()
    outbound_ports_to_ignore: tuple[PortRange, ...] = ()
    subnets_to_ignore: tuple[IpNetwork, ...] = ()          # inbound by source, outbound by destination
    ipv6: bool | None = None                               # None: on when the namespace has IPv6
    iptables_mode: str = "auto"
    netns: str | None = None
    use_wait_flag: bool = False                            # linkerd's -w: restores always wait (see below)
    iptables_wait: int = DEFAULT_WAIT                      # seconds a restore waits for the xtables lock
    timeout_close_wait_secs: int = 0                       # 0: leave the kernel default
    mode: str = "iptables"                                 # or "ebpf": register with the node's programs
    bpffs: str | None = None                               # ebpf: the node agent's pins (its --bpffs)
    fallback: str = "none"                                 # ebpf: "iptables" when the node has no programs

    def subnets(self, version: int) -> tuple[IpNetwork, ...]:
        """The ignored subnets of one IP version: each family's pass takes only its own."""
        return tuple(n for n in self.subnets_to_ignore if n.version == version)


def build_config(*, incoming_proxy_port=4143, outgoing_proxy_port=4140, proxy_uid=2102, proxy_gid=None,
                 ports_to_redirect=(), inbound_ports_to_ignore=(), outbound_ports_to_ignore=(),
                 subnets_to_ignore=(), ipv6=None, iptables_mode="auto", netns=None,
                 use_wait_flag=False, iptables_wait=DEFAULT_WAIT, timeout_close_wait_secs=0, mode="iptables", bpffs=None,
                 fallback="none") -> InitConfig:
    """Validate raw flag values into an InitConfig, or raise ConfigError naming the flag."""
    if mode not in MODES:
        raise ConfigError(f"--mode: {mode!r} is not one of {', '.join(MODES)}")
    if fallback not in FALLBACKS:
        raise ConfigError(f"--fallback: {fallback!r} is not one of {', '.join(FALLBACKS)}")
    if mode != "ebpf" and (bpffs or fallback != "none"):
        raise ConfigError(f"{'--bpffs' if bpffs else '--fallback'}: applies to --mode ebpf only")
    if iptables_mode not in IPTABLES_MODES:
        raise ConfigError(f"--iptables-mode: {iptables_mode!r} is not one of {', '.join(IPTABLES_MODES)}")
    try:
        close_wait = int(timeout_close_wait_secs or 0)
    except (TypeError, ValueError):
        raise ConfigError(f"--timeout-close-wait-secs: {timeout_close_wait_secs!r} is not a number") from None
    if close_wait < 0:
        raise ConfigError(f"--timeout-close-wait-secs: {close_wait} is negative")
    if not isinstance(iptables_wait, int) or iptables_wait < 1:
        raise ConfigError(f"--iptables-wait: {iptables_wait!r} is not a whole number of seconds >= 1")
    return InitConfig(
        incoming_proxy_port=parse_port(incoming_proxy_port, "--incoming-proxy-port"),
        outgoing_proxy_port=parse_port(outgoing_proxy_port, "--outgoing-proxy-port"),
        proxy_uid=parse_id(proxy_uid, "--proxy-uid"),
        proxy_gid=parse_id(proxy_gid, "--proxy-gid"),
        ports_to_redirect=parse_ports(ports_to_redirect, "--ports-to-redirect"),
        inbound_ports_to_ignore=parse_ports(inbound_ports_to_ignore, "--inbound-ports-to-ignore"),
        outbound_ports_to_ignore=parse_ports(outbound_ports_to_ignore, "--outbound-ports-to-ignore"),
        subnets_to_ignore=parse_subnets(subnets_to_ignore, "--subnets-to-ignore"),
        ipv6=ipv6,
        iptables_mode=iptables_mode,
        netns=netns or None,
        use_wait_flag=bool(use_wait_flag),
        iptables_wait=iptables_wait,
        timeout_close_wait_secs=close_wait,
        mode=mode,
        bpffs=bpffs or None,
        fallback=fallback,
    )
