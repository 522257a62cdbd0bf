"""The configuration model: Kubernetes manifests in, resolved splits out.

Public API (used by the CLI, the agent and the lab):
    load_config(paths) -> Config    # parse files/directories, resolve every split
    Config.split_ports              # tuple[SplitPort, ...], see agent.model.resolved
    Config.diagnostics / .errors / .warnings
"""
