"""The iptables dataplane: weighted DNAT chains in the nat table (kube-proxy's layout, with weights).

    IptablesDataplane(netns=None, mode="auto"|"legacy"|"nft")   the executor (Dataplane protocol)
    plan(split_ports, family) -> Ruleset                        pure planner (`plan`)

Reading our chains back, diffing and rendering restore text is the shared core in `agent.iptables`
(`ownership`, `diff`, `render`), which proxy-init uses too; `names.OWNERSHIP` says what is ours.

The executor is imported on first use, so importing a pure module of this package (`plan`,
`carry`, ...) never loads subprocess.
"""
from __future__ import annotations

__all__ = ["IptablesDataplane"]


def __getattr__(name: str):
    if name == "IptablesDataplane":
        from kernsplit.agent.dataplane.iptables.dataplane import IptablesDataplane
        return IptablesDataplane
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
