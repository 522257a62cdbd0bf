"""deploy/ renders with `kubectl kustomize`, every object is valid for the Kubernetes versions we
support (offline schemas, strict: an unknown or misspelt field fails), and the agent gets what the
README promises and nothing more."""
from __future__ import annotations

import re

import kubernetes_validate
import pytest

from deploy_manifests import added_capabilities, agent, container, one, pod_spec, proxy_init, render

FOLDERS = ["", "overlays/iptables", "overlays/ebpf", "examples/proxy-init"]
# The oldest Kubernetes the manifests must install on (CAP_BPF needs a 5.8+ kernel, which every
# distribution supported by 1.27 ships), and the newest schemas kubernetes-validate has.
K8S_VERSIONS = ["1.27", kubernetes_validate.latest_version()]


@pytest.mark.parametrize("folder", FOLDERS)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_is_valid_for_kubernetes(folder, version):
    objects = render(folder)
    assert objects
    for obj in objects:
        where = f"deploy/{folder} {obj['kind']} {obj['metadata'].get('name')}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {exc.message} at {'.'.join(map(str, exc.path))}")


def test_apply_k_deploy_installs_the_iptables_dataplane():
    assert render("") == render("overlays/iptables")


def _our_containers(obj):
    spec = pod_spec(obj)
    return [c for c in [*spec.get("initContainers", []), *spec.get("containers", [])]
            if c["name"] in ("agent", "proxy-init")]


@pytest.mark.parametrize("folder", FOLDERS)
def test_nothing_runs_privileged_and_every_capability_is_added_after_dropping_all(folder):
    for obj in render(folder):
        if obj["kind"] not in ("DaemonSet", "Deployment"):
            continue
        assert not pod_spec(obj).get("hostPID") and not pod_spec(obj).get("hostIPC")
        for c in _our_containers(obj):
            sc = c["securityContext"]
            assert sc.get("privileged") is not True, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True


def test_capabilities_are_the_measured_sets():
    # tests/kernel/test_capabilities.py runs each role with exactly these and with one fewer.
    assert sorted(added_capabilities(agent("overlays/iptables"))) == ["NET_ADMIN", "NET_RAW"]
    assert sorted(added_capabilities(agent("overlays/ebpf"))) == ["BPF", "NET_ADMIN", "PERFMON"]
    assert sorted(added_capabilities(proxy_init())) == ["NET_ADMIN", "NET_RAW"]


def _host_paths(overlay):
    return sorted(v["hostPath"]["path"] for v in pod_spec(one(render(overlay), "DaemonSet"))["volumes"]
                  if "hostPath" in v)


def test_host_paths_only_where_the_dataplane_needs_them():
    assert _host_paths("overlays/iptables") == ["/run/xtables.lock"]
    ebpf = _host_paths("overlays/ebpf")
    assert "/sys/fs/bpf" in ebpf and "/sys/fs/cgroup" in ebpf
    assert {"/lib/modules", "/usr/src", "/boot"} <= set(ebpf)        # BCC's headers, read-only
    mounts = {m["name"]: m for m in agent("overlays/ebpf")["volumeMounts"]}
    assert all(mounts[n].get("readOnly") for n in ("modules", "usr-src", "boot"))
    # Bidirectional propagation is allowed to privileged containers only.
    assert all(m.get("mountPropagation") != "Bidirectional" for m in mounts.values())
    assert not any("seccompProfile" in c["securityContext"] and
                   c["securityContext"]["seccompProfile"]["type"] == "Unconfined"
                   for c in [agent("overlays/iptables"), proxy_init()])


@pytest.mark.parametrize("overlay, dataplane", [("overlays/iptables", "iptables"), ("overlays/ebpf", "ebpf")])
def test_the_agent_runs_from_kubernetes_with_probes_on_its_metrics_port(overlay, dataplane):
    ds = one(render(overlay), "DaemonSet")
    agent_c = container(ds, "agent")
    args = agent_c["args"]
    assert args[0] == "agent" and "--source=kubernetes" in args and f"--dataplane={dataplane}" in args
    port = int(next(re.fullmatch(r"--metrics-addr=.*:(\d+)", a).group(1) for a in args
                    if a.startswith("--metrics-addr=")))
    named = {p["name"]: p["containerPort"] for p in agent_c["ports"]}
    assert named["metrics"] == port
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        assert agent_c[probe]["httpGet"] == {"path": path, "port": "metrics"}
    assert agent_c["resources"]["requests"]["memory"] and agent_c["resources"]["limits"]["memory"]
    assert pod_spec(ds)["priorityClassName"] == "system-node-critical"
    assert pod_spec(ds)["serviceAccountName"] == one(render(overlay), "ServiceAccount")["metadata"]["name"]


# What the agent watches (its Kubernetes source), and the Events it writes.
WATCHED = {("split.smi-spec.io", "trafficsplits"), ("gateway.networking.k8s.io", "httproutes"),
           ("gateway.networking.k8s.io", "tcproutes"), ("policy.linkerd.io", "httproutes"),
           ("", "services"), ("", "endpoints"), ("discovery.k8s.io", "endpointslices")}


def test_the_cluster_role_reads_what_the_agent_watches_and_writes_only_events():
    objects = render("")
    rules = one(objects, "ClusterRole")["rules"]
    readable, writable = set(), set()
    for rule in rules:
        assert not rule.get("resourceNames") and "*" not in rule["verbs"] + rule["resources"]
        pairs = {(g, r) for g in rule["apiGroups"] for r in rule["resources"]}
        if set(rule["verbs"]) == {"get", "list", "watch"}:
            readable |= pairs
        else:
            assert sorted(rule["verbs"]) == ["create", "patch"], rule
            writable |= pairs
    assert readable == WATCHED
    assert writable == {("", "events")}
    binding = one(objects, "ClusterRoleBinding")
    sa = one(objects, "ServiceAccount")
    assert binding["roleRef"]["name"] == one(objects, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": sa["metadata"]["namespace"]}]


def test_the_example_adds_proxy_init_first_and_keeps_the_application():
    deployment = one(render("examples/proxy-init"), "Deployment")
    assert [c["name"] for c in pod_spec(deployment)["initContainers"]] == ["proxy-init"]
    assert [c["name"] for c in pod_spec(deployment)["containers"]] == ["my-app"]
    assert proxy_init()["command"] == ["proxy-init"]
