"""The lab API server speaks the real protocol: the real kubectl (oldest, default and newest of the
versions on the machine) applies, gets, watches, patches and deletes against it with no extra flags."""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from kernsplit.agent.lab.apiserver.crds import TRAFFICSPLIT_CRD

SEED_SPLIT = """\
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata:
  name: my-app-split
  namespace: default
spec:
  service: my-app # The service name that traffic will be split for
  trafficRouting:
  - backend:
      serviceName: my-app-v1 # The existing, stable version
    weight: 900m # 90% of traffic
  - backend:
      serviceName: my-app-v2 # The new, canary version
    weight: 100m # 10% of traffic
"""


def _kubectl_binaries() -> list:
    """The default kubectl plus the oldest and newest versioned ones installed beside it."""
    default = shutil.which("kubectl") or shutil.which("kubectl", path=os.path.dirname(sys.executable))
    if default is None:
        pytest.fail("no kubectl on PATH or in the venv: `make install` provides one")
    found = [pytest.param(default, id="kubectl")]
    folder = Path(os.path.realpath(default)).parent
    for version in ("1.27", "1.33"):
        exe = folder / f"kubectl.{version}"
        found.append(pytest.param(str(exe), id=f"kubectl.{version}", marks=pytest.mark.skipif(
            not exe.exists(), reason=f"{exe} is not installed")))
    return found


