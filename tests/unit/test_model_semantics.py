"""Split semantics as the specs that define them write them: each test quotes the sentence it follows."""
import json
from fractions import Fraction as F

import pytest

from kernsplit.agent.model import load_config


def svc(name, ip="10.96.0.1", ports=({"name": "http", "port": 80, "targetPort": 8080},), ns="default"):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": list(ports)}}


def eps(name, ips, ns="default", port=8080):
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips], "ports": [{"name": "http", "port": port}]}]}


def eslice(service, endpoints, name=None):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name or f"{service}-1", "labels": {"kubernetes.io/service-name": service}},
            "ports": [{"name": "http", "port": 8080}], "endpoints": endpoints}


def ts(root, backends, name="s", ns="default", version="v1alpha2"):
    return {"apiVersion": f"split.smi-spec.io/{version}", "kind": "TrafficSplit",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"service": root, "backends": [{"service": s, "weight": w} for s, w in backends]}}


def route(refs, group="gateway.networking.k8s.io/v1", kind="HTTPRoute", name="r"):
    return {"apiVersion": group, "kind": kind, "metadata": {"name": name},
            "spec": {"parentRefs": [{"group": "core", "kind": "Service", "name": "my-app", "port": 80}],
                     "rules": [{"backendRefs": refs}]}}


WORLD = [svc("my-app", "10.96.0.10"), eps("my-app", ["10.1.0.1"]), svc("v1", "10.96.0.11"), eps("v1", ["10.1.1.1"]),
         svc("v2", "10.96.0.12"), eps("v2", ["10.1.2.1"])]


def load(tmp_path, *docs, **kwargs):
    path = tmp_path / "all.yaml"
    path.write_text("---\n".join(json.dumps(d) + "\n" for d in docs))
    return str(path), load_config([path], **kwargs)


def served(port):
    out = {}
    for w in port.endpoints:
        out[w.backend] = out.get(w.backend, 0) + w.share
    return out


def refused(port):
    return {r.backend: r.share for r in port.refused}


# -- Linkerd's own HTTPRoute group ------------------------------------------------------------------

@pytest.mark.parametrize("version", ["v1beta1", "v1beta2", "v1beta3"])
def test_linkerd_policy_http_routes_are_read_like_gateway_api_routes(tmp_path, version):
    """Linkerd's traffic-shifting docs use `policy.linkerd.io` HTTPRoutes, which have Gateway API's
    shape (parentRefs to a Service, weighted backendRefs)."""
    _, config = load(tmp_path, *WORLD, route([{"name": "v1", "port": 80, "weight": 90},
                                              {"name": "v2", "port": 80, "weight": 10}],
                                             group=f"policy.linkerd.io/{version}"))
    assert config.diagnostics == ()
    [split] = config.splits
    assert (split.kind, split.api_version) == ("HTTPRoute", f"policy.linkerd.io/{version}")
    assert [served(p) for p in config.split_ports] == [{"v1": F(9, 10), "v2": F(1, 10)}]


def test_a_linkerd_and_a_gateway_api_route_of_one_name_are_two_objects(tmp_path):
    _, config = load(tmp_path, *WORLD, route([{"name": "v1", "port": 80}]),
                     route([{"name": "v2", "port": 80}], group="policy.linkerd.io/v1beta3"))
    assert not config.has_errors and len(config.splits) == 2


def test_an_unknown_linkerd_route_version_is_a_warning(tmp_path):
    path, config = load(tmp_path, *WORLD, route([{"name": "v1", "port": 80}], group="policy.linkerd.io/v9"))
    assert config.splits == ()
    assert [d.field for d in config.warnings] == ["apiVersion"]


# -- spec.service as a DNS name ----------------------------------------------------------------------

@pytest.mark.parametrize("root, backend", [
    ("my-app", "v1"), ("my-app.default", "v1.default"), ("my-app.default.svc", "v1.default.svc"),
    ("my-app.default.svc.cluster.local", "v1.default.svc.cluster.local"),
    ("my-app.default.svc.cluster.local.", "v1")])
