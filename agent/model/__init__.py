"""The configuration model: Kubernetes manifests in, resolved splits out.

Public API (used by the CLI, the agent and the lab):
    load_config(paths, cluster_domain="cluster.local") -> Config   # parse, resolve every split
    Config.split_ports              # tuple[SplitPort, ...], see agent.model.resolved
    Config.diagnostics / .errors / .warnings / .has_errors / .to_json()
    Diagnostic                      # str(d) == "file: Kind ns/name: field: message"
    parse_quantity(text) -> int     # exact milli-units: "1" -> 1000, "500m" -> 500
"""
from kernsplit.agent.model.config import Config, load_config, split_port_json
from kernsplit.agent.model.diagnostics import Diagnostic
from kernsplit.agent.model.quantity import WeightError, parse_quantity, parse_whole
from kernsplit.agent.model.resolved import BackendShare, Endpoint, RefusedShare, SplitPort, WeightedEndpoint

__all__ = [
    "BackendShare", "Config", "Diagnostic", "Endpoint", "RefusedShare", "SplitPort", "WeightError", "WeightedEndpoint",
    "load_config", "parse_quantity", "parse_whole", "split_port_json",
]
