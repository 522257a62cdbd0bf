"""Pods registered for eBPF interception: their settings as a typed value, encoded to and from the
`ks_pods` entry (bpf/ks_types.h: struct ks_pod), and the pinned maps that hold them.

proxy-init writes an entry keyed by the pod's network-namespace cookie; the interception programs
read it; `kernsplit show --pods` lists the entries with their counters.
"""
from __future__ import annotations

import ctypes as ct
import ipaddress
import socket
from dataclasses import dataclass

from kernsplit.agent.dataplane.ebpf import abi, bpfsys
from kernsplit.agent.dataplane.ebpf.pins import Pins
from kernsplit.agent.netns import entered

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Ports = tuple[tuple[int, int], ...]           # inclusive (first, last) ranges
SO_NETNS_COOKIE = 71                          # asm-generic/socket.h, kernel >= 5.14


@dataclass(frozen=True)
class PodSettings:
    """What one pod asked proxy-init for, in the programs' terms."""
    netns: str                                # how the namespace was named, for people
    inbound_port: int
    outbound_port: int
    proxy_uid: int | None
    proxy_gid: int | None
    redirect: Ports = ()                      # inbound ports redirected; () = all
    inbound_ignore: Ports = ()
    outbound_ignore: Ports = ()
    subnets: tuple[IpNetwork, ...] = ()       # ignored both ways (inbound by source)
    addresses: tuple[IpAddress, ...] = ()     # the pod's own: connects to them stay local
    ipv6: bool = True


@dataclass(frozen=True)
class RegisteredPod:
    cookie: int
    settings: PodSettings
    outbound: int                             # connects sent to the outbound port
    inbound: int                              # connection attempts steered to the inbound port


class PodLimitError(ValueError):
    """A setting does not fit the fixed-size entry; the message names the list."""


def _ranges(ports: Ports, what: str):
    if len(ports) > abi.KS_POD_PORT_RANGES:
        raise PodLimitError(f"{what}: {len(ports)} port ranges, at most {abi.KS_POD_PORT_RANGES} fit "
                            "the eBPF pod entry (merge neighbouring ports into ranges)")
    out = (abi.PortRange * abi.KS_POD_PORT_RANGES)()
    for i, (first, last) in enumerate(ports):
        out[i] = abi.PortRange(first, last)
    return out


def _words(packed: bytes):
    return (ct.c_uint32 * 4).from_buffer_copy(packed.ljust(16, b"\0"))


def _addr_key(a: IpAddress) -> tuple:
    return (tuple(_words(a.packed)), a.version)


def _cidrs(nets, limit: int, what: str):
    if len(nets) > limit:
        raise PodLimitError(f"{what}: {len(nets)} entries, at most {limit} fit the eBPF pod entry")
    out = (abi.Cidr * limit)()
    for i, n in enumerate(nets):
        out[i] = abi.Cidr(_words(n.network_address.packed), _words(n.netmask.packed), n.version)
    return out


def encode(s: PodSettings) -> abi.Pod:
    flags = ((abi.KS_POD_UID if s.proxy_uid is not None else 0) | (abi.KS_POD_GID if s.proxy_gid is not None else 0)
             | (abi.KS_POD_IPV6 if s.ipv6 else 0))
    own = tuple(ipaddress.ip_network(a) for a in s.addresses)
    return abi.Pod(flags, s.proxy_uid or 0, s.proxy_gid or 0, s.inbound_port, s.outbound_port,
                   len(s.redirect), len(s.inbound_ignore), len(s.outbound_ignore), len(s.subnets), len(own),
                   (ct.c_uint8 * 3)(),
                   _ranges(s.redirect, "--ports-to-redirect"), _ranges(s.inbound_ignore, "--inbound-ports-to-ignore"),
                   _ranges(s.outbound_ignore, "--outbound-ports-to-ignore"),
                   _cidrs(s.subnets, abi.KS_POD_CIDRS, "--subnets-to-ignore"),
                   _cidrs(own, abi.KS_POD_ADDRS, "the pod's addresses"),
                   s.netns.encode()[:abi.KS_POD_NAME_LEN - 1])


def _decode_ranges(arr, n: int) -> Ports:
    return tuple((r.first, r.last) for r in arr[:min(n, abi.KS_POD_PORT_RANGES)])


def _decode_cidrs(arr, n: int, limit: int) -> tuple[IpNetwork, ...]:
    out = []
    for c in arr[:min(n, limit)]:
        size = 4 if c.family == 4 else 16
        addr = ipaddress.ip_address(bytes(c.net)[:size])
        mask = ipaddress.ip_address(bytes(c.mask)[:size])
        out.append(ipaddress.ip_network(f"{addr}/{bin(int(mask)).count('1')}"))
    return tuple(out)


