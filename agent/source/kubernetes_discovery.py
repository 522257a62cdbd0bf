"""Which resources the agent watches, as the API server's discovery documents say they are served.

`choose` is pure: served versions in, the resources to watch out. A kind is watched in the group's
preferred version when that version serves it and the model reads it, else in the first version the
model reads (newest first). A kind already watched stays in its version while that version is
served, so a CRD upgrade that adds a version does not re-list everything. `fetch_served` is the one
place that asks the API server (through kr8s), and is asked again periodically: a CRD installed
after the agent started is watched from the next discovery on.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("kernsplit.agent.kubernetes")


@dataclass(frozen=True, order=True)
class Resource:
    """One served resource: what a reflector lists and watches."""
    group: str          # "" for the core group
    version: str
    plural: str         # the URL segment: "trafficsplits"
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def base(self) -> str:
        """The URL root of its group ("/api" for the core group), as kr8s's `call_api` takes it."""
        return "/apis" if self.group else "/api"

    def scope(self, namespace: str | None) -> str:
        """The sink scope of one reflector: every object it delivers, and only those."""
        return f"kubernetes:{self.api_version}/{self.plural}" + (f"@{namespace}" if namespace else "")

    def __str__(self) -> str:
        return f"{self.kind} ({self.api_version})"


@dataclass(frozen=True)
class Wanted:
    """A kind the model reads, in the versions it reads (our preference first)."""
    group: str
    kind: str
    versions: tuple[str, ...]


SERVICE = Wanted("", "Service", ("v1",))
ENDPOINT_SLICE = Wanted("discovery.k8s.io", "EndpointSlice", ("v1",))
ENDPOINTS = Wanted("", "Endpoints", ("v1",))         # only where EndpointSlices are not served
OPTIONAL = (
    Wanted("split.smi-spec.io", "TrafficSplit", ("v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1")),
    Wanted("gateway.networking.k8s.io", "HTTPRoute", ("v1", "v1beta1", "v1alpha2")),
    Wanted("gateway.networking.k8s.io", "TCPRoute", ("v1", "v1beta1", "v1alpha2")),
    Wanted("policy.linkerd.io", "HTTPRoute", ("v1beta3", "v1beta2", "v1beta1")),
)
GROUPS = tuple(sorted({w.group for w in (SERVICE, ENDPOINT_SLICE, *OPTIONAL) if w.group}))


@dataclass(frozen=True)
class GroupServed:
    """What discovery says of one group: its preferred version, and per version kind -> plural."""
    preferred: str
    kinds: Mapping[str, Mapping[str, str]] = field(default_factory=dict)   # version -> {kind: plural}


Served = Mapping[str, GroupServed]     # group ("" for core) -> what it serves


def choose(served: Served, current: Iterable[Resource] = ()) -> tuple[Resource, ...]:
    """The resources to watch. `current` are those watched now: each keeps its version while served."""
    sticky = {(r.group, r.kind): r for r in current}
    chosen = [_pick(SERVICE, served, sticky)]
    chosen.append(_pick(ENDPOINT_SLICE, served, sticky) or _pick(ENDPOINTS, served, sticky))
    chosen.extend(_pick(wanted, served, sticky) for wanted in OPTIONAL)
    return tuple(r for r in chosen if r is not None)


def _pick(wanted: Wanted, served: Served, sticky: Mapping[tuple[str, str], Resource]) -> Resource | None:
    group = served.get(wanted.group)
    if group is None:
        return None
    serving = {v: kinds[wanted.kind] for v, kinds in group.kinds.items()
               if v in wanted.versions and wanted.kind in kinds}
    if not serving:
        return None
    now = sticky.get((wanted.group, wanted.kind))
    if now is not None and now.version in serving:
        version = now.version
    elif group.preferred in serving:
        version = group.preferred
    else:
        version = next(v for v in wanted.versions if v in serving)
    return Resource(wanted.group, version, serving[version], wanted.kind)


def served_from(core: Mapping[str, Any], groups: Mapping[str, Any],
                lists: Mapping[str, Mapping[str, Any]]) -> dict[str, GroupServed]:
    """Discovery documents -> `Served`. `core` is GET /api/v1, `groups` GET /apis, `lists` the
    GET /apis/<group>/<version> documents by group version (missing ones: not fetched or failed)."""
    served = {"": GroupServed("v1", {"v1": _kinds(core)})}
    for group in groups.get("groups") or ():
        name = group.get("name")
        if name not in GROUPS:
            continue
        versions = [v.get("version") for v in group.get("versions") or ()]
        preferred = (group.get("preferredVersion") or {}).get("version") or (versions[0] if versions else "")
        served[name] = GroupServed(preferred, {v: _kinds(lists[f"{name}/{v}"])
                                               for v in versions if f"{name}/{v}" in lists})
    return served


def _kinds(resource_list: Mapping[str, Any]) -> dict[str, str]:
    """kind -> plural of a resource list, leaving out subresources ("trafficsplits/status")."""
    return {r["kind"]: r["name"] for r in resource_list.get("resources") or ()
            if "/" not in r.get("name", "/") and "list" in (r.get("verbs") or ("list",))}


async def fetch_served(api: Any) -> dict[str, GroupServed]:
    """Ask the API server (kr8s `Api`) what it serves. Raises on any failure: a discovery that failed
    says nothing, and the caller keeps watching what it watched."""
    core = await _get(api, "/api", "v1")
    groups = await _get(api, "/apis", "")
    lists = {}
    for group in groups.get("groups") or ():
        if group.get("name") in GROUPS:
            for version in group.get("versions") or ():
                lists[version["groupVersion"]] = await _get(api, "/apis", version["groupVersion"])
    return served_from(core, groups, lists)


async def _get(api: Any, base: str, url: str) -> dict[str, Any]:
    # kr8s joins base, version and url with "/": an empty version is left out.
    async with api.call_api("GET", version="", base=base, url=url) as response:
        return json.loads(response.content)
