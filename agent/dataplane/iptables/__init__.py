"""The iptables dataplane: weighted DNAT chains in the nat table (kube-proxy's layout, with weights).

    IptablesDataplane(netns=None, mode="auto"|"legacy"|"nft")   the executor (Dataplane protocol)
    plan(split_ports, family) -> Ruleset                        pure planner
    render_full(ruleset) / render_changes(diff(want, have))     iptables-restore text
"""
from kernsplit.agent.dataplane.iptables.dataplane import IptablesDataplane
from kernsplit.agent.dataplane.iptables.diff import diff, owned
from kernsplit.agent.dataplane.iptables.plan import plan
from kernsplit.agent.dataplane.iptables.render import render_changes, render_full

__all__ = ["IptablesDataplane", "plan", "diff", "owned", "render_full", "render_changes"]
