"""`load_config`: manifests in, a frozen `Config` with resolved split ports and diagnostics out."""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kernsplit.agent.model.diagnostics import Diagnostic, DiagnosticSink
from kernsplit.agent.model.documents import Document, read_documents
from kernsplit.agent.model.names import DEFAULT_CLUSTER_DOMAIN
from kernsplit.agent.model.resolve import Inventory, resolve
from kernsplit.agent.model.resolved import SplitPort
from kernsplit.agent.model.routes import ROUTE_KINDS, parse_route
from kernsplit.agent.model.services import EndpointGroup, Service, parse_endpoint_slice, parse_endpoints, parse_service
from kernsplit.agent.model.splits import Split, parse_traffic_split


@dataclass(frozen=True)
class Config:
    split_ports: tuple[SplitPort, ...]      # sorted by (namespace, service, cluster_ip, port)
    diagnostics: tuple[Diagnostic, ...]     # in the order found
    splits: tuple[Split, ...] = ()          # every split read without error (conflict losers too)
    services: tuple[Service, ...] = ()
    files: tuple[str, ...] = ()

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "error")

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "warning")

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)

    def to_json(self) -> dict[str, Any]:
        owned: dict[tuple[str, str, str], int] = {}
        for port in self.split_ports:
            key = (port.split_kind, port.namespace, port.split)
            owned[key] = owned.get(key, 0) + 1
        return {
            # split_ports: how many split ports each split owns (0: lost a conflict, or no root)
            "splits": [{**s.to_json(), "split_ports": owned.get((s.kind, s.namespace, s.name), 0)}
                       for s in self.splits],
            "split_ports": [split_port_json(p) for p in self.split_ports],
            "diagnostics": [d.to_json() for d in self.diagnostics],
        }


def split_port_json(port: SplitPort) -> dict[str, Any]:
    """A SplitPort as JSON; exact shares as fraction strings ("9/10")."""
    return {
        "namespace": port.namespace, "service": port.service, "split": port.split,
        "split_kind": port.split_kind, "cluster_ip": port.cluster_ip, "port": port.port,
        "port_name": port.port_name, "protocol": port.protocol, "refuse": port.refuse,
        "backends": [{"service": b.service, "weight": b.weight, "share": str(b.share), "resolved": b.resolved,
                      "terminating": b.terminating} for b in port.backends],
        "endpoints": [{"backend": w.backend, "ip": w.endpoint.ip, "port": w.endpoint.port, "share": str(w.share)}
                      for w in port.endpoints],
        "refused": [{"backend": r.backend, "share": str(r.share)} for r in port.refused],
    }


def load_config(paths: Sequence[str | os.PathLike], *, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> Config:
    """Read manifests from files and directories and resolve every split. Never raises for bad
    content: problems are diagnostics, and `has_errors` tells the agent to refuse the config.
    `cluster_domain` completes Service DNS names (`name.ns.svc.<cluster_domain>`) in splits."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]     # a lone path is a common slip; a str is also a Sequence of letters
    sink = DiagnosticSink()
    documents = read_documents(paths, sink)
    services: list[Service] = []
    groups: list[EndpointGroup] = []
    splits: list[Split] = []
    seen: dict[tuple[str, ...], str] = {}
    for doc in documents:
        parsed = parse_document(doc, sink, cluster_domain)
        if parsed is None or not _first_definition(doc, seen, sink):
            continue
        target = {Service: services, EndpointGroup: groups}.get(type(parsed))
        if target is not None:
            target.append(parsed)
        else:
            splits.extend(parsed)
    inventory = Inventory.build(services, groups)
    split_ports = resolve(splits, inventory, sink)
    return Config(split_ports, sink.freeze(), tuple(splits), tuple(services),
                  tuple(dict.fromkeys(d.file for d in documents)))


_PARSERS: dict[str, Callable[[Document, DiagnosticSink, str], Any]] = {
    "Service": lambda doc, sink, _domain: parse_service(doc, sink),
    "Endpoints": lambda doc, sink, _domain: parse_endpoints(doc, sink),
    "EndpointSlice": lambda doc, sink, _domain: parse_endpoint_slice(doc, sink),
    "TrafficSplit": lambda doc, sink, domain: [s] if (s := parse_traffic_split(doc, sink, domain)) else [],
    **{kind: lambda doc, sink, _domain: parse_route(doc, sink) for kind in ROUTE_KINDS},
}


# Core kinds are read only in the API version we understand; other groups' kinds of the same
# name are not ours. (Split and route parsers check their own groups and versions.)
_CORE_VERSIONS = {"Service": "v1", "Endpoints": "v1", "EndpointSlice": "discovery.k8s.io/v1"}


def parse_document(doc: Document, sink: DiagnosticSink, cluster_domain: str) -> Any:
    """One object: a Service, an EndpointGroup, a list of Splits, or None (unknown kind, other
    version, or errors, which are in `sink`)."""
    parser = _PARSERS.get(doc.kind)
    if parser is None:
        return None     # unknown kinds are ignored: a whole `kubectl get -o yaml` dump is fine
    if _CORE_VERSIONS.get(doc.kind, doc.api_version) != doc.api_version:
        return None
    return parser(doc, sink, cluster_domain)


def _first_definition(doc: Document, seen: dict[tuple[str, ...], str], sink: DiagnosticSink) -> bool:
    """The same object defined twice is ambiguous: an error, and the second copy is dropped."""
    # Kinds of different groups are different objects (Gateway API's and Linkerd's HTTPRoute).
    key = (doc.api_version.rpartition("/")[0], doc.kind, doc.namespace, doc.name)
    where = f"{doc.file} document {doc.index}"
    if key in seen:
        sink.add("error", doc.file, doc.obj, doc.field_prefix + "metadata.name",
                 f"is defined twice (first in {seen[key]})")
        return False
    seen[key] = where
    return True
