"""Resolution rules, one by one: from manifests to exact per-endpoint shares."""
import json
from fractions import Fraction as F

from kernsplit.agent.model import Endpoint, load_config


# -- small manifest builders (JSON documents, one per line of a multi-document file) --------------

def svc(name, ips=("10.96.0.1",), ports=({"port": 80, "targetPort": 8080},), ns="default"):
    spec = {"ports": list(ports)}
    if ips == "None":
        spec["clusterIP"] = "None"
    elif ips:
        spec["clusterIP"], spec["clusterIPs"] = ips[0], list(ips)
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def eps(name, ips, ports=({"port": 8080},), not_ready=(), ns="default"):
    subset = {"addresses": [{"ip": ip} for ip in ips], "ports": list(ports)}
    if not_ready:
        subset["notReadyAddresses"] = [{"ip": ip} for ip in not_ready]
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns}, "subsets": [subset]}


def eslice(service, name, family, endpoints, ports=({"name": "", "port": 8080},)):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": family,
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
            "ports": list(ports), "endpoints": endpoints}


def ts(name, root, backends, created=None, version="v1alpha2"):
    meta = {"name": name}
    if created:
        meta["creationTimestamp"] = created
    return {"apiVersion": f"split.smi-spec.io/{version}", "kind": "TrafficSplit", "metadata": meta,
            "spec": {"service": root, "backends": [{"service": s, "weight": w} for s, w in backends]}}


def load(tmp_path, *docs):
    path = tmp_path / "all.yaml"
    path.write_text("---\n".join(json.dumps(d) + "\n" for d in docs))
    return str(path), load_config([path])


def seed_services(v2_endpoints=("10.1.2.1", "10.1.2.2", "10.1.2.3")):
    return [svc("my-app", ("10.100.200.30",)), eps("my-app", ["10.1.1.1", "10.1.1.2", "10.1.1.3"]),
            svc("my-app-v1", ("10.100.200.31",)), eps("my-app-v1", ["10.1.1.1", "10.1.1.2", "10.1.1.3"]),
            svc("my-app-v2", ("10.100.200.32",)), eps("my-app-v2", list(v2_endpoints))]


def by_backend(port):
    shares = {}
    for weighted in port.endpoints:
        shares[weighted.backend] = shares.get(weighted.backend, 0) + weighted.share
    return shares


def backends(port):
    return [(b.service, b.weight, b.share, b.resolved) for b in port.backends]


# -- the seed scenario ------------------------------------------------------------------------------

def test_seed_manifests_resolve_to_ninety_ten_with_exact_endpoint_shares():
    config = load_config(["tests/unit/manifests/seed"])
    assert config.diagnostics == ()
    [port] = config.split_ports
    assert (port.namespace, port.service, port.split, port.split_kind, port.cluster_ip, port.port,
            port.port_name, port.protocol) == (
        "default", "my-app", "my-app-split", "TrafficSplit", "10.100.200.30", 80, None, "TCP")
    assert [(w.backend, str(w.endpoint), w.share) for w in port.endpoints] == [
        ("my-app-v1", "10.244.1.11:8080", F(3, 10)), ("my-app-v1", "10.244.1.12:8080", F(3, 10)),
        ("my-app-v1", "10.244.1.13:8080", F(3, 10)), ("my-app-v2", "10.244.2.11:8080", F(1, 30)),
        ("my-app-v2", "10.244.2.12:8080", F(1, 30)), ("my-app-v2", "10.244.2.13:8080", F(1, 30))]
    assert backends(port) == [("my-app-v1", 900, F(9, 10), True), ("my-app-v2", 100, F(1, 10), True)]
    assert sum(w.share for w in port.endpoints) == 1 and not port.refuse


