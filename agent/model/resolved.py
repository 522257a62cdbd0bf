"""What the model hands to the dataplanes: resolved splits, one per root ClusterIP and port.

This is the contract between `agent.model` (parsing and resolution) and every dataplane
(`agent.dataplane.iptables`, `agent.dataplane.ebpf`) and `kernsplit show`. Weights are exact
fractions; each dataplane quantises them itself, as precisely as its kernel mechanism allows.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True, order=True, slots=True)
class Endpoint:
    ip: str      # canonical text form (ipaddress.ip_address(...).compressed)
    port: int

    @property
    def family(self) -> int:
        # `ip` is canonical text: only IPv6 has a colon. (Cheap: planners ask this per endpoint.)
        return 6 if ":" in self.ip else 4

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.family == 6 else f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class WeightedEndpoint:
    backend: str          # name of the backend Service (same namespace as the split)
    endpoint: Endpoint
    share: Fraction       # fraction of the root port's new connections; > 0 always


@dataclass(frozen=True, slots=True)
class RefusedShare:
    """A share of new connections that must be refused (tcp-reset / ECONNREFUSED), not served.

    Gateway API routes keep the weight of a backendRef that cannot serve (missing Service, no such
    port, no endpoints) and refuse its share; the other backends keep theirs."""
    backend: str          # the backend whose share this is (counted against it)
    share: Fraction       # fraction of the root port's new connections; > 0 always


Choice = WeightedEndpoint | RefusedShare


@dataclass(frozen=True, slots=True)
class BackendShare:
    """One backend as configured, for `show` and for metadata kept in the kernel."""
    service: str          # backend Service name
    weight: int           # normalised weight: milli-units for SMI quantities, integers otherwise
    share: Fraction       # desired share of new connections (0 for weight 0; TrafficSplit: 0 when
                          # unresolved; routes: an unresolved backend keeps it, and it is refused)
    resolved: bool        # False when it cannot serve (missing service, no endpoints, no matching port)
    terminating: bool = False   # served by terminating (still serving) endpoints: none is ready


@dataclass(frozen=True, slots=True)
class SplitPort:
    """One root service ClusterIP and port whose new TCP connections are split by weight.

    New connections are shared between `endpoints` (served) and `refused` (shares refused with
    tcp-reset / ECONNREFUSED, never silently dropped); together their shares sum to 1. `endpoints`
    empty means nothing serves this port: every new connection is refused.

    Invariant: every endpoint's and refused share's `backend` names an entry of `backends`. When
    the root's own endpoints take the traffic (all weights zero, nothing resolves), the root
    appears in `backends` with weight 0 and share 1 (appended when it was not configured as a
    backend); when they are wanted but there are none, it appears unresolved and its share is
    refused.
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
    refused: tuple[RefusedShare, ...] = ()    # sorted by backend

    @property
    def refuse(self) -> bool:
        """Nothing serves this port: every new connection is refused."""
        return not self.endpoints

    @property
    def choices(self) -> tuple[Choice, ...]:
        """Every share of new connections, served then refused, as a dataplane programs them.
        A port with neither (built by hand) refuses everything, counted against the root."""
        if not self.endpoints and not self.refused:
            return (RefusedShare(self.service, Fraction(1)),)
        return (*self.endpoints, *self.refused)

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
