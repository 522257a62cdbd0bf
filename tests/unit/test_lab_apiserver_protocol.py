"""The lab API server's watch and list protocol, seen by the real kr8s client (the agent's) and by
plain HTTP: resume from a resourceVersion, 410 Gone after a compaction, bookmarks, pagination,
selectors, the failure hooks, and Events through both APIs."""
from __future__ import annotations

import json
import threading

import httpx
import kr8s
import pytest

TS = "trafficsplits.v1alpha2.split.smi-spec.io"


def _split(name: str, v2: int) -> dict:
    return {"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"service": "my-app", "backends": [{"service": "my-app-v1", "weight": 1000 - v2},
                                                       {"service": "my-app-v2", "weight": v2}]}}


def _service(name: str, **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default",
                                                               "labels": labels},
            "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}}


def _watch(server, path: str, count: int, timeout: float = 10, **params) -> list[dict]:
    """The first `count` events of a watch (fewer if the stream ends first)."""
    events = []
    with httpx.stream("GET", server.url + path, params={"watch": "true", **params}, timeout=timeout) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line:
                events.append(json.loads(line))
            if len(events) == count:
                break
    return events


def test_kr8s_lists_and_watches(lab_apiserver):
    api = kr8s.api(kubeconfig=str(lab_apiserver.kubeconfig))
    lab_apiserver.apply(_split("a", 100))
    assert [ts.name for ts in api.get(TS, namespace="default")] == ["a"]
    seen: list[tuple[str, str, int]] = []
    done = threading.Event()

    def consume() -> None:
        for event, obj in api.watch(TS, namespace="default"):
            seen.append((event, obj.name, obj.raw["spec"]["backends"][1]["weight"]))
            if len(seen) == 3:
                done.set()
                return
    threading.Thread(target=consume, daemon=True).start()
    _wait_for(lambda: len(seen) >= 1)
    lab_apiserver.apply(_split("a", 1000))
    lab_apiserver.delete("split.smi-spec.io/v1alpha2", "TrafficSplit", "a")
    assert done.wait(10), seen
    assert seen == [("ADDED", "a", 100), ("MODIFIED", "a", 1000), ("DELETED", "a", 1000)]


def _wait_for(predicate, timeout: float = 10) -> None:
    ev = threading.Event()
    for _ in range(int(timeout * 20)):
        if predicate():
            return
        ev.wait(0.05)
    raise AssertionError("timed out")


def test_watch_resumes_from_a_resource_version(lab_apiserver):
    first = lab_apiserver.apply(_split("a", 100))
    lab_apiserver.apply(_split("b", 200))
    lab_apiserver.apply(_split("a", 300))
    events = _watch(lab_apiserver, "/apis/split.smi-spec.io/v1alpha2/namespaces/default/trafficsplits", 2,
                    resourceVersion=first["metadata"]["resourceVersion"])
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b"), ("MODIFIED", "a")]
    assert events[1]["object"]["spec"]["backends"][1]["weight"] == 300
    assert int(events[1]["object"]["metadata"]["resourceVersion"]) == lab_apiserver.resource_version()


def test_gone_after_a_compaction(lab_apiserver):
    old = lab_apiserver.apply(_split("a", 100))["metadata"]["resourceVersion"]
    for i in range(3):
        lab_apiserver.apply(_service(f"s{i}"))
    page = httpx.get(lab_apiserver.url + "/api/v1/namespaces/default/services", params={"limit": 1}).json()
    lab_apiserver.apply(_split("a", 200))
    lab_apiserver.compact()
    [event] = _watch(lab_apiserver, "/apis/split.smi-spec.io/v1alpha2/trafficsplits", 1, resourceVersion=old)
    assert event["type"] == "ERROR" and event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
    expired = httpx.get(lab_apiserver.url + "/api/v1/namespaces/default/services",
                        params={"limit": 1, "continue": page["metadata"]["continue"]})
    assert expired.status_code == 410
    # A fresh list gives a version to watch from again.
    rv = httpx.get(lab_apiserver.url + "/apis/split.smi-spec.io/v1alpha2/trafficsplits").json()["metadata"]["resourceVersion"]
    lab_apiserver.apply(_split("a", 300))
    [event] = _watch(lab_apiserver, "/apis/split.smi-spec.io/v1alpha2/trafficsplits", 1, resourceVersion=rv)
    assert event["type"] == "MODIFIED"


