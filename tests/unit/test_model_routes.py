"""Gateway API HTTPRoute / TCPRoute attached to a Service (GAMMA) as weighted splits."""
import json
from fractions import Fraction as F

import pytest

from kernsplit.agent.model import load_config

PORTS = [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "admin", "port": 9000, "targetPort": 9000}]


def svc(name, ip):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"clusterIP": ip, "ports": PORTS}}


def eps(name, ip):
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
            "subsets": [{"addresses": [{"ip": ip}],
                         "ports": [{"name": "http", "port": 8080}, {"name": "admin", "port": 9000}]}]}


WORLD = [svc("my-app", "10.100.200.30"), eps("my-app", "10.1.0.1"), svc("v1", "10.100.200.31"),
         eps("v1", "10.1.1.1"), svc("v2", "10.100.200.32"), eps("v2", "10.1.2.1")]


def route(refs, kind="HTTPRoute", version="v1", parents=None, name="r", **rule):
    return {"apiVersion": f"gateway.networking.k8s.io/{version}", "kind": kind, "metadata": {"name": name},
            "spec": {"parentRefs": parents if parents is not None else
                     [{"group": "", "kind": "Service", "name": "my-app"}],
                     "rules": [{"backendRefs": refs, **rule}]}}


def load(tmp_path, *docs):
    path = tmp_path / "routes.yaml"
    path.write_text("---\n".join(json.dumps(d) + "\n" for d in docs))
    return str(path), load_config([path])


def shares(port):
    out = {}
    for weighted in port.endpoints:
        out[weighted.backend] = out.get(weighted.backend, 0) + weighted.share
    return out


@pytest.mark.parametrize("kind, version", [("HTTPRoute", "v1"), ("HTTPRoute", "v1beta1"), ("HTTPRoute", "v1alpha2"),
                                           ("TCPRoute", "v1alpha2")])
def test_route_on_a_service_parent_splits_every_root_port(tmp_path, kind, version):
    _, config = load(tmp_path, *WORLD, route([{"name": "v1", "port": 80, "weight": 90},
                                               {"name": "v2", "port": 80, "weight": 10}], kind, version))
    assert config.diagnostics == ()
    [split] = config.splits
    assert (split.kind, split.service, split.weight_unit) == (kind, "my-app", "integer")
    # no parentRef port: every root port; backendRef port 80 means each backend's port 80
    assert [(p.port, p.split_kind, shares(p)) for p in config.split_ports] == [
        (80, kind, {"v1": F(9, 10), "v2": F(1, 10)}), (9000, kind, {"v1": F(9, 10), "v2": F(1, 10)})]
    assert [str(w.endpoint) for w in config.split_ports[0].endpoints] == ["10.1.1.1:8080", "10.1.2.1:8080"]


def test_parent_port_limits_the_root_port_and_weight_defaults_to_one(tmp_path):
    _, config = load(tmp_path, *WORLD, route([{"name": "v1", "port": 9000}, {"name": "v2", "port": 9000, "weight": 3}],
                                              parents=[{"kind": "Service", "group": "core", "name": "my-app",
                                                        "port": 9000}]))
    [port] = config.split_ports
    assert port.port == 9000
    assert [(b.service, b.weight, b.share) for b in port.backends] == [("v1", 1, F(1, 4)), ("v2", 3, F(3, 4))]
    assert [str(w.endpoint) for w in port.endpoints] == ["10.1.1.1:9000", "10.1.2.1:9000"]


def test_section_name_limits_the_root_port_by_name(tmp_path):
    _, config = load(tmp_path, *WORLD, route([{"name": "v2", "port": 9000}], parents=[
        {"group": "", "kind": "Service", "name": "my-app", "sectionName": "admin"}]))
    assert [p.port for p in config.split_ports] == [9000]


def test_routes_attached_to_gateways_are_ignored(tmp_path):
    _, config = load(tmp_path, *WORLD, route([{"name": "v1"}], parents=[{"name": "public-gateway"}]))
    assert config.splits == () and config.split_ports == () and config.diagnostics == ()


def test_backend_ref_port_missing_on_backend_keeps_its_weight_and_its_share_is_refused(tmp_path):
    """Gateway API, TCPRoute backendRefs: "If unspecified or invalid (refers to a non-existent
    resource or a Service with no endpoints), the underlying implementation MUST actively reject
    connection attempts to this backend. Connection rejections must respect weight; if an invalid
    backend is requested to have 80% of connections, then 80% of connections must be rejected
    instead." """
    path, config = load(tmp_path, *WORLD, route([{"name": "v1", "port": 80}, {"name": "v2", "port": 81}],
                                                 parents=[{"group": "", "kind": "Service", "name": "my-app", "port": 80}]))
    [port] = config.split_ports
    assert shares(port) == {"v1": F(1, 2)}
    assert [(r.backend, r.share) for r in port.refused] == [("v2", F(1, 2))]
    assert [(b.service, b.share, b.resolved) for b in port.backends] == [("v1", F(1, 2), True), ("v2", F(1, 2), False)]
    assert not port.refuse
    assert [str(d) for d in config.warnings] == [
        f"{path}: HTTPRoute default/r: spec.rules[0].backendRefs[1].name: backend Service default/v2 has no TCP "
        "port 81: its share of new connections to port 80 is refused (Gateway API keeps an unusable "
        "backendRef's weight)"]


