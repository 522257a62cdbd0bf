"""Events on objects with problems: what is posted, and how often (client-go's limits)."""
from __future__ import annotations

import random

import pytest

from kernsplit.agent.model.diagnostics import Diagnostic
from kernsplit.agent.source.contract import ObjectKey
from kernsplit.agent.source.kubernetes_backoff import Backoff, BackoffPolicy
from kernsplit.agent.source.kubernetes_events import EventLimits, EventPlanner, ObjectRef, References

SPLIT = {"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
         "metadata": {"name": "my-app-split", "namespace": "demo", "uid": "u-1", "resourceVersion": "42"}}
KEY = ObjectKey.of(SPLIT)
ERROR = Diagnostic("error", "kubernetes", "TrafficSplit demo/my-app-split", "spec.backends[1].weight",
                   '"-5" is negative')
WARNING = Diagnostic("warning", "kubernetes", "TrafficSplit demo/my-app-split", "spec.backends[0].service",
                     'Service demo/my-app-v2 does not exist')


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _planner(**limits) -> tuple[EventPlanner, Clock]:
    clock = Clock()
    return EventPlanner(EventLimits(**limits), host="node-1", clock=clock, wall=lambda: 1.7e9), clock


def test_an_error_becomes_a_warning_event_on_the_object_with_the_validate_message():
    planner, _ = _planner()
    [event] = planner.plan(KEY, ObjectRef.of(SPLIT), [ERROR])
    assert event["involvedObject"] == {"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
                                       "namespace": "demo", "name": "my-app-split", "uid": "u-1",
                                       "resourceVersion": "42"}
    assert (event["type"], event["reason"], event["message"]) == ("Warning", "InvalidTrafficSplit", str(ERROR))
    assert event["metadata"]["namespace"] == "demo"
    assert event["metadata"]["name"].startswith("my-app-split.")
    assert event["source"] == {"component": "kernsplit-agent", "host": "node-1"}


def test_errors_come_before_warnings_and_info_is_not_posted():
    planner, _ = _planner()
    info = Diagnostic("info", "kubernetes", "x", "y", "matches are not enforced")
    reasons = [e["reason"] for e in planner.plan(KEY, ObjectRef.of(SPLIT), [WARNING, info, ERROR])]
    assert reasons == ["InvalidTrafficSplit", "TrafficSplitWarning"]


def test_the_same_message_is_posted_again_only_after_the_repeat_interval():
    planner, clock = _planner(repeat_after=600)
    ref = ObjectRef.of(SPLIT)
    assert len(planner.plan(KEY, ref, [ERROR])) == 1
    clock.now += 599
    assert planner.plan(KEY, ref, [ERROR]) == []
    clock.now += 2
    assert len(planner.plan(KEY, ref, [ERROR])) == 1


def test_a_repeat_after_the_interval_continues_the_same_event_and_a_new_object_gets_its_own():
    planner, clock = _planner(repeat_after=600)
    ref = ObjectRef.of(SPLIT)
    [first] = planner.plan(KEY, ref, [ERROR])
    clock.now += 601
    [again] = planner.plan(KEY, ref, [ERROR])
    assert again["metadata"]["name"] == first["metadata"]["name"]
    assert (again["count"], again["firstTimestamp"]) == (2, first["firstTimestamp"])
    clock.now += 601
    assert planner.plan(KEY, ref, [ERROR])[0]["count"] == 3
    remade = ObjectRef.of({**SPLIT, "metadata": {**SPLIT["metadata"], "uid": "u-2"}})   # deleted, created again
    [fresh] = planner.plan(KEY, remade, [ERROR])
    assert fresh["count"] == 1 and fresh["involvedObject"]["uid"] == "u-2"


def test_a_flapping_object_is_limited_by_its_token_bucket():
    planner, clock = _planner(object_burst=3, object_refill=60, repeat_after=0.001)
    ref = ObjectRef.of(SPLIT)
    posted = 0
    for i in range(20):
        clock.now += 1
        message = Diagnostic("error", "k", "o", "spec.backends", f"flap {i}")
        posted += len(planner.plan(KEY, ref, [message]))
    assert posted == 3 and planner.suppressed == 17
    clock.now += 60
    assert len(planner.plan(KEY, ref, [Diagnostic("error", "k", "o", "f", "later")])) == 1


def test_a_long_message_is_cut_to_the_event_limit():
    planner, _ = _planner()
    long = Diagnostic("error", "k", "o", "f", "x" * 5000)
    [event] = planner.plan(KEY, ObjectRef.of(SPLIT), [long])
    assert len(event["message"]) == 1024


def test_references_tell_a_gateway_route_from_a_linkerd_route_of_the_same_name():
    refs = References()
    gateway = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
               "metadata": {"name": "r", "namespace": "demo", "uid": "g"}}
    linkerd = {**gateway, "apiVersion": "policy.linkerd.io/v1beta3", "metadata": {**gateway["metadata"], "uid": "l"}}
    refs.note(gateway)
    refs.note(linkerd)
    refs.note({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "r", "namespace": "demo"}})
    assert refs.get(ObjectKey.of(gateway)).uid == "g"
    assert refs.get(ObjectKey.of(linkerd)).uid == "l"
    assert refs.get(ObjectKey("Service", "demo", "r")) is None     # Services get no Events
    refs.forget(ObjectKey.of(linkerd))
    assert refs.get(ObjectKey.of(linkerd)) is None and refs.get(ObjectKey.of(gateway)) is not None


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter_and_resets():
    backoff = Backoff(BackoffPolicy(initial=1, factor=2, cap=8, jitter=0.5), rng=random.Random(7))
    waits = [backoff.next() for _ in range(7)]
    for wait, base in zip(waits, [1, 2, 4, 8, 8, 8, 8]):
        assert base <= wait <= base * 1.5
    assert len({round(w / b, 6) for w, b in zip(waits, [1, 2, 4, 8, 8, 8, 8])}) > 1   # jittered
    backoff.reset()
    assert 1 <= backoff.next() <= 1.5


def test_a_backoff_policy_that_cannot_work_is_refused():
    with pytest.raises(ValueError, match="cap >= initial"):
        BackoffPolicy(initial=10, cap=1)