def test_bookmarks_carry_the_latest_resource_version(lab_apiserver):
    rv = lab_apiserver.apply(_split("a", 100))["metadata"]["resourceVersion"]
    lab_apiserver.apply(_service("other"))      # a change of another kind moves the version on
    [bookmark] = _watch(lab_apiserver, "/apis/split.smi-spec.io/v1alpha2/trafficsplits", 1,
                        resourceVersion=rv, allowWatchBookmarks="true")
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["kind"] == "TrafficSplit"
    assert int(bookmark["object"]["metadata"]["resourceVersion"]) == lab_apiserver.resource_version() > int(rv)


def test_pages_and_selectors(lab_apiserver):
    for i in range(5):
        lab_apiserver.apply(_service(f"s{i}", tier="web" if i % 2 else "db"))
    names, token = [], None
    while True:
        params = {"limit": 2, **({"continue": token} if token else {})}
        page = httpx.get(lab_apiserver.url + "/api/v1/namespaces/default/services", params=params).json()
        names += [s["metadata"]["name"] for s in page["items"]]
        token = page["metadata"].get("continue")
        if not token:
            break
    assert names == ["s0", "s1", "s2", "s3", "s4"]
    api = kr8s.api(kubeconfig=str(lab_apiserver.kubeconfig))
    assert [s.name for s in api.get("services", namespace="default", label_selector="tier=web")] == ["s1", "s3"]
    assert [s.name for s in api.get("services", namespace="default", label_selector="tier in (db),tier!=web",
                                    field_selector="metadata.name!=s0")] == ["s2", "s4"]


def test_drop_watches_pause_resume_and_restart_keep_state(lab_apiserver):
    rv = lab_apiserver.apply(_split("a", 100))["metadata"]["resourceVersion"]
    box: list = []
    t = threading.Thread(target=lambda: box.append(_watch(
        lab_apiserver, "/apis/split.smi-spec.io/v1alpha2/trafficsplits", 5, timeout=20, resourceVersion=rv)))
    t.start()
    _wait_for(lambda: lab_apiserver.drop_watches() > 0 or box)
    t.join(10)
    assert box == [[]]                           # the stream ended, nothing was sent
    lab_apiserver.pause()
    with pytest.raises(httpx.TransportError):
        httpx.get(lab_apiserver.url + "/version", timeout=2)
    lab_apiserver.resume()
    lab_apiserver.restart()
    got = httpx.get(lab_apiserver.url + "/apis/split.smi-spec.io/v1alpha2/namespaces/default/trafficsplits/a").json()
    assert got["metadata"]["resourceVersion"] == rv
    lab_apiserver.apply(_split("a", 200))
    [event] = _watch(lab_apiserver, "/apis/split.smi-spec.io/v1alpha2/trafficsplits", 1, resourceVersion=rv)
    assert event["type"] == "MODIFIED"