def test_seed_rollout_sends_everything_to_v2():
    config = load_config(["tests/unit/manifests/seed/services.yaml", "tests/unit/manifests/seed/endpoints.yaml",
                          "tests/unit/manifests/rollout"])
    [port] = config.split_ports
    assert [(b.service, b.weight, b.share) for b in port.backends] == [("my-app-v1", 0, 0), ("my-app-v2", 1000, 1)]
    assert [(w.backend, w.share) for w in port.endpoints] == [("my-app-v2", F(1, 3))] * 3
    assert config.diagnostics == ()


def test_one_against_500m_gives_two_to_one(tmp_path):
    _, config = load(tmp_path, *seed_services(), ts("s", "my-app", [("my-app-v1", "1"), ("my-app-v2", "500m")],
                                                    version="v1alpha1"))
    assert by_backend(config.split_ports[0]) == {"my-app-v1": F(2, 3), "my-app-v2": F(1, 3)}


def test_unequal_endpoint_counts_split_each_backend_share_equally(tmp_path):
    _, config = load(tmp_path, *seed_services(v2_endpoints=["10.1.2.1"]),
                     ts("s", "my-app", [("my-app-v1", 1), ("my-app-v2", 1)]))
    assert {str(w.endpoint): w.share for w in config.split_ports[0].endpoints} == {
        "10.1.1.1:8080": F(1, 6), "10.1.1.2:8080": F(1, 6), "10.1.1.3:8080": F(1, 6), "10.1.2.1:8080": F(1, 2)}


# -- backends that do not resolve -------------------------------------------------------------------

def test_missing_backend_is_a_warning_and_the_others_share_everything(tmp_path):
    path, config = load(tmp_path, *seed_services(), ts("s", "my-app", [("my-app-v1", 90), ("my-app-v3", 10)]))
    [port] = config.split_ports
    assert by_backend(port) == {"my-app-v1": 1}
    assert backends(port) == [("my-app-v1", 90, 1, True), ("my-app-v3", 10, 0, False)]
    assert [str(d) for d in config.warnings] == [
        f"{path}: TrafficSplit default/s: spec.backends[1].service: backend Service default/my-app-v3 does not "
        "exist: it gets no traffic on port 80"]
    assert not config.has_errors


def test_weight_zero_gets_no_endpoint_at_all(tmp_path):
    _, config = load(tmp_path, *seed_services(), ts("s", "my-app", [("my-app-v1", 0), ("my-app-v2", 1000)]))
    [port] = config.split_ports
    assert {w.backend for w in port.endpoints} == {"my-app-v2"}
    assert backends(port) == [("my-app-v1", 0, 0, True), ("my-app-v2", 1000, 1, True)]
    assert config.diagnostics == ()


def test_all_weights_zero_fall_back_to_the_root_endpoints(tmp_path):
    path, config = load(tmp_path, *seed_services(), ts("s", "my-app", [("my-app-v1", 0), ("my-app-v2", 0)]))
    [port] = config.split_ports
    assert [(w.backend, w.share) for w in port.endpoints] == [("my-app", F(1, 3))] * 3
    assert [str(d) for d in config.diagnostics] == [
        f"{path}: TrafficSplit default/s: spec.service: all resolved backends have weight 0: root Service "
        "default/my-app port 80 (IPv4) keeps its own endpoints"]
    assert config.diagnostics[0].severity == "info"
    # the root carries the traffic, so it is listed (and counted) as a backend of its own
    assert backends(port) == [("my-app-v1", 0, 0, True), ("my-app-v2", 0, 0, True), ("my-app", 0, 1, True)]


def test_nothing_resolves_falls_back_to_the_root(tmp_path):
    _, config = load(tmp_path, *seed_services(), ts("s", "my-app", [("gone-1", 1), ("gone-2", 1)]))
    assert by_backend(config.split_ports[0]) == {"my-app": 1}
    assert backends(config.split_ports[0]) == [("gone-1", 1, 0, False), ("gone-2", 1, 0, False), ("my-app", 0, 1, True)]
    assert len(config.warnings) == 2


