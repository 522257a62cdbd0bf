"""Config sources: where the agent's objects come from (manifest files, the Kubernetes API).

Every source delivers raw Kubernetes objects (JSON-shaped mappings, as the API server or a YAML
file gives them) to a `Sink` (`contract.py`); the reconciler owns the sink and never learns where an
object came from. One reconcile design for every source: a changed file is a batch of object events.
"""
from __future__ import annotations

import importlib

# name -> "module:class"; imported on demand (the Kubernetes client is heavy and optional).
SOURCES = {
    "files": "kernsplit.agent.source.files:FileSource",
    "kubernetes": "kernsplit.agent.source.kubernetes:KubernetesSource",
}
NAMES = ("files", "kubernetes")


class SourceUnavailable(RuntimeError):
    """A known source that this build cannot run."""


def make_source(name: str, **options):
    """Build a source by name with its own constructor keywords (files: paths, settle)."""
    if name not in NAMES:
        raise ValueError(f"unknown source {name!r}: choose one of {', '.join(NAMES)}")
    target = SOURCES.get(name)
    if target is None:
        raise SourceUnavailable(f"the {name} source is not available in this version of kernsplit: "
                                "use --source files --config PATH")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(**options)
