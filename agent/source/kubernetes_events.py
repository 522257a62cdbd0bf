"""Kubernetes Events on TrafficSplits and routes with problems, rate limited as client-go limits them.

`kubectl describe trafficsplit my-app-split` then shows what `kernsplit validate` would print for
it. The reconciler reports an object's diagnostics on every sync that touches it; the recorder
posts an Event only for what is new: the same message on the same object is reported again only
after `repeat_after`, and then, as client-go's recorder does, by patching the Event already posted
(its `count` and `lastTimestamp`: `kubectl describe` shows "x3 over 25m") instead of adding one; a
new one is created only if that Event is gone (Events expire after an hour). Each object (and the
agent as a whole) has a token bucket, as client-go's EventCorrelator has, so a flapping object
cannot flood the API server.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kernsplit.agent.model.diagnostics import Diagnostic
from kernsplit.agent.source.contract import ObjectKey, RawObject
from kernsplit.agent.source.kubernetes_reflector import status_code
from kernsplit.agent.source.packed import Packed, key_of as pack_key

COMPONENT = "kernsplit-agent"
MESSAGE_LIMIT = 1024          # events.k8s.io caps a note at 1 kB; core Events are kept as short
REPORTED_KINDS = frozenset({"TrafficSplit", "HTTPRoute", "TCPRoute"})


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """What an Event's involvedObject names: the object as the API server served it."""
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    resource_version: str

    @classmethod
    def of(cls, obj: RawObject) -> "ObjectRef":
        meta = obj.get("metadata") or {}
        return cls(str(obj.get("apiVersion") or ""), str(obj.get("kind") or ""),
                   str(meta.get("namespace") or "default"), str(meta.get("name") or ""),
                   str(meta.get("uid") or ""), str(meta.get("resourceVersion") or ""))


class References:
    """The last seen ref of every object that can get Events (written by the source's thread, read
    by the reconciler's)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[ObjectKey, ObjectRef] = {}

    def note(self, obj: RawObject | Packed) -> None:
        key = pack_key(obj)
        if key.kind.partition(".")[0] in REPORTED_KINDS:
            ref = ObjectRef.of(obj.unpack() if isinstance(obj, Packed) else obj)
            with self._lock:
                self._refs[key] = ref

    def forget(self, key: ObjectKey) -> None:
        with self._lock:
            self._refs.pop(key, None)

    def get(self, key: ObjectKey) -> ObjectRef | None:
        with self._lock:
            return self._refs.get(key)


@dataclass(frozen=True)
class EventLimits:
    repeat_after: float = 600.0       # the same message on the same object, at most once per this
    object_burst: int = 10            # then one more Event per object every `object_refill` seconds
    object_refill: float = 60.0
    agent_burst: int = 100            # and for all objects together
    agent_refill: float = 1.0
    max_per_report: int = 5           # an object with many problems gets its first few


class TokenBucket:
    def __init__(self, burst: int, refill: float, now: float) -> None:
        self.burst, self.refill = burst, refill
        self.tokens, self.at = float(burst), now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) / self.refill)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass(frozen=True, slots=True)
class _Posted:
    at: float                 # monotonic, when last reported
    name: str                 # the Event's metadata.name
    first: str                # its firstTimestamp
    count: int
    uid: str                  # of the object it was posted on (one deleted and made again is another)


class EventPlanner:
    """Decides which Events to post (pure but for its memory of what was posted and when)."""

    def __init__(self, limits: EventLimits = EventLimits(), host: str = "",
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.limits, self.host, self.clock, self.wall = limits, host, clock, wall
        self._posted: dict[tuple[ObjectKey, str, str], _Posted] = {}
        self._buckets: dict[ObjectKey, TokenBucket] = {}
        self._agent = TokenBucket(limits.agent_burst, limits.agent_refill, clock())
        self._lock = threading.Lock()
        self.suppressed = 0

    def plan(self, key: ObjectKey, ref: ObjectRef, diagnostics: Sequence[Diagnostic]) -> list[dict[str, Any]]:
        """The Event bodies to post now for `diagnostics` of one object (errors first)."""
        wanted = sorted((d for d in diagnostics if d.severity in ("error", "warning")),
                        key=lambda d: d.severity != "error")[:self.limits.max_per_report]
        events = []
        with self._lock:
            now = self.clock()
            for d in wanted:
                reason, message = _reason(ref.kind, d), str(d)[:MESSAGE_LIMIT]
                last = self._posted.get((key, reason, message))
                if last is not None and last.uid != ref.uid:
                    last = None
                if last is not None and now - last.at < self.limits.repeat_after:
                    continue
                bucket = self._buckets.setdefault(
                    key, TokenBucket(self.limits.object_burst, self.limits.object_refill, now))
                if not (bucket.take(now) and self._agent.take(now)):
                    self.suppressed += 1
                    continue
                body = event_body(ref, reason, message, self.host, self.wall())
                if last is not None:          # the same Event again: one more occurrence of it
                    body["metadata"]["name"], body["firstTimestamp"] = last.name, last.first
                    body["count"] = last.count + 1
                self._posted[(key, reason, message)] = _Posted(now, body["metadata"]["name"], body["firstTimestamp"],
                                                              body["count"], ref.uid)
                events.append(body)
        return events



def _reason(kind: str, d: Diagnostic) -> str:
    return f"Invalid{kind}" if d.severity == "error" else f"{kind}Warning"


def event_body(ref: ObjectRef, reason: str, message: str, host: str, wall: float) -> dict[str, Any]:
    """A core/v1 Event as client-go's recorder writes it (name: object name + hex nanoseconds)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{ref.name}.{int(wall * 1e9):x}", "namespace": ref.namespace},
        "involvedObject": {"apiVersion": ref.api_version, "kind": ref.kind, "namespace": ref.namespace,
                           "name": ref.name, "uid": ref.uid, "resourceVersion": ref.resource_version},
        "reason": reason, "message": message, "type": "Warning", "count": 1,
        "firstTimestamp": stamp, "lastTimestamp": stamp,
        "source": {"component": COMPONENT, "host": host},
        "reportingComponent": COMPONENT, "reportingInstance": host,
    }


async def post_event(api: Any, body: Mapping[str, Any]) -> None:
    """Write one Event (kr8s `Api`): a repeat (count > 1) patches the Event posted before, or, if that
    one has expired, is created anew, as client-go's recorder does. Raises on failure."""
    namespace = body["metadata"]["namespace"]
    if body.get("count", 1) > 1:
        patch = {"count": body["count"], "lastTimestamp": body["lastTimestamp"], "message": body["message"]}
        try:
            async with api.call_api("PATCH", version="v1", namespace=namespace,
                                    url=f"events/{body['metadata']['name']}", content=json.dumps(patch),
                                    headers={"Content-Type": "application/merge-patch+json"}):
                return
        except Exception as exc:
            if status_code(exc) != 404:
                raise
    async with api.call_api("POST", version="v1", namespace=namespace, url="events", json=dict(body)):
        pass