def test_root_listed_with_weight_zero_takes_the_fallback_share(tmp_path):
    _, config = load(tmp_path, *seed_services(), ts("s", "my-app", [("my-app", 0), ("my-app-v2", 0)]))
    [port] = config.split_ports
    assert by_backend(port) == {"my-app": 1}
    assert backends(port) == [("my-app", 0, 1, True), ("my-app-v2", 0, 0, True)]


def test_every_endpoint_belongs_to_a_listed_backend(tmp_path):
    cases = [[("my-app-v1", 900), ("my-app-v2", 100)], [("my-app-v1", 0), ("my-app-v2", 0)],
             [("gone", 1)], [("my-app", 0)], [("my-app", 1), ("my-app-v2", 0)]]
    for case in cases:
        _, config = load(tmp_path, *seed_services(), ts("s", "my-app", case))
        for port in config.split_ports:
            listed = {b.service for b in port.backends}
            assert {w.backend for w in port.endpoints} <= listed, case
            assert sum(b.share for b in port.backends) == 1, case


def test_nothing_resolves_and_no_root_endpoints_means_refuse(tmp_path):
    path, config = load(tmp_path, svc("my-app"), ts("s", "my-app", [("gone", 1)]))
    [port] = config.split_ports
    assert port.endpoints == () and port.refuse
    assert [str(d) for d in config.warnings][-1] == (
        f"{path}: TrafficSplit default/s: spec.service: no backend resolves and root Service default/my-app port 80 "
        "(IPv4) has no ready endpoints: connections will be refused")


def test_not_ready_endpoints_are_excluded(tmp_path):
    path, config = load(tmp_path, svc("root"), eps("root", ["10.1.0.1"]),
                        svc("a"), eps("a", ["10.1.1.1"], not_ready=["10.1.1.2"]),
                        svc("b"), eps("b", [], not_ready=["10.1.2.1"]),
                        ts("s", "root", [("a", 1), ("b", 1)]))
    [port] = config.split_ports
    assert [(w.backend, str(w.endpoint), w.share) for w in port.endpoints] == [("a", "10.1.1.1:8080", 1)]
    assert [str(d) for d in config.warnings] == [
        f"{path}: TrafficSplit default/s: spec.backends[1].service: backend Service default/b has no ready IPv4 "
        "endpoints for port 80 (1 not ready): it gets no traffic on port 80"]


def test_endpointslice_ready_null_counts_false_is_excluded(tmp_path):
    _, config = load(tmp_path, svc("root"), svc("a"),
                     eslice("root", "root-x", "IPv4", [{"addresses": ["10.1.0.1"]}]),
                     eslice("a", "a-1", "IPv4", [
                         {"addresses": ["10.1.1.1"], "conditions": {"ready": True}},
                         {"addresses": ["10.1.1.2"], "conditions": {"ready": None}},
                         {"addresses": ["10.1.1.3"]},
                         {"addresses": ["10.1.1.4"], "conditions": {"ready": False}}]),
                     ts("s", "root", [("a", 1)]))
    assert [str(w.endpoint) for w in config.split_ports[0].endpoints] == [
        "10.1.1.1:8080", "10.1.1.2:8080", "10.1.1.3:8080"]


def test_endpointslices_win_over_their_mirrored_endpoints(tmp_path):
    _, config = load(tmp_path, svc("root"), svc("a"), eps("a", ["10.1.1.1", "10.1.1.9"]),
                     eslice("a", "a-1", "IPv4", [{"addresses": ["10.1.1.1"]}]),
                     eslice("a", "a-2", "IPv4", [{"addresses": ["10.1.1.2"]}]),
                     ts("s", "root", [("a", 1)]))
    assert [str(w.endpoint) for w in config.split_ports[0].endpoints] == ["10.1.1.1:8080", "10.1.1.2:8080"]


# -- backend == root, nesting -----------------------------------------------------------------------

