"""Render the lab's Kubernetes manifests (pure) and write them atomically into the lab directory.

`services.yaml`: a Service per app (ClusterIP, port 80 -> targetPort 8080) and per extra service,
each with an EndpointSlice listing its pods as ready endpoints. `split.yaml`: the TrafficSplit,
by default in the seed's exact shape (spec.trafficRouting[].backend.serviceName, 900m/100m).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from kernsplit.agent.lab.plan import SERVER_PORT, SERVICE_PORT, LabPlan

NAMESPACE = "default"
SERVICES_FILE = "services.yaml"
SPLIT_FILE = "split.yaml"
SEED_WEIGHTS = (("my-app-v1", "900m"), ("my-app-v2", "100m"))
ROLLOUT_WEIGHTS = (("my-app-v1", "0m"), ("my-app-v2", "1000m"))


def _service(name: str, cluster_ip: str, selector: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "selector": selector,
                 "ports": [{"name": "http", "protocol": "TCP", "port": SERVICE_PORT,
                            "targetPort": SERVER_PORT}]},
    }


def _slice(service: str, pods) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{service}-lab", "namespace": NAMESPACE,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": SERVER_PORT}],
        "endpoints": [{"addresses": [p.ip], "conditions": {"ready": True},
                       "targetRef": {"kind": "Pod", "namespace": NAMESPACE, "name": p.name}}
                      for p in pods],
    }


def render_services(plan: LabPlan) -> str:
    docs: list[dict] = []
    for app in plan.apps:
        docs.append(_service(app.name, app.cluster_ip, {"app": app.name}))
        docs.append(_slice(app.name, plan.pods_of(app.name)))
    for svc in plan.services:
        docs.append(_service(svc.name, svc.cluster_ip, {"lab.kernsplit/service": svc.name}))
        pods = [p for app in svc.selects for p in plan.pods_of(app)]
        if pods:
            docs.append(_slice(svc.name, pods))
    return yaml.safe_dump_all(docs, sort_keys=False)


def render_split(backends: Sequence[tuple[str, str | int]], root: str = "my-app",
                 name: str = "my-app-split", shape: str = "seed") -> str:
    """A TrafficSplit. shape "seed": v1alpha2 with spec.trafficRouting[].backend.serviceName
    (the seed text); "v1alpha1".."v1alpha4": SMI's spec.backends[].service/weight."""
    if shape == "seed":
        api, routing = "v1alpha2", {"trafficRouting": [
            {"backend": {"serviceName": svc}, "weight": w} for svc, w in backends]}
    else:
        api, routing = shape, {"backends": [{"service": svc, "weight": w} for svc, w in backends]}
    doc = {"apiVersion": f"split.smi-spec.io/{api}", "kind": "TrafficSplit",
           "metadata": {"name": name, "namespace": NAMESPACE},
           "spec": {"service": root, **routing}}
    return yaml.safe_dump(doc, sort_keys=False)


def write_atomic(path: Path, text: str) -> None:
    """Write beside, then rename: a watcher never reads half a file. The temp name ends in
    .tmp so that a config loader reading .yaml/.yml/.json ignores it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
