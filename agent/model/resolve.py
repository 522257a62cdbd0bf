"""Resolution: splits + Services + endpoints -> `SplitPort`s with exact per-endpoint shares.

Rules (REFERENCE.md section 2), per root Service port and per ClusterIP:
- a backend resolves when its Service exists, has the port (routes: the backendRef port; SMI:
  the root port's number, as the SMI spec's "Ports" section requires) and ready endpoints of the
  ClusterIP's family, or, when none is ready, endpoints that are terminating but still serving
  (kube-proxy's last resort); otherwise a warning says why (a missing backend is normal while
  Flagger or Argo Rollouts prepare a canary, so never an error);
- TrafficSplit: a backend that does not resolve gets nothing; share(backend) = weight / sum of
  the weights of resolved backends (the SMI spec: the backend "is not included");
- Gateway API routes: a backendRef that does not resolve keeps its weight and its share of new
  connections is refused (the spec: "Connection rejections must respect weight");
  share(backend) = weight / sum of all weights;
- a backend's endpoints split its share equally; weight 0 gets no endpoint and no refusal;
- a backend that is the root itself means the root's own endpoints; a backend that is the root
  of another split is used as a plain Service (splits never nest);
- all weights zero, or nothing resolves: the root's own endpoints; none either: refuse;
- two splits for the same root port: the oldest wins, the other gets a conflict warning.
"""
from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from kernsplit.agent.model.diagnostics import DiagnosticSink
from kernsplit.agent.model.resolved import BackendShare, Endpoint, RefusedShare, SplitPort, WeightedEndpoint
from kernsplit.agent.model.services import EndpointGroup, ReadyAddress, Service, ServicePort
from kernsplit.agent.model.splits import Backend, Split

# Shared: Fractions are immutable, and a resolved port holds one per backend and endpoint.
NONE = Fraction(0)
ALL = Fraction(1)

Key = tuple[str, str]   # (namespace, name)


@dataclass(frozen=True)
class Inventory:
    """Everything resolution looks up, indexed by (namespace, name)."""
    services: Mapping[Key, Service]
    endpoints: Mapping[Key, tuple[EndpointGroup, ...]]

    @classmethod
    def build(cls, services: Iterable[Service], groups: Iterable[EndpointGroup]) -> "Inventory":
        by_service: dict[Key, list[EndpointGroup]] = defaultdict(list)
        for group in groups:
            by_service[group.key].append(group)
        chosen = {}
        for key, found in by_service.items():
            # A cluster dump holds Endpoints and their mirrored EndpointSlices: prefer the slices
            # (the current API) and never add both, which would count every pod twice.
            slices = tuple(g for g in found if g.source == "EndpointSlice")
            chosen[key] = slices or tuple(found)
        return cls({s.key: s for s in services}, chosen)

    def _addresses(self, service: Service, port: ServicePort, family: int, which: str) -> tuple[Endpoint, ...]:
        found: set[Endpoint] = set()
        for group in self.endpoints.get(service.key, ()):
            for address in getattr(group, which):
                if (6 if ":" in address.ip else 4) != family:     # canonical text: cheap family test
                    continue
                number = _endpoint_port(address, port)
                if number is not None:
                    found.add(Endpoint(address.ip, number))
        return tuple(sorted(found))

    def serving_endpoints(self, service: Service, port: ServicePort, family: int) -> tuple[tuple[Endpoint, ...], bool]:
        """Ready endpoints; when there are none, the terminating ones still serving (KEP-1669, as
        kube-proxy does). The flag says the last resort was taken."""
        ready = self.ready_endpoints(service, port, family)
        if ready:
            return ready, False
        return self._addresses(service, port, family, "terminating"), True

    def ready_endpoints(self, service: Service, port: ServicePort, family: int) -> tuple[Endpoint, ...]:
        return self._addresses(service, port, family, "ready")

    def not_ready(self, service: Service) -> int:
        return sum(g.not_ready for g in self.endpoints.get(service.key, ()))