def test_the_root_and_backends_may_be_named_by_their_dns_name(tmp_path, root, backend):
    """SMI: "The `spec.service` name is the FQDN that applications will use to communicate." (OSM's
    manifests write `bookstore.bookstore`.)"""
    _, config = load(tmp_path, *WORLD, ts(root, [(backend, 1)]))
    assert config.diagnostics == ()
    assert [(p.service, served(p)) for p in config.split_ports] == [("my-app", {"v1": 1})]


def test_another_cluster_domain_is_given_with_cluster_domain(tmp_path):
    _, config = load(tmp_path, *WORLD, ts("my-app.default.svc.corp.example", [("v1", 1)]),
                     cluster_domain="corp.example")
    assert config.diagnostics == () and len(config.split_ports) == 1
    path, config = load(tmp_path, *WORLD, ts("my-app.default.svc.corp.example", [("v1", 1)]))
    assert [str(d) for d in config.errors] == [
        f'{path}: TrafficSplit default/s: spec.service: "my-app.default.svc.corp.example" is not a Service name, '
        "name.namespace, name.namespace.svc or name.namespace.svc.cluster.local (cluster domain cluster.local; "
        "see --cluster-domain)"]


def test_a_dns_name_in_another_namespace_is_an_error(tmp_path):
    path, config = load(tmp_path, *WORLD, ts("my-app", [("v1.other", 1)]))
    assert [str(d) for d in config.errors] == [
        f'{path}: TrafficSplit default/s: spec.backends[0].service: "v1.other" names namespace "other", but this '
        'TrafficSplit is in "default": a split and its services share one namespace']
    assert config.splits == ()


# -- routes refuse the share of a backend that cannot serve -------------------------------------------

def test_a_missing_route_backend_keeps_its_weight_and_its_share_is_refused(tmp_path):
    """Gateway API, TCPRoute backendRefs: "Connection rejections must respect weight; if an invalid
    backend is requested to have 80% of connections, then 80% of connections must be rejected
    instead." HTTPRoute, rules[].backendRefs: "If multiple backends are specified, and some are
    invalid, the proportion of requests that would otherwise have been routed to an invalid backend
    MUST receive a 500 status code." A kernel dataplane refuses that share of new connections."""
    path, config = load(tmp_path, *WORLD, route([{"name": "v1", "port": 80, "weight": 3},
                                                 {"name": "gone", "port": 80, "weight": 1},
                                                 {"name": "v2", "port": 80, "weight": 0}], kind="TCPRoute",
                                                group="gateway.networking.k8s.io/v1alpha2"))
    [port] = config.split_ports
    assert (served(port), refused(port)) == ({"v1": F(3, 4)}, {"gone": F(1, 4)})
    assert [(b.service, b.share, b.resolved) for b in port.backends] == [
        ("v1", F(3, 4), True), ("gone", F(1, 4), False), ("v2", 0, True)]
    assert not port.refuse and [c.share for c in port.choices] == [F(3, 4), F(1, 4)]
    assert [str(d) for d in config.warnings] == [
        f"{path}: TCPRoute default/r: spec.rules[0].backendRefs[1].name: backend Service default/gone does not "
        "exist: its share of new connections to port 80 is refused (Gateway API keeps an unusable backendRef's "
        "weight)"]


def test_a_route_whose_backends_all_fail_refuses_everything_by_weight(tmp_path):
    _, config = load(tmp_path, *WORLD, svc("empty", "10.96.0.13"),
                     route([{"name": "gone", "port": 80, "weight": 1}, {"name": "empty", "port": 80, "weight": 3}]))
    [port] = config.split_ports
    assert port.refuse and port.endpoints == ()
    assert refused(port) == {"gone": F(1, 4), "empty": F(3, 4)}


def test_a_traffic_split_still_leaves_an_unresolved_backend_out(tmp_path):
    """SMI v1alpha4, "Ports": "If they do not match, the backend service is not included and will
    not receive traffic." TrafficSplits renormalise the rest; only routes refuse."""
    _, config = load(tmp_path, *WORLD, ts("my-app", [("v1", 3), ("gone", 1)]))
    [port] = config.split_ports
    assert (served(port), refused(port)) == ({"v1": 1}, {})


