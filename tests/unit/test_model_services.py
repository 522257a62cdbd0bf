"""Service, Endpoints and EndpointSlice parsing: what is kept and each error's text."""
import textwrap

import pytest

from kernsplit.agent.model import load_config
from kernsplit.agent.model.diagnostics import DiagnosticSink
from kernsplit.agent.model.documents import read_documents
from kernsplit.agent.model.resolve import Inventory
from kernsplit.agent.model.services import EndpointPort, ServicePort, parse_endpoint_slice


def load(tmp_path, text):
    path = tmp_path / "objects.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path), load_config([path])


def service_spec(spec):
    return f"apiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: ns}}\nspec: {spec}\n"


def test_service_fields(tmp_path):
    _, config = load(tmp_path, service_spec(
        "{clusterIP: 10.96.0.1, clusterIPs: [10.96.0.1, 'fd00:0::1'], ports: ["
        "{name: http, port: 80, targetPort: web}, {name: grpc, port: 90, targetPort: 9090, protocol: TCP}, "
        "{name: dns, port: 53, protocol: UDP}, {name: plain, port: 70, targetPort: '7070'}]}"))
    [svc] = config.services
    assert (svc.namespace, svc.name, svc.cluster_ips, svc.headless) == ("ns", "s", ("10.96.0.1", "fd00::1"), False)
    assert svc.ports == (ServicePort("http", 80, "web", "TCP"), ServicePort("grpc", 90, 9090, "TCP"),
                         ServicePort("dns", 53, 53, "UDP"), ServicePort("plain", 70, 7070, "TCP"))
    assert config.diagnostics == ()


def test_headless_and_unallocated_services(tmp_path):
    _, config = load(tmp_path, service_spec("{clusterIP: None, ports: [{port: 80}]}") + "---\n"
                     + service_spec("{ports: [{port: 80}]}").replace("name: s", "name: t"))
    assert [(s.name, s.cluster_ips, s.headless) for s in config.services] == [("s", (), True), ("t", (), False)]


def test_a_root_without_cluster_ip_cannot_be_split(tmp_path):
    path, config = load(tmp_path, service_spec("{type: ExternalName, externalName: example.com}") + "---\n"
                        "apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\nmetadata: {name: x, namespace: ns}\n"
                        "spec: {service: s, backends: [{service: b, weight: 1}]}\n")
    assert config.split_ports == ()
    assert [str(d) for d in config.warnings] == [
        f"{path}: TrafficSplit ns/x: spec.service: root Service ns/s has no clusterIP: nothing to intercept",
        f"{path}: TrafficSplit ns/x: spec.backends[0].service: backend Service ns/b does not exist"]


@pytest.mark.parametrize("spec, expected", [
    ("{clusterIP: 10.96.0.300, ports: [{port: 80}]}", 'spec.clusterIP: "10.96.0.300" is not an IP address'),
    ("{clusterIP: 10.96.0.1, clusterIPs: [10.96.0.2], ports: [{port: 80}]}",
     'spec.clusterIP: "10.96.0.1" must equal spec.clusterIPs[0] ("10.96.0.2")'),
    ("{clusterIPs: [10.96.0.1, 10.96.0.2], ports: [{port: 80}]}",
     "spec.clusterIPs: may hold at most one address per IP family"),
    ("{clusterIP: 10.96.0.1, ports: [{port: 0}]}", 'spec.ports[0].port: "0" is not a valid port (1-65535)'),
    ("{clusterIP: 10.96.0.1, ports: [{port: eighty}]}", 'spec.ports[0].port: "eighty" is not a port number'),
    ("{clusterIP: 10.96.0.1, ports: [{name: x}]}", "spec.ports[0].port: is required"),
    ("{clusterIP: 10.96.0.1, ports: [{port: 80, targetPort: 70000}]}",
     'spec.ports[0].targetPort: "70000" is not a valid port (1-65535)'),
    ("{clusterIP: 10.96.0.1, ports: [{port: 80, targetPort: Bad_Name}]}",
     'spec.ports[0].targetPort: "Bad_Name" is neither a port number nor a valid port name'),
    ("{clusterIP: 10.96.0.1, ports: [{port: 80, protocol: ICMP}]}",
     'spec.ports[0].protocol: "ICMP" is not one of TCP, UDP, SCTP'),
    ("{clusterIP: 10.96.0.1, ports: [{name: a, port: 80}, {name: b, port: 80}]}",
     "spec.ports[1].port: 80/TCP is listed twice"),
    ("{clusterIP: 10.96.0.1, ports: [{port: 80}, {name: b, port: 81}]}",
     "spec.ports: every port needs a name when a Service has more than one"),
])
def test_service_errors(tmp_path, spec, expected):
    path, config = load(tmp_path, service_spec(spec))
    assert [str(d) for d in config.errors] == [f"{path}: Service ns/s: {expected}"]
    assert config.services == ()


