"""Services, Endpoints and EndpointSlices: what splits resolve against.

Only what resolution needs is kept: ClusterIPs, ports, and the *ready* endpoint addresses with
their named ports, plus the terminating addresses that are still serving (a last resort, see
`resolve`). Other not-ready addresses are counted (for messages) but never used.
"""
from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from kernsplit.agent.model.diagnostics import DiagnosticSink
from kernsplit.agent.model.documents import Document
from kernsplit.agent.model.fields import DocContext
from kernsplit.agent.model.names import SERVICE_NAME

PROTOCOLS = ("TCP", "UDP", "SCTP")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?")   # IANA_SVC_NAME, <= 15 chars


_SHARED: dict[tuple, tuple] = {}
_SHARED_MAX = 4096


def shared(ports: tuple) -> tuple:
    """One copy of each distinct ports list: thousands of Services and slices list the same one
    (`port: 80, name: http`). Bounded: past `_SHARED_MAX` distinct lists it starts over."""
    if len(_SHARED) >= _SHARED_MAX:
        _SHARED.clear()
    return _SHARED.setdefault(ports, ports)


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str                 # "" when unnamed (single-port services)
    port: int
    target_port: int | str    # number, or the name of a container port
    protocol: str

    def describe(self) -> str:
        return f"{self.port} (name \"{self.name}\")" if self.name else str(self.port)


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    cluster_ips: tuple[str, ...]    # canonical text; empty when headless or not allocated
    headless: bool
    ports: tuple[ServicePort, ...]
    file: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def obj(self) -> str:
        return f"Service {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class EndpointPort:
    name: str
    port: int
    protocol: str


@dataclass(frozen=True, slots=True)
class ReadyAddress:
    ip: str                               # canonical text
    ports: tuple[EndpointPort, ...]


@dataclass(frozen=True, slots=True)
class EndpointGroup:
    """The ready addresses one Endpoints object or one EndpointSlice gives a Service."""
    source: str                           # "Endpoints" | "EndpointSlice"
    namespace: str
    service: str
    name: str
    ready: tuple[ReadyAddress, ...]
    not_ready: int                        # neither ready nor serving-while-terminating
    file: str
    # Not ready because terminating, but still serving (EndpointSlice only): used when a Service
    # has no ready endpoint at all, as kube-proxy does.
    terminating: tuple[ReadyAddress, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.service)


def parse_service(doc: Document, sink: DiagnosticSink) -> Service | None:
    ctx = DocContext(doc, sink)
    ctx.check_identity(SERVICE_NAME)
    spec = ctx.mapping(doc.data, "spec", "spec") or {}
    cluster_ips, headless = _cluster_ips(ctx, spec)
    ports = shared(tuple(p for i, raw in enumerate(ctx.sequence(spec, "ports", "spec.ports") or [])
                         if (p := _service_port(ctx, raw, f"spec.ports[{i}]")) is not None))
    _check_unique_ports(ctx, ports)
    if not ctx.ok:
        return None
    return Service(doc.namespace, doc.name, cluster_ips, headless, ports, doc.file)


def _cluster_ips(ctx: DocContext, spec: Mapping) -> tuple[tuple[str, ...], bool]:
    single = spec.get("clusterIP")
    many = ctx.sequence(spec, "clusterIPs", "spec.clusterIPs")
    if single == "None" or (many and many[0] == "None"):
        return (), True
    if many:
        ips = tuple(ip for i, raw in enumerate(many) if (ip := ctx.ip(raw, f"spec.clusterIPs[{i}]")))
        first = ctx.ip(single, "spec.clusterIP") if single not in (None, "") else None
        if first is not None and ips and first != ips[0]:
            ctx.error("spec.clusterIP", f'"{single}" must equal spec.clusterIPs[0] ("{many[0]}")')
        if len({ipaddress.ip_address(ip).version for ip in ips}) != len(ips):
            ctx.error("spec.clusterIPs", "may hold at most one address per IP family")
        return ips, False
    if single in (None, ""):
        return (), False
    ip = ctx.ip(single, "spec.clusterIP")
    return ((ip,) if ip else ()), False