def test_nothing_to_serve_refuses_the_whole_port_against_the_root(tmp_path):
    _, config = load(tmp_path, svc("my-app"), ts("my-app", [("gone", 1)]))
    [port] = config.split_ports
    assert port.refuse and refused(port) == {"my-app": 1}
    assert [(b.service, b.share, b.resolved) for b in port.backends] == [("gone", 0, False), ("my-app", 1, False)]


# -- backendRefs to a Service need a port --------------------------------------------------------------

def test_a_service_backend_ref_without_a_port_is_an_error(tmp_path):
    """Gateway API v1 BackendObjectReference.port: "Port is required when the referent is a
    Kubernetes Service. In this case, the port number is the service port number, not the target
    port." (the v1 CRD rejects such a route): the root's port is never guessed."""
    path, config = load(tmp_path, *WORLD, route([{"name": "v1"}]))
    assert [str(d) for d in config.errors] == [
        f"{path}: HTTPRoute default/r: spec.rules[0].backendRefs[0].port: is required"]
    assert config.splits == ()


# -- terminating endpoints as a last resort ---------------------------------------------------------------

def test_terminating_serving_endpoints_are_used_when_none_is_ready(tmp_path):
    """KEP-1669: "When the traffic policy is "Cluster" and all endpoints are terminating, then
    traffic should be routed to any terminating endpoint that is ready" (Serving), and kube-proxy
    "falls back to terminating endpoints if and only if they are the only available endpoints"."""
    draining = {"serving": True, "terminating": True, "ready": False}
    path, config = load(tmp_path, *WORLD[:4], svc("v2", "10.96.0.12"),
                        eslice("v2", [{"addresses": ["10.1.2.1"], "conditions": draining},
                                      {"addresses": ["10.1.2.2"], "conditions": {"ready": False, "serving": False,
                                                                                 "terminating": True}}]),
                        ts("my-app", [("v1", 1), ("v2", 1)]))
    [port] = config.split_ports
    assert {str(w.endpoint): w.share for w in port.endpoints} == {"10.1.1.1:8080": F(1, 2), "10.1.2.1:8080": F(1, 2)}
    assert [(b.service, b.terminating) for b in port.backends] == [("v1", False), ("v2", True)]
    assert [str(d) for d in config.warnings] == [
        f"{path}: TrafficSplit default/s: spec.backends[1].service: backend Service default/v2 has no ready IPv4 "
        "endpoints for port 80 (name \"http\"): its 1 terminating endpoint(s) that are still serving take its share "
        "as a last resort (as kube-proxy does)"]


def test_the_roots_own_fallback_also_takes_terminating_endpoints_last(tmp_path):
    draining = {"serving": True, "terminating": True, "ready": False}
    path, config = load(tmp_path, svc("my-app", "10.96.0.10"),
                        eslice("my-app", [{"addresses": ["10.1.0.9"], "conditions": draining}]),
                        ts("my-app", [("gone", 1)]))
    [port] = config.split_ports
    assert [(w.backend, str(w.endpoint)) for w in port.endpoints] == [("my-app", "10.1.0.9:8080")]
    assert [(b.service, b.resolved, b.terminating) for b in port.backends][-1] == ("my-app", True, True)


def test_terminating_endpoints_are_not_used_while_one_is_ready(tmp_path):
    draining = {"serving": True, "terminating": True, "ready": False}
    _, config = load(tmp_path, *WORLD[:4], svc("v2", "10.96.0.12"),
                     eslice("v2", [{"addresses": ["10.1.2.1"], "conditions": draining},
                                   {"addresses": ["10.1.2.3"], "conditions": {"ready": True}}]),
                     ts("my-app", [("v2", 1)]))
    assert [str(w.endpoint) for w in config.split_ports[0].endpoints] == ["10.1.2.3:8080"]
    assert config.warnings == ()


# -- diagnostics -------------------------------------------------------------------------------------------

