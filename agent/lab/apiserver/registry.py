"""Which resources are served right now: the built-in ones and those of every CRD object stored."""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from kernsplit.agent.lab.apiserver.resources import BUILTINS, Resource, crd_resources, version_priority


class Registry:
    def __init__(self) -> None:
        self._crds: dict[str, tuple[Resource, ...]] = {}     # CRD name -> its served resources
        self.generation = 0                                  # bumped on every change (OpenAPI hashes)

    def all(self) -> tuple[Resource, ...]:
        return BUILTINS + tuple(r for rs in self._crds.values() for r in rs)

    def lookup(self, group: str, version: str, plural: str) -> Resource | None:
        return next((r for r in self.all()
                     if (r.group, r.version, r.plural) == (group, version, plural)), None)

    def group_versions(self) -> dict[str, list[str]]:
        """group -> its versions, preferred first (the order discovery lists them in)."""
        out: dict[str, set[str]] = {}
        for r in self.all():
            out.setdefault(r.group, set()).add(r.version)
        return {g: sorted(vs, key=version_priority) for g, vs in out.items()}

    def resources_of(self, group: str, version: str) -> list[Resource]:
        return [r for r in self.all() if (r.group, r.version) == (group, version)]

    def set_crd(self, crd: Mapping[str, Any]) -> None:
        self._crds[crd["metadata"]["name"]] = tuple(crd_resources(crd))
        self.generation += 1

    def remove_crd(self, name: str) -> tuple[Resource, ...]:
        self.generation += 1
        return self._crds.pop(name, ())

    def hash_of(self, group: str, version: str) -> str:
        text = repr([(r, r.schema) for r in self.resources_of(group, version)])
        return hashlib.sha512(text.encode()).hexdigest()[:64].upper()
