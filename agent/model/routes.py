"""Gateway API HTTPRoute and TCPRoute attached to a Service (GAMMA mesh routes) as `Split`s.

Linkerd's own `policy.linkerd.io` HTTPRoute (v1beta1..v1beta3, still served and used in Linkerd's
traffic-shifting docs) has Gateway API's shape and is read the same way.

Only routes whose `parentRefs` name a Service (kind Service, group "" or "core") concern a mesh
dataplane; routes attached to Gateways are someone else's and are ignored. One split is made per
Service parent. A kernel dataplane splits connections, not requests: it uses the backendRefs of
the first rule and reports matches, filters and further rules as not enforced.
"""
from __future__ import annotations

from collections.abc import Mapping

from kernsplit.agent.model.diagnostics import DiagnosticSink
from kernsplit.agent.model.documents import Document
from kernsplit.agent.model.fields import DocContext
from kernsplit.agent.model.quantity import parse_whole
from kernsplit.agent.model.splits import L7_NOT_ENFORCED, Backend, Split, check_duplicates, creation_time, parse_weight

GATEWAY_GROUP = "gateway.networking.k8s.io"
LINKERD_GROUP = "policy.linkerd.io"
# group -> kind -> versions read
ROUTE_GROUPS = {
    GATEWAY_GROUP: {"HTTPRoute": ("v1", "v1beta1", "v1alpha2"), "TCPRoute": ("v1", "v1beta1", "v1alpha2")},
    LINKERD_GROUP: {"HTTPRoute": ("v1beta1", "v1beta2", "v1beta3")},
}
ROUTE_VERSIONS = ROUTE_GROUPS[GATEWAY_GROUP]["HTTPRoute"]
ROUTE_KINDS = ("HTTPRoute", "TCPRoute")
MAX_BACKEND_REFS = 16
MAX_ROUTE_WEIGHT = 1_000_000
_CORE_GROUPS = ("", "core")


def parse_route(doc: Document, sink: DiagnosticSink) -> list[Split]:
    ctx = DocContext(doc, sink)
    group, _, version = doc.api_version.partition("/")
    versions = ROUTE_GROUPS.get(group, {}).get(doc.kind)
    if versions is None:
        return []
    if version not in versions:
        ctx.warning("apiVersion", f'"{doc.api_version}" is not a supported version '
                                  f'({", ".join(f"{group}/{v}" for v in versions)}); ignored')
        return []
    ctx.check_identity()
    spec = ctx.mapping(doc.data, "spec", "spec", required=True) or {}
    parents = _service_parents(ctx, spec)
    if not parents:
        return []       # attached to Gateways only: north-south traffic, not ours
    backends = _backends(ctx, spec)
    created = creation_time(ctx)
    if not ctx.ok:
        return []
    if not backends:
        ctx.warning("spec.rules", "has no Service backendRefs: nothing to split; ignored")
        return []
    return [Split(doc.kind, doc.api_version, doc.namespace, doc.name, service, tuple(backends), "integer",
                  created, doc.file, field, port=port, section_name=section, field_prefix=doc.field_prefix)
            for service, port, section, field in parents]


def _service_parents(ctx: DocContext, spec: Mapping) -> list[tuple[str, int | None, str | None, str]]:
    parents = []
    for i, ref in enumerate(ctx.sequence(spec, "parentRefs", "spec.parentRefs") or []):
        path = f"spec.parentRefs[{i}]"
        if not isinstance(ref, Mapping):
            ctx.error(path, "must be a mapping")
            continue
        if ref.get("kind", "Gateway") != "Service":
            continue
        if ref.get("group", GATEWAY_GROUP) not in _CORE_GROUPS:
            # parentRef's group defaults to gateway.networking.k8s.io, not the core group: a
            # common slip when writing a mesh route by hand, so say so instead of ignoring silently.
            ctx.warning(f"{path}.group", 'must be "" (core) for a Service parent; this parentRef is ignored')
            continue
        name = ctx.name(ref, "name", f"{path}.name", required=True)
        namespace = ref.get("namespace") or ctx.doc.namespace
        port = ctx.port(ref, "port", f"{path}.port")
        section = ctx.string(ref, "sectionName", f"{path}.sectionName")
        if name is None:
            continue
        if namespace != ctx.doc.namespace:
            # A consumer route changes traffic only for clients in the route's namespace; a
            # node-wide kernel split cannot tell clients apart.
            ctx.warning(f"{path}.namespace", f'"{namespace}" differs from the route\'s namespace: consumer '
                                             "routes are not supported by a kernel dataplane; ignored")
            continue
        parents.append((name, port, section, path))
    return parents


def _backends(ctx: DocContext, spec: Mapping) -> list[Backend]:
    rules = ctx.sequence(spec, "rules", "spec.rules") or []
    if len(rules) > 1:
        ctx.warning("spec.rules", f"has {len(rules)} rules: only rules[0] is used (a kernel dataplane "
                                  "splits connections; choosing between rules is L7)")
    if not rules:
        return []
    rule = rules[0]
    if not isinstance(rule, Mapping):
        ctx.error("spec.rules[0]", "must be a mapping")
        return []
    _report_l7(ctx, rule)
    refs = ctx.sequence(rule, "backendRefs", "spec.rules[0].backendRefs") or []
    if len(refs) > MAX_BACKEND_REFS:
        ctx.error("spec.rules[0].backendRefs", f"has {len(refs)} entries; at most {MAX_BACKEND_REFS} are allowed")
        return []
    backends = [b for i, ref in enumerate(refs)
                if (b := _backend(ctx, ref, f"spec.rules[0].backendRefs[{i}]")) is not None]
    check_duplicates(ctx, backends)
    return backends


def _backend(ctx: DocContext, ref: object, path: str) -> Backend | None:
    if not isinstance(ref, Mapping):
        ctx.error(path, "must be a mapping")
        return None
    kind, group = ref.get("kind", "Service"), ref.get("group", "")
    if kind != "Service" or group not in _CORE_GROUPS:
        ctx.warning(path, f'backend kind "{kind}" (group "{group}") is not a Service; ignored')
        return None
    name = ctx.name(ref, "name", f"{path}.name", required=True)
    # The v1 CRD rejects a Service backendRef without a port ("Must be specified when the
    # referent is a Kubernetes Service"): never guess the root's.
    port = ctx.port(ref, "port", f"{path}.port", required=True)
    weight = 1 if ref.get("weight") is None else parse_weight(ctx, ref["weight"], f"{path}.weight", parse_whole)
    if weight is not None and weight > MAX_ROUTE_WEIGHT:
        ctx.error(f"{path}.weight", f'"{ref["weight"]}" is above the maximum {MAX_ROUTE_WEIGHT}')
        return None
    if name is None or weight is None or port is None:
        return None
    namespace = ref.get("namespace") or ctx.doc.namespace
    if namespace != ctx.doc.namespace:
        ctx.warning(f"{path}.namespace", f'"{namespace}": cross-namespace backends are not supported; ignored')
        return None
    return Backend(name, weight, port, f"{path}.name")


def _report_l7(ctx: DocContext, rule: Mapping) -> None:
    matches = rule.get("matches")
    default_match = [{"path": {"type": "PathPrefix", "value": "/"}}]
    if matches and matches != default_match:
        ctx.warning("spec.rules[0].matches", L7_NOT_ENFORCED)
    if rule.get("filters"):
        ctx.warning("spec.rules[0].filters", "filters are L7 and not enforced by a kernel dataplane")
