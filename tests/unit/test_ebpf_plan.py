"""The eBPF planner: what a sync writes, and in which order (no kernel needed)."""
from __future__ import annotations

import pytest

from kernsplit.agent.dataplane.ebpf import abi, plan
from tests.fixtures import split_port


def split(ip="10.100.200.30", port=80, weights=(900, 100), name="my-app-split"):
    names = [f"my-app-v{i + 1}" for i in range(len(weights))]
    return split_port(dict(zip(names, weights)), {n: [f"10.1.{i}.1"] for i, n in enumerate(names)},
                      ip=ip, port=port, split=name)


def apply(installed, desired):
    return plan.plan(plan.images(desired), installed)


def test_new_split_writes_slots_then_meta_then_flips():
    p = apply({}, [split()])
    kinds = [type(op).__name__ for op in p.ops]
    assert kinds == ["WriteSlot", "WriteSlot", "WriteMeta", "ResetCounters", "WriteService"]
    assert (p.written, p.removed, p.unchanged) == (1, 0, 0)


def test_weight_change_new_table_beside_old_then_flip_then_delete_old():
    first = apply({}, [split()]).result
    p = apply(first, [split(weights=(500, 500))])
    kinds = [type(op).__name__ for op in p.ops]
    assert kinds == ["WriteSlot", "WriteSlot", "WriteMeta", "WriteService", "DeleteSlot", "DeleteSlot"]
    old_table = next(iter(first.values())).table
    writes = [op for op in p.ops if isinstance(op, plan.WriteSlot)]
    flip = next(op for op in p.ops if isinstance(op, plan.WriteService))
    deletes = [op for op in p.ops if isinstance(op, plan.DeleteSlot)]
    assert {w.table for w in writes} == {flip.table} != {old_table}     # beside, not over, the live one
    assert {d.table for d in deletes} == {old_table}
    assert p.ops.index(flip) > max(p.ops.index(w) for w in writes)
    assert p.ops.index(flip) < min(p.ops.index(d) for d in deletes)
    # Same split id: counters survive a weight change; no ResetCounters.
    assert not any(isinstance(op, plan.ResetCounters) for op in p.ops)
    # A second change goes back to the first generation.
    again = apply(p.result, [split(weights=(1, 0))])
    assert next(op for op in again.ops if isinstance(op, plan.WriteService)).table == old_table


def test_unchanged_writes_nothing():
    first = apply({}, [split(), split(port=443)]).result
    p = apply(first, [split(), split(port=443)])
    assert p.ops == () and (p.written, p.unchanged) == (0, 2)


def test_an_unchanged_split_keeps_the_desired_image_not_the_equal_one_read_back():
    """A full resync reads every split back from the kernel; keeping those equal copies beside the
    desired images would hold every split twice (about 10 MiB at 10,000 split ports)."""
    first = apply({}, [split()]).result
    read_back = {k: plan.Installed(plan.images([split()])[0], v.split_id, v.table) for k, v in first.items()}
    desired = plan.images([split()])
    p = plan.plan(desired, read_back)
    assert p.unchanged == 1 and not p.ops
    assert next(iter(p.result.values())).image is desired[0]


def test_removed_split_stops_matching_first():
    first = apply({}, [split()]).result
    p = apply(first, [])
    assert isinstance(p.ops[0], plan.DeleteService)
    assert isinstance(p.ops[-1], plan.DeleteMeta)
    assert p.removed == 1 and p.result == {}


def test_refusing_split_is_one_refusal_slot_over_the_whole_random_space():
    p = apply({}, [split(weights=(0, 0))])
    flip = next(op for op in p.ops if isinstance(op, plan.WriteService))
    [slot] = [op.value for op in p.ops if isinstance(op, plan.WriteSlot)]
    assert flip.count == 1 and slot.refuse and slot.last == 0xFFFFFFFF and (slot.ip, slot.port) == ("0.0.0.0", 0)
    assert slot.backend == abi.KS_NO_BACKEND     # the root is not among the listed backends: not counted
    assert next(iter(p.result.values())).image.refuse


def test_a_refused_route_share_is_a_slot_of_its_weight_counted_against_its_backend():
    """Gateway API: "Connection rejections must respect weight" -- the refused quarter owns exactly a
    quarter of the random space, like an endpoint's share."""
    sp = split_port({"v1": 3, "gone": 1}, {"v1": ["10.1.0.1"]}, split="r", kind="HTTPRoute")
    img = plan.image(sp)
    assert [(s.refuse, s.backend) for s in img.slots] == [(False, 0), (True, 1)]
    assert img.slots[0].last + 1 == 3 << 30 and img.slots[1].last == 0xFFFFFFFF
    assert not img.refuse


def test_weight_zero_backend_gets_no_slot_but_keeps_its_counter_index():
    img = plan.image(split(weights=(0, 1)))
    assert [s.backend for s in img.slots] == [1]
    assert [b.name for b in img.meta.backends] == ["my-app-v1", "my-app-v2"]


def test_new_split_does_not_reuse_an_id_being_removed():
    first = apply({}, [split()]).result
    p = apply(first, [split(port=443)])
    [old] = first.values()
    [new] = p.result.values()
    assert new.split_id != old.split_id


def test_orphans_left_by_a_crash_are_deleted():
    state = apply({}, [split()]).result
    [inst] = state.values()
    ops = plan.orphan_ops(state, [(inst.table, 0), (inst.table, 1), (inst.table ^ 1, 0)], [inst.split_id, 7])
    assert ops == [plan.DeleteSlot(inst.table ^ 1, 0), plan.DeleteMeta(7)]


def test_errors_name_the_object_and_field():
    long = split(name="x" * 300)
    with pytest.raises(plan.SplitTooLarge, match=r"TrafficSplit default/x+ 10.100.200.30:80: name"):
        plan.image(long)


def test_partial_plan_touches_only_the_changed_ports_and_agrees_with_a_full_one():
    ports = [split(port=p) for p in (80, 443, 8080)]
    installed = apply({}, ports).result
    changed = [split(port=443, weights=(500, 500)), split(port=9090)]      # modified, and new
    gone = plan.images([ports[2]])[0].key                                     # 8080 removed
    only = [img.key for img in plan.images(changed)] + [gone]
    partial = plan.plan(plan.images(changed), installed, only=only)
    full = apply(installed, [ports[0], *changed])
    assert partial.ops == full.ops
    assert (partial.written, partial.removed) == (full.written, full.removed) == (2, 1)
    assert partial.dropped == (gone,) and set(partial.result) == set(only) - {gone}
    after = partial.applied_to(dict(installed), partial=True)
    assert after == full.result
    # A new split takes an id no installed split holds (the unchanged port 80 keeps its own).
    assert len({inst.split_id for inst in after.values()}) == len(after) == 3
