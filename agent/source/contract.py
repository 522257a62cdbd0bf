"""The contract between a config source and the reconciler.

A source calls the sink from its own thread(s); the sink is thread-safe and only records changes
(and marks what they affect as dirty): it never touches the kernel. The reconciler's single worker
drains the dirty set and syncs (client-go's "handlers only enqueue keys, one worker syncs").

Scopes. Each object is delivered under a scope: the set it belongs to, which a `replace` rewrites
whole. The Kubernetes source uses one scope per watched resource ("kubernetes:<group>/<version>/<plural>"),
the file source one scope per file path. `replace(scope, objects)` after a relist (410 Gone) or a
file re-read deletes every object of that scope not in `objects`, so deletes during a gap are seen.
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from kernsplit.agent.model.diagnostics import Diagnostic

if TYPE_CHECKING:
    from kernsplit.agent.source.packed import Packed

RawObject = Mapping[str, Any]     # apiVersion, kind, metadata{namespace,name,uid,resourceVersion}, ...


DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True, order=True, slots=True)
class ObjectKey:
    """One object's identity. `kind` carries the API group, as kubectl writes a resource
    (`HTTPRoute.gateway.networking.k8s.io`, `HTTPRoute.policy.linkerd.io`, `Service`): Gateway
    API's and Linkerd's HTTPRoute of the same name are two objects. Versions are not part of it
    (one object is served in several versions)."""
    kind: str          # "Service", "Endpoints", "EndpointSlice.discovery.k8s.io", "TrafficSplit.split.smi-spec.io", ...
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: RawObject) -> "ObjectKey":
        """The key of a raw object (a missing namespace is `default`, as `kubectl apply` takes it)."""
        meta = obj.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        # Interned: the same namespace, kind and name strings as the parsed objects hold.
        return cls(sys.intern(group_kind(str(obj.get("apiVersion") or ""), str(obj.get("kind") or ""))),
                   sys.intern(str(meta.get("namespace") or DEFAULT_NAMESPACE)), sys.intern(str(meta.get("name") or "")))

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def group_kind(api_version: str, kind: str) -> str:
    """`Kind.group` (`Kind` for the core group): "gateway.networking.k8s.io/v1", "HTTPRoute" ->
    "HTTPRoute.gateway.networking.k8s.io"."""
    group = api_version.rpartition("/")[0]
    return f"{kind}.{group}" if group else kind


class Sink(Protocol):
    def upsert(self, scope: str, obj: RawObject) -> None:
        """An object was added or modified."""

    def delete(self, scope: str, key: ObjectKey) -> None:
        """An object was deleted (unknown keys are ignored)."""

    def replace(self, scope: str, objects: Iterable[RawObject | Packed]) -> None:
        """The complete current content of `scope` (initial list, relist, file re-read). Sources
        hand large lists over packed (`packed.Packed`), so they are never held as dicts at once."""

    def ready(self) -> None:
        """Every scope the source must list before a first sync has been listed at least once.
        Until then nothing is programmed: a partial view (a split without its EndpointSlices)
        must never reach the kernel."""


class Source(Protocol):
    name: str          # "files" | "kubernetes"

    def run(self, sink: Sink, stop: threading.Event) -> None:
        """Deliver objects to `sink` until `stop` is set. Retries on its own (with backoff) and
        never raises for transient failures: while it cannot reach its origin, the kernel keeps
        the last state."""

    def report(self, key: ObjectKey, diagnostics: Sequence[Diagnostic]) -> None:
        """Tell the object's owner what is wrong with it (the Kubernetes source posts Events on
        the object, rate limited; the file source has only the log). Called by the reconciler
        for objects with errors or warnings; never blocks the sync."""