def _endpoint_port(address: ReadyAddress, port: ServicePort) -> int | None:
    """The port to connect to on one endpoint for one Service port.

    Endpoint ports carry the Service port's name (kube-proxy matches them so, which also resolves
    a named targetPort per pod). Hand-written endpoints often omit names or ports: then a numeric
    targetPort is used if the endpoint lists that number or no ports at all.
    """
    for candidate in address.ports:
        if candidate.name == port.name and candidate.protocol == port.protocol:
            return candidate.port
    if isinstance(port.target_port, int):
        if not address.ports or any(p.port == port.target_port for p in address.ports):
            return port.target_port
    return None


def resolve(splits: Iterable[Split], inventory: Inventory, sink: DiagnosticSink,
            roots: Mapping[Key, Split] | None = None) -> tuple[SplitPort, ...]:
    """`roots`: a split of every root Service, when `splits` are only some of them (the agent
    re-resolves one root at a time); it only names nested splits in an info diagnostic."""
    splits = list(splits)
    if roots is None:
        roots = {s.root: s for s in splits}
    claimed: dict[tuple[str, str, int], Split] = {}
    result: list[SplitPort] = []
    for split in sorted(splits, key=Split.age_key):
        root = _root_service(split, inventory, sink)
        ports = _root_ports(split, root, sink) if root is not None else []
        if not ports:
            # The root's problem must not hide the backends': report those too.
            _check_backends(split, inventory, sink)
            continue
        for port in ports:
            owner = claimed.setdefault((split.namespace, split.service, port.port), split)
            if owner is not split:
                _warn(sink, split, split.service_field,
                      f"root Service {split.namespace}/{split.service} port {port.port} is already split by "
                      f"{owner.obj} (created earlier); this one is ignored for that port")
                continue
            for cluster_ip in root.cluster_ips:
                result.append(_split_port(split, root, port, cluster_ip, inventory, roots, sink))
    return tuple(sorted(result, key=lambda p: (p.namespace, p.service, p.cluster_ip, p.port)))


def _warn(sink: DiagnosticSink, split: Split, field: str, message: str, severity: str = "warning") -> None:
    sink.add(severity, split.file, split.obj, split.field_prefix + field, message)


def refuses_share(split: Split) -> bool:
    """Gateway API routes refuse the share of a backend that cannot serve; TrafficSplits leave it
    out and renormalise the others (see the module docstring)."""
    return split.kind != "TrafficSplit"


def _root_service(split: Split, inventory: Inventory, sink: DiagnosticSink) -> Service | None:
    root = inventory.services.get(split.root)
    where = f"{split.service_field}" + (".name" if split.kind != "TrafficSplit" else "")
    if root is None:
        _warn(sink, split, where, f"root Service {split.namespace}/{split.service} does not exist: "
                                  "nothing to intercept")
    elif root.headless:
        _warn(sink, split, where, f"root Service {split.namespace}/{split.service} is headless "
                                  "(clusterIP: None): clients connect to pods directly; not split")
    elif not root.cluster_ips:
        _warn(sink, split, where, f"root Service {split.namespace}/{split.service} has no clusterIP: "
                                  "nothing to intercept")
    else:
        return root
    return None


def _root_ports(split: Split, root: Service, sink: DiagnosticSink) -> list[ServicePort]:
    ports = [p for p in root.ports if p.protocol == "TCP"]
    if split.port is not None:
        ports = [p for p in ports if p.port == split.port]
    if split.section_name is not None:
        ports = [p for p in ports if p.name == split.section_name]
    if not ports:
        wanted = " ".join(filter(None, [str(split.port) if split.port else "",
                                        f'named "{split.section_name}"' if split.section_name else ""]))
        _warn(sink, split, split.service_field,
              f"root Service {split.namespace}/{split.service} has no TCP port{' ' + wanted if wanted else ''}: "
              "nothing to split")
    return ports