def test_backend_equal_to_root_means_the_roots_own_endpoints(tmp_path):
    _, config = load(tmp_path, *seed_services(), ts("s", "my-app", [("my-app", 3), ("my-app-v2", 1)]))
    [port] = config.split_ports
    assert by_backend(port) == {"my-app": F(3, 4), "my-app-v2": F(1, 4)}
    assert {str(w.endpoint) for w in port.endpoints if w.backend == "my-app"} == {
        "10.1.1.1:8080", "10.1.1.2:8080", "10.1.1.3:8080"}


def test_a_backend_that_is_itself_split_is_used_as_a_plain_service(tmp_path):
    path, config = load(tmp_path, *seed_services(), svc("front", ("10.96.0.9",)), eps("front", ["10.1.9.1"]),
                        ts("outer", "front", [("my-app", 1)]),
                        ts("inner", "my-app", [("my-app-v2", 1)]))
    outer = next(p for p in config.split_ports if p.split == "outer")
    inner = next(p for p in config.split_ports if p.split == "inner")
    assert {str(w.endpoint) for w in outer.endpoints} == {"10.1.1.1:8080", "10.1.1.2:8080", "10.1.1.3:8080"}
    assert by_backend(inner) == {"my-app-v2": 1}
    assert f"{path}: TrafficSplit default/outer: spec.backends[0].service: backend Service default/my-app is " \
           "itself split by TrafficSplit default/inner; splits do not nest: its own endpoints are used" in \
           [str(d) for d in config.diagnostics]


# -- ports -------------------------------------------------------------------------------------------

def test_backend_port_matched_by_number_not_by_name(tmp_path):
    """SMI v1alpha4, "Ports": "There *must* be a match between a port on the *root* service and a
    port on every destination backend service. If they do not match, the backend service is not
    included and will not receive traffic." Its own example, a backend whose port 1024 carries the
    root's port name, "is an invalid configuration. Traffic destined for `birds:8080` will only ever
    be forwarded to port 8080 on `green-birds`", and "implementations are recommended to issue an
    event that notifies users traffic will not be split for `blue-birds`"."""
    grpc = [{"name": "grpc", "port": 8080}]
    path, config = load(tmp_path, svc("birds", ports=grpc), eps("birds", ["10.1.0.1"]),
                        svc("blue-birds", ports=[{"name": "grpc", "port": 1024}]),
                        eps("blue-birds", ["10.1.1.1"], ports=[{"name": "grpc", "port": 1024}]),
                        svc("green-birds", ports=grpc), eps("green-birds", ["10.1.2.1"], ports=[{"name": "grpc", "port": 8080}]),
                        ts("s", "birds", [("blue-birds", 1), ("green-birds", 1)]))
    [port] = config.split_ports
    assert by_backend(port) == {"green-birds": 1}
    assert [str(w.endpoint) for w in port.endpoints] == ["10.1.2.1:8080"]
    assert [str(d) for d in config.warnings] == [
        f'{path}: TrafficSplit default/s: spec.backends[0].service: backend Service default/blue-birds has no TCP '
        'port 8080 (its port "grpc" is 1024: SMI matches a backend\'s port to the root\'s by number, not by name): '
        "it gets no traffic on port 8080"]


def test_target_port_is_mapped_per_backend(tmp_path):
    """SMI v1alpha4, "Ports": "Mapping between `port` and `targetPort` occurs on each backend service
    individually." (green-birds' 8080 goes to 8081 on its pods)."""
    grpc = [{"name": "grpc", "port": 8080}]
    _, config = load(tmp_path, svc("birds", ports=grpc),
                     svc("blue-birds", ports=grpc), eps("blue-birds", ["10.1.1.1"], ports=[{"name": "grpc", "port": 8080}]),
                     svc("green-birds", ports=[{"name": "grpc", "port": 8080, "targetPort": 8081}]),
                     eps("green-birds", ["10.1.2.1"], ports=[{"name": "grpc", "port": 8081}]),
                     ts("s", "birds", [("blue-birds", 1), ("green-birds", 1)]))
    assert [str(w.endpoint) for w in config.split_ports[0].endpoints] == ["10.1.1.1:8080", "10.1.2.1:8081"]


