"""/openapi/v2 in the encoding kubectl 1.27-1.29 asks for first: gnostic's `openapi.v2.Document`
protobuf (Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf), JSON otherwise.

kubectl reads it to learn whether the server validates fields (the PATCH operation of a kind, or of
Namespace for custom kinds, taking a `fieldValidation` query parameter). The messages are declared
here with gnostic's field numbers, only the fields this document fills; definitions are not served,
so kubectl takes strategic merge patch metadata from its compiled-in types.
"""
from __future__ import annotations

import json

import yaml
from aiohttp import web
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from kernsplit.agent.lab.apiserver.openapi import SERVER_VERSION, _QUERY
from kernsplit.agent.lab.apiserver.registry import Registry

PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
_F = descriptor_pb2.FieldDescriptorProto
# message -> [(field, number, type, repeated, message type)]; numbers as in gnostic's OpenAPIv2.proto
_MESSAGES = {
    "Document": [("swagger", 1, _F.TYPE_STRING, False, ""), ("info", 2, _F.TYPE_MESSAGE, False, "Info"),
                 ("paths", 8, _F.TYPE_MESSAGE, False, "Paths")],
    "Info": [("title", 1, _F.TYPE_STRING, False, ""), ("version", 2, _F.TYPE_STRING, False, "")],
    "Paths": [("path", 2, _F.TYPE_MESSAGE, True, "NamedPathItem")],
    "NamedPathItem": [("name", 1, _F.TYPE_STRING, False, ""), ("value", 2, _F.TYPE_MESSAGE, False, "PathItem")],
    "PathItem": [("get", 2, _F.TYPE_MESSAGE, False, "Operation"), ("patch", 8, _F.TYPE_MESSAGE, False, "Operation")],
    "Operation": [("operation_id", 5, _F.TYPE_STRING, False, ""), ("consumes", 7, _F.TYPE_STRING, True, ""),
                  ("parameters", 8, _F.TYPE_MESSAGE, True, "ParametersItem"),
                  ("vendor_extension", 13, _F.TYPE_MESSAGE, True, "NamedAny")],
    "ParametersItem": [("parameter", 1, _F.TYPE_MESSAGE, False, "Parameter")],
    "Parameter": [("non_body_parameter", 2, _F.TYPE_MESSAGE, False, "NonBodyParameter")],
    "NonBodyParameter": [("query_parameter_sub_schema", 3, _F.TYPE_MESSAGE, False, "QueryParameterSubSchema")],
    "QueryParameterSubSchema": [("in", 2, _F.TYPE_STRING, False, ""), ("name", 4, _F.TYPE_STRING, False, ""),
                                ("type", 6, _F.TYPE_STRING, False, "")],
    "NamedAny": [("name", 1, _F.TYPE_STRING, False, ""), ("value", 2, _F.TYPE_MESSAGE, False, "Any")],
    "Any": [("yaml", 2, _F.TYPE_STRING, False, "")],
}


def _message_classes() -> dict[str, type]:
    fd = descriptor_pb2.FileDescriptorProto(name="kernsplit_lab_openapiv2.proto", package="openapi.v2",
                                            syntax="proto3")
    for name, fields in _MESSAGES.items():
        msg = fd.message_type.add(name=name)
        for fname, number, ftype, repeated, type_name in fields:
            f = msg.field.add(name=fname, number=number, type=ftype,
                              label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if type_name:
                f.type_name = f".openapi.v2.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"openapi.v2.{name}"))
            for name in _MESSAGES}


_CLASSES = _message_classes()


def document(registry: Registry) -> dict:
    """The document as plain data (the JSON form; the protobuf form carries the same fields)."""
    paths = {}
    for r in registry.all():
        gvk = {"group": r.group, "kind": r.kind, "version": r.version}
        params = [{"in": "query", "name": p, "type": "string"} for p in _QUERY]
        paths[r.path("{namespace}") + "/{name}"] = {"patch": {
            "operationId": f"patch{r.kind}", "consumes": list(r.patch_types),
            "parameters": params, "x-kubernetes-group-version-kind": gvk}}
    return {"swagger": "2.0", "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
            "paths": paths}


def encode(doc: dict) -> bytes:
    c = _CLASSES
    out = c["Document"](swagger=doc["swagger"], info=c["Info"](**doc["info"]))
    for path, item in doc["paths"].items():
        op = item["patch"]
        params = [c["ParametersItem"](parameter=c["Parameter"](non_body_parameter=c["NonBodyParameter"](
            query_parameter_sub_schema=c["QueryParameterSubSchema"](**{"in": p["in"], "name": p["name"],
                                                                      "type": p["type"]}))))
                  for p in op["parameters"]]
        gvk = yaml.safe_dump(op["x-kubernetes-group-version-kind"])
        ext = c["NamedAny"](name="x-kubernetes-group-version-kind", value=c["Any"](yaml=gvk))
        patch = c["Operation"](operation_id=op["operationId"], consumes=op["consumes"], parameters=params,
                               vendor_extension=[ext])
        out.paths.path.append(c["NamedPathItem"](name=path, value=c["PathItem"](patch=patch)))
    return out.SerializeToString()


def v2_response(request: web.Request, registry: Registry) -> web.Response:
    doc = document(registry)
    if PROTOBUF in request.headers.get("Accept", ""):
        # As kube-openapi answers: the media type asked for is not one Go's mime parser accepts back.
        return web.Response(body=encode(doc), headers={"Content-Type": "application/octet-stream"})
    return web.Response(body=json.dumps(doc).encode(), headers={"Content-Type": "application/json"})
