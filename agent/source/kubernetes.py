"""`--source kubernetes`: the agent's objects from the API server, as informers deliver them.

One asyncio loop (in the thread that calls `run`) holds a kr8s client and one `Reflector` per watched
resource (and per `--namespace`, when given). Discovery decides what is watched and is asked again
every `discovery_interval`, so a CRD installed later (Gateway API, SMI) is picked up without a restart.
The sink hears `ready()` only when every resource chosen by the first discovery has been listed once:
a partial view is never programmed.

Credentials are kr8s's: `--kubeconfig`/`--context`, else `$KUBECONFIG` or `~/.kube/config`, else the
pod's service account (in-cluster).
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kernsplit.agent.model.diagnostics import Diagnostic
from kernsplit.agent.source.contract import ObjectKey, RawObject, Sink
from kernsplit.agent.source.kubernetes_backoff import Backoff, BackoffPolicy
from kernsplit.agent.source.kubernetes_discovery import Resource, choose, fetch_served
from kernsplit.agent.source.kubernetes_events import EventLimits, EventPlanner, References, post_event
from kernsplit.agent.source.kubernetes_reflector import Reflector, ReflectorTiming, WatchObserver

log = logging.getLogger("kernsplit.agent.kubernetes")


@dataclass(frozen=True)
class KubernetesSettings:
    kubeconfig: str | None = None
    context: str | None = None
    namespaces: tuple[str, ...] = ()           # empty: every namespace
    discovery_interval: float = 30.0           # seconds between discoveries (new or removed CRDs)
    reflector: ReflectorTiming = field(default_factory=ReflectorTiming)
    events: EventLimits = field(default_factory=EventLimits)
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)   # connecting, discovery
    node_name: str = field(default_factory=lambda: os.environ.get("NODE_NAME") or socket.gethostname())


class _NotingSink:
    """Forwards to the reconciler's sink, noting the refs that Events will name."""

    def __init__(self, sink: Sink, references: References) -> None:
        self._sink, self._refs = sink, references

    def upsert(self, scope: str, obj: RawObject) -> None:
        self._refs.note(obj)
        self._sink.upsert(scope, obj)

    def delete(self, scope: str, key: ObjectKey) -> None:
        self._refs.forget(key)
        self._sink.delete(scope, key)

    def replace(self, scope: str, objects: Iterable[RawObject]) -> None:
        objects = list(objects)
        for obj in objects:
            self._refs.note(obj)
        self._sink.replace(scope, objects)

    def ready(self) -> None:
        self._sink.ready()


class KubernetesSource:
    """Implements `contract.Source`."""
    name = "kubernetes"

    def __init__(self, settings: KubernetesSettings = KubernetesSettings()) -> None:
        self.settings = settings
        self.references = References()
        self.events = EventPlanner(settings.events, host=settings.node_name)
        self.reflectors: dict[tuple[Resource, str | None], Reflector] = {}
        self._tasks: dict[tuple[Resource, str | None], asyncio.Task] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._api: Any = None
        self.watch_observer: WatchObserver | None = None     # the agent's metrics, when served

    # Source -------------------------------------------------------------------------------------
    def run(self, sink: Sink, stop: threading.Event) -> None:
        asyncio.run(self._main(_NotingSink(sink, self.references), stop))

    def report(self, key: ObjectKey, diagnostics: Sequence[Diagnostic]) -> None:
        """Called from the reconciler's thread: plans the Events and hands them to our loop."""
        ref, loop, api = self.references.get(key), self._loop, self._api
        if ref is None or loop is None or api is None:
            return
        for body in self.events.plan(key, ref, diagnostics):
            try:
                asyncio.run_coroutine_threadsafe(self._post(api, body), loop)
            except RuntimeError:       # the loop is closing: the agent is stopping
                return

    # the loop -----------------------------------------------------------------------------------
    async def _main(self, sink: Sink, stop: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        supervisor = asyncio.create_task(self._supervise(sink))
        try:
            await asyncio.to_thread(stop.wait)
        finally:
            self._loop = None
            for task in [supervisor, *self._tasks.values()]:
                task.cancel()
            await asyncio.gather(supervisor, *self._tasks.values(), return_exceptions=True)
            await _close(self._api)

    async def _supervise(self, sink: Sink) -> None:
        self._api = await self._connect()
        backoff, ready = Backoff(self.settings.backoff), False
        while True:
            try:
                served = await fetch_served(self._api)
            except Exception as exc:  # unreachable, or refused: keep watching what we watch
                delay = backoff.next()
                log.warning("discovery failed (%s): retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            self._follow(choose(served, current=(r for r, _ in self._tasks)), sink)
            if not ready:
                await asyncio.gather(*(r.listed.wait() for r in self.reflectors.values()))
                log.info("every watched resource listed: ready (%s)",
                         ", ".join(sorted({str(r) for r, _ in self.reflectors})))
                sink.ready()
                ready = True
            await asyncio.sleep(self.settings.discovery_interval)

    def _follow(self, chosen: Sequence[Resource], sink: Sink) -> None:
        """Start reflectors for newly served resources; stop those of resources no longer served.
        A resource no longer served (its CRD was deleted) has no objects left: its scope is emptied."""
        namespaces: tuple[str | None, ...] = self.settings.namespaces or (None,)
        for key in [k for k in self._tasks if k[0] not in chosen]:
            log.info("%s is no longer served: its objects are removed", key[0])
            self._tasks.pop(key).cancel()
            sink.replace(self.reflectors.pop(key).scope, [])
        for resource in chosen:
            for namespace in namespaces:
                if (resource, namespace) not in self._tasks:
                    log.info("watching %s", resource, extra={"resource": str(resource), "namespace": namespace})
                    reflector = Reflector(self._api, resource, namespace, sink, self.settings.reflector,
                                          self.watch_observer)
                    self.reflectors[(resource, namespace)] = reflector
                    self._tasks[(resource, namespace)] = asyncio.create_task(reflector.run())

    async def _connect(self) -> Any:
        import kr8s.asyncio   # here: only `--source kubernetes` pays for importing the client

        backoff = Backoff(self.settings.backoff)
        while True:
            try:
                return await kr8s.asyncio.api(kubeconfig=self.settings.kubeconfig, context=self.settings.context)
            except Exception as exc:  # no credentials yet, or the API server is not up: keep trying
                delay = backoff.next()
                log.warning("cannot reach the Kubernetes API (%s): retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    async def _post(self, api: Any, body: dict) -> None:
        try:
            await post_event(api, body)
        except Exception as exc:  # an Event is advice; failing to post one must not disturb the sync
            log.warning("cannot post Event %s on %s: %s", body["reason"], body["involvedObject"]["name"], exc)


async def _close(api: Any) -> None:
    session = getattr(api, "_session", None)
    if session is not None:
        try:
            await session.aclose()
        except Exception:  # closing after a failure: nothing left to do with it
            pass
