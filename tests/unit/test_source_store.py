"""The agent's object store and per-root re-resolution: one change costs one change, and the
result is always what resolving everything from scratch would give."""
import copy
import json

from kernsplit.agent.model import load_config
from kernsplit.agent.source.contract import ObjectKey
from kernsplit.agent.source.desired import DesiredState
from kernsplit.agent.source.store import ObjectStore
from test_model_resolve import eps, eslice, svc, ts

SCOPE = "world.yaml"


def route(name, root, backends, group="gateway.networking.k8s.io", version="v1"):
    return {"apiVersion": f"{group}/{version}", "kind": "HTTPRoute", "metadata": {"name": name, "namespace": "default"},
            "spec": {"parentRefs": [{"kind": "Service", "group": "", "name": root, "port": 80}],
                     "rules": [{"backendRefs": [{"name": s, "port": 80, "weight": w} for s, w in backends]}]}}


def app(i, v2_weight="100m"):
    """One split world: root, v1, v2 Services with endpoints, and the TrafficSplit."""
    return [svc(f"app{i}", (f"10.96.1.{i}",), ports=({"port": 80, "targetPort": 8080},)),
            svc(f"app{i}-v1", (f"10.96.2.{i}",)), eps(f"app{i}-v1", [f"10.1.1.{i}"]),
            svc(f"app{i}-v2", (f"10.96.3.{i}",)), eps(f"app{i}-v2", [f"10.1.2.{i}"]),
            ts(f"app{i}-split", f"app{i}", [(f"app{i}-v1", "900m"), (f"app{i}-v2", v2_weight)], version="v1alpha1")]


def loaded(objects, scope=SCOPE):
    store, desired = ObjectStore(), DesiredState()
    desired.resolve(store, store.replace(scope, objects))
    return store, desired


def from_scratch(tmp_path, objects):
    path = tmp_path / "scratch.yaml"
    path.write_text("---\n".join(json.dumps(o) + "\n" for o in objects))
    return {sp.key: sp for sp in load_config([path]).split_ports}


def test_gateway_and_linkerd_routes_of_one_name_are_two_objects():
    gw = route("r", "app1", [("app1-v1", 1)])
    linkerd = route("r", "app2", [("app2-v1", 1)], group="policy.linkerd.io", version="v1beta3")
    assert ObjectKey.of(gw) != ObjectKey.of(linkerd)
    assert ObjectKey.of(gw).kind == "HTTPRoute.gateway.networking.k8s.io"
    assert ObjectKey.of(linkerd).kind == "HTTPRoute.policy.linkerd.io"
    assert ObjectKey.of(svc("x")) == ObjectKey("Service", "default", "x")
    store, desired = loaded([*app(1)[:-1], *app(2)[:-1], gw, linkerd])
    assert {sp.service for sp in desired.ports.values()} == {"app1", "app2"}
    dirty = store.delete(SCOPE, ObjectKey.of(linkerd))
    assert dirty == {("default", "app2")}
    desired.resolve(store, dirty)
    assert {sp.service for sp in desired.ports.values()} == {"app1"}


def test_indexes_find_the_roots_a_change_affects():
    store, _ = loaded([*app(1), *app(2)])
    # a backend Service, its endpoints, the root itself, the split: only that root
    assert store.upsert(SCOPE, svc("app1-v2", ("10.96.3.99",))) == {("default", "app1")}
    assert store.upsert(SCOPE, eps("app2-v1", ["10.1.1.50"])) == {("default", "app2")}
    assert store.upsert(SCOPE, svc("app2", ("10.96.1.99",))) == {("default", "app2")}
    assert store.upsert(SCOPE, app(1, "500m")[-1]) == {("default", "app1")}
    # a Service no split names, and an unchanged object delivered again: nothing
    assert store.upsert(SCOPE, svc("lonely")) == set()
    assert store.upsert(SCOPE, app(1, "500m")[-1]) == set()
    # a Service used by two roots affects both
    both = ts("shared", "app2", [("app1-v1", "1")])
    store.upsert(SCOPE, both)
    assert store.upsert(SCOPE, eps("app1-v1", ["10.1.1.77"])) == {("default", "app1"), ("default", "app2")}
    # a split moved to another root: the old root and the new
    assert store.upsert(SCOPE, ts("shared", "app1", [("app1-v1", "1")])) == {("default", "app1"), ("default", "app2")}


def test_endpoint_slices_win_over_the_endpoints_they_mirror():
    store, desired = loaded(app(1))
    store.upsert(SCOPE, eslice("app1-v1", "app1-v1-abc", "IPv4",
                               [{"addresses": ["10.1.1.200"], "conditions": {"ready": True}}]))
    desired.resolve(store, {("default", "app1")})
    [sp] = desired.ports.values()
    assert {w.endpoint.ip for w in sp.endpoints if w.backend == "app1-v1"} == {"10.1.1.200"}


