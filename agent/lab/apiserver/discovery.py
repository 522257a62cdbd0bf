"""Discovery documents: the legacy ones (/api, /apis, /api/v1, /apis/G/V) and the aggregated
APIGroupDiscoveryList that kubectl asks for first (v2beta1 from 1.26, v2 from 1.30)."""
from __future__ import annotations

from kernsplit.agent.lab.apiserver.registry import Registry
from kernsplit.agent.lab.apiserver.resources import VERBS, Resource

AGGREGATED = {v: f"application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList"
              for v in ("v2", "v2beta1")}


def aggregated_version(accept: str) -> str | None:
    """The aggregated discovery version the Accept header asks for, in the client's order."""
    for part in accept.split(","):
        params = dict(p.strip().partition("=")[::2] for p in part.split(";")[1:])
        if params.get("g") == "apidiscovery.k8s.io" and params.get("as") == "APIGroupDiscoveryList":
            if params.get("v") in AGGREGATED:
                return params["v"]
    return None


def api_versions(address: str) -> dict:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]}


def _group(name: str, versions: list[str]) -> dict:
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list(registry: Registry) -> dict:
    groups = [_group(g, vs) for g, vs in registry.group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, group: str) -> dict | None:
    versions = registry.group_versions().get(group)
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, versions)} if versions else None


def _legacy_resource(r: Resource) -> dict:
    return {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced, "kind": r.kind,
            "verbs": list(VERBS), **({"shortNames": list(r.short_names)} if r.short_names else {}),
            **({"categories": list(r.categories)} if r.categories else {})}


def api_resource_list(registry: Registry, group: str, version: str) -> dict | None:
    resources = registry.resources_of(group, version)
    if not resources:
        return None
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": [_legacy_resource(r) for r in resources]}


def _aggregated_resource(r: Resource) -> dict:
    return {"resource": r.plural, "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
            "scope": "Namespaced" if r.namespaced else "Cluster", "singularResource": r.singular,
            "verbs": list(VERBS), **({"shortNames": list(r.short_names)} if r.short_names else {}),
            **({"categories": list(r.categories)} if r.categories else {})}


def aggregated(registry: Registry, version: str, core: bool) -> dict:
    """/api (core=True) or /apis as one APIGroupDiscoveryList."""
    items = []
    for group, versions in registry.group_versions().items():
        if bool(group) == core:
            continue
        items.append({"metadata": {"name": group, "creationTimestamp": None}, "versions": [
            {"version": v, "freshness": "Current",
             "resources": [_aggregated_resource(r) for r in registry.resources_of(group, v)]}
            for v in versions]})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": f"apidiscovery.k8s.io/{version}",
            "metadata": {}, "items": items}