def test_endpoints_errors(tmp_path):
    path, config = load(tmp_path, """\
        apiVersion: v1
        kind: Endpoints
        metadata: {name: s}
        subsets:
        - addresses: [{ip: 10.0.0.1}, {hostname: x}]
          ports: [{port: 99999}]
        """)
    assert [str(d) for d in config.errors] == [
        f'{path}: Endpoints default/s: subsets[0].ports[0].port: "99999" is not a valid port (1-65535)',
        f"{path}: Endpoints default/s: subsets[0].addresses[1].ip: is required"]


def test_endpoint_slice_linking_and_address_types(tmp_path):
    path, config = load(tmp_path, """\
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: orphan}
        addressType: IPv4
        endpoints: [{addresses: [10.0.0.1]}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: names, labels: {kubernetes.io/service-name: s}}
        addressType: FQDN
        endpoints: [{addresses: [pod.example.com]}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: mixed, labels: {kubernetes.io/service-name: s}}
        addressType: IPv6
        ports: [{name: http, port: 8080}]
        endpoints: [{addresses: [10.0.0.1]}, {addresses: []}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata: {name: weird, labels: {kubernetes.io/service-name: s}}
        addressType: IPX
        endpoints: []
        """)
    assert [(d.severity, d.obj, d.field, d.message) for d in config.diagnostics] == [
        ("warning", "EndpointSlice default/orphan", "metadata.labels.kubernetes.io/service-name",
         "is missing: the slice belongs to no Service; ignored"),
        ("info", "EndpointSlice default/names", "addressType", "FQDN slices cannot be used by a kernel dataplane; ignored"),
        ("error", "EndpointSlice default/mixed", "endpoints[0].addresses[0]", '"10.0.0.1" is not an IPv6 address'),
        ("error", "EndpointSlice default/mixed", "endpoints[1].addresses", "must hold at least one address"),
        ("error", "EndpointSlice default/weird", "addressType", '"IPX" is not IPv4, IPv6 or FQDN'),
    ]


def test_endpoint_ports_keep_names_and_protocols(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
                    "metadata: {name: a, namespace: x, labels: {kubernetes.io/service-name: s}}\n"
                    "addressType: IPv6\nports: [{name: http, port: 8080}, {name: dns, port: 53, protocol: UDP}, "
                    "{name: all, port: null}]\nendpoints: [{addresses: ['FD00::0001'], conditions: {ready: false}}, "
                    "{addresses: ['fd00::2']}]\n")
    sink = DiagnosticSink()
    [doc] = read_documents([path], sink)
    group = parse_endpoint_slice(doc, sink)
    assert (group.namespace, group.service, group.not_ready) == ("x", "s", 1)
    assert [a.ip for a in group.ready] == ["fd00::2"]
    assert group.ready[0].ports == (EndpointPort("http", 8080, "TCP"), EndpointPort("dns", 53, "UDP"))
    assert Inventory.build([], [group]).endpoints[("x", "s")] == (group,)
