"""Builders shared by the unit, kernel and fault tests."""
from __future__ import annotations


def program_ids(dp) -> dict[str, int]:
    """Kernel ids of the programs pinned by an EbpfDataplane: equal ids mean nothing was reloaded."""
    from kernsplit.agent.dataplane.ebpf import loader
    return {name: loader.prog_id(dp.pins.prog(name)) for name in loader.PROGRAMS
            if dp.pins.prog(name).exists()}


# --- the agent's iptables chains, through the one ownership core ---------------------------------

def agent_owned(family, saved):
    from kernsplit.agent.dataplane.iptables import names
    from kernsplit.agent.iptables.ownership import owned
    return owned(names.OWNERSHIP, family, saved)


def agent_diff(want, have):
    from kernsplit.agent.dataplane.iptables import names
    from kernsplit.agent.iptables.diff import diff
    return diff(want, have, names.OWNERSHIP.jumps)


def agent_render(changes, counts=None):
    from kernsplit.agent.dataplane.iptables import carry
    from kernsplit.agent.iptables.render import render
    return render(changes, carry.lookup(counts) if counts else None)


def agent_render_full(ruleset):
    from kernsplit.agent.dataplane.iptables import names
    from kernsplit.agent.iptables.render import render_full
    return render_full(ruleset, names.OWNERSHIP.jumps)
