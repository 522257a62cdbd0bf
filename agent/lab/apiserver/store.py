"""The lab API server's memory: objects by (group, plural), one resourceVersion counter, a bounded
history of changes for watches to resume from, and the watchers themselves.

Everything here runs on the server's event loop (no locks). Objects are kept as plain dicts in
their storage version; the handlers convert them to the version a client asked for.
"""
from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
StorageKey = tuple[str, str]          # (group, plural)
ObjKey = tuple[str, str]              # (namespace or "", name)


class Expired(Exception):
    """The resourceVersion asked for is older than the oldest change kept (410 Gone)."""


@dataclass(frozen=True)
class Change:
    rv: int
    type: str                         # ADDED, MODIFIED, DELETED
    key: StorageKey
    obj: Obj
    prev: Obj | None = None           # the object before a MODIFIED

    def seen_by(self, accepts: Callable[[Obj], bool]) -> "Change | None":
        """The change as a watch with a selector sees it: an object that starts matching is
        ADDED, one that stops matching is DELETED (as the API server's watch filter does)."""
        now = accepts(self.obj)
        before = self.prev is not None and accepts(self.prev)
        if self.type != "MODIFIED" or now == before:
            return self if now else None
        return Change(self.rv, "ADDED" if now else "DELETED", self.key, self.obj, self.prev)


@dataclass(eq=False)
class Watcher:
    key: StorageKey
    accepts: Callable[[Obj], bool]
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    closed: bool = False

    def close(self) -> None:
        self.closed = True
        self.queue.put_nowait(None)


class Store:
    def __init__(self, history: int = 10_000) -> None:
        self.rv = 1000
        self.compacted = self.rv      # watches may resume from any rv >= this
        self._history: deque[Change] = deque()
        self._max_history = history
        self._objects: dict[StorageKey, dict[ObjKey, Obj]] = {}
        self._watchers: set[Watcher] = set()

    # reads -----------------------------------------------------------------------------------
    def get(self, key: StorageKey, namespace: str, name: str) -> Obj | None:
        return self._objects.get(key, {}).get((namespace, name))

    def items(self, key: StorageKey, namespace: str | None = None) -> Iterator[Obj]:
        """Objects in (namespace, name) order; all namespaces when namespace is None."""
        bucket = self._objects.get(key, {})
        for okey in sorted(bucket):
            if namespace is None or okey[0] == namespace:
                yield bucket[okey]

    def changes_since(self, rv: int, key: StorageKey) -> list[Change]:
        if rv < self.compacted:
            raise Expired(f"too old resource version: {rv} ({self.compacted})")
        return [c for c in self._history if c.rv > rv and c.key == key]

    # writes ----------------------------------------------------------------------------------
    def put(self, key: StorageKey, obj: Obj) -> Obj:
        """Create or replace; stamps the new resourceVersion. The caller has checked preconditions."""
        meta = obj["metadata"]
        okey = (meta.get("namespace", ""), meta["name"])
        bucket = self._objects.setdefault(key, {})
        prev = bucket.get(okey)
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        bucket[okey] = obj
        self._record(Change(self.rv, "ADDED" if prev is None else "MODIFIED", key, copy.deepcopy(obj),
                            copy.deepcopy(prev) if prev is not None else None))
        return obj

    def remove(self, key: StorageKey, namespace: str, name: str) -> Obj | None:
        obj = self._objects.get(key, {}).pop((namespace, name), None)
        if obj is not None:
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self._record(Change(self.rv, "DELETED", key, copy.deepcopy(obj)))
        return obj

    def drop_all(self, key: StorageKey) -> None:
        """Removes every object of one kind (its CRD was deleted), each as a DELETED change."""
        for namespace, name in list(self._objects.get(key, {})):
            self.remove(key, namespace, name)

    def _record(self, change: Change) -> None:
        self._history.append(change)
        while len(self._history) > self._max_history:
            self.compacted = self._history.popleft().rv
        for w in list(self._watchers):
            if w.key == change.key and not w.closed:
                seen = change.seen_by(w.accepts)
                if seen is not None:
                    w.queue.put_nowait(seen)

    # watchers and test hooks -----------------------------------------------------------------
    def add_watcher(self, watcher: Watcher) -> None:
        self._watchers.add(watcher)

    def remove_watcher(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def compact(self) -> int:
        """Forgets all history: a watch or continue from any earlier resourceVersion gets 410."""
        self._history.clear()
        self.compacted = self.rv
        return self.rv

    def drop_watches(self) -> int:
        """Ends every open watch stream (as an API server restart or a proxy timeout would)."""
        watchers, self._watchers = list(self._watchers), set()
        for w in watchers:
            w.close()
        return len(watchers)
