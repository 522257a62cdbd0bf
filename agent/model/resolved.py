"""What the model hands to the dataplanes: resolved splits, one per root ClusterIP and port.

This is the contract between `agent.model` (parsing and resolution) and every dataplane
(`agent.dataplane.iptables`, `agent.dataplane.ebpf`) and `kernsplit show`. Weights are exact
fractions; each dataplane quantises them itself, as precisely as its kernel mechanism allows.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True, order=True)
class Endpoint:
    ip: str      # canonical text form (ipaddress.ip_address(...).compressed)
    port: int

    @property
    def family(self) -> int:
        # `ip` is canonical text: only IPv6 has a colon. (Cheap: planners ask this per endpoint.)
        return 6 if ":" in self.ip else 4

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.family == 6 else f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class WeightedEndpoint:
    backend: str          # name of the backend Service (same namespace as the split)
    endpoint: Endpoint
    share: Fraction       # fraction of the root port's new connections; > 0 always


@dataclass(frozen=True)
class BackendShare:
    """One backend as configured, for `show` and for metadata kept in the kernel."""
    service: str          # backend Service name
    weight: int           # normalised weight: milli-units for SMI quantities, integers otherwise
    share: Fraction       # desired share of traffic (0 for weight 0 or unresolved backends)
    resolved: bool        # False when excluded (missing service, no endpoints, no matching port)


@dataclass(frozen=True)
class SplitPort:
    """One root service ClusterIP and port whose new TCP connections are split by weight.

    `endpoints` empty means: nothing can serve this port, connections must be refused
    (tcp-reset / ECONNREFUSED), never silently dropped.

    Invariant: every endpoint's `backend` names an entry of `backends`. When the root's own
    endpoints take the traffic (all weights zero, nothing resolves), the root appears in
    `backends` with weight 0 and share 1 (appended when it was not configured as a backend).
    """
    namespace: str
    service: str                          # root Service name
    split: str                            # the TrafficSplit/HTTPRoute/TCPRoute name that owns it
    split_kind: str                       # "TrafficSplit" | "HTTPRoute" | "TCPRoute"
    cluster_ip: str                       # canonical text form, IPv4 or IPv6
    port: int
    port_name: str | None
    protocol: str                         # "TCP" (the only protocol split today)
    endpoints: tuple[WeightedEndpoint, ...]   # sorted by (backend, endpoint); shares sum to 1
    backends: tuple[BackendShare, ...]        # in configuration order

    @property
    def refuse(self) -> bool:
        return not self.endpoints

    @property
    def family(self) -> int:
        return 6 if ":" in self.cluster_ip else 4

    @property
    def key(self) -> tuple[str, int, str]:
        """Identity of the programmed object: (cluster ip, port, protocol)."""
        return (self.cluster_ip, self.port, self.protocol)

    @property
    def root(self) -> str:
        return f"{self.namespace}/{self.service}"
