"""Object semantics of the lab API server: create, update, patch and delete with the checks and
metadata the real one keeps (uid, creationTimestamp, generation, resourceVersion preconditions,
namespaces that must exist, names it would accept, CRDs that start or stop serving their kinds).
"""
from __future__ import annotations

import copy
import datetime as dt
import re
import uuid
from typing import Any

from kernsplit.agent.lab.apiserver.errors import ApiError, invalid, not_found
from kernsplit.agent.lab.apiserver.patch import PatchError, apply_patch
from kernsplit.agent.lab.apiserver.registry import Registry
from kernsplit.agent.lab.apiserver.resources import Resource
from kernsplit.agent.lab.apiserver.store import Obj, Store
from kernsplit.agent.lab.apiserver.views import to_client, to_storage, unknown_fields

_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_NAME_RULES = {"services": (_LABEL, 63, "a DNS-1035 label"), "namespaces": (_LABEL, 63, "a DNS-1123 label")}
_CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
_NAMESPACE_KEY = ("", "namespaces")
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _without_rv(obj: Obj) -> Obj:
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}}


def _what(r: Resource) -> str:
    return f"{r.plural}.{r.group}" if r.group else r.plural


class Objects:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store, self.registry = store, registry
        for name in INITIAL_NAMESPACES:
            self.store.put(_NAMESPACE_KEY, self._stamp({"apiVersion": "v1", "kind": "Namespace",
                                                        "metadata": {"name": name}, "spec": {"finalizers": ["kubernetes"]},
                                                        "status": {"phase": "Active"}}))

    # reads ---------------------------------------------------------------------------------
    def get(self, r: Resource, namespace: str, name: str) -> dict:
        stored = self.store.get(r.storage_key, namespace if r.namespaced else "", name)
        if stored is None:
            raise not_found(_what(r), name, r.group)
        return to_client(r, stored)

    # writes --------------------------------------------------------------------------------
    def create(self, r: Resource, namespace: str, body: Any, dry_run: bool = False,
               validation: str = "Ignore", warnings: list[str] | None = None) -> dict:
        obj = self._checked_body(r, namespace, body)
        self._validate_fields(r, obj, validation, warnings)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        self._check_name(r, meta.get("name"))
        if meta.get("resourceVersion"):
            raise invalid(r.kind, meta["name"], "metadata.resourceVersion: Invalid value: "
                          f'"{meta["resourceVersion"]}": must be empty on create')
        if r.namespaced and self.store.get(_NAMESPACE_KEY, "", meta["namespace"]) is None:
            raise not_found("namespaces", meta["namespace"])
        if self.store.get(r.storage_key, meta.get("namespace", ""), meta["name"]) is not None:
            raise ApiError(409, "AlreadyExists", f'{_what(r)} "{meta["name"]}" already exists',
                           {"name": meta["name"], "group": r.group, "kind": r.plural})
        stored = self._stamp(to_storage(r, obj))
        if r.storage_key == _CRD_KEY:
            self._accept_crd(stored)
            if not dry_run:
                self.registry.set_crd(stored)
        return to_client(r, stored if dry_run else self.store.put(r.storage_key, stored))

    def update(self, r: Resource, namespace: str, name: str, body: Any, dry_run: bool = False,
               validation: str = "Ignore", warnings: list[str] | None = None) -> dict:
        obj = self._checked_body(r, namespace, body)
        self._validate_fields(r, obj, validation, warnings)
        if obj["metadata"].get("name") != name:
            raise ApiError(400, "BadRequest", "the name of the object "
                           f'({obj["metadata"].get("name")}) does not match the name on the URL ({name})')
        current = self.store.get(r.storage_key, namespace if r.namespaced else "", name)
        if current is None:
            raise not_found(_what(r), name, r.group)
        sent_rv = obj["metadata"].get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {_what(r)} "{name}": the object '
                           "has been modified; please apply your changes to the latest version and try again",
                           {"name": name, "group": r.group, "kind": r.plural})
        stored = to_storage(r, obj)
        for kept in ("uid", "creationTimestamp", "generation"):
            if kept in current["metadata"]:
                stored["metadata"][kept] = current["metadata"][kept]
        if stored.get("spec") != current.get("spec"):
            stored["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        if r.storage_key == _CRD_KEY:
            self._accept_crd(stored)
        if _without_rv(stored) == _without_rv(current):
            return to_client(r, current)       # a no-op update keeps its resourceVersion, as etcd3's store does
        if r.storage_key == _CRD_KEY and not dry_run:
            self.registry.set_crd(stored)
        return to_client(r, stored if dry_run else self.store.put(r.storage_key, stored))

    def patch(self, r: Resource, namespace: str, name: str, content_type: str, body: Any,
              dry_run: bool = False, validation: str = "Ignore", warnings: list[str] | None = None) -> dict:
        current = self.get(r, namespace, name)
        try:
            patched = apply_patch(content_type, current, body, strategic_allowed=r.builtin)
        except PatchError as exc:
            code = 415 if "unknown format" in str(exc) else 422
            raise ApiError(code, "UnsupportedMediaType" if code == 415 else "Invalid", str(exc)) from None
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise ApiError(422, "Invalid", f'{r.kind} "{name}": the patched object has no metadata')
        patched["metadata"].setdefault("name", name)
        return self.update(r, namespace, name, patched, dry_run, validation, warnings)

    def delete(self, r: Resource, namespace: str, name: str, dry_run: bool = False) -> dict:
        obj = self.get(r, namespace, name)
        if dry_run:
            return obj
        ns = namespace if r.namespaced else ""
        if r.storage_key == _CRD_KEY:
            for gone in self.registry.remove_crd(name):
                self.store.drop_all(gone.storage_key)
        if r.storage_key == _NAMESPACE_KEY:
            self._empty_namespace(name)
        return to_client(r, self.store.remove(r.storage_key, ns, name))

    # helpers -------------------------------------------------------------------------------
    def _checked_body(self, r: Resource, namespace: str, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be a JSON object")
        obj = copy.deepcopy(body)
        if obj.get("kind") not in (None, r.kind) or obj.get("apiVersion") not in (None, r.api_version):
            raise ApiError(400, "BadRequest", f'the API version in the data ({obj.get("apiVersion")}) and kind '
                           f'({obj.get("kind")}) do not match the URL ({r.api_version}, {r.kind})')
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if r.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiError(400, "BadRequest", "the namespace of the provided object does not match "
                               "the namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    @staticmethod
    def _validate_fields(r: Resource, obj: Obj, validation: str, warnings: list[str] | None) -> None:
        """fieldValidation: fields a custom kind's schema does not declare are an error (Strict),
        a warning (Warn) or silently pruned (Ignore), as the API server does."""
        if r.schema is None or validation not in ("Strict", "Warn"):
            return
        unknown = [f'unknown field "{f}"' for f in unknown_fields(obj, r.schema)]
        if unknown and validation == "Strict":
            raise ApiError(400, "BadRequest", f'{r.kind} in version "{r.version}" cannot be handled as a '
                           f'{r.kind}: strict decoding error: {", ".join(unknown)}')
        if warnings is not None:
            warnings += unknown

    def _check_name(self, r: Resource, name: Any) -> None:
        pattern, limit, what = _NAME_RULES.get(r.plural, (_SUBDOMAIN, 253, "a lowercase RFC 1123 subdomain"))
        if not name:
            raise invalid(r.kind, "", "metadata.name: Required value: name or generateName is required")
        if not isinstance(name, str) or len(name) > limit or not pattern.fullmatch(name):
            raise invalid(r.kind, str(name), f'metadata.name: Invalid value: "{name}": must be {what} '
                          f"of at most {limit} characters")

    @staticmethod
    def _stamp(obj: Obj) -> Obj:
        meta = obj["metadata"]
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now())
        if "spec" in obj:
            meta.setdefault("generation", 1)
        return obj

    def _accept_crd(self, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        if f'{names.get("plural")}.{spec.get("group")}' != crd["metadata"]["name"]:
            raise invalid("CustomResourceDefinition", crd["metadata"]["name"],
                          'metadata.name: Invalid value: must be spec.names.plural+"."+spec.group')
        at = _now()
        crd["status"] = {"acceptedNames": names, "storedVersions": [v["name"] for v in spec.get("versions", ())
                                                                   if v.get("storage")],
                         "conditions": [{"type": t, "status": "True", "lastTransitionTime": at, "reason": t,
                                         "message": m} for t, m in (("NamesAccepted", "no conflicts found"),
                                                                    ("Established", "the initial names have been accepted"))]}

    def _empty_namespace(self, namespace: str) -> None:
        for r in self.registry.all():
            if r.namespaced:
                for obj in list(self.store.items(r.storage_key, namespace)):
                    self.store.remove(r.storage_key, namespace, obj["metadata"]["name"])
