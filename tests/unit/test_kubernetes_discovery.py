"""Which resources `--source kubernetes` watches, from discovery documents shaped as the API server
serves them (GET /api/v1, GET /apis, GET /apis/<group>/<version>)."""
from __future__ import annotations

from kernsplit.agent.source.kubernetes_discovery import Resource, choose, served_from

CORE = {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
    {"name": "services", "kind": "Service", "namespaced": True, "verbs": ["get", "list", "watch"]},
    {"name": "services/status", "kind": "Service", "namespaced": True, "verbs": ["get"]},
    {"name": "endpoints", "kind": "Endpoints", "namespaced": True, "verbs": ["get", "list", "watch"]},
    {"name": "events", "kind": "Event", "namespaced": True, "verbs": ["create", "list"]},
]}


def _group(name: str, versions: list[str], preferred: str | None = None) -> dict:
    return {"name": name, "versions": [{"groupVersion": f"{name}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{name}/{preferred or versions[0]}",
                                 "version": preferred or versions[0]}}


def _list(group_version: str, *kinds: tuple[str, str]) -> dict:
    return {"kind": "APIResourceList", "groupVersion": group_version,
            "resources": [{"name": plural, "kind": kind, "namespaced": True, "verbs": ["list", "watch"]}
                          for kind, plural in kinds]}


def _served(groups: list[dict], lists: list[dict], core: dict = CORE):
    return served_from(core, {"kind": "APIGroupList", "groups": groups},
                       {doc["groupVersion"]: doc for doc in lists})


SLICES = _list("discovery.k8s.io/v1", ("EndpointSlice", "endpointslices"))


def test_a_bare_cluster_watches_services_and_endpointslices_only():
    served = _served([_group("discovery.k8s.io", ["v1"]), _group("apps", ["v1"])], [SLICES])
    assert choose(served) == (Resource("", "v1", "services", "Service"),
                              Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"))


def test_endpoints_are_watched_only_where_endpointslices_are_not_served():
    chosen = choose(_served([], []))
    assert [r.kind for r in chosen] == ["Service", "Endpoints"]
    assert chosen[1].scope(None) == "kubernetes:v1/endpoints"


def test_trafficsplit_in_the_preferred_version_among_those_served():
    smi = _group("split.smi-spec.io", ["v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1"], preferred="v1alpha2")
    lists = [_list(f"split.smi-spec.io/{v}", ("TrafficSplit", "trafficsplits"))
             for v in ("v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1")]
    chosen = {r.kind: r for r in choose(_served([smi, _group("discovery.k8s.io", ["v1"])], [*lists, SLICES]))}
    assert chosen["TrafficSplit"] == Resource("split.smi-spec.io", "v1alpha2", "trafficsplits", "TrafficSplit")
    assert chosen["TrafficSplit"].scope("demo") == "kubernetes:split.smi-spec.io/v1alpha2/trafficsplits@demo"


def test_a_preferred_version_the_model_does_not_read_falls_back_to_the_newest_it_reads():
    smi = _group("split.smi-spec.io", ["v1beta1", "v1alpha3"], preferred="v1beta1")
    lists = [_list("split.smi-spec.io/v1beta1", ("TrafficSplit", "trafficsplits")),
             _list("split.smi-spec.io/v1alpha3", ("TrafficSplit", "trafficsplits"))]
    chosen = {r.kind: r.version for r in choose(_served([smi], lists))}
    assert chosen["TrafficSplit"] == "v1alpha3"


def test_gateway_and_linkerd_routes_are_two_resources_and_tcproute_is_found_outside_the_preferred_version():
    gateway = _group("gateway.networking.k8s.io", ["v1", "v1beta1", "v1alpha2"])
    linkerd = _group("policy.linkerd.io", ["v1beta3", "v1beta2", "v1alpha1"])
    lists = [_list("gateway.networking.k8s.io/v1", ("HTTPRoute", "httproutes"), ("Gateway", "gateways")),
             _list("gateway.networking.k8s.io/v1beta1", ("HTTPRoute", "httproutes")),
             _list("gateway.networking.k8s.io/v1alpha2", ("TCPRoute", "tcproutes"), ("HTTPRoute", "httproutes")),
             _list("policy.linkerd.io/v1beta3", ("HTTPRoute", "httproutes"), ("Server", "servers")),
             _list("policy.linkerd.io/v1alpha1", ("AuthorizationPolicy", "authorizationpolicies"))]
    chosen = [str(r) for r in choose(_served([gateway, linkerd], lists))][2:]
    assert chosen == ["HTTPRoute (gateway.networking.k8s.io/v1)", "TCPRoute (gateway.networking.k8s.io/v1alpha2)",
                      "HTTPRoute (policy.linkerd.io/v1beta3)"]


def test_a_watched_version_is_kept_while_served_even_when_another_becomes_preferred():
    watched = Resource("split.smi-spec.io", "v1alpha2", "trafficsplits", "TrafficSplit")
    smi = _group("split.smi-spec.io", ["v1alpha4", "v1alpha2"], preferred="v1alpha4")
    lists = [_list(f"split.smi-spec.io/{v}", ("TrafficSplit", "trafficsplits")) for v in ("v1alpha4", "v1alpha2")]
    assert watched in choose(_served([smi], lists), current=[watched])
    # once v1alpha2 is no longer served, the preferred version takes over
    only4 = _served([_group("split.smi-spec.io", ["v1alpha4"])], lists[:1])
    assert {r.version for r in choose(only4, current=[watched]) if r.kind == "TrafficSplit"} == {"v1alpha4"}


def test_a_group_served_without_its_version_documents_serves_nothing_yet():
    # a CRD just created: the group is listed before its version document answers
    chosen = choose(_served([_group("split.smi-spec.io", ["v1alpha2"])], []))
    assert "TrafficSplit" not in {r.kind for r in chosen}


def test_subresources_and_unlistable_resources_are_not_watched():
    core = {"resources": [{"name": "services/status", "kind": "Service", "verbs": ["get"]},
                          {"name": "services", "kind": "Service", "verbs": ["get"]}]}
    assert [r.kind for r in choose(served_from(core, {"groups": []}, {}))] == []
