"""One resource's list+watch loop, with client-go's reflector semantics, delivering to a `Sink`.

- List in pages (`limit`/`continue`); the whole result replaces the reflector's scope, so objects
  deleted while we were not watching (a relist after 410 Gone) are deleted from the sink too.
- Watch from the list's resourceVersion with bookmarks; every event and bookmark advances the
  resourceVersion, so a dropped stream resumes where it stopped, without a relist.
- 410 Gone (our resourceVersion was compacted away, at the start of a watch, inside a stream, or
  while paging a list) starts a fresh list.
- Any other failure (connection refused, reset, timeout, 5xx, 403) is retried with capped exponential
  backoff and jitter. Nothing is ever removed because of a failure: the sink only hears what the
  API server said, so while it is unreachable the kernel keeps the last state.

HTTP, authentication and kubeconfig are kr8s's (`Api.call_api`); this module only speaks the list
and watch protocol on top of it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from kernsplit.agent.source.contract import ObjectKey, RawObject, Sink
from kernsplit.agent.source.kubernetes_backoff import Backoff, BackoffPolicy
from kernsplit.agent.source.kubernetes_discovery import Resource
from kernsplit.agent.source.packed import Packed, pack

log = logging.getLogger("kernsplit.agent.kubernetes")

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


class Gone(Exception):
    """410: the resourceVersion we hold is older than the API server keeps; relist."""


class WatchError(Exception):
    """An ERROR event other than 410 inside a watch stream."""


@dataclass(frozen=True)
class ReflectorTiming:
    page_size: int = 500
    # timeoutSeconds asked of each watch, drawn from this range as client-go does (5-10 minutes),
    # so that the watches of many agents do not all end together.
    watch_seconds: tuple[int, int] = (300, 600)
    request_timeout: float = 60.0     # seconds for a list page; added to a watch's own duration
    healthy_watch: float = 1.0        # a watch that lasted this long, or delivered, was a success
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)


class WatchObserver(Protocol):
    """Told of every full list and of every watch stream that ended and is started again (the
    agent's metrics)."""

    def relisted(self, resource: str) -> None: ...

    def watch_restarted(self, resource: str) -> None: ...


class Reflector:
    """Lists and watches one resource (cluster-wide, or in one namespace) into `sink`."""

    def __init__(self, api: Any, resource: Resource, namespace: str | None, sink: Sink,
                 timing: ReflectorTiming = ReflectorTiming(), observer: WatchObserver | None = None) -> None:
        self.api = api
        self.resource = resource
        self.namespace = namespace
        self.scope = resource.scope(namespace)
        self.sink = sink
        self.timing = timing
        self.resource_version: str | None = None
        self.listed = asyncio.Event()     # set once the first list reached the sink
        self.lists = 0                    # full lists done (the first one, and one per 410 Gone)
        self.observer = observer
        self._rng = random.Random()

    def __str__(self) -> str:
        return f"{self.resource}" + (f" in {self.namespace}" if self.namespace else "")

    async def run(self) -> None:
        """Until cancelled. Never raises for failures of the API server or the network."""
        backoff = Backoff(self.timing.backoff)
        first = True
        while True:
            if not first and self.observer is not None:
                self.observer.watch_restarted(str(self.resource))
            first = False
            started = time.monotonic()
            try:
                if self.resource_version is None:
                    await self._list()
                delivered = await self._watch()
            except Gone as exc:
                log.info("%s: resourceVersion %s is gone (%s): listing again", self, self.resource_version, exc)
                self.resource_version = None
                continue
            except Exception as exc:  # the API server or the network failed; retry later, never give up
                delay = backoff.next()
                log.warning("%s: %s: retrying in %.1fs", self, _describe(exc), delay,
                            extra={"resource": str(self.resource), "retry_in": round(delay, 2)})
                await asyncio.sleep(delay)
                continue
            if delivered or time.monotonic() - started >= self.timing.healthy_watch:
                backoff.reset()
            else:  # a stream that ends at once, again and again, must not become a busy loop
                await asyncio.sleep(backoff.next())

    async def _list(self) -> None:
        items: list[Packed] = []
        params: dict[str, Any] = {"limit": self.timing.page_size}
        while True:
            page = await self._get(params)
            # Packed page by page: a list of tens of thousands of objects is never held as dicts.
            items.extend(pack(typed(self.resource, item)) for item in page.pop("items", None) or ()
                         if isinstance(item, dict))
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                break
            params = {"limit": self.timing.page_size, "continue": meta["continue"]}
        self.sink.replace(self.scope, items)
        self.resource_version = str(meta.get("resourceVersion") or "") or None
        self.lists += 1
        self.listed.set()
        if self.observer is not None:
            self.observer.relisted(str(self.resource))
        log.info("%s: listed %d objects at resourceVersion %s", self, len(items), self.resource_version,
                 extra={"resource": str(self.resource), "objects": len(items)})

    async def _get(self, params: Mapping[str, Any]) -> dict[str, Any]:
        async with self._call(params, stream=False, timeout=self.timing.request_timeout) as response:
            return json.loads(response.content, parse_float=Decimal)

    async def _watch(self) -> int:
        """One watch stream, until the server ends it. Returns the events and bookmarks seen."""
        seconds = self._rng.randint(*self.timing.watch_seconds)
        params = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": seconds,
                  "resourceVersion": self.resource_version}
        seen = 0
        async with self._call(params, stream=True, timeout=seconds + self.timing.request_timeout) as response:
            async for line in response.aiter_lines():
                if line.strip():
                    self._apply(json.loads(line, parse_float=Decimal))
                    seen += 1
        return seen

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone(obj.get("message") or "410 Gone")
            raise WatchError(f"watch error {obj.get('code')}: {obj.get('message')}")
        if kind in ("ADDED", "MODIFIED"):
            self.sink.upsert(self.scope, typed(self.resource, obj))
        elif kind == "DELETED":
            self.sink.delete(self.scope, ObjectKey.of(typed(self.resource, obj)))
        elif kind != "BOOKMARK":
            log.debug("%s: ignoring watch event of type %r", self, kind)
            return
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = str(version)

    def _call(self, params: Mapping[str, Any], *, stream: bool, timeout: float):
        return _translated(self.api.call_api("GET", version=self.resource.api_version, base=self.resource.base,
                                             namespace=self.namespace, url=self.resource.plural,
                                             params=dict(params), stream=stream, timeout=timeout))


class _translated:
    """kr8s's request context, with a 410 response raised as `Gone`."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def __aenter__(self) -> Any:
        try:
            return await self._inner.__aenter__()
        except Exception as exc:
            if status_code(exc) == 410:
                raise Gone(str(exc)) from exc
            raise

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self._inner.__aexit__(*exc_info)


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of a kr8s `ServerError` (or None when the failure was not an HTTP answer)."""
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _describe(exc: BaseException) -> str:
    code = status_code(exc)
    text = str(exc) or type(exc).__name__
    return f"HTTP {code}: {text}" if code else f"{type(exc).__name__}: {text}"


def typed(resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the model reads it: kind and apiVersion present (list items carry none), and
    without what only costs memory here (managedFields, kubectl's last-applied copy of the spec).
    Changed in place: the object was parsed for this reflector alone, so a copy would only cost."""
    obj.setdefault("kind", resource.kind)
    obj.setdefault("apiVersion", resource.api_version)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(LAST_APPLIED, None)
    return obj