def test_an_object_with_errors_keeps_its_last_good_version_in_force():
    store, desired = loaded(app(1))
    bad = app(1, "-5")[-1]
    assert store.upsert(SCOPE, bad) == set()
    [d] = [d for d in store.diagnostics(ObjectKey.of(bad)) if d.severity == "error"]
    assert str(d).startswith("world.yaml: TrafficSplit default/app1-split: spec.backends[1].weight")
    [sp] = desired.ports.values()
    assert {b.service: b.weight for b in sp.backends} == {"app1-v1": 900, "app1-v2": 100}
    assert store.has_errors()
    store.upsert(SCOPE, app(1, "300m")[-1])
    assert not store.has_errors()


def test_a_new_object_with_errors_is_not_applied_and_others_are():
    store, desired = loaded([*app(1)[:-1], app(1, "-1")[-1], *app(2)])
    assert {sp.service for sp in desired.ports.values()} == {"app2"}
    assert store.has_errors()


def test_replace_deletes_what_the_scope_no_longer_holds_and_duplicates_are_errors():
    store, desired = loaded(app(1))
    store.replace("other.yaml", [app(1)[-1]])        # the same split in a second file
    [d] = store.diagnostics(ObjectKey.of(app(1)[-1]))[-1:]
    assert "is defined twice (first in world.yaml)" in str(d) and d.file == "other.yaml"
    store.replace("other.yaml", [])
    assert not store.has_errors()
    desired.resolve(store, store.replace(SCOPE, app(1)[:-1]))   # the split's document removed
    assert desired.ports == {}


def test_a_weight_edit_changes_exactly_that_roots_split_port(tmp_path):
    world = [o for i in range(1, 6) for o in app(i)]
    store, desired = loaded(world)
    before = dict(desired.ports)
    edited = app(3, "500m")[-1]
    delta = desired.resolve(store, store.upsert(SCOPE, edited))
    [key] = delta.changed
    assert desired.ports[key].service == "app3"
    assert all(desired.ports[k] is sp for k, sp in before.items() if k != key)   # untouched, not rebuilt
    assert delta.removed == delta.refused == 0 and not delta.sweeping


def test_incremental_result_equals_resolving_everything_after_each_event(tmp_path):
    world = [o for i in range(1, 5) for o in app(i)]
    store, desired = loaded(world)
    current = {ObjectKey.of(o): o for o in world}
    edits = [
        ("upsert", app(2, "0")[-1]),                                  # all weight to v1
        ("upsert", eps("app3-v2", [])),                               # v2 loses its endpoints
        ("upsert", route("r4", "app4", [("app4-v1", 1), ("gone", 1)])),   # a route beside the split: conflict
        ("delete", app(4)[-1]),                                       # the split goes: the route takes the port
        ("upsert", svc("app1", ("10.96.1.1", "fd00::1"), ports=({"port": 80, "targetPort": 8080},))),
        ("delete", svc("app1-v2", ("10.96.3.1",))),
        ("upsert", ts("nest", "app2-v1", [("app3", "1")])),           # a split whose backend is itself split
    ]
    for op, obj in edits:
        key = ObjectKey.of(obj)
        if op == "upsert":
            current[key] = copy.deepcopy(obj)
            dirty = store.upsert(SCOPE, obj)
        else:
            current.pop(key)
            dirty = store.delete(SCOPE, key)
        desired.resolve(store, dirty)
        assert desired.ports == from_scratch(tmp_path, list(current.values())), (op, key)


def test_a_change_that_removes_or_refuses_most_split_ports_is_sweeping():
    world = [o for i in range(1, 5) for o in app(i)]
    store, desired = loaded(world)
    dirty = store.replace(SCOPE, [o for o in world if o["kind"] != "TrafficSplit"] + [app(1)[-1]])
    delta = desired.resolve(store, dirty)
    assert (delta.before, delta.removed, delta.refused) == (4, 3, 0) and delta.sweeping
    store, desired = loaded(world)
    cut = [o for o in world if not (o["kind"] == "Endpoints" and o["metadata"]["name"] < "app2")]
    delta = desired.resolve(store, store.replace(SCOPE, cut))      # a file cut before its Endpoints
    assert (delta.before, delta.removed, delta.refused) == (4, 0, 1) and not delta.sweeping
    delta = desired.resolve(store, store.replace(SCOPE, [o for o in cut if o["kind"] != "Endpoints"]))
    assert (delta.before, delta.removed, delta.refused) == (4, 0, 3) and delta.sweeping
    assert all(sp.refuse for sp in desired.ports.values())