def test_backend_port_matched_by_number_when_no_name_matches(tmp_path):
    _, config = load(tmp_path, svc("root", ports=[{"name": "web", "port": 80}]),
                     svc("a", ports=[{"name": "other", "port": 80, "targetPort": 8088}]),
                     eps("a", ["10.1.1.1"], ports=[{"port": 8088}]), ts("s", "root", [("a", 1)]))
    assert [str(w.endpoint) for w in config.split_ports[0].endpoints] == ["10.1.1.1:8088"]


def test_named_target_port_is_looked_up_in_the_endpoint_ports(tmp_path):
    _, config = load(tmp_path, svc("root"),
                     svc("a", ports=[{"name": "web", "port": 80, "targetPort": "http-alt"}]),
                     eps("a", ["10.1.1.1"], ports=[{"name": "web", "port": 8181}]), ts("s", "root", [("a", 1)]))
    assert [str(w.endpoint) for w in config.split_ports[0].endpoints] == ["10.1.1.1:8181"]


def test_named_target_port_without_a_named_endpoint_port_cannot_resolve(tmp_path):
    path, config = load(tmp_path, svc("root"), eps("root", ["10.1.0.1"]),
                        svc("a", ports=[{"name": "web", "port": 80, "targetPort": "http-alt"}]),
                        eps("a", ["10.1.1.1"], ports=[{"port": 8181}]), ts("s", "root", [("a", 1)]))
    assert by_backend(config.split_ports[0]) == {"root": 1}
    assert any("has no ready IPv4 endpoints for port 80 (name \"web\")" in str(d) for d in config.warnings)


def test_backend_without_a_matching_port_is_excluded_with_a_warning(tmp_path):
    path, config = load(tmp_path, *seed_services(), svc("odd", ports=[{"port": 9999}]), eps("odd", ["10.1.3.1"]),
                        ts("s", "my-app", [("my-app-v1", 1), ("odd", 1)]))
    assert by_backend(config.split_ports[0]) == {"my-app-v1": 1}
    assert [str(d) for d in config.warnings] == [
        f"{path}: TrafficSplit default/s: spec.backends[1].service: backend Service default/odd has no TCP port "
        "80: it gets no traffic on port 80"]


def test_every_tcp_port_of_the_root_is_split_and_udp_is_left_alone(tmp_path):
    ports = [{"name": "http", "port": 80, "targetPort": 8080}, {"name": "grpc", "port": 9000, "targetPort": 9000},
             {"name": "dns", "port": 53, "protocol": "UDP"}]
    _, config = load(tmp_path, svc("root", ports=ports), svc("a", ports=ports),
                     eps("a", ["10.1.1.1"], ports=[{"name": "http", "port": 8080}, {"name": "grpc", "port": 9000},
                                                   {"name": "dns", "port": 53, "protocol": "UDP"}]),
                     ts("s", "root", [("a", 1)]))
    assert [(p.port, p.port_name, str(p.endpoints[0].endpoint)) for p in config.split_ports] == [
        (80, "http", "10.1.1.1:8080"), (9000, "grpc", "10.1.1.1:9000")]


# -- dual stack ----------------------------------------------------------------------------------------

def test_dual_stack_gives_one_split_port_per_cluster_ip_with_same_family_endpoints(tmp_path):
    path, config = load(tmp_path, svc("root", ("10.96.0.10", "fd00::10")),
                        svc("a"), eslice("a", "a4", "IPv4", [{"addresses": ["10.1.1.1"]}]),
                        eslice("a", "a6", "IPv6", [{"addresses": ["fd00:0:0:0::1:1"]}]),
                        svc("b"), eps("b", ["10.1.2.1"]),
                        ts("s", "root", [("a", 1), ("b", 1)]))
    v4, v6 = config.split_ports
    assert (v4.cluster_ip, v4.family, v6.cluster_ip, v6.family) == ("10.96.0.10", 4, "fd00::10", 6)
    assert by_backend(v4) == {"a": F(1, 2), "b": F(1, 2)}
    assert [(w.backend, w.endpoint, w.share) for w in v6.endpoints] == [("a", Endpoint("fd00::1:1", 8080), 1)]
    assert [str(d) for d in config.warnings] == [
        f"{path}: TrafficSplit default/s: spec.backends[1].service: backend Service default/b has no ready IPv6 "
        "endpoints for port 80: it gets no traffic on port 80"]


