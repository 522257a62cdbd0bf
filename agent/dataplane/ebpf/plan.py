"""Pure planning for the eBPF dataplane: desired splits -> images -> ordered map operations.

No BCC, no syscalls here. `image()` turns a resolved SplitPort into exactly what the maps will
hold; `plan()` compares images with what the kernel holds and returns the operations, ordered so
that a concurrent connect() sees the old table or the new one, never a mix and never nothing:

    1. write the new table's slots beside the live one (other generation)
    2. write metadata, reset counters of a new split
    3. flip: one update of the split's ks_services entry to the new table and count
    4. delete the old table's slots

Removal is the mirror: delete the service entry first (connects stop matching), then its slots
and metadata.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from agent.dataplane.ebpf import abi, table
from agent.model.resolved import SplitPort

IPPROTO_TCP = 6
_U64 = (1 << 64) - 1


@dataclass(frozen=True, order=True)
class Addr:
    """A root service address: the ks_services key."""
    family: int
    ip: str
    port: int
    proto: int = IPPROTO_TCP


@dataclass(frozen=True)
class SlotImage:
    last: int        # inclusive upper bound in the u32 random space
    ip: str
    port: int
    backend: int     # index into MetaImage.backends


@dataclass(frozen=True)
class BackendImage:
    name: str
    weight: int
    share: Fraction
    resolved: bool


@dataclass(frozen=True)
class MetaImage:
    namespace: str
    service: str
    split: str
    kind: str
    backends: tuple[BackendImage, ...]


@dataclass(frozen=True)
class SplitImage:
    key: Addr
    slots: tuple[SlotImage, ...]     # empty: refuse
    meta: MetaImage


@dataclass(frozen=True)
class Installed:
    """One split port as found in (or last written to) the kernel."""
    image: SplitImage
    split_id: int
    table: int


# --- operations, in the order the executor must apply them -----------------------------------

@dataclass(frozen=True)
class WriteSlot:
    table: int
    slot: int
    value: SlotImage


@dataclass(frozen=True)
class WriteMeta:
    split_id: int
    meta: MetaImage


@dataclass(frozen=True)
class ResetCounters:
    split_id: int


@dataclass(frozen=True)
class WriteService:
    """The flip: makes `table` (with `count` slots, 0 = refuse) live for `key`."""
    key: Addr
    split_id: int
    table: int
    count: int


@dataclass(frozen=True)
class DeleteService:
    key: Addr


@dataclass(frozen=True)
class DeleteSlot:
    table: int
    slot: int


@dataclass(frozen=True)
class DeleteMeta:
    split_id: int


Op = WriteSlot | WriteMeta | ResetCounters | WriteService | DeleteService | DeleteSlot | DeleteMeta


@dataclass(frozen=True)
class Plan:
    ops: tuple[Op, ...]
    result: dict[Addr, Installed] = field(compare=False)   # kernel state once ops are applied
    written: int
    removed: int
    unchanged: int


class SplitTooLarge(ValueError):
    """A split does not fit the fixed-size maps (names, backends, endpoints)."""


# --- images ---------------------------------------------------------------------------------

def _fit(text: str, size: int, what: str, owner: str) -> str:
    if len(text.encode()) >= size:     # NUL-terminated char arrays
        raise SplitTooLarge(f"{owner}: {what} {text!r} is longer than {size - 1} bytes")
    return text


def _share(value: Fraction) -> Fraction:
    """The share as stored (u64 numerator/denominator), so a read-back compares equal."""
    if value.numerator <= _U64 and value.denominator <= _U64:
        return value
    return value.limit_denominator(_U64)


def image(split: SplitPort) -> SplitImage:
    owner = f"{split.split_kind} {split.namespace}/{split.split}"
    if len(split.backends) > abi.KS_MAX_BACKENDS:
        raise SplitTooLarge(f"{owner}: backends: {len(split.backends)} backends, the eBPF "
                            f"dataplane holds at most {abi.KS_MAX_BACKENDS}")
    if len(split.endpoints) > abi.KS_MAX_SLOTS:
        raise SplitTooLarge(f"{owner}: {len(split.endpoints)} endpoints for {split.cluster_ip}:"
                            f"{split.port}, the eBPF dataplane holds at most {abi.KS_MAX_SLOTS}")
    names = [b.service for b in split.backends]
    backends = tuple(
        BackendImage(_fit(b.service, abi.KS_NAME_LEN, "backend", owner), b.weight, _share(b.share),
                     b.resolved)
        for b in split.backends)
    meta = MetaImage(_fit(split.namespace, abi.KS_NAME_LEN, "namespace", owner),
                     _fit(split.service, abi.KS_NAME_LEN, "service", owner),
                     _fit(split.split, abi.KS_SPLIT_NAME_LEN, "name", owner),
                     _fit(split.split_kind, abi.KS_KIND_LEN, "kind", owner), backends)
    slots: tuple[SlotImage, ...] = ()
    if split.endpoints:
        lasts = table.bounds([e.share for e in split.endpoints])
        slots = tuple(SlotImage(last, e.endpoint.ip, e.endpoint.port, _backend_index(names, e.backend, owner))
                      for last, e in zip(lasts, split.endpoints))
    ip = ipaddress.ip_address(split.cluster_ip)
    return SplitImage(Addr(ip.version, ip.compressed, split.port), slots, meta)


def _backend_index(names: list[str], backend: str, owner: str) -> int:
    try:
        return names.index(backend)
    except ValueError:
        raise SplitTooLarge(f"{owner}: endpoint of backend {backend!r} not among its backends") from None


# --- planning -------------------------------------------------------------------------------

def plan(desired: Iterable[SplitImage], installed: Mapping[Addr, Installed]) -> Plan:
    wanted = {img.key: img for img in desired}
    ops: list[Op] = []
    result: dict[Addr, Installed] = {}
    written = removed = unchanged = 0

    for key in sorted(set(installed) - set(wanted)):
        ops += _remove_ops(installed[key])
        removed += 1

    in_use = {inst.split_id for key, inst in installed.items()}
    free = _free_ids(in_use)
    for key, img in wanted.items():          # desired order: no sort of 10,000 keys per sync
        old = installed.get(key)
        if old is not None and (old.image is img or old.image == img):
            result[key] = old
            unchanged += 1
            continue
        split_id = old.split_id if old is not None else next(free)
        new_ops, new = _write_ops(img, split_id, old)
        ops += new_ops
        result[key] = new
        written += 1
    return Plan(tuple(ops), result, written, removed, unchanged)


def _free_ids(in_use: set[int]) -> Iterable[int]:
    # Ids of splits removed in this same plan stay out: their slots/meta deletes come later.
    for i in range(abi.KS_MAX_SPLITS):
        if i not in in_use:
            yield i
    raise SplitTooLarge(f"more than {abi.KS_MAX_SPLITS} split ports: the eBPF maps are full")


def _write_ops(img: SplitImage, split_id: int, old: Installed | None) -> tuple[list[Op], Installed]:
    ops: list[Op] = []
    if old is not None and old.image.slots == img.slots:
        tbl = old.table                     # metadata-only change: the live table stays
    else:
        tbl = split_id * 2 + (0 if old is None else 1 - old.table % 2)
        ops += [WriteSlot(tbl, i, s) for i, s in enumerate(img.slots)]
    names = lambda m: tuple(b.name for b in m.backends)  # noqa: E731
    if old is None or old.image.meta != img.meta:
        ops.append(WriteMeta(split_id, img.meta))
    # Counters are per backend index: a new split, or a changed backend list, starts from zero.
    if old is None or names(old.image.meta) != names(img.meta):
        ops.append(ResetCounters(split_id))
    if old is None or tbl != old.table:
        ops.append(WriteService(img.key, split_id, tbl, len(img.slots)))
        if old is not None:
            ops += [DeleteSlot(old.table, i) for i in range(len(old.image.slots))]
    return ops, Installed(img, split_id, tbl)


def _remove_ops(old: Installed) -> list[Op]:
    return [DeleteService(old.image.key),
            *(DeleteSlot(old.table, i) for i in range(len(old.image.slots))),
            DeleteMeta(old.split_id)]


def orphan_ops(installed: Mapping[Addr, Installed], slot_keys: Iterable[tuple[int, int]],
               meta_ids: Iterable[int]) -> list[Op]:
    """Deletes for slots and metadata no live split refers to (left by a crash mid-update)."""
    live_slots = {(inst.table, i) for inst in installed.values() for i in range(len(inst.image.slots))}
    live_ids = {inst.split_id for inst in installed.values()}
    return ([DeleteSlot(t, s) for t, s in sorted(slot_keys) if (t, s) not in live_slots]
            + [DeleteMeta(i) for i in sorted(meta_ids) if i not in live_ids])


def images(desired: Sequence[SplitPort]) -> list[SplitImage]:
    return [image(s) for s in desired]
