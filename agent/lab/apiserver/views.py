"""Between the stored form of an object and the version a client reads or writes.

Custom resources convert as a CRD with conversion strategy None does: only apiVersion changes.
events.k8s.io/v1 Events are the core v1 Events renamed field by field, as Kubernetes converts them.
Objects of a CRD are pruned to the fields its structural schema declares, as the API server does.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kernsplit.agent.lab.apiserver.resources import Resource

# events.k8s.io/v1 field <-> core v1 field
_EVENT_FIELDS = {
    "regarding": "involvedObject", "note": "message", "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp", "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count", "reportingController": "reportingComponent",
}
_CORE_EVENT_FIELDS = {core: new for new, core in _EVENT_FIELDS.items()}


def to_client(resource: Resource, stored: Mapping[str, Any]) -> dict:
    obj = copy.deepcopy(dict(stored))
    if resource.group == "events.k8s.io":
        obj = {_CORE_EVENT_FIELDS.get(k, k): v for k, v in obj.items()}
    obj["apiVersion"] = resource.api_version
    obj["kind"] = resource.kind
    return obj


def to_storage(resource: Resource, obj: Mapping[str, Any]) -> dict:
    stored = copy.deepcopy(dict(obj))
    if resource.group == "events.k8s.io":
        stored = {_EVENT_FIELDS.get(k, k): v for k, v in stored.items()}
        stored["apiVersion"] = "v1"
    else:
        stored["apiVersion"] = f"{resource.group}/{resource.storage}" if resource.group else resource.storage
    # Pruned with the schema of the version written, then (as the API server does when it reads the
    # object back from storage) with the stored version's schema.
    for schema in (resource.schema, resource.storage_schema):
        if schema is not None:
            stored = prune(stored, schema, root=True)
    return stored


def prune(value: Any, schema: Mapping[str, Any], root: bool = False) -> Any:
    """Drops fields the structural schema does not declare (apiVersion, kind and metadata are
    always kept at the root), unless the schema preserves unknown fields there."""
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
            return value
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            if root and key in ("apiVersion", "kind", "metadata"):
                out[key] = item
            elif key in props:
                out[key] = prune(item, props[key])
            elif isinstance(extra, Mapping):
                out[key] = prune(item, extra)
            elif extra is True or schema.get("x-kubernetes-preserve-unknown-fields"):
                out[key] = item
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [prune(item, schema["items"]) for item in value]
    return value


def unknown_fields(value: Any, schema: Mapping[str, Any], path: str = "", root: bool = True) -> list[str]:
    """The fields `prune` would drop, as the API server names them in a strict decoding error."""
    found: list[str] = []
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
            return found
        props, extra = schema.get("properties") or {}, schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if root and key in ("apiVersion", "kind", "metadata"):
                continue
            if key in props:
                found += unknown_fields(item, props[key], where, False)
            elif isinstance(extra, Mapping):
                found += unknown_fields(item, extra, where, False)
            elif not (extra is True or schema.get("x-kubernetes-preserve-unknown-fields")):
                found.append(where)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]", False)
    return found