def decode(v: abi.Pod) -> PodSettings:
    return PodSettings(
        netns=v.netns.decode(errors="replace"), inbound_port=v.inbound_port, outbound_port=v.outbound_port,
        proxy_uid=v.proxy_uid if v.flags & abi.KS_POD_UID else None,
        proxy_gid=v.proxy_gid if v.flags & abi.KS_POD_GID else None,
        redirect=_decode_ranges(v.redirect, v.nredirect), inbound_ignore=_decode_ranges(v.in_ignore, v.nin_ignore),
        outbound_ignore=_decode_ranges(v.out_ignore, v.nout_ignore),
        subnets=_decode_cidrs(v.subnets, v.nsubnets, abi.KS_POD_CIDRS),
        addresses=tuple(n.network_address for n in _decode_cidrs(v.addrs, v.naddrs, abi.KS_POD_ADDRS)),
        ipv6=bool(v.flags & abi.KS_POD_IPV6))


def _ports_text(ports: Ports) -> str:
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ports)


def describe(s: PodSettings) -> str:
    """The settings in proxy-init's flag words, on one line."""
    parts = [f"inbound->{s.inbound_port}", f"outbound->{s.outbound_port}",
             f"uid {s.proxy_uid if s.proxy_uid is not None else '-'}",
             f"gid {s.proxy_gid if s.proxy_gid is not None else '-'}"]
    if s.redirect:
        parts.append(f"redirect {_ports_text(s.redirect)}")
    if s.inbound_ignore:
        parts.append(f"ignore-in {_ports_text(s.inbound_ignore)}")
    if s.outbound_ignore:
        parts.append(f"ignore-out {_ports_text(s.outbound_ignore)}")
    if s.subnets:
        parts.append(f"ignore-subnets {','.join(map(str, s.subnets))}")
    parts.append("ipv4+ipv6" if s.ipv6 else "ipv4")
    return "  ".join(parts)


def netns_cookie(netns) -> int:
    """The cookie of a network namespace, as bpf_get_netns_cookie gives it to the programs."""
    with entered(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")


class PodMaps:
    """The pinned ks_pods and ks_pod_counters maps of a node's install."""

    def __init__(self, pins: Pins):
        self._open: list[bpfsys.Map] = []
        try:
            self.pods = self._map(pins, "ks_pods")
            self.addrs = self._map(pins, "ks_pod_addrs")
            self.counters = self._map(pins, "ks_pod_counters")
        except BaseException:
            self.close()
            raise

    def _map(self, pins: Pins, name: str) -> bpfsys.Map:
        key_t, value_t = abi.MAP_TYPES[name]
        m = bpfsys.Map(pins.map(name), key_t, value_t, per_cpu=name in abi.PER_CPU_MAPS)
        self._open.append(m)
        return m

    def close(self) -> None:
        for m in self._open:
            m.close()
        self._open.clear()

    def __enter__(self) -> "PodMaps":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def register(self, cookie: int, settings: PodSettings) -> bool:
        """Write the pod's entry; counters start at zero for a new pod and carry over on a
        re-run. Returns whether the entry changed."""
        key = ct.c_uint64(cookie)
        value = encode(settings)
        old = self.pods.lookup(key)
        if self.counters.lookup(key) is None:
            self.counters.update(key, self.counters.value_type())
        stale = self._addresses_of(cookie) - {_addr_key(a) for a in settings.addresses}
        for a in settings.addresses:      # inbound finds the pod by destination address
            self.addrs.update(abi.AddrKey(*_addr_key(a)), key)
        for k in stale:
            self.addrs.delete(abi.AddrKey(*k))
        if old is not None and bytes(old) == bytes(value):
            return False
        self.pods.update(key, value)
        return True

    def _addresses_of(self, cookie: int) -> set[tuple]:
        out = set()
        for k in self.addrs.keys():
            owner = self.addrs.lookup(k)
            if owner is not None and owner.value == cookie:
                out.add((tuple(k.addr), k.family))
        return out

    def unregister(self, cookie: int) -> bool:
        key = ct.c_uint64(cookie)
        for k in self._addresses_of(cookie):
            self.addrs.delete(abi.AddrKey(*k))
        self.counters.delete(key)
        return self.pods.delete(key)

    def lookup(self, cookie: int) -> PodSettings | None:
        v = self.pods.lookup(ct.c_uint64(cookie))
        return decode(v) if v is not None else None

    def registered(self) -> list[RegisteredPod]:
        out = []
        for key in self.pods.keys():
            v = self.pods.lookup(key)
            if v is None:
                continue           # unregistered while we iterated
            per_cpu = self.counters.lookup(key)
            outbound = sum(c.outbound for c in per_cpu) if per_cpu is not None else 0
            inbound = sum(c.inbound for c in per_cpu) if per_cpu is not None else 0
            out.append(RegisteredPod(key.value, decode(v), outbound, inbound))
        return sorted(out, key=lambda p: (p.settings.netns, p.cookie))
