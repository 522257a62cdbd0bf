"""Desired state, kept current one root Service at a time.

A split port depends only on the splits of its root and on the Services and endpoints they name,
so when the store reports some roots affected, only those roots are resolved again, and only the
split ports whose result differs are handed to the dataplane as `changed` (kube-proxy's
`UpdatedServices`): a weight edit at 10,000 split ports resolves one root and writes one port.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kernsplit.agent.model.diagnostics import Diagnostic, DiagnosticSink
from kernsplit.agent.model.resolve import resolve
from kernsplit.agent.model.resolved import SplitPort
from kernsplit.agent.source.store import ObjectStore, ServiceKey

PortKey = tuple[str, int, str]     # SplitPort.key: (cluster ip, port, protocol)


@dataclass(frozen=True)
class Delta:
    """What one resolution pass changed."""
    changed: frozenset[PortKey]     # added, modified or removed split ports
    before: int                     # split ports desired before
    removed: int                    # of them, no longer desired
    refused: int                    # of them, served before and refusing everything now

    @property
    def sweeping(self) -> bool:
        """Most split ports go or start refusing at once: what a half-written config looks like."""
        return self.before >= 2 and 2 * (self.removed + self.refused) > self.before


class DesiredState:
    def __init__(self) -> None:
        self.ports: dict[PortKey, SplitPort] = {}
        self._by_root: dict[ServiceKey, tuple[PortKey, ...]] = {}
        self._owner: dict[PortKey, ServiceKey] = {}
        self.diagnostics: dict[ServiceKey, tuple[Diagnostic, ...]] = {}

    def resolve(self, store: ObjectStore, roots: Iterable[ServiceKey]) -> Delta:
        """Resolve `roots` again (all of them: `store.splits_by_root`) and update `ports`."""
        before = len(self.ports)
        changed: set[PortKey] = set()
        removed = refused = 0
        for root in sorted(set(roots)):
            old = {k: self.ports[k] for k in self._by_root.pop(root, ())}
            for k in old:
                del self.ports[k]
                del self._owner[k]
            sink = DiagnosticSink()
            new = self._claim(root, resolve(store.splits_of(root), store.inventory, sink, store.root_view()), sink)
            self.diagnostics[root] = sink.freeze()
            if not self.diagnostics[root]:
                del self.diagnostics[root]
            for k, sp in old.items():
                now = new.get(k)
                if now is None:
                    removed += 1
                elif now.refuse and not sp.refuse:
                    refused += 1
                if now is None or now != sp:
                    changed.add(k)
            changed.update(k for k in new if k not in old)
        return Delta(frozenset(changed), before, removed, refused)

    def _claim(self, root: ServiceKey, ports: Iterable[SplitPort], sink: DiagnosticSink) -> dict[PortKey, SplitPort]:
        """Keep the ports no other root holds (two Services with one ClusterIP and port: the
        first one resolved keeps it)."""
        mine: dict[PortKey, SplitPort] = {}
        for sp in ports:
            other = self._owner.get(sp.key)
            if other is not None:
                sink.add("warning", "-", f"Service {root[0]}/{root[1]}", "spec.clusterIP",
                         f"{sp.cluster_ip}:{sp.port} is also the address of split Service {other[0]}/{other[1]}, "
                         "which keeps it")
                continue
            mine[sp.key] = sp
            self._owner[sp.key] = root
            self.ports[sp.key] = sp
        self._by_root[root] = tuple(mine)
        if not mine:
            del self._by_root[root]
        return mine