# -- roots that cannot be split, conflicts -------------------------------------------------------------

def test_missing_root_is_a_warning_and_no_split_port_and_backends_are_still_checked(tmp_path):
    path, config = load(tmp_path, ts("s", "nowhere", [("a", 1)]))
    assert config.split_ports == () and not config.has_errors
    assert [str(d) for d in config.warnings] == [
        f"{path}: TrafficSplit default/s: spec.service: root Service default/nowhere does not exist: "
        "nothing to intercept",
        f"{path}: TrafficSplit default/s: spec.backends[0].service: backend Service default/a does not exist"]


def test_headless_root_is_skipped_with_a_warning(tmp_path):
    path, config = load(tmp_path, svc("root", "None"), ts("s", "root", [("a", 1)]))
    assert config.split_ports == ()
    assert "is headless" in str(config.warnings[0])


def test_two_splits_for_one_root_the_oldest_wins(tmp_path):
    path, config = load(tmp_path, *seed_services(),
                        ts("newer", "my-app", [("my-app-v2", 1)], created="2024-05-02T00:00:00Z"),
                        ts("older", "my-app", [("my-app-v1", 1)], created="2024-05-01T00:00:00Z"))
    assert [p.split for p in config.split_ports] == ["older"]
    assert [str(d) for d in config.warnings] == [
        f"{path}: TrafficSplit default/newer: spec.service: root Service default/my-app port 80 is already split "
        "by TrafficSplit default/older (created earlier); this one is ignored for that port"]


def test_conflict_without_timestamps_is_decided_by_name(tmp_path):
    _, config = load(tmp_path, *seed_services(), ts("b-split", "my-app", [("my-app-v2", 1)]),
                     ts("a-split", "my-app", [("my-app-v1", 1)]))
    assert [p.split for p in config.split_ports] == ["a-split"]


def test_a_timestamp_beats_no_timestamp(tmp_path):
    _, config = load(tmp_path, *seed_services(), ts("a-split", "my-app", [("my-app-v2", 1)]),
                     ts("z-split", "my-app", [("my-app-v1", 1)], created="2030-01-01T00:00:00Z"))
    assert [p.split for p in config.split_ports] == ["z-split"]


def test_split_ports_are_sorted_by_namespace_service_ip_port(tmp_path):
    docs = []
    for ns, name, ip in (("b", "x", "10.96.0.3"), ("a", "y", "10.96.0.2"), ("a", "x", "10.96.0.9")):
        docs += [svc(name, (ip,), ns=ns), eps(name, ["10.1.0.1"], ns=ns)]
        docs.append({**ts(f"{name}-split", name, [(name, 1)]), "metadata": {"name": f"{name}-split", "namespace": ns}})
    _, config = load(tmp_path, *docs)
    assert [(p.namespace, p.service) for p in config.split_ports] == [("a", "x"), ("a", "y"), ("b", "x")]


def test_a_bad_endpoints_document_is_an_error_and_excluded(tmp_path):
    path, config = load(tmp_path, *seed_services(), eps("my-app-v2", ["10.1.2.300"]),
                        ts("s", "my-app", [("my-app-v1", 1)]))
    assert [str(d) for d in config.errors][0] == (
        f'{path}: Endpoints default/my-app-v2: subsets[0].addresses[0].ip: "10.1.2.300" is not an IP address')
    assert config.has_errors
