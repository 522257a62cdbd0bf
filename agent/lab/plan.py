"""The lab's shape as data: which namespaces, veths, addresses and cgroups a lab is made of.

Pure: no kernel, no files. `plan_lab(prefix, apps)` gives everything the executors need, so the
same plan builds the lab (`agent.lab.topology`) and tells `lab down` what to look for.

Addressing: the node bridge holds 10.244.0.1/16; each pod holds a /32 (10.244.<app>.<replica+2>)
with a default route via the bridge address. A /32 means pods have no on-link route to each
other, so every packet - and every reply - goes through the node and its nat table: DNAT by the
iptables dataplane and its reversal see both directions (no hairpin bypass on the bridge).
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

PREFIX_RE = re.compile(r"^ksl[0-9a-f]{4}$")
BRIDGE_IP = "10.244.0.1"
POD_NET_PREFIXLEN = 16
SERVICE_CIDR = "10.100.0.0/16"     # ClusterIPs: never on an interface, routed by the node
CLIENT_POD = "client"
CLIENT_IP = "10.244.250.2"
SERVER_PORT = 8080          # targetPort of every lab service
SERVICE_PORT = 80
PROXY_UID = 2102
PROXY_OUT_PORT = 4140
PROXY_IN_PORT = 4143


def new_prefix() -> str:
    """A fresh lab prefix: short enough that prefix + suffix fits an interface name (15)."""
    return f"ksl{secrets.token_hex(2)}"


def check_prefix(prefix: str) -> str:
    if not PREFIX_RE.match(prefix):
        raise ValueError(f"lab prefix {prefix!r} must look like ksl<4 hex digits>, e.g. ksl1a2b")
    return prefix


@dataclass(frozen=True)
class AppSpec:
    """A Deployment + its Service: `replicas` pods answering `version=<version> pod=<name>`."""
    name: str                 # Service and Deployment name, e.g. my-app-v1
    version: str              # label and answer, e.g. v1
    cluster_ip: str
    replicas: int = 3


@dataclass(frozen=True)
class ServiceSpec:
    """A Service without pods of its own (e.g. the root `my-app`): it selects pods of other apps
    by their app names (`selects`); empty = a Service with no endpoints at all."""
    name: str
    cluster_ip: str
    selects: tuple[str, ...] = ()


# The seed scenario: my-app (selects both versions), my-app-v1 x3, my-app-v2 x3.
SEED_APPS = (
    AppSpec("my-app-v1", "v1", "10.100.200.31"),
    AppSpec("my-app-v2", "v2", "10.100.200.32"),
)
SEED_SERVICES = (ServiceSpec("my-app", "10.100.200.30", ("my-app-v1", "my-app-v2")),)


@dataclass(frozen=True)
class PodPlan:
    name: str                 # pod name, e.g. my-app-v1-0
    app: str | None           # app (Service) name; None for the client pod
    version: str | None
    netns: str
    host_veth: str            # node-side veth, enslaved to the bridge
    ip: str                   # /32 inside the pod
    cgroup: str               # relative to the lab cgroup, e.g. pods/my-app-v1-0


@dataclass(frozen=True)
class LabPlan:
    prefix: str
    node_netns: str
    bridge: str
    apps: tuple[AppSpec, ...]
    services: tuple[ServiceSpec, ...]
    pods: tuple[PodPlan, ...]

    def pod(self, name: str) -> PodPlan:
        for p in self.pods:
            if p.name == name:
                return p
        raise KeyError(f"no pod {name!r} in lab {self.prefix}: pods are "
                       f"{', '.join(p.name for p in self.pods)}")

    def pods_of(self, app: str) -> tuple[PodPlan, ...]:
        return tuple(p for p in self.pods if p.app == app)

    @property
    def client(self) -> PodPlan:
        return self.pod(CLIENT_POD)

    @property
    def netns_names(self) -> tuple[str, ...]:
        return (self.node_netns, *(p.netns for p in self.pods))


def plan_lab(prefix: str, apps: tuple[AppSpec, ...] = SEED_APPS,
             services: tuple[ServiceSpec, ...] = SEED_SERVICES) -> LabPlan:
    check_prefix(prefix)
    if len(apps) > 240:
        raise ValueError("a lab holds at most 240 apps")
    pods: list[PodPlan] = []
    index = 0

    def add(name: str, app: str | None, version: str | None, ip: str) -> None:
        nonlocal index
        pods.append(PodPlan(name=name, app=app, version=version, netns=f"{prefix}-{name}",
                            host_veth=f"{prefix}v{index}", ip=ip, cgroup=f"pods/{name}"))
        index += 1

    add(CLIENT_POD, None, None, CLIENT_IP)
    for a, app in enumerate(apps, start=1):
        if not 1 <= app.replicas <= 250:
            raise ValueError(f"app {app.name}: replicas must be 1..250")
        for r in range(app.replicas):
            add(f"{app.name}-{r}", app.name, app.version, f"10.244.{a}.{r + 2}")
    names = [p.name for p in pods]
    if len(set(names)) != len(names):
        raise ValueError("pod names collide: app names must be unique")
    return LabPlan(prefix=prefix, node_netns=f"{prefix}-node", bridge=f"{prefix}br",
                   apps=tuple(apps), services=tuple(services), pods=tuple(pods))