def test_patches_conflicts_and_namespaces(lab_apiserver):
    url = lab_apiserver.url + "/api/v1/namespaces/default/services/web"
    lab_apiserver.apply(_service("web"))
    r = httpx.patch(url, content=json.dumps([{"op": "add", "path": "/metadata/labels/x", "value": "1"}]),
                    headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200 and r.json()["metadata"]["labels"] == {"x": "1"}
    stale = {**r.json(), "metadata": {**r.json()["metadata"], "resourceVersion": "1"}}
    assert httpx.put(url, json=stale).status_code == 409
    ts = httpx.patch(lab_apiserver.url + "/apis/split.smi-spec.io/v1alpha2/namespaces/default/trafficsplits/x",
                     content="{}", headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert ts.status_code == 404
    lab_apiserver.apply(_split("x", 1))
    ts = httpx.patch(lab_apiserver.url + "/apis/split.smi-spec.io/v1alpha2/namespaces/default/trafficsplits/x",
                     content="{}", headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert ts.status_code == 415            # custom kinds take no strategic merge patch, as in Kubernetes
    missing_ns = httpx.post(lab_apiserver.url + "/api/v1/namespaces/nowhere/services",
                            json={**_service("s"), "metadata": {"name": "s"}})
    assert missing_ns.status_code == 404 and "nowhere" in missing_ns.json()["message"]


def test_events_are_one_kind_through_both_apis(lab_apiserver):
    api = kr8s.api(kubeconfig=str(lab_apiserver.kubeconfig))
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1", "namespace": "default"},
             "involvedObject": {"kind": "TrafficSplit", "name": "a", "namespace": "default"},
             "reason": "InvalidSplit", "message": "spec.backends[0].weight: bad", "type": "Warning",
             "reportingComponent": "kernsplit-agent"}
    lab_apiserver.apply(event)
    [new] = api.get("events.v1.events.k8s.io", namespace="default")
    assert (new.raw["note"], new.raw["regarding"]["name"], new.raw["reportingController"]) == \
        ("spec.backends[0].weight: bad", "a", "kernsplit-agent")
    core = httpx.get(lab_apiserver.url + "/api/v1/namespaces/default/events",
                     params={"fieldSelector": "involvedObject.name=a,reason=InvalidSplit"}).json()["items"]
    assert [e["message"] for e in core] == ["spec.backends[0].weight: bad"]


def test_unknown_fields_of_a_custom_kind_are_pruned_as_the_crd_says(lab_apiserver):
    split = _split("a", 100)
    split["spec"]["extra"] = "dropped"
    split["spec"]["backends"][0]["note"] = "dropped too"
    got = lab_apiserver.apply(split)
    assert "extra" not in got["spec"] and "note" not in got["spec"]["backends"][0]
    assert got["spec"]["backends"][0] == {"service": "my-app-v1", "weight": 900}


def test_tables_for_people_and_watches(lab_apiserver):
    lab_apiserver.apply(_split("a", 100))
    accept = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
    url = lab_apiserver.url + "/apis/split.smi-spec.io/v1alpha4/namespaces/default/trafficsplits"
    listed = httpx.get(url, headers=accept).json()
    assert [c["name"] for c in listed["columnDefinitions"]] == ["Name", "Service", "Age"]
    assert [row["cells"][:2] for row in listed["rows"]] == [["a", "my-app"]]
    assert listed["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    rv = listed["metadata"]["resourceVersion"]
    lab_apiserver.apply(_split("b", 100))
    lab_apiserver.apply(_split("a", 200))
    with httpx.stream("GET", url, params={"watch": "1", "resourceVersion": rv}, headers=accept, timeout=10) as r:
        events = [json.loads(line) for _, line in zip(range(2), r.iter_lines())]
    assert [e["object"]["rows"][0]["cells"][0] for e in events] == ["b", "a"]
    assert "columnDefinitions" in events[0]["object"] and "columnDefinitions" not in events[1]["object"]


def test_a_watch_with_a_selector_sees_objects_enter_and_leave_it(lab_apiserver):
    rv = lab_apiserver.apply(_service("web", tier="db"))["metadata"]["resourceVersion"]
    lab_apiserver.apply(_service("web", tier="web"))       # enters the selection
    lab_apiserver.apply(_service("web", tier="web", x="1"))
    lab_apiserver.apply(_service("web", tier="db"))        # leaves it
    events = _watch(lab_apiserver, "/api/v1/namespaces/default/services", 3, resourceVersion=rv,
                    labelSelector="tier=web")
    assert [(e["type"], e["object"]["metadata"]["labels"]["tier"]) for e in events] == [
        ("ADDED", "web"), ("MODIFIED", "web"), ("DELETED", "db")]
