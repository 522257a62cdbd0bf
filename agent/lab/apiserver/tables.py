"""Server-side printing: the meta.k8s.io/v1 Table kubectl asks for when it prints for a person
(`kubectl get`, `get -w`). Custom kinds use their CRD's additionalPrinterColumns; the built-in kinds
get the columns kubectl users know (Service: TYPE, CLUSTER-IP, PORT(S)...)."""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any

from kernsplit.agent.lab.apiserver.resources import Resource

Cell = Callable[[Mapping[str, Any]], Any]


def wants_table(accept: str) -> bool:
    return any("as=Table" in part and "g=meta.k8s.io" in part for part in accept.split(","))


def human_duration(since: str | None) -> str:
    """Kubernetes' HumanDuration of the time since an RFC 3339 timestamp ("<unknown>" if none)."""
    try:
        then = dt.datetime.strptime(since or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return "<unknown>"
    s = max(0, int((dt.datetime.now(dt.timezone.utc) - then).total_seconds()))
    if s < 120:
        return f"{s}s"
    m, h, d = s // 60, s // 3600, s // 86400
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if h < 3:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    return f"{d}d{h % 24}h" if d < 8 and h % 24 else f"{d}d"


def json_path(obj: Any, path: str) -> Any:
    """A CRD printer column's simple JSONPath (`.spec.service`, `.spec.backends[0].weight`)."""
    for name, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        if name:
            obj = obj.get(name) if isinstance(obj, Mapping) else None
        else:
            obj = obj[int(index)] if isinstance(obj, list) and int(index) < len(obj) else None
    return obj


def _ports(svc: Mapping) -> str:
    ports = (svc.get("spec") or {}).get("ports") or []
    return ",".join(f'{p.get("port")}/{p.get("protocol", "TCP")}' for p in ports) or "<none>"


def _addresses(eps: Mapping) -> str:
    addresses = [a for e in eps.get("endpoints") or () for a in e.get("addresses") or ()]
    shown = ",".join(addresses[:3]) or "<unset>"
    return shown + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "")


_BUILTIN: dict[str, list[tuple[str, str, Cell]]] = {
    "Service": [("Type", "string", lambda o: (o.get("spec") or {}).get("type", "ClusterIP")),
                ("Cluster-IP", "string", lambda o: (o.get("spec") or {}).get("clusterIP") or "<none>"),
                ("External-IP", "string", lambda o: "<none>"),
                ("Port(s)", "string", _ports)],
    "Namespace": [("Status", "string", lambda o: (o.get("status") or {}).get("phase", "Active"))],
    "EndpointSlice": [("AddressType", "string", lambda o: o.get("addressType", "")),
                      ("Ports", "string", lambda o: ",".join(str(p.get("port")) for p in o.get("ports") or ())
                       or "<unset>"),
                      ("Endpoints", "string", _addresses)],
}


def _columns(r: Resource) -> list[tuple[str, str, Cell]]:
    name: tuple[str, str, Cell] = ("Name", "string", lambda o: o["metadata"]["name"])
    age: tuple[str, str, Cell] = ("Age", "string", lambda o: human_duration(o["metadata"].get("creationTimestamp")))
    if r.builtin:
        return [name, *_BUILTIN.get(r.kind, []), age]
    custom = []
    for col in r.printer_columns:
        path, kind = col.get("jsonPath", ""), col.get("type", "string")
        if kind == "date":
            custom.append((col["name"], "string", lambda o, p=path: human_duration(json_path(o, p))))
        else:
            custom.append((col["name"], kind, lambda o, p=path: json_path(o, p)))
    return [name, *custom, age]


def table(r: Resource, objects: list[dict], list_meta: Mapping[str, Any] | None = None,
          headers: bool = True, include: str = "Metadata") -> dict:
    columns = _columns(r)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [cell(obj) for _, _, cell in columns]}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj["metadata"]}
        rows.append(row)
    out: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": dict(list_meta or {}),
                           "rows": rows}
    if headers:
        out["columnDefinitions"] = [{"name": n, "type": t, "format": "name" if n == "Name" else "",
                                     "description": "", "priority": 0} for n, t, _ in columns]
    return out