def _check_backends(split: Split, inventory: Inventory, sink: DiagnosticSink) -> None:
    """What can be checked of the backends without a usable root port: that each exists and, for
    routes, has the backendRef's port."""
    for backend in split.backends:
        if backend.service == split.service:
            continue
        service = inventory.services.get((split.namespace, backend.service))
        if service is None:
            _warn(sink, split, backend.field, f"backend Service {split.namespace}/{backend.service} does not exist")
        elif backend.port is not None and _backend_port(backend.port, service, None) is None:
            _warn(sink, split, backend.field, f"backend Service {split.namespace}/{backend.service} has no TCP "
                                              f"port {backend.port}")


def _backend_port(backend_port: int | None, service: Service, root_port: ServicePort | None) -> ServicePort | None:
    """The backend's Service port: the backendRef's port (routes), else the root port's number
    (SMI matches ports by number; a port that only shares the root port's name does not match)."""
    number = backend_port if backend_port is not None else (root_port.port if root_port else None)
    return next((p for p in service.ports if p.protocol == "TCP" and p.port == number), None)


def _split_port(split: Split, root: Service, root_port: ServicePort, cluster_ip: str, inventory: Inventory,
                roots: Mapping[Key, Split], sink: DiagnosticSink) -> SplitPort:
    family = ipaddress.ip_address(cluster_ip).version
    resolved: dict[int, tuple[Endpoint, ...]] = {}
    last_resort: set[int] = set()
    for index, backend in enumerate(split.backends):
        endpoints, terminating = _backend_endpoints(split, backend, root, root_port, family, inventory, roots, sink)
        if endpoints:
            resolved[index] = endpoints
            if terminating:
                last_resort.add(index)
    counted = range(len(split.backends)) if refuses_share(split) else resolved
    total = sum(split.backends[i].weight for i in counted)
    shares: list[BackendShare] = []
    weighted: list[WeightedEndpoint] = []
    refused: list[RefusedShare] = []
    for index, backend in enumerate(split.backends):
        share = Fraction(backend.weight, total) if index in counted and total else NONE
        shares.append(BackendShare(backend.service, backend.weight, share, index in resolved, index in last_resort))
        if share and index in resolved:
            eps = resolved[index]
            each = share / len(eps)          # one Fraction for all of them (10,000s of ports are held)
            weighted.extend(WeightedEndpoint(backend.service, ep, each) for ep in eps)
        elif share:
            refused.append(RefusedShare(backend.service, share))
    if not weighted and not refused:
        weighted, refused, shares = _fallback(split, root, root_port, family, inventory, bool(resolved), shares, sink)
    return SplitPort(split.namespace, split.service, split.name, split.kind, cluster_ip, root_port.port,
                     root_port.name or None, "TCP",
                     tuple(sorted(weighted, key=lambda w: (w.backend, w.endpoint))), tuple(shares),
                     tuple(sorted(refused, key=lambda r: r.backend)))


def _with_root_share(shares: list[BackendShare], root: str, resolved: bool,
                     terminating: bool = False) -> list[BackendShare]:
    """Backends when the root's own endpoints take everything (or its refusal does): the root
    carries the whole share, so every choice's backend is one of `backends` (dataplanes count
    connections per backend)."""
    if any(b.service == root for b in shares):
        return [BackendShare(b.service, b.weight, ALL if b.service == root else NONE,
                             resolved if b.service == root else b.resolved,
                             terminating if b.service == root else b.terminating) for b in shares]
    return [*shares, BackendShare(root, 0, ALL, resolved, terminating)]


