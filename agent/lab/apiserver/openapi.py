"""OpenAPI documents, as far as kubectl reads them.

kubectl reads /openapi/v3 to learn that the server validates fields itself (a PATCH operation of the
kind, or of Namespace for a custom kind, taking the `fieldValidation` query parameter): then it
sends `fieldValidation=Strict` instead of validating on its side. For custom kinds the document
carries the CRD's schema. Built-in kinds' schemas are not served, so kubectl computes strategic merge
patches from its compiled-in types; their PATCH operations therefore list only the JSON and merge
patch bodies (a listed strategic merge body makes kubectl look for a schema).
"""
from __future__ import annotations

from kernsplit.agent.lab.apiserver.registry import Registry
from kernsplit.agent.lab.apiserver.resources import CUSTOM_PATCH_TYPES, Resource

SERVER_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-kernsplit-lab", "gitCommit": "",
                  "gitTreeState": "clean", "buildDate": "2026-12-01T00:00:00Z", "goVersion": "go1.23",
                  "compiler": "gc", "platform": "linux/amd64"}

_QUERY = ("fieldValidation", "fieldManager", "dryRun", "pretty")


def gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def v3_root(registry: Registry) -> dict:
    paths = {}
    for group, versions in registry.group_versions().items():
        for version in versions:
            p = gv_path(group, version)
            paths[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash={registry.hash_of(group, version)}"}
    return {"paths": paths}


def _schema_name(r: Resource) -> str:
    return ".".join(reversed(r.group.split("."))) + f".{r.version}.{r.kind}" if r.group else f"io.k8s.api.core.v1.{r.kind}"


def _operation(r: Resource, action: str, params: tuple[str, ...] = (), body: tuple[str, ...] = ()) -> dict:
    ref = {"$ref": f"#/components/schemas/{_schema_name(r)}"}
    op = {"operationId": f"{action}{r.kind}", "x-kubernetes-action": action,
          "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
          "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}}
    if params:
        op["parameters"] = [{"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
                            for p in params]
    if body:
        schema = ref if action != "patch" else {"type": "object"}
        op["requestBody"] = {"content": {t: {"schema": schema} for t in body}}
    return op


def _paths(r: Resource) -> dict:
    base = f"/{gv_path(r.group, r.version)}"
    coll = f"{base}/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"{base}/{r.plural}"
    return {
        coll: {"get": _operation(r, "list"), "post": _operation(r, "post", _QUERY, ("*/*",))},
        f"{coll}/{{name}}": {
            "get": _operation(r, "get"), "put": _operation(r, "put", _QUERY, ("*/*",)),
            "patch": _operation(r, "patch", _QUERY + ("force",), CUSTOM_PATCH_TYPES),
            "delete": _operation(r, "delete", ("dryRun",))},
    }


def v3_group_version(registry: Registry, group: str, version: str) -> dict | None:
    resources = registry.resources_of(group, version)
    if not resources:
        return None
    paths: dict = {}
    schemas: dict = {}
    for r in resources:
        paths.update(_paths(r))
        schema = dict(r.schema) if r.schema else {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        schema["x-kubernetes-group-version-kind"] = [{"group": r.group, "version": r.version, "kind": r.kind}]
        schemas[_schema_name(r)] = schema
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
            "paths": paths, "components": {"schemas": schemas}}
