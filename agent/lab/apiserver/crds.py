"""The CRDs the lab API server starts with: the TrafficSplit CRD that deploy/ ships, and stand-ins
for the Gateway API and Linkerd route CRDs (their kinds and versions, with schemas that keep every
field: the agent, not this lab server, checks their contents)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# The source tree's deploy/ folder: the lab runs from a checkout (an editable install).
TRAFFICSPLIT_CRD = Path(__file__).resolve().parents[3] / "deploy" / "base" / "crds" / "trafficsplit.yaml"

_OPEN = {"openAPIV3Schema": {"type": "object", "properties": {
    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}


def _crd(group: str, kind: str, plural: str, versions: tuple[str, ...], storage: str,
         short: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                               "singular": kind.lower(), **({"shortNames": list(short)} if short else {})},
                     "versions": [{"name": v, "served": True, "storage": v == storage, "schema": _OPEN}
                                  for v in versions]}}


ROUTE_CRDS = (
    _crd("gateway.networking.k8s.io", "HTTPRoute", "httproutes", ("v1", "v1beta1"), "v1"),
    _crd("gateway.networking.k8s.io", "TCPRoute", "tcproutes", ("v1alpha2",), "v1alpha2"),
    _crd("policy.linkerd.io", "HTTPRoute", "httproutes", ("v1beta1", "v1beta2", "v1beta3"), "v1beta3"),
)


def load_crds(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "CustomResourceDefinition"]


def default_crds() -> list[dict[str, Any]]:
    return load_crds(TRAFFICSPLIT_CRD) + [dict(c) for c in ROUTE_CRDS]
