"""The agent's in-memory object store: raw objects in, parsed objects and indexes kept current.

Single-threaded: only the reconciler's worker calls it (sources reach it through `events.EventQueue`).
Each change returns the root Services it affects, found through the indexes, so the resolver
re-resolves those roots only:

    Service S, or an EndpointSlice/Endpoints of S  ->  S if some split has S as root,
                                                        and every root whose splits use S as a backend
    TrafficSplit / route R                          ->  the roots of R's old and new versions

An object with errors keeps its last good version in force (or none, if it never had one); its
diagnostics are kept beside it. The same object from two scopes (two files) is an error: the
first scope keeps it.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kernsplit.agent.model.config import parse_document
from kernsplit.agent.model.diagnostics import Diagnostic, DiagnosticSink
from kernsplit.agent.model.documents import Document
from kernsplit.agent.model.names import DEFAULT_CLUSTER_DOMAIN
from kernsplit.agent.model.resolve import Inventory
from kernsplit.agent.model.services import EndpointGroup, Service
from kernsplit.agent.model.splits import Split
from kernsplit.agent.source.contract import ObjectKey, RawObject
from kernsplit.agent.source.packed import Packed, pack, packable

ServiceKey = tuple[str, str]     # (namespace, name)
Parsed = Service | EndpointGroup | tuple[Split, ...] | None

# Scopes of the Kubernetes source name resources, not files: their diagnostics name no file.
KUBERNETES_SCOPE = "kubernetes:"


def origin(scope: str) -> str:
    """What a diagnostic names as its file: the file path, or "-" for an API object."""
    return "-" if scope.startswith(KUBERNETES_SCOPE) else scope


@dataclass(frozen=True, slots=True)
class Entry:
    scope: str
    digest: bytes                   # of the latest version delivered (the object itself is not kept)
    parsed: Parsed                  # the last good version in force (None: nothing)
    diagnostics: tuple[Diagnostic, ...]   # of the latest version

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)


def _referenced(splits: Iterable[Split]) -> Iterator[tuple[ServiceKey, ServiceKey]]:
    """(backend service, root) for every backend of the splits."""
    for s in splits:
        for b in s.backends:
            yield (s.namespace, b.service), s.root


class ObjectStore:
    def __init__(self, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> None:
        self.cluster_domain = cluster_domain
        # The indexes hold tuples, not sets or dicts: at 10,000 split ports they have tens of
        # thousands of entries, nearly all of one or two items, and a tuple of one is a quarter of
        # a set's or a dict's size. Each is rebuilt when it changes, which is one object's work.
        self._entries: dict[ObjectKey, Entry] = {}
        self._duplicates: dict[ObjectKey, tuple[str, Diagnostic]] = {}   # key -> (its other scope, error)
        self.services: dict[ServiceKey, Service] = {}
        self._groups: dict[ServiceKey, tuple[tuple[ObjectKey, EndpointGroup], ...]] = {}   # sorted by key
        self.endpoints: dict[ServiceKey, tuple[EndpointGroup, ...]] = {}
        self.splits: dict[ObjectKey, tuple[Split, ...]] = {}
        self.splits_by_root: dict[ServiceKey, tuple[ObjectKey, ...]] = {}
        self.roots_by_backend: dict[ServiceKey, tuple[ServiceKey, ...]] = {}   # a root once per use
        self.inventory = Inventory(self.services, self.endpoints)    # live views, never copied

    # --- the three changes a source makes -------------------------------------------------------

    def upsert(self, scope: str, obj: RawObject | Packed) -> set[ServiceKey]:
        """An object added or modified; returns the roots to re-resolve."""
        if not packable(obj):
            return set()
        packed = pack(obj)
        key = packed.key
        owner = next((e.scope for e in [self._entries.get(key)] if e is not None), None)
        if owner is not None and owner != scope:
            kind = key.kind.partition(".")[0]
            self._duplicates[key] = (scope, Diagnostic("error", origin(scope), f"{kind} {key.namespace}/"
                                                       f"{key.name}", "metadata.name",
                                                       f"is defined twice (first in {owner})"))
            return set()
        old = self._entries.get(key)
        digest = packed.digest()
        if old is not None and old.digest == digest:
            return set()
        raw = obj if isinstance(obj, Mapping) else packed.unpack()
        sink = DiagnosticSink()
        parsed = parse_document(Document(origin(scope), 1, raw), sink, self.cluster_domain)
        diagnostics = sink.freeze()
        if isinstance(parsed, list):
            parsed = tuple(parsed)
        if any(d.severity == "error" for d in diagnostics):
            parsed = old.parsed if old is not None else None      # the last good version stays
        self._entries[key] = Entry(scope, digest, parsed, diagnostics)
        if old is not None and old.parsed is parsed:
            return set()
        return self._unindex(key, old.parsed if old else None) | self._index(key, parsed)

    def delete(self, scope: str, key: ObjectKey) -> set[ServiceKey]:
        if self._duplicates.get(key, ("",))[0] == scope:
            del self._duplicates[key]
        entry = self._entries.get(key)
        if entry is None or entry.scope != scope:
            return set()
        del self._entries[key]
        return self._unindex(key, entry.parsed)

    def replace(self, scope: str, objects: Iterable[RawObject | Packed]) -> set[ServiceKey]:
        objects = [pack(o) for o in objects if packable(o)]
        keep = {o.key for o in objects}
        dirty: set[ServiceKey] = set()
        for key in sorted(k for k, e in self._entries.items() if e.scope == scope and k not in keep):
            dirty |= self.delete(scope, key)
        for key in [k for k, (other, _) in self._duplicates.items() if other == scope and k not in keep]:
            del self._duplicates[key]
        for obj in objects:
            dirty |= self.upsert(scope, obj)
        return dirty

    # --- what resolution and reporting read --------------------------------------------------

    def splits_of(self, root: ServiceKey) -> list[Split]:
        return [s for key in self.splits_by_root.get(root, ()) for s in self.splits[key] if s.root == root]

    def root_view(self) -> Mapping[ServiceKey, Split]:
        return _RootView(self)

    def entry(self, key: ObjectKey) -> Entry | None:
        return self._entries.get(key)

    def diagnostics(self, key: ObjectKey) -> tuple[Diagnostic, ...]:
        entry = self._entries.get(key)
        duplicate = self._duplicates.get(key)
        return (entry.diagnostics if entry else ()) + ((duplicate[1],) if duplicate else ())

    def keys(self) -> Iterable[ObjectKey]:
        return self._entries.keys()

    def counts(self) -> Counter[str]:
        """Objects held, by kind (metrics)."""
        return Counter(k.kind for k in self._entries)

    def has_errors(self) -> bool:
        return bool(self._duplicates) or any(e.has_errors for e in self._entries.values())

    # --- indexes -------------------------------------------------------------------------------

    def _affected(self, service: ServiceKey) -> set[ServiceKey]:
        roots = set(self.roots_by_backend.get(service, ()))
        if service in self.splits_by_root:
            roots.add(service)
        return roots

    def _index(self, key: ObjectKey, parsed: Parsed) -> set[ServiceKey]:
        if isinstance(parsed, Service):
            self.services[parsed.key] = parsed
            return self._affected(parsed.key)
        if isinstance(parsed, EndpointGroup):
            others = [kg for kg in self._groups.get(parsed.key, ()) if kg[0] != key]
            self._groups[parsed.key] = tuple(sorted([*others, (key, parsed)], key=lambda kg: kg[0]))
            self._choose_endpoints(parsed.key)
            return self._affected(parsed.key)
        if parsed:
            self.splits[key] = parsed
            for root in {s.root for s in parsed}:
                self.splits_by_root[root] = (*self.splits_by_root.get(root, ()), key)
            for backend, root in _referenced(parsed):
                self.roots_by_backend[backend] = (*self.roots_by_backend.get(backend, ()), root)
            return {s.root for s in parsed}
        return set()

    def _unindex(self, key: ObjectKey, parsed: Parsed) -> set[ServiceKey]:
        if isinstance(parsed, Service):
            self.services.pop(parsed.key, None)
            return self._affected(parsed.key)
        if isinstance(parsed, EndpointGroup):
            _set(self._groups, parsed.key, tuple(kg for kg in self._groups.get(parsed.key, ()) if kg[0] != key))
            self._choose_endpoints(parsed.key)
            return self._affected(parsed.key)
        if parsed:
            self.splits.pop(key, None)
            for root in {s.root for s in parsed}:
                _set(self.splits_by_root, root, tuple(k for k in self.splits_by_root.get(root, ()) if k != key))
            for backend, root in _referenced(parsed):
                roots = list(self.roots_by_backend.get(backend, ()))
                if root in roots:
                    roots.remove(root)          # one use of it: another split may use it too
                _set(self.roots_by_backend, backend, tuple(roots))
            return {s.root for s in parsed}
        return set()

    def _choose_endpoints(self, service: ServiceKey) -> None:
        """A cluster dump holds Endpoints and their mirrored EndpointSlices: the slices win (the
        current API), never both, which would count every pod twice."""
        found = self._groups.get(service, ())
        slices = tuple(g for _, g in found if g.source == "EndpointSlice")
        chosen = slices or tuple(g for _, g in found)
        if chosen:
            self.endpoints[service] = chosen
        else:
            self.endpoints.pop(service, None)
            self._groups.pop(service, None)


def _set(index: dict, key: Any, value: tuple) -> None:
    """An index entry set to `value`, or removed when it is empty."""
    if value:
        index[key] = value
    else:
        index.pop(key, None)


class _RootView(Mapping):
    """root Service -> one split of it: what resolution needs to name a nested split."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def __getitem__(self, root: Any) -> Split:
        found = self._store.splits_of(root)
        if not found:
            raise KeyError(root)
        return found[0]

    def __iter__(self):
        return iter(self._store.splits_by_root)

    def __len__(self) -> int:
        return len(self._store.splits_by_root)