def _fallback(split: Split, root: Service, root_port: ServicePort, family: int, inventory: Inventory,
              any_resolved: bool, shares: list[BackendShare], sink: DiagnosticSink
              ) -> tuple[list[WeightedEndpoint], list[RefusedShare], list[BackendShare]]:
    """All weights zero, or nothing resolves: the root's own ready endpoints (or, when none is
    ready, its terminating ones still serving), else refuse."""
    endpoints, terminating = inventory.serving_endpoints(root, root_port, family)
    why = "all resolved backends have weight 0" if any_resolved else "no backend resolves"
    if refuses_share(split):
        why = "all backendRefs have weight 0"
    where = f"root Service {split.namespace}/{split.service} port {root_port.port} (IPv{family})"
    if not endpoints:
        _warn(sink, split, split.service_field,
              f"{why} and {where} has no ready endpoints: connections will be refused")
        return [], [RefusedShare(split.service, ALL)], _with_root_share(shares, split.service, False)
    if terminating:
        _warn(sink, split, split.service_field, f"{why}: {where} has no ready endpoints: its {len(endpoints)} "
                                                "terminating endpoint(s) that are still serving take the traffic as "
                                                "a last resort (as kube-proxy does)")
    else:
        _warn(sink, split, split.service_field, f"{why}: {where} keeps its own endpoints", "info")
    each = Fraction(1, len(endpoints))
    weighted = [WeightedEndpoint(split.service, ep, each) for ep in endpoints]
    return weighted, [], _with_root_share(shares, split.service, True, terminating)


def _lost(split: Split, backend: Backend, root_port: ServicePort) -> str:
    """What happens to the share of a backend that cannot serve, for the warning."""
    if refuses_share(split) and backend.weight:
        return (f"its share of new connections to port {root_port.port} is refused (Gateway API keeps an "
                f"unusable backendRef's weight)")
    return f"it gets no traffic on port {root_port.port}"


def _backend_endpoints(split: Split, backend: Backend, root: Service, root_port: ServicePort, family: int,
                       inventory: Inventory, roots: Mapping[Key, Split], sink: DiagnosticSink
                       ) -> tuple[tuple[Endpoint, ...], bool]:
    """Endpoints of one backend for one root port and family, and whether they are the terminating
    last resort; () with a warning if none."""
    key = (split.namespace, backend.service)
    if backend.service == split.service and backend.port in (None, root_port.port):
        service, port = root, root_port     # GEP-1324: the root's own endpoints, no recursion
    else:
        service = inventory.services.get(key)
        if service is None:
            _warn(sink, split, backend.field, f"backend Service {key[0]}/{key[1]} does not exist: "
                                              f"{_lost(split, backend, root_port)}")
            return (), False
        port = _backend_port(backend.port, service, root_port)
        if port is None:
            _warn(sink, split, backend.field, _no_port(service, backend, root_port) + f": {_lost(split, backend, root_port)}")
            return (), False
        other = roots.get(key)
        if other is not None and other.root != split.root:
            _warn(sink, split, backend.field, f"backend Service {key[0]}/{key[1]} is itself split by {other.obj}; "
                                              "splits do not nest: its own endpoints are used", "info")
    endpoints, terminating = inventory.serving_endpoints(service, port, family)
    if backend.weight and not endpoints:
        not_ready = inventory.not_ready(service)
        extra = f" ({not_ready} not ready)" if not_ready else ""
        _warn(sink, split, backend.field,
              f"backend Service {key[0]}/{key[1]} has no ready IPv{family} endpoints for port "
              f"{port.describe()}{extra}: {_lost(split, backend, root_port)}")
    elif backend.weight and terminating:
        _warn(sink, split, backend.field,
              f"backend Service {key[0]}/{key[1]} has no ready IPv{family} endpoints for port {port.describe()}: "
              f"its {len(endpoints)} terminating endpoint(s) that are still serving take its share as a last "
              "resort (as kube-proxy does)")
    return endpoints, terminating


def _no_port(service: Service, backend: Backend, root_port: ServicePort) -> str:
    where = f"backend Service {service.namespace}/{service.name}"
    if backend.port is not None:
        return f"{where} has no TCP port {backend.port}"
    same_name = next((p for p in service.ports if root_port.name and p.name == root_port.name), None)
    hint = (f' (its port "{same_name.name}" is {same_name.port}: SMI matches a backend\'s port to the root\'s '
            "by number, not by name)") if same_name else ""
    return f"{where} has no TCP port {root_port.port}{hint}"
