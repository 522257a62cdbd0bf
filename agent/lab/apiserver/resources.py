"""What the lab API server serves: one `Resource` per (group, version, plural), built in or from a CRD.

Built-in kinds are the core ones the agent reads and writes (Namespaces, Services, Endpoints,
EndpointSlices, Events) and CustomResourceDefinitions themselves; everything else (TrafficSplit,
Gateway and Linkerd routes) arrives as a CRD object, so a CRD created later is served at once.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
CORE_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
                    "application/strategic-merge-patch+json")
CUSTOM_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json")


@dataclass(frozen=True)
class Resource:
    group: str                  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    storage: str = ""           # the version objects are kept in (same group/plural across versions)
    preferred: bool = True      # the group's preferred version
    builtin: bool = True        # built-in kinds take strategic merge patches, custom ones do not
    schema: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    storage_schema: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    printer_columns: tuple[Mapping[str, Any], ...] = field(default=(), compare=False, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def storage_key(self) -> tuple[str, str]:
        """Objects are stored once per (group, plural), whatever version they were written in;
        events.k8s.io Events are the core Events seen through another schema, as in Kubernetes."""
        return ("", "events") if self.group == "events.k8s.io" else (self.group, self.plural)

    @property
    def patch_types(self) -> tuple[str, ...]:
        return CORE_PATCH_TYPES if self.builtin else CUSTOM_PATCH_TYPES

    def path(self, namespace: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"


def _builtin(group: str, version: str, plural: str, kind: str, namespaced: bool = True,
             short: tuple[str, ...] = (), categories: tuple[str, ...] = ()) -> Resource:
    return Resource(group, version, plural, kind, namespaced, kind.lower(), short, categories,
                    storage=version)


BUILTINS: tuple[Resource, ...] = (
    _builtin("", "v1", "namespaces", "Namespace", namespaced=False, short=("ns",)),
    _builtin("", "v1", "services", "Service", short=("svc",), categories=("all",)),
    _builtin("", "v1", "endpoints", "Endpoints", short=("ep",)),
    _builtin("", "v1", "events", "Event", short=("ev",)),
    _builtin("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    _builtin("events.k8s.io", "v1", "events", "Event", short=("ev",)),
    _builtin("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
             namespaced=False, short=("crd", "crds")),
)


def crd_resources(crd: Mapping[str, Any]) -> Iterator[Resource]:
    """The served versions of a CRD object (apiextensions.k8s.io/v1), preferred = the first served
    version in Kubernetes' version priority (GA > beta > alpha, higher numbers first)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    served = [v for v in spec.get("versions") or () if v.get("served")]
    stored = next((v for v in spec.get("versions") or () if v.get("storage")), {})
    storage = stored.get("name", "")
    preferred = min((v["name"] for v in served), key=version_priority, default="")
    for v in served:
        yield Resource(
            group=spec.get("group", ""), version=v["name"], plural=names.get("plural", ""),
            kind=names.get("kind", ""), namespaced=spec.get("scope") == "Namespaced",
            singular=names.get("singular") or names.get("kind", "").lower(),
            short_names=tuple(names.get("shortNames") or ()), categories=tuple(names.get("categories") or ()),
            storage=storage, preferred=v["name"] == preferred, builtin=False,
            schema=(v.get("schema") or {}).get("openAPIV3Schema"),
            storage_schema=(stored.get("schema") or {}).get("openAPIV3Schema"),
            printer_columns=tuple(v.get("additionalPrinterColumns") or ()))


def version_priority(version: str) -> tuple[int, int, int]:
    """Sort key, smallest first: v2 < v1 < v1beta2 < v1beta1 < v1alpha1 < anything else
    (Kubernetes' own version ordering for discovery)."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0)
    major, level, minor = int(m[1]), m[2], int(m[3] or 0)
    return ({None: 0, "beta": 1, "alpha": 2}[level], -major, -minor)
