"""Config sources: where the agent's objects come from (manifest files, the Kubernetes API).

Every source delivers raw Kubernetes objects (JSON-shaped mappings, as the API server or a YAML
file gives them) to a `Sink` (`contract.py`); the reconciler owns the sink and never learns where an
object came from. One reconcile design for every source: a changed file is a batch of object events.
"""
