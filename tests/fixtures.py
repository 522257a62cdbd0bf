"""Builders shared by the unit, kernel and fault tests."""
from __future__ import annotations


def program_ids(dp) -> dict[str, int]:
    """Kernel ids of the programs pinned by an EbpfDataplane: equal ids mean nothing was reloaded."""
    from kernsplit.agent.dataplane.ebpf import loader
    return {name: loader.prog_id(dp.pins.prog(name)) for name in loader.PROGRAMS
            if dp.pins.prog(name).exists()}
