"""`KubernetesSource` against the lab's API server over real HTTP, through kr8s: what reaches the
sink on list, watch, 410 Gone, dropped streams, an unreachable server, a CRD installed later, and the
Events posted on objects with problems. The kernel side is in tests/kernel/test_agent_kubernetes.py."""
from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import pytest

from kernsplit.agent.lab.timescale import scaled
from kernsplit.agent.model.diagnostics import Diagnostic
from kernsplit.agent.source.contract import ObjectKey
from kernsplit.agent.source.kubernetes import KubernetesSettings, KubernetesSource
from kernsplit.agent.source.kubernetes_backoff import BackoffPolicy
from kernsplit.agent.source.kubernetes_events import EventLimits
from kernsplit.agent.source.kubernetes_reflector import ReflectorTiming

FAST = KubernetesSettings(discovery_interval=0.2, node_name="node-1",
                          reflector=ReflectorTiming(backoff=BackoffPolicy(initial=0.05, cap=0.3)),
                          backoff=BackoffPolicy(initial=0.05, cap=0.3))


class RecordingSink:
    """What the reconciler's store would hold, per scope, by the contract's rules."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.scopes: dict[str, dict[ObjectKey, dict]] = defaultdict(dict)
        self.is_ready = False
        self.replaces: list[str] = []

    def upsert(self, scope, obj):
        with self.lock:
            self.scopes[scope][ObjectKey.of(obj)] = obj

    def delete(self, scope, key):
        with self.lock:
            self.scopes[scope].pop(key, None)

    def replace(self, scope, objects):
        with self.lock:
            # a list arrives packed (`source.packed`): kept here as the objects themselves
            self.scopes[scope] = {o.key: o.unpack() for o in objects}
            self.replaces.append(scope)

    def ready(self):
        self.is_ready = True

    def objects(self) -> dict[ObjectKey, dict]:
        with self.lock:
            return {k: o for scope in self.scopes.values() for k, o in scope.items()}


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + scaled(timeout)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def service(name: str, namespace: str = "default", port: int = 80) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": None, "ports": [{"port": port}]}}


def split(name: str, weights: tuple[int, int] = (900, 100), namespace: str = "default") -> dict:
    return {"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"service": "my-app", "backends": [{"service": "my-app-v1", "weight": weights[0]},
                                                       {"service": "my-app-v2", "weight": weights[1]}]}}


def key(kind: str, name: str, namespace: str = "default") -> ObjectKey:
    return ObjectKey(kind, namespace, name)


TS = "TrafficSplit.split.smi-spec.io"


@pytest.fixture
def run_source(lab_apiserver) -> Iterator[Callable[..., tuple[KubernetesSource, RecordingSink]]]:
    stops: list[tuple[threading.Event, threading.Thread]] = []

    def start(**overrides) -> tuple[KubernetesSource, RecordingSink]:
        settings = KubernetesSettings(**{**FAST.__dict__, "kubeconfig": str(lab_apiserver.kubeconfig), **overrides})
        source, sink, stop = KubernetesSource(settings), RecordingSink(), threading.Event()
        thread = threading.Thread(target=source.run, args=(sink, stop), daemon=True)
        thread.start()
        stops.append((stop, thread))
        return source, sink

    yield start
    for stop, thread in stops:
        stop.set()
        thread.join(scaled(10))
        assert not thread.is_alive(), "the source did not stop when asked"


def test_initial_list_of_every_kind_then_ready(lab_apiserver, run_source):
    lab_apiserver.apply(service("my-app"))
    lab_apiserver.apply(split("my-app-split"))
    source, sink = run_source()
    wait_for(lambda: sink.is_ready, "ready")
    objects = sink.objects()
    assert key("Service", "my-app") in objects
    assert objects[key(TS, "my-app-split")]["spec"]["backends"][0]["weight"] == 900
    # the split is served as the CRD's preferred version, with kind and apiVersion filled in
    assert objects[key(TS, "my-app-split")]["apiVersion"].startswith("split.smi-spec.io/")
    watched = {str(r) for r, _ in source.reflectors}
    assert {"Service (v1)", "EndpointSlice (discovery.k8s.io/v1)", "HTTPRoute (gateway.networking.k8s.io/v1)",
            "TCPRoute (gateway.networking.k8s.io/v1alpha2)", "HTTPRoute (policy.linkerd.io/v1beta3)"} <= watched
    assert not any(r.kind == "Endpoints" for r, _ in source.reflectors)   # EndpointSlices are served


def test_watch_delivers_add_modify_delete(lab_apiserver, run_source):
    _, sink = run_source()
    wait_for(lambda: sink.is_ready, "ready")
    lab_apiserver.apply(split("s1"))
    wait_for(lambda: key(TS, "s1") in sink.objects(), "the added split")
    lab_apiserver.apply(split("s1", (0, 1000)))
    wait_for(lambda: sink.objects()[key(TS, "s1")]["spec"]["backends"][0]["weight"] == 0, "the new weights")
    lab_apiserver.delete("split.smi-spec.io/v1alpha2", "TrafficSplit", "s1")
    wait_for(lambda: key(TS, "s1") not in sink.objects(), "the delete")


def test_410_gone_relists_and_sees_a_delete_made_during_the_gap(lab_apiserver, run_source):
    lab_apiserver.apply(split("kept"))
    lab_apiserver.apply(split("doomed"))
    source, sink = run_source()
    wait_for(lambda: sink.is_ready, "ready")
    reflector = next(r for (res, _), r in source.reflectors.items() if res.kind == "TrafficSplit")
    lab_apiserver.pause()
    lab_apiserver.delete("split.smi-spec.io/v1alpha2", "TrafficSplit", "doomed")
    lab_apiserver.compact()                   # the delete event is no longer in the history
    lab_apiserver.resume()
    wait_for(lambda: key(TS, "doomed") not in sink.objects(), "the delete made during the gap")
    assert reflector.lists == 2 and key(TS, "kept") in sink.objects()


def test_a_dropped_stream_resumes_from_its_resource_version_without_a_relist(lab_apiserver, run_source):
    source, sink = run_source()
    wait_for(lambda: sink.is_ready, "ready")
    lab_apiserver.restart()                   # every stream and connection dropped, history kept
    lab_apiserver.apply(split("after-restart"))
    wait_for(lambda: key(TS, "after-restart") in sink.objects(), "the split created after the restart")
    assert all(r.lists == 1 for r in source.reflectors.values()), "a dropped stream must not relist"
    assert len(sink.replaces) == len(source.reflectors)


def test_while_the_api_is_unreachable_nothing_is_removed_and_recovery_converges(lab_apiserver, run_source):
    lab_apiserver.apply(split("a"))
    lab_apiserver.apply(split("b"))
    _, sink = run_source()
    wait_for(lambda: sink.is_ready, "ready")
    before = sink.objects()
    lab_apiserver.pause()
    time.sleep(1.0)                           # several failed reconnects (backoff capped at 0.3 s)
    assert sink.objects() == before
    lab_apiserver.apply(split("a", (1, 1)))
    lab_apiserver.delete("split.smi-spec.io/v1alpha2", "TrafficSplit", "b")
    lab_apiserver.resume()
    wait_for(lambda: key(TS, "b") not in sink.objects(), "the delete made while unreachable")
    assert sink.objects()[key(TS, "a")]["spec"]["backends"][0]["weight"] == 1


def test_ready_waits_until_the_api_server_answers(lab_apiserver, run_source):
    lab_apiserver.pause()
    _, sink = run_source()
    time.sleep(0.5)
    assert not sink.is_ready and not sink.objects()
    lab_apiserver.resume()
    wait_for(lambda: sink.is_ready, "ready after the API server came up")


def test_a_crd_installed_after_start_is_watched_without_a_restart(tmp_path, run_source, lab_apiserver):
    from kernsplit.agent.lab.apiserver.crds import ROUTE_CRDS
    from kernsplit.agent.lab.apiserver.server import LabApiServer

    bare = LabApiServer(crds=[], bookmark_interval=1.0).start()
    try:
        source, sink = run_source(kubeconfig=str(bare.write_kubeconfig(tmp_path / "bare")))
        wait_for(lambda: sink.is_ready, "ready without any CRD")
        assert {r.kind for r, _ in source.reflectors} == {"Service", "EndpointSlice"}
        bare.apply(dict(ROUTE_CRDS[0]))
        route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                 "metadata": {"name": "r", "namespace": "default"}, "spec": {}}
        wait_for(lambda: _applies(bare, route), "the new CRD to serve HTTPRoutes")
        wait_for(lambda: key("HTTPRoute.gateway.networking.k8s.io", "r") in sink.objects(),
                 "the route of the CRD installed later")
    finally:
        bare.stop()


def _applies(server, obj) -> bool:
    try:
        server.apply(obj)
        return True
    except KeyError:
        return False


def test_namespaces_limit_what_is_watched(lab_apiserver, run_source):
    for namespace in ("team-a", "team-b"):
        lab_apiserver.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    lab_apiserver.apply(split("mine", namespace="team-a"))
    lab_apiserver.apply(split("theirs", namespace="team-b"))
    _, sink = run_source(namespaces=("team-a",))
    wait_for(lambda: sink.is_ready, "ready")
    names = {(k.namespace, k.name) for k in sink.objects() if k.kind == TS}
    assert names == {("team-a", "mine")}


def test_gateway_and_linkerd_routes_of_one_name_are_two_objects(lab_apiserver, run_source):
    for api_version in ("gateway.networking.k8s.io/v1", "policy.linkerd.io/v1beta3"):
        lab_apiserver.apply({"apiVersion": api_version, "kind": "HTTPRoute",
                             "metadata": {"name": "web", "namespace": "default"}, "spec": {}})
    _, sink = run_source()
    wait_for(lambda: sink.is_ready, "ready")
    kinds = {k.kind for k in sink.objects() if k.name == "web"}
    assert kinds == {"HTTPRoute.gateway.networking.k8s.io", "HTTPRoute.policy.linkerd.io"}


def test_a_reported_problem_becomes_an_event_on_the_object_once(lab_apiserver, run_source):
    stored = lab_apiserver.apply(split("bad"))
    source, sink = run_source()
    wait_for(lambda: sink.is_ready, "ready")
    problem = Diagnostic("error", "kubernetes", "TrafficSplit default/bad", "spec.backends[1].weight",
                         '"-5" is negative')
    for _ in range(3):                        # reported on every sync; posted once
        source.report(key(TS, "bad"), [problem])
    wait_for(lambda: _events(lab_apiserver), "the Event")
    time.sleep(0.3)
    [event] = _events(lab_apiserver)
    assert event["involvedObject"]["uid"] == stored["metadata"]["uid"]
    assert (event["reason"], event["message"], event["type"]) == ("InvalidTrafficSplit", str(problem), "Warning")


def test_a_problem_seen_again_later_counts_on_its_event_and_an_expired_event_is_posted_anew(lab_apiserver,
                                                                                            run_source):
    """As `kubectl describe` shows client-go's Events: one Event, "x2", not two Events."""
    lab_apiserver.apply(split("bad"))
    source, sink = run_source(events=EventLimits(repeat_after=0.2))
    wait_for(lambda: sink.is_ready, "ready")
    problem = Diagnostic("error", "kubernetes", "TrafficSplit default/bad", "spec.backends[1].weight",
                         '"-5" is negative')
    source.report(key(TS, "bad"), [problem])
    wait_for(lambda: _events(lab_apiserver), "the Event")
    time.sleep(0.3)
    source.report(key(TS, "bad"), [problem])
    wait_for(lambda: [e.get("count") for e in _events(lab_apiserver)] == [2], "the Event's count of 2")
    [event] = _events(lab_apiserver)
    assert event["lastTimestamp"] >= event["firstTimestamp"]

    subprocess.run(["kubectl", "--kubeconfig", str(lab_apiserver.kubeconfig), "delete", "events", "--all"],
                   capture_output=True, check=True, timeout=30)          # expired
    time.sleep(0.3)
    source.report(key(TS, "bad"), [problem])
    wait_for(lambda: [e.get("count") for e in _events(lab_apiserver)] == [3], "the Event posted again")


def _events(server) -> list[dict]:
    """The Events as `kubectl get events` shows them."""
    out = subprocess.run(["kubectl", "--kubeconfig", str(server.kubeconfig), "get", "events", "-A", "-o", "json"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return json.loads(out)["items"]


def test_kubernetes_flags_with_the_file_source_are_a_usage_error(tmp_path):
    from click.testing import CliRunner

    from kernsplit.agent.commands.agent import agent
    (tmp_path / "split.yaml").write_text("")
    result = CliRunner().invoke(agent, ["--config", str(tmp_path / "split.yaml"), "--namespace", "demo"])
    assert result.exit_code == 2
    assert "--kubeconfig, --context and --namespace are for --source kubernetes" in result.output
