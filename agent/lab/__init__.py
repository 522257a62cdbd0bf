"""The netns lab: a node namespace with a bridge, pod namespaces, a client pod with proxy-init and
a transparent proxy, real manifests, and the agent - all under one `ksl<hex>` prefix.

Public API: `agent.lab.lab.open_lab(prefix, dataplane, apps=..., services=...)` -> Lab
(`up`, `load`, `write_manifest`, `start_agent`, `kill_agent`, `show`, `exec_argv`),
`agent.lab.lab.down(prefix)`, `agent.lab.plan` (shape), `agent.lab.manifests` (rendering).
"""