class Kubectl:
    def __init__(self, exe: str, kubeconfig: Path) -> None:
        self.exe, self.env = exe, {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([self.exe, *args], input=stdin, capture_output=True, text=True, timeout=60,
                                env=self.env)
        if check and result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result


@pytest.fixture(params=_kubectl_binaries())
def kubectl(request, lab_apiserver) -> Kubectl:
    return Kubectl(request.param, lab_apiserver.kubeconfig)


def test_apply_keeps_every_field_of_the_seed_split(kubectl):
    out = kubectl("apply", "-f", "-", stdin=SEED_SPLIT)
    assert "trafficsplit.split.smi-spec.io/my-app-split created" in out.stdout
    got = json.loads(kubectl("get", "trafficsplits.v1alpha2.split.smi-spec.io", "my-app-split", "-o", "json").stdout)
    assert got["apiVersion"] == "split.smi-spec.io/v1alpha2"
    assert got["spec"] == yaml.safe_load(SEED_SPLIT)["spec"]
    assert "unchanged" in kubectl("apply", "-f", "-", stdin=SEED_SPLIT).stdout


def test_apply_again_with_new_weights_and_get(kubectl):
    kubectl("apply", "-f", "-", stdin=SEED_SPLIT)
    rollout = SEED_SPLIT.replace("900m", "0m").replace("100m", "1000m")
    assert "configured" in kubectl("apply", "-f", "-", stdin=rollout).stdout
    table = kubectl("get", "ts").stdout.split()
    assert table == ["NAME", "SERVICE", "AGE", "my-app-split", "my-app", table[-1]]   # the CRD's printer column
    weights = kubectl("get", "trafficsplits.v1alpha2.split.smi-spec.io", "my-app-split", "-o",
                      "jsonpath={.spec.trafficRouting[*].weight}").stdout
    assert weights.split() == ["0m", "1000m"]


def test_get_watch_sees_a_later_merge_patch(kubectl):
    kubectl("apply", "-f", "-", stdin=SEED_SPLIT)
    watch = subprocess.Popen([kubectl.exe, "get", "trafficsplits.v1alpha2.split.smi-spec.io", "my-app-split",
                              "-w", "-o", "jsonpath={.spec.trafficRouting[1].weight}{\"\\n\"}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=kubectl.env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x.strip()) for x in watch.stdout], daemon=True).start()
    try:
        assert lines.get(timeout=20) == "100m"
        patch = {"spec": {"trafficRouting": [{"backend": {"serviceName": "my-app-v1"}, "weight": "0m"},
                                             {"backend": {"serviceName": "my-app-v2"}, "weight": "1000m"}]}}
        kubectl("patch", "trafficsplits.v1alpha2.split.smi-spec.io", "my-app-split", "--type", "merge",
                "-p", json.dumps(patch))
        assert lines.get(timeout=20) == "1000m"
    finally:
        watch.kill()
        watch.wait()


def test_patch_merge_and_delete(kubectl):
    kubectl("apply", "-f", "-", stdin=SEED_SPLIT)
    # `ts` is the preferred version (v1alpha4): the object goes through it and keeps every field
    kubectl("patch", "ts", "my-app-split", "--type", "merge", "-p", '{"metadata":{"labels":{"stage":"rollout"}}}')
    got = json.loads(kubectl("get", "trafficsplits.v1alpha2.split.smi-spec.io", "my-app-split", "-o", "json").stdout)
    assert got["spec"] == yaml.safe_load(SEED_SPLIT)["spec"]
    assert kubectl("get", "ts", "-l", "stage=rollout", "-o", "name").stdout.strip() == \
        "trafficsplit.split.smi-spec.io/my-app-split"
    assert 'trafficsplit.split.smi-spec.io "my-app-split" deleted' in kubectl("delete", "ts", "my-app-split").stdout
    gone = kubectl("get", "ts", "my-app-split", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def test_apply_service_twice_uses_a_strategic_merge_patch(kubectl):
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "my-app", "namespace": "default"},
           "spec": {"selector": {"app": "my-app"}, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}
    kubectl("apply", "-f", "-", stdin=json.dumps(svc))
    svc["spec"]["ports"].append({"name": "metrics", "port": 9090, "protocol": "TCP"})
    svc["spec"]["ports"][0]["name"] = "http"
    assert "configured" in kubectl("apply", "-f", "-", stdin=json.dumps(svc)).stdout
    got = json.loads(kubectl("get", "svc", "my-app", "-o", "json").stdout)
    assert [(p["port"], p.get("name")) for p in got["spec"]["ports"]] == [(80, "http"), (9090, "metrics")]
    assert kubectl("get", "svc", "my-app").stdout.split()[:11] == [
        "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE",
        "my-app", "ClusterIP", "<none>", "<none>", "80/TCP,9090/TCP"]
    del svc["spec"]["ports"][1]
    kubectl("apply", "-f", "-", stdin=json.dumps(svc))
    got = json.loads(kubectl("get", "svc", "my-app", "-o", "json").stdout)
    assert [p["port"] for p in got["spec"]["ports"]] == [80]


def test_the_shipped_crd_applies_and_a_crd_created_later_is_served(kubectl):
    assert "trafficsplits.split.smi-spec.io" in kubectl("apply", "-f", str(TRAFFICSPLIT_CRD)).stdout
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.lab.example.com"},
           "spec": {"group": "lab.example.com", "scope": "Namespaced",
                    "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                        "type": "object", "properties": {"spec": {"type": "object", "properties": {
                            "size": {"type": "integer"}}}}}}}]}}
    kubectl("apply", "-f", "-", stdin=json.dumps(crd))
    widget = {"apiVersion": "lab.example.com/v1", "kind": "Widget", "metadata": {"name": "w1"},
              "spec": {"size": 3}}
    assert "widget.lab.example.com/w1 created" in kubectl("apply", "-f", "-", stdin=json.dumps(widget)).stdout
    assert kubectl("get", "widgets", "w1", "-o", "jsonpath={.spec.size}").stdout == "3"


def test_a_field_the_crd_does_not_declare_is_refused_by_default_and_pruned_when_only_warned(kubectl):
    typo = SEED_SPLIT.replace("  trafficRouting:", "  trafficRoutes: []\n  trafficRouting:")
    refused = kubectl("apply", "-f", "-", stdin=typo, check=False)
    assert refused.returncode != 0 and 'unknown field "spec.trafficRoutes"' in refused.stderr
    warned = kubectl("apply", "--validate=warn", "-f", "-", stdin=typo)
    assert 'unknown field "spec.trafficRoutes"' in warned.stderr
    got = json.loads(kubectl("get", "trafficsplits.v1alpha2.split.smi-spec.io", "my-app-split", "-o", "json").stdout)
    assert got["spec"] == yaml.safe_load(SEED_SPLIT)["spec"]
