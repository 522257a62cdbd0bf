"""The three PATCH bodies kubectl and controllers send: JSON patch (RFC 6902, by the jsonpatch
library), JSON merge patch (RFC 7386) and, for built-in kinds, strategic merge patch.

Strategic merge is Kubernetes' merge patch with list semantics taken from the Go types' struct
tags: lists with a merge key merge element by element, the rest are replaced. Only the tags of the
kinds this server serves are listed; the directives kubectl emits ($patch, $setElementOrder,
$retainKeys, $deleteFromPrimitiveList) are honoured.
"""
from __future__ import annotations

import copy
from typing import Any

import jsonpatch

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

# (path of the list inside the object) -> merge key; from the Go types' patchMergeKey tags.
_MERGE_KEYS: dict[tuple[str, ...], str] = {
    ("metadata", "ownerReferences"): "uid",
    ("spec", "ports"): "port",                 # Service
    ("status", "conditions"): "type",
}
# Lists of scalars whose patchStrategy is merge (a union).
_MERGE_SCALARS: set[tuple[str, ...]] = {("metadata", "finalizers")}
_DIRECTIVES = ("$setElementOrder/", "$deleteFromPrimitiveList/")


class PatchError(ValueError):
    pass


def apply_patch(content_type: str, original: dict, body: Any, strategic_allowed: bool) -> dict:
    """The patched object; PatchError for a body that does not apply."""
    media = content_type.split(";")[0].strip()
    if media == JSON_PATCH:
        try:
            return jsonpatch.apply_patch(original, body)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
            raise PatchError(f"the JSON patch does not apply: {exc}") from None
    if not isinstance(body, dict):
        raise PatchError("a merge patch must be a JSON object")
    if media == MERGE_PATCH:
        return merge_patch(original, body)
    if media == STRATEGIC_MERGE_PATCH and strategic_allowed:
        return strategic_merge(original, body, ())
    raise PatchError(f"the body of the request was in an unknown format - accepted media types "
                     f"include: {JSON_PATCH}, {MERGE_PATCH}"
                     + (f", {STRATEGIC_MERGE_PATCH}" if strategic_allowed else ""))


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(original: Any, patch: dict, path: tuple[str, ...]) -> Any:
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith(_DIRECTIVES):
            continue
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = strategic_merge(result.get(key), value, path + (key,))
        elif isinstance(value, list):
            order = patch.get(f"$setElementOrder/{key}")
            result[key] = _merge_list(result.get(key), value, path + (key,), order)
        else:
            result[key] = value
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [x for x in result.get(name) or () if x not in value]
    if isinstance(patch.get("$retainKeys"), list):
        result = {k: v for k, v in result.items() if k in patch["$retainKeys"]}
    return result


def _merge_list(original: Any, patch: list, path: tuple[str, ...], order: list | None) -> list:
    current = list(original) if isinstance(original, list) else []
    if path in _MERGE_SCALARS:
        return current + [x for x in patch if x not in current]
    key = _MERGE_KEYS.get(path)
    if key is None:
        return [_strip(x) for x in patch if not (isinstance(x, dict) and x.get("$patch") == "delete")]
    for item in patch:
        index = next((i for i, x in enumerate(current) if x.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                current.pop(index)
        elif index is None:
            current.append(_strip(item))
        else:
            current[index] = strategic_merge(current[index], item, path)
    if order:
        rank = {x.get(key): i for i, x in enumerate(order) if isinstance(x, dict)}
        current.sort(key=lambda x: rank.get(x.get(key), len(rank)))
    return current


def _strip(value: Any) -> Any:
    """A value with no patch directives left in it."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value