def _service_port(ctx: DocContext, raw: object, path: str) -> ServicePort | None:
    if not isinstance(raw, Mapping):
        ctx.error(path, "must be a mapping")
        return None
    name = ctx.string(raw, "name", f"{path}.name") or ""
    port = ctx.port(raw, "port", f"{path}.port", required=True)
    protocol = sys.intern(str(raw.get("protocol") or "TCP"))
    if protocol not in PROTOCOLS:
        ctx.error(f"{path}.protocol", f'"{protocol}" is not one of {", ".join(PROTOCOLS)}')
    target = _target_port(ctx, raw.get("targetPort"), f"{path}.targetPort")
    if port is None or target is False:
        return None
    return ServicePort(name, port, port if target is None else target, protocol)


def _target_port(ctx: DocContext, value: object, path: str) -> int | str | None | bool:
    """None: not set (defaults to port). False: invalid (reported)."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, str) and not value.strip().isdigit():
        if not _PORT_NAME.fullmatch(value) or value.isdigit() or "--" in value:
            ctx.error(path, f'"{value}" is neither a port number nor a valid port name')
            return False
        return value
    number = ctx.port_value(value, path)
    return False if number is None else number


def _check_unique_ports(ctx: DocContext, ports: tuple[ServicePort, ...]) -> None:
    seen: set[tuple[int, str]] = set()
    names: set[str] = set()
    for i, port in enumerate(ports):
        if (port.port, port.protocol) in seen:
            ctx.error(f"spec.ports[{i}].port", f"{port.port}/{port.protocol} is listed twice")
        if port.name and port.name in names:
            ctx.error(f"spec.ports[{i}].name", f'"{port.name}" is listed twice')
        seen.add((port.port, port.protocol))
        names.add(port.name)
    if len(ports) > 1 and any(not p.name for p in ports):
        ctx.error("spec.ports", "every port needs a name when a Service has more than one")


def parse_endpoints(doc: Document, sink: DiagnosticSink) -> EndpointGroup | None:
    """v1 Endpoints: named like its Service; subsets of addresses x ports."""
    ctx = DocContext(doc, sink)
    ctx.check_identity()
    ready: list[ReadyAddress] = []
    not_ready = 0
    for s, subset in enumerate(ctx.sequence(doc.data, "subsets", "subsets") or []):
        path = f"subsets[{s}]"
        if not isinstance(subset, Mapping):
            ctx.error(path, "must be a mapping")
            continue
        ports = _endpoint_ports(ctx, subset, f"{path}.ports")
        for a, address in enumerate(ctx.sequence(subset, "addresses", f"{path}.addresses") or []):
            ip = _address_ip(ctx, address, f"{path}.addresses[{a}]")
            if ip:
                ready.append(ReadyAddress(ip, ports))
        for a, address in enumerate(ctx.sequence(subset, "notReadyAddresses", f"{path}.notReadyAddresses") or []):
            not_ready += bool(_address_ip(ctx, address, f"{path}.notReadyAddresses[{a}]"))
    if not ctx.ok:
        return None
    return EndpointGroup("Endpoints", doc.namespace, doc.name, doc.name, tuple(ready), not_ready, doc.file)


def _address_ip(ctx: DocContext, address: object, path: str) -> str | None:
    if not isinstance(address, Mapping):
        ctx.error(path, "must be a mapping")
        return None
    if address.get("ip") in (None, ""):
        ctx.error(f"{path}.ip", "is required")
        return None
    return ctx.ip(address["ip"], f"{path}.ip")


def _endpoint_ports(ctx: DocContext, parent: Mapping, path: str) -> tuple[EndpointPort, ...]:
    """`path` is the field path of the ports list itself."""
    ports: list[EndpointPort] = []
    for p, raw in enumerate(ctx.sequence(parent, "ports", path) or []):
        where = f"{path}[{p}]"
        if not isinstance(raw, Mapping):
            ctx.error(where, "must be a mapping")
            continue
        if raw.get("port") is None:
            continue    # EndpointSlice: a null port means "all ports"; nothing we can pick
        number = ctx.port(raw, "port", f"{where}.port")
        if number is not None:
            ports.append(EndpointPort(sys.intern(str(raw.get("name") or "")), number,
                                      sys.intern(str(raw.get("protocol") or "TCP"))))
    return shared(tuple(ports))


def parse_endpoint_slice(doc: Document, sink: DiagnosticSink) -> EndpointGroup | None:
    """discovery.k8s.io/v1 EndpointSlice: linked to its Service by a label; ready unless false."""
    ctx = DocContext(doc, sink)
    ctx.check_identity()
    labels = doc.metadata.get("labels")
    service = labels.get(SERVICE_NAME_LABEL) if isinstance(labels, Mapping) else None
    if not service:
        ctx.warning(f"metadata.labels.{SERVICE_NAME_LABEL}", "is missing: the slice belongs to no Service; ignored")
        return None
    if ctx.name(labels, SERVICE_NAME_LABEL, f"metadata.labels.{SERVICE_NAME_LABEL}") is None or not ctx.ok:
        return None
    address_type = doc.data.get("addressType")
    if address_type == "FQDN":
        ctx.info("addressType", "FQDN slices cannot be used by a kernel dataplane; ignored")
        return None
    if address_type not in ("IPv4", "IPv6"):
        ctx.error("addressType", f'"{address_type}" is not IPv4, IPv6 or FQDN')
        return None
    ports = _endpoint_ports(ctx, doc.data, "ports")
    ready: list[ReadyAddress] = []
    terminating: list[ReadyAddress] = []
    not_ready = 0
    for e, endpoint in enumerate(ctx.sequence(doc.data, "endpoints", "endpoints") or []):
        address = _slice_address(ctx, endpoint, f"endpoints[{e}]", address_type)
        if address is None:
            continue
        state = _endpoint_state(endpoint.get("conditions"))
        if state == "ready":
            ready.append(ReadyAddress(address, ports))
        elif state == "terminating":
            terminating.append(ReadyAddress(address, ports))
        else:
            not_ready += 1
    if not ctx.ok:
        return None
    return EndpointGroup("EndpointSlice", doc.namespace, sys.intern(str(service)), doc.name, tuple(ready), not_ready, doc.file,
                         tuple(terminating))


def _endpoint_state(conditions: object) -> str:
    """"ready", "terminating" (serving while terminating: a last resort) or "not ready".

    EndpointSlice conditions: a null `ready` means ready (treat unknown as ready); a null `serving`
    defers to `ready`; a null `terminating` means not terminating."""
    if not isinstance(conditions, Mapping):
        return "ready"
    if conditions.get("ready") is not False:
        return "ready"
    if conditions.get("serving") is True and conditions.get("terminating") is True:
        return "terminating"
    return "not ready"


def _slice_address(ctx: DocContext, endpoint: object, path: str, address_type: str) -> str | None:
    if not isinstance(endpoint, Mapping):
        ctx.error(path, "must be a mapping")
        return None
    addresses = ctx.sequence(endpoint, "addresses", f"{path}.addresses", required=True)
    if not addresses:
        if addresses == []:
            ctx.error(f"{path}.addresses", "must hold at least one address")
        return None
    # All addresses of one endpoint are the same pod; like kube-proxy, use the first.
    ip = ctx.ip(addresses[0], f"{path}.addresses[0]")
    if ip and ipaddress.ip_address(ip).version != (4 if address_type == "IPv4" else 6):
        ctx.error(f"{path}.addresses[0]", f'"{addresses[0]}" is not an {address_type} address')
        return None
    return ip
