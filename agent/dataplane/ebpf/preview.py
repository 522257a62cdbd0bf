"""Map operations as text, one line each, in the order they would be applied (flip order). Pure.

What `kernsplit agent --once --dry-run` prints for the eBPF dataplane:

    write ks_slots[table 1, slot 0] = 10.1.0.1:8080 backend 0 up to 0x1ccccccc
    write ks_meta[split 0] = default/my-app TrafficSplit/my-app-split: my-app-v1 900 (9/10), ...
    reset ks_counters[split 0]
    write ks_services[10.100.200.30:80/tcp] = split 0, table 1, 6 slots     (the flip)
"""
from __future__ import annotations

from collections.abc import Iterable

from kernsplit.agent.dataplane.ebpf import plan


def _addr(a: plan.Addr) -> str:
    host = f"[{a.ip}]" if a.family == 6 else a.ip
    proto = "tcp" if a.proto == plan.IPPROTO_TCP else str(a.proto)
    return f"{host}:{a.port}/{proto}"


def _slot(s: plan.SlotImage) -> str:
    target = "refuse" if s.refuse else (f"[{s.ip}]:{s.port}" if ":" in s.ip else f"{s.ip}:{s.port}")
    return f"{target} backend {s.backend} up to {s.last:#010x}"


def _meta(m: plan.MetaImage) -> str:
    backends = ", ".join(f"{b.name} {b.weight} ({b.share})" + ("" if b.resolved else " cannot serve")
                         + (" terminating" if b.terminating else "") for b in m.backends)
    return f"{m.namespace}/{m.service} {m.kind}/{m.split}: {backends}"


def describe(op: plan.Op) -> str:
    match op:
        case plan.WriteSlot(table=t, slot=s, value=v):
            return f"write ks_slots[table {t}, slot {s}] = {_slot(v)}"
        case plan.WriteMeta(split_id=i, meta=m):
            return f"write ks_meta[split {i}] = {_meta(m)}"
        case plan.ResetCounters(split_id=i):
            return f"reset ks_counters[split {i}]"
        case plan.WriteService(key=k, split_id=i, table=t, count=c):
            return f"write ks_services[{_addr(k)}] = split {i}, table {t}, {c} slots"
        case plan.DeleteService(key=k):
            return f"delete ks_services[{_addr(k)}]"
        case plan.DeleteSlot(table=t, slot=s):
            return f"delete ks_slots[table {t}, slot {s}]"
        case plan.DeleteMeta(split_id=i):
            return f"delete ks_meta[split {i}]"
    raise TypeError(f"unknown map operation {op!r}")


def render(ops: Iterable[plan.Op]) -> str:
    return "".join(describe(op) + "\n" for op in ops)