def test_a_missing_root_does_not_hide_the_backends_problems(tmp_path):
    path, config = load(tmp_path, svc("v1", "10.96.0.11", ports=[{"name": "http", "port": 81}]),
                        route([{"name": "v1", "port": 80}, {"name": "gone", "port": 80}]))
    assert [str(d) for d in config.warnings] == [
        f"{path}: HTTPRoute default/r: spec.parentRefs[0].name: root Service default/my-app does not exist: "
        "nothing to intercept",
        f"{path}: HTTPRoute default/r: spec.rules[0].backendRefs[0].name: backend Service default/v1 has no TCP port 80",
        f"{path}: HTTPRoute default/r: spec.rules[0].backendRefs[1].name: backend Service default/gone does not exist"]


def test_a_root_without_the_parent_port_says_so_once(tmp_path):
    doc = route([{"name": "v1", "port": 80}])
    doc["spec"]["parentRefs"][0]["port"] = 9898
    path, config = load(tmp_path, *WORLD, doc)
    assert [str(d) for d in config.warnings] == [
        f"{path}: HTTPRoute default/r: spec.parentRefs[0]: root Service default/my-app has no TCP port 9898: "
        "nothing to split"]


# -- names, as the API server validates them -----------------------------------------------------------------

BAD_NAMES = ["a;rm -rf /", "--jump", "x" * 300, "café", "My-App", "1abc" + ""]


@pytest.mark.parametrize("bad", BAD_NAMES[:5])
def test_a_bad_split_name_is_an_error_and_nothing_of_it_is_applied(tmp_path, bad):
    """The API server requires a DNS-1123 subdomain for a TrafficSplit or route name."""
    doc = ts("my-app", [("v1", 1)], name=bad)
    _, config = load(tmp_path, *WORLD, doc)
    [error] = config.errors
    assert (error.obj, error.field) == (f"TrafficSplit default/{bad}", "metadata.name")
    assert "DNS-1123 subdomain" in error.message
    assert config.splits == () and config.split_ports == ()


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_a_bad_service_name_is_an_error(tmp_path, bad):
    """Service names are DNS-1035 labels: "a DNS-1035 label must consist of lower case alphanumeric
    characters or '-', start with an alphabetic character, and end with an alphanumeric character"
    (at most 63 characters)."""
    _, config = load(tmp_path, svc(bad))
    [error] = config.errors
    assert error.field == "metadata.name" and "DNS-1035 label" in error.message
    assert config.services == ()


@pytest.mark.parametrize("field", ["spec.service", "spec.backends[0].service"])
def test_a_bad_service_reference_in_a_split_is_an_error(tmp_path, field):
    doc = ts("my-app", [("v1", 1)])
    if field == "spec.service":
        doc["spec"]["service"] = "--jump"
    else:
        doc["spec"]["backends"][0]["service"] = "a;rm -rf /"
    path, config = load(tmp_path, *WORLD, doc)
    [error] = config.errors
    assert error.field == field and "DNS-1035 label" in error.message
    assert config.splits == ()


def test_a_bad_backend_ref_name_is_an_error(tmp_path):
    path, config = load(tmp_path, *WORLD, route([{"name": "v1", "port": 80}, {"name": "Bad_Name", "port": 80}]))
    assert [str(d) for d in config.errors] == [
        f'{path}: HTTPRoute default/r: spec.rules[0].backendRefs[1].name: "Bad_Name" is not a valid DNS-1035 label: '
        "it must consist of lower case alphanumeric characters or '-', starting with a letter and ending with an "
        "alphanumeric character"]
    assert config.splits == ()


def test_a_bad_namespace_is_an_error(tmp_path):
    _, config = load(tmp_path, svc("ok", ns="Not_OK"))
    assert [(d.field, "DNS-1123 label" in d.message) for d in config.errors] == [("metadata.namespace", True)]


def test_a_service_name_of_63_characters_is_fine_and_64_is_not(tmp_path):
    _, config = load(tmp_path, svc("a" * 63))
    assert not config.has_errors
    _, config = load(tmp_path, svc("a" * 64))
    assert [e.message for e in config.errors] == ["is 64 characters long: a DNS-1035 label has at most 63"]
