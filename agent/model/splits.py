"""Splits: SMI TrafficSplit (every version, and the seed text's shape) as one typed form.

Gateway API routes (`routes.py`) produce the same `Split`, so resolution knows one shape only.
Weights are normalised here: quantities (v1alpha1, seed shape) to milli-units, whole numbers
otherwise.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from kernsplit.agent.model.diagnostics import DiagnosticSink
from kernsplit.agent.model.documents import Document
from kernsplit.agent.model.fields import DocContext
from kernsplit.agent.model.names import DEFAULT_CLUSTER_DOMAIN
from kernsplit.agent.model.quantity import WeightError, parse_quantity, parse_whole

SMI_GROUP = "split.smi-spec.io"
SMI_VERSIONS = ("v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4")
L7_NOT_ENFORCED = "L7 matches are not enforced by a kernel dataplane: the split applies to every connection"


@dataclass(frozen=True, slots=True)
class Backend:
    service: str
    weight: int             # normalised: milli-units (quantities) or whole number
    port: int | None        # routes: the backend Service port (backendRef.port); None for SMI
    field: str              # where its name was configured ("spec.backends[1].service")


@dataclass(frozen=True, slots=True)
class Split:
    """One weighted split of one root Service, from a TrafficSplit or a route's Service parentRef."""
    kind: str               # "TrafficSplit" | "HTTPRoute" | "TCPRoute"
    api_version: str
    namespace: str
    name: str
    service: str            # root Service (same namespace)
    backends: tuple[Backend, ...]
    weight_unit: str        # "milli" | "integer"
    created: datetime | None
    file: str
    service_field: str      # where the root service was named ("spec.service", "spec.parentRefs[0]")
    port: int | None = None          # parentRef.port: only this root port is split
    section_name: str | None = None  # parentRef.sectionName: only the root port of this name
    field_prefix: str = ""           # "items[3]." inside a List

    @property
    def obj(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def root(self) -> tuple[str, str]:
        return (self.namespace, self.service)

    def age_key(self) -> tuple:
        """Oldest first; a split without creationTimestamp (never applied) counts as newest."""
        created = self.created or datetime.max.replace(tzinfo=timezone.utc)
        return (self.created is None, created, self.namespace, self.name, self.kind, self.service)

    def to_json(self) -> dict:
        return {
            "kind": self.kind, "apiVersion": self.api_version, "namespace": self.namespace,
            "name": self.name, "service": self.service, "file": self.file,
            "port": self.port, "sectionName": self.section_name, "weightUnit": self.weight_unit,
            "creationTimestamp": self.created.isoformat() if self.created else None,
            "backends": [{"service": b.service, "weight": b.weight, "port": b.port} for b in self.backends],
        }


def creation_time(ctx: DocContext) -> datetime | None:
    value = ctx.doc.metadata.get("creationTimestamp")
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        ctx.warning("metadata.creationTimestamp", f'"{value}" is not an RFC 3339 time; treated as newest')
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def parse_weight(ctx: DocContext, value: object, path: str, parser: Callable[[object], int],
                 hint: str = "") -> int | None:
    try:
        return parser(value)
    except WeightError as exc:
        ctx.error(path, f"{exc}{hint if exc.reason.startswith('is not') else ''}")
        return None


def parse_traffic_split(doc: Document, sink: DiagnosticSink,
                        cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> Split | None:
    ctx = DocContext(doc, sink, cluster_domain)
    group, _, version = doc.api_version.partition("/")
    if group != SMI_GROUP:
        return None     # someone else's TrafficSplit kind: not ours to read
    if version not in SMI_VERSIONS:
        ctx.warning("apiVersion", f'"{doc.api_version}" is not a supported version '
                                  f'({", ".join(SMI_VERSIONS)}); ignored')
        return None
    ctx.check_identity()
    spec = ctx.mapping(doc.data, "spec", "spec", required=True) or {}
    service = ctx.service(spec, "service", "spec.service", required=True)
    if "trafficRouting" in spec:
        if "backends" in spec:
            ctx.error("spec", "has both backends and trafficRouting; use one")
        backends, unit = _seed_backends(ctx, spec), "milli"
    else:
        backends, unit = _smi_backends(ctx, spec, version), ("milli" if version == "v1alpha1" else "integer")
    if version in ("v1alpha3", "v1alpha4"):
        _report_matches(ctx, spec)
    check_duplicates(ctx, backends)
    created = creation_time(ctx)
    if not ctx.ok or service is None:
        return None
    return Split("TrafficSplit", doc.api_version, doc.namespace, doc.name, service, tuple(backends), unit,
                 created, doc.file, "spec.service", field_prefix=doc.field_prefix)


def _smi_backends(ctx: DocContext, spec: Mapping, version: str) -> list[Backend]:
    if version == "v1alpha1":
        parser, hint = parse_quantity, ""
    else:
        parser = parse_whole
        hint = f" ({SMI_GROUP}/{version} weights are whole numbers; quantities like 900m are v1alpha1)"
    items = ctx.sequence(spec, "backends", "spec.backends", required=True)
    if items == []:
        ctx.error("spec.backends", "is required (at least one backend)")
    backends: list[Backend] = []
    for i, item in enumerate(items or []):
        path = f"spec.backends[{i}]"
        if not isinstance(item, Mapping):
            ctx.error(path, "must be a mapping")
            continue
        name = ctx.service(item, "service", f"{path}.service", required=True)
        weight = _required_weight(ctx, item, "weight", f"{path}.weight", parser, hint)
        if name is not None and weight is not None:
            backends.append(Backend(name, weight, None, f"{path}.service"))
    return backends


def _seed_backends(ctx: DocContext, spec: Mapping) -> list[Backend]:
    """The seed text's shape: spec.trafficRouting[].backend.serviceName, quantity weights."""
    items = ctx.sequence(spec, "trafficRouting", "spec.trafficRouting", required=True)
    if items == []:
        ctx.error("spec.trafficRouting", "is required (at least one backend)")
    backends: list[Backend] = []
    for i, item in enumerate(items or []):
        path = f"spec.trafficRouting[{i}]"
        if not isinstance(item, Mapping):
            ctx.error(path, "must be a mapping")
            continue
        backend = ctx.mapping(item, "backend", f"{path}.backend", required=True)
        if backend is None:
            continue
        name = ctx.service(backend, "serviceName", f"{path}.backend.serviceName", required=True)
        # The seed text lost its indentation: accept the weight beside `backend` or inside it.
        if "weight" not in item and "weight" in backend:
            weight = _required_weight(ctx, backend, "weight", f"{path}.backend.weight", parse_quantity, "")
        else:
            weight = _required_weight(ctx, item, "weight", f"{path}.weight", parse_quantity, "")
        if name is not None and weight is not None:
            backends.append(Backend(name, weight, None, f"{path}.backend.serviceName"))
    return backends


def _required_weight(ctx: DocContext, item: Mapping, key: str, path: str,
                     parser: Callable[[object], int], hint: str) -> int | None:
    if item.get(key) is None:
        ctx.error(path, "is required")
        return None
    return parse_weight(ctx, item[key], path, parser, hint)


def _report_matches(ctx: DocContext, spec: Mapping) -> None:
    matches = ctx.sequence(spec, "matches", "spec.matches")
    for i, match in enumerate(matches or []):
        path = f"spec.matches[{i}]"
        if not isinstance(match, Mapping):
            ctx.error(path, "must be a mapping")
        elif not match.get("kind") or not match.get("name"):
            ctx.error(path, "needs kind and name")
    if matches:
        ctx.warning("spec.matches", L7_NOT_ENFORCED)


def check_duplicates(ctx: DocContext, backends: list[Backend]) -> None:
    """The same backend twice in one split is an error (routes: same name and port)."""
    first: dict[tuple[str, int | None], str] = {}
    for backend in backends:
        key = (backend.service, backend.port)
        if key in first:
            ctx.error(backend.field, f'"{backend.service}" is listed twice (first at {first[key]})')
        else:
            first[key] = backend.field
