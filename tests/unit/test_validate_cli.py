"""`kernsplit validate`: what a user sees, and the exit codes scripts rely on."""
import json
import shutil

from click.testing import CliRunner

from kernsplit.agent.cli import main

SEED = "tests/unit/manifests/seed"


def run(*args):
    return CliRunner().invoke(main, ["validate", *args])


def test_seed_is_valid_and_summarised():
    result = run(SEED)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "TrafficSplit default/my-app-split: my-app 10.100.200.30:80 -> my-app-v1 90% (3 endpoints), "
        "my-app-v2 10% (3 endpoints)",
        "1 split, 1 split port, 0 errors, 0 warnings"]


def test_seed_as_json_has_exact_shares_as_fraction_strings():
    result = run(SEED, "-o", "json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert set(data) == {"splits", "split_ports", "diagnostics"}
    assert [(s["kind"], s["name"], [b["weight"] for b in s["backends"]], s["split_ports"])
            for s in data["splits"]] == [("TrafficSplit", "my-app-split", [900, 100], 1)]
    [port] = data["split_ports"]
    assert (port["cluster_ip"], port["port"], port["refuse"]) == ("10.100.200.30", 80, False)
    assert [(b["service"], b["share"], b["resolved"]) for b in port["backends"]] == [
        ("my-app-v1", "9/10", True), ("my-app-v2", "1/10", True)]
    assert [(e["backend"], e["ip"], e["port"], e["share"]) for e in port["endpoints"]][::3] == [
        ("my-app-v1", "10.244.1.11", 8080, "3/10"), ("my-app-v2", "10.244.2.11", 8080, "1/30")]
    assert data["diagnostics"] == []


def test_errors_exit_one_and_name_file_object_field(tmp_path):
    split = tmp_path / "deploy" / "split.yaml"
    split.parent.mkdir()
    split.write_text("apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\n"
                     "metadata: {name: my-app-split, namespace: default}\n"
                     "spec:\n  service: my-app\n  backends:\n  - {service: my-app-v1, weight: 1}\n"
                     "  - {service: my-app-v2, weight: -5}\n")
    result = run(str(split))
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f'error: {split}: TrafficSplit default/my-app-split: spec.backends[1].weight: "-5" is negative',
        "0 splits, 0 split ports, 1 error, 0 warnings"]


def test_errors_in_json_mode_exit_one_too(tmp_path):
    (tmp_path / "bad.yaml").write_text("kind: Service\napiVersion: v1\nmetadata: {name: x}\nspec: {clusterIP: nope}\n")
    result = run(str(tmp_path), "-o", "json")
    assert result.exit_code == 1
    [diagnostic] = json.loads(result.output)["diagnostics"]
    assert diagnostic == {"severity": "error", "file": str(tmp_path / "bad.yaml"), "object": "Service default/x",
                          "field": "spec.clusterIP", "message": '"nope" is not an IP address',
                          "text": f'{tmp_path / "bad.yaml"}: Service default/x: spec.clusterIP: "nope" is not an IP '
                                  "address"}


def test_warnings_only_exit_zero(tmp_path):
    shutil.copytree(SEED, tmp_path / "seed")
    (tmp_path / "seed" / "endpoints.yaml").unlink()     # no endpoints anywhere: refuse, with warnings
    result = run(str(tmp_path / "seed"))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(line.startswith("warning: ") for line in lines[:-2])
    assert lines[-2] == ("TrafficSplit default/my-app-split: my-app 10.100.200.30:80 -> refuse connections "
                         "(no endpoints: my-app 100% refused)")
    assert lines[-1] == "1 split, 1 split port, 0 errors, 3 warnings"


def test_missing_path_exits_one():
    result = run("/nonexistent/kernsplit/manifests")
    assert result.exit_code == 1
    assert "error: /nonexistent/kernsplit/manifests: no such file or directory" in result.output


def test_a_path_is_required():
    assert run().exit_code == 2


ROUTE_WORLD = """\
apiVersion: v1
kind: Service
metadata: {name: my-app}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: v1}
spec: {clusterIP: 10.96.0.11, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: v1-a, labels: {kubernetes.io/service-name: v1}}
addressType: IPv4
ports: [{name: http, port: 80}]
endpoints:
- {addresses: [10.1.1.1], conditions: {ready: false, serving: true, terminating: true}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{group: core, kind: Service, name: my-app.default.svc.example.org, port: 80}]
  rules: [{backendRefs: [{name: v1, port: 80, weight: 3}, {name: gone, port: 80, weight: 1}]}]
"""


def test_validate_shows_refused_shares_and_terminating_endpoints(tmp_path):
    (tmp_path / "r.yaml").write_text(ROUTE_WORLD.replace(".default.svc.example.org", ""))
    result = run(str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-2] == (
        "HTTPRoute default/r: my-app 10.96.0.10:80 (http) -> v1 75% (1 endpoint, terminating: the last resort), "
        "gone 25% refused")


def test_cluster_domain_option_completes_dns_names(tmp_path):
    (tmp_path / "r.yaml").write_text(ROUTE_WORLD.replace("kind: HTTPRoute", "kind: HTTPRoute").replace(
        "name: my-app.default.svc.example.org", "name: my-app"))
    ts = ("apiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\nmetadata: {name: s}\n"
          "spec: {service: my-app.default.svc.example.org, backends: [{service: v1, weight: 1}]}\n")
    (tmp_path / "s.yaml").write_text(ts)
    assert run(str(tmp_path / "s.yaml")).exit_code == 1
    result = run(str(tmp_path / "s.yaml"), "--cluster-domain", "example.org")
    assert result.exit_code == 0, result.output
    assert run(str(tmp_path / "s.yaml"), "--cluster-domain", "Bad_Domain").exit_code == 2


def test_the_agent_takes_cluster_domain_too(tmp_path):
    from kernsplit.agent.reconcile import Reconciler
    from kernsplit.agent.source.files import FileSource
    ts = ("apiVersion: v1\nkind: Service\nmetadata: {name: my-app}\nspec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}\n"
          "---\napiVersion: split.smi-spec.io/v1alpha2\nkind: TrafficSplit\nmetadata: {name: s}\n"
          "spec: {service: my-app.default.svc.example.org, backends: [{service: my-app, weight: 1}]}\n")
    (tmp_path / "s.yaml").write_text(ts)
    def loaded(**options) -> Reconciler:
        r = Reconciler(None, FileSource([tmp_path]), **options)
        r.source.load(r.queue)
        r.apply(r.queue.drain())
        return r
    assert loaded(cluster_domain="example.org").desired.ports
    assert loaded().store.has_errors()
    help_text = CliRunner().invoke(main, ["agent", "--help"]).output
    assert "--cluster-domain" in help_text