def test_l7_matches_filters_and_extra_rules_are_reported_not_enforced(tmp_path):
    doc = route([{"name": "v1", "port": 80}], matches=[{"headers": [{"name": "x-canary", "value": "1"}]}],
                filters=[{"type": "RequestHeaderModifier"}])
    doc["spec"]["rules"].append({"backendRefs": [{"name": "v2", "port": 80}]})
    path, config = load(tmp_path, *WORLD, doc)
    assert [(d.field, d.message) for d in config.warnings] == [
        ("spec.rules", "has 2 rules: only rules[0] is used (a kernel dataplane splits connections; choosing "
                       "between rules is L7)"),
        ("spec.rules[0].matches", "L7 matches are not enforced by a kernel dataplane: the split applies to every "
                                  "connection"),
        ("spec.rules[0].filters", "filters are L7 and not enforced by a kernel dataplane")]
    assert shares(config.split_ports[0]) == {"v1": 1}


def test_the_default_path_match_is_not_an_l7_warning(tmp_path):
    _, config = load(tmp_path, *WORLD, route([{"name": "v1", "port": 80}], matches=[{"path": {"type": "PathPrefix", "value": "/"}}]))
    assert config.diagnostics == ()


@pytest.mark.parametrize("refs, expected", [
    ([{"name": "v1", "port": 80, "weight": 1_000_001}], 'spec.rules[0].backendRefs[0].weight: "1000001" is above the maximum 1000000'),
    ([{"name": "v1", "port": 80, "weight": -5}], 'spec.rules[0].backendRefs[0].weight: "-5" is negative'),
    ([{"name": "v1", "port": 80, "weight": "lots"}], 'spec.rules[0].backendRefs[0].weight: "lots" is not a whole number'),
    ([{"name": f"b{i}", "port": 80} for i in range(17)], "spec.rules[0].backendRefs: has 17 entries; at most 16 are allowed"),
    ([{"name": "v1", "port": 80}, {"name": "v1", "port": 80}],
     'spec.rules[0].backendRefs[1].name: "v1" is listed twice (first at spec.rules[0].backendRefs[0].name)'),
    ([{"port": 80}], "spec.rules[0].backendRefs[0].name: is required"),
    ([{"name": "v1", "port": 70000}], 'spec.rules[0].backendRefs[0].port: "70000" is not a valid port (1-65535)'),
])
def test_route_errors_exclude_the_route(tmp_path, refs, expected):
    path, config = load(tmp_path, *WORLD, route(refs))
    assert [str(d) for d in config.errors] == [f"{path}: HTTPRoute default/r: {expected}"]
    assert config.splits == () and config.split_ports == ()


def test_sixteen_backend_refs_are_fine(tmp_path):
    _, config = load(tmp_path, *WORLD, route([{"name": "v1", "port": 1000 + i} for i in range(16)]))
    assert config.errors == () and len(config.splits) == 1


def test_non_service_and_cross_namespace_backends_are_ignored_with_warnings(tmp_path):
    path, config = load(tmp_path, *WORLD, route([{"name": "v1", "port": 80}, {"name": "bucket", "kind": "S3", "group": "x.io"},
                                                  {"name": "v2", "port": 80, "namespace": "other"}]))
    assert [d.field for d in config.warnings] == ["spec.rules[0].backendRefs[1]", "spec.rules[0].backendRefs[2].namespace"]
    assert [b.service for b in config.splits[0].backends] == ["v1"]


def test_a_route_and_a_traffic_split_for_one_root_conflict(tmp_path):
    older = route([{"name": "v2", "port": 80}])
    older["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
    smi = {"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
           "metadata": {"name": "ts", "creationTimestamp": "2024-06-01T00:00:00Z"},
           "spec": {"service": "my-app", "backends": [{"service": "v1", "weight": 1}]}}
    path, config = load(tmp_path, *WORLD, smi, older)
    assert {p.split_kind for p in config.split_ports} == {"HTTPRoute"}
    assert [str(d) for d in config.warnings] == [
        f"{path}: TrafficSplit default/ts: spec.service: root Service default/my-app port {p} is already split by "
        "HTTPRoute default/r (created earlier); this one is ignored for that port" for p in (80, 9000)]


def test_consumer_route_in_another_namespace_is_a_warning(tmp_path):
    path, config = load(tmp_path, *WORLD, route([{"name": "v1"}], parents=[
        {"group": "", "kind": "Service", "name": "my-app", "namespace": "elsewhere"}]))
    assert config.splits == ()
    assert [d.field for d in config.warnings] == ["spec.parentRefs[0].namespace"]


def test_service_parent_without_the_core_group_is_a_warning(tmp_path):
    path, config = load(tmp_path, *WORLD, route([{"name": "v1"}], parents=[{"kind": "Service", "name": "my-app"}]))
    assert config.splits == ()
    assert [str(d) for d in config.warnings] == [
        f'{path}: HTTPRoute default/r: spec.parentRefs[0].group: must be "" (core) for a Service parent; '
        "this parentRef is ignored"]
