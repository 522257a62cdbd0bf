"""Dataplanes: the kernel mechanisms that enforce resolved splits.

Each dataplane is a reconciler over one kernel interface (iptables nat chains, or BPF maps
behind cgroup connect hooks). They share one interface (`base.Dataplane`) so the agent loop,
`kernsplit show` and the scenario tests treat them alike.
"""
from __future__ import annotations

import importlib

from kernsplit.agent.dataplane.base import Dataplane

# name -> "module:class"; imported on demand so the iptables path never loads BCC.
DATAPLANES = {
    "iptables": "kernsplit.agent.dataplane.iptables:IptablesDataplane",
    "ebpf": "kernsplit.agent.dataplane.ebpf:EbpfDataplane",
}


def make_dataplane(name: str, **options) -> Dataplane:
    """Build a dataplane by name; options are the dataplane's own constructor keywords
    (iptables: netns, mode; ebpf: cgroup, bpffs, split_uids: only these uids' connects are split,
    for a mesh proxy's; see EbpfDataplane)."""
    try:
        target = DATAPLANES[name]
    except KeyError:
        raise ValueError(f"unknown dataplane {name!r}: choose one of {', '.join(DATAPLANES)}") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(**options)
