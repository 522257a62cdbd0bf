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
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from kernsplit.agent.dataplane.ebpf import limits, thresholds
from kernsplit.agent.model.resolved import Choice, RefusedShare, SplitPort

IPPROTO_TCP = 6
_U64 = (1 << 64) - 1


@dataclass(frozen=True, order=True, slots=True)
class Addr:
    """A root service address: the ks_services key."""
    family: int
    ip: str
    port: int
    proto: int = IPPROTO_TCP


@dataclass(frozen=True, slots=True)
class SlotImage:
    last: int        # inclusive upper bound in the u32 random space
    ip: str          # a refusal: the family's zero address
    port: int        # a refusal: 0
    backend: int     # index into MetaImage.backends (limits.KS_NO_BACKEND: a refusal of no listed backend)
    refuse: bool = False    # a refused share: the connect fails with ECONNREFUSED


@dataclass(frozen=True, slots=True)
class BackendImage:
    name: str
    weight: int
    share: Fraction
    resolved: bool
    terminating: bool = False   # served by terminating endpoints (none ready)


@dataclass(frozen=True, slots=True)
class MetaImage:
    namespace: str
    service: str
    split: str
    kind: str
    backends: tuple[BackendImage, ...]


@dataclass(frozen=True, slots=True)
class SplitImage:
    key: Addr
    slots: tuple[SlotImage, ...]     # never empty: a split port nothing serves is one refusal slot

    @property
    def refuse(self) -> bool:
        """Nothing serves it: every slot refuses."""
        return all(s.refuse for s in self.slots)
    meta: MetaImage


@dataclass(frozen=True, slots=True)
class Installed:
    """One split port as found in (or last written to) the kernel."""
    image: SplitImage
    split_id: int
    table: int


# --- operations, in the order the executor must apply them -----------------------------------

@dataclass(frozen=True, slots=True)
class WriteSlot:
    table: int
    slot: int
    value: SlotImage


@dataclass(frozen=True, slots=True)
class WriteMeta:
    split_id: int
    meta: MetaImage


@dataclass(frozen=True, slots=True)
class ResetCounters:
    split_id: int


@dataclass(frozen=True, slots=True)
class WriteService:
    """The flip: makes `table` (with `count` slots, 0 = refuse) live for `key`."""
    key: Addr
    split_id: int
    table: int
    count: int


@dataclass(frozen=True, slots=True)
class DeleteService:
    key: Addr


@dataclass(frozen=True, slots=True)
class DeleteSlot:
    table: int
    slot: int


@dataclass(frozen=True, slots=True)
class DeleteMeta:
    split_id: int


Op = WriteSlot | WriteMeta | ResetCounters | WriteService | DeleteService | DeleteSlot | DeleteMeta


@dataclass(frozen=True, slots=True)
class Plan:
    ops: tuple[Op, ...]
    # Kernel state once ops are applied: of every split port, or with `only`, of the planned ones
    # (the rest stay as installed; `dropped` lists the planned ones that are gone).
    result: dict[Addr, Installed] = field(compare=False)
    written: int
    removed: int
    unchanged: int
    dropped: tuple[Addr, ...] = ()

    def applied_to(self, installed: dict[Addr, Installed], partial: bool) -> dict[Addr, Installed]:
        """The kernel state after this plan, given the state it was planned against; a partial
        plan updates `installed` in place (no copy of 10,000 entries for one change)."""
        if not partial:
            return self.result
        for key in self.dropped:
            installed.pop(key, None)
        installed.update(self.result)
        return installed


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


def owner(split: SplitPort) -> str:
    """How errors name a split port: `TrafficSplit default/my-app-split 10.100.200.30:80`."""
    ip = ipaddress.ip_address(split.cluster_ip)
    where = f"[{ip.compressed}]:{split.port}" if ip.version == 6 else f"{ip.compressed}:{split.port}"
    return f"{split.split_kind} {split.namespace}/{split.split} {where}"


def address(split: SplitPort) -> Addr:
    ip = ipaddress.ip_address(split.cluster_ip)
    return Addr(ip.version, ip.compressed, split.port)


def address_of_key(key: tuple[str, int, str]) -> Addr:
    """The address of a SplitPort.key (its ip is canonical text already)."""
    ip, port, _protocol = key
    return Addr(6 if ":" in ip else 4, ip, port)


def image(split: SplitPort) -> SplitImage:
    """Raises SplitTooLarge (message: owner, field, limit) when the split does not fit the maps."""
    who = owner(split)
    if len(split.backends) > limits.KS_MAX_BACKENDS:
        raise SplitTooLarge(f"{who}: backends: {len(split.backends)} backends (including the root "
                            f"when its own endpoints take the traffic), the eBPF dataplane holds "
                            f"at most {limits.KS_MAX_BACKENDS}")
    choices = split.choices
    if len(choices) > limits.KS_MAX_SLOTS:
        raise SplitTooLarge(f"{who}: endpoints: {len(split.endpoints)} endpoints and {len(split.refused)} "
                            f"refused shares, the eBPF dataplane holds at most {limits.KS_MAX_SLOTS}")
    names = [b.service for b in split.backends]
    backends = tuple(
        BackendImage(_fit(b.service, limits.KS_NAME_LEN, "backend", who), b.weight, _share(b.share),
                     b.resolved, b.terminating)
        for b in split.backends)
    meta = MetaImage(_fit(split.namespace, limits.KS_NAME_LEN, "namespace", who),
                     _fit(split.service, limits.KS_NAME_LEN, "service", who),
                     _fit(split.split, limits.KS_SPLIT_NAME_LEN, "name", who),
                     _fit(split.split_kind, limits.KS_KIND_LEN, "kind", who), backends)
    lasts = thresholds.bounds([c.share for c in choices])
    slots = tuple(_slot(last, c, split.family, names, who) for last, c in zip(lasts, choices))
    return SplitImage(address(split), slots, meta)


def _slot(last: int, choice: Choice, family: int, names: list[str], who: str) -> SlotImage:
    if isinstance(choice, RefusedShare):
        backend = names.index(choice.backend) if choice.backend in names else limits.KS_NO_BACKEND
        return SlotImage(last, "::" if family == 6 else "0.0.0.0", 0, backend, True)
    return SlotImage(last, choice.endpoint.ip, choice.endpoint.port, _backend_index(names, choice.backend, who))


@dataclass(frozen=True, slots=True)
class Rejected:
    """A split port that does not fit the maps: skipped, its kernel state (if any) kept."""
    key: Addr
    message: str


def image_or_rejected(split: SplitPort) -> SplitImage | Rejected:
    """One bad split must not block the others: a SplitTooLarge becomes a Rejected."""
    try:
        return image(split)
    except SplitTooLarge as exc:
        return Rejected(address(split), f"{exc}; not programmed, the kernel keeps its previous "
                                        f"state for this address (if any)")


def _backend_index(names: list[str], backend: str, owner: str) -> int:
    try:
        return names.index(backend)
    except ValueError:
        raise SplitTooLarge(f"{owner}: endpoint of backend {backend!r} not among its backends") from None


# --- planning -------------------------------------------------------------------------------

def plan(desired: Iterable[SplitImage], installed: Mapping[Addr, Installed],
         keep: Iterable[Addr] = (), only: Collection[Addr] | None = None) -> Plan:
    """`keep`: addresses left exactly as installed (rejected splits keep their last good state);
    they are neither written nor removed nor counted.
    `only`: plan these addresses alone (the split ports that changed; `desired` holds their
    images, an address without one is removed); every other installed split stays as it is."""
    wanted = {img.key: img for img in desired}
    ops: list[Op] = []
    written = removed = unchanged = 0
    # With `only`, every step below is proportional to the planned split ports, not to all.
    scope = installed if only is None else {k: installed[k] for k in only if k in installed}
    result: dict[Addr, Installed] = {}

    kept = {key for key in keep if key in scope and key not in wanted}
    for key in kept:
        result[key] = installed[key]
    dropped = sorted(set(scope) - set(wanted) - kept)
    for key in dropped:
        ops += _remove_ops(installed[key])
        removed += 1

    free = _free_ids(installed)
    for key, img in wanted.items():          # desired order: no sort of 10,000 keys per sync
        old = installed.get(key)
        if old is not None and (old.image is img or old.image == img):
            # Keep the desired image, not the equal one read back from the kernel: both would
            # otherwise stay in memory (10,000 ports, ~10 MiB) until the split changes.
            result[key] = old if old.image is img else Installed(img, old.split_id, old.table)
            unchanged += 1
            continue
        split_id = old.split_id if old is not None else next(free)
        new_ops, new = _write_ops(img, split_id, old)
        ops += new_ops
        result[key] = new
        written += 1
    return Plan(tuple(ops), result, written, removed, unchanged, tuple(dropped))


def _free_ids(installed: Mapping[Addr, Installed]) -> Iterable[int]:
    # Ids of splits removed in this same plan stay out: their slots/meta deletes come later.
    # The ids in use are gathered on the first new split only (a generator body runs lazily).
    in_use = {inst.split_id for inst in installed.values()}
    for i in range(limits.KS_MAX_SPLITS):
        if i not in in_use:
            yield i
    raise SplitTooLarge(f"more than {limits.KS_MAX_SPLITS} split ports: the eBPF maps are full")


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


def with_orphans(p: Plan, slot_keys: Iterable[tuple[int, int]], meta_ids: Iterable[int]) -> list[Op]:
    """A full sync's operations: the plan's, then deletes of orphans (read before the plan is
    applied) that the plan does not delete itself."""
    planned = set(p.ops)
    return [*p.ops, *(op for op in orphan_ops(p.result, slot_keys, meta_ids) if op not in planned)]


def images(desired: Sequence[SplitPort]) -> list[SplitImage]:
    return [image(s) for s in desired]


# --- the config entry -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ConfigImage:
    schema: bytes                 # schema.fingerprint() of the agent that installed the programs
    split_uids: tuple[int, ...]   # empty: split every connect; else only these uids' connects


MAX_UID = (1 << 32) - 2           # (uid_t)-1 means "no uid"


def config_image(schema: bytes, split_uids: Iterable[int] = ()) -> ConfigImage:
    uids = tuple(sorted(set(int(u) for u in split_uids)))
    bad = [u for u in uids if not 0 <= u <= MAX_UID]
    if bad:
        raise ValueError(f"--split-uid: {bad[0]} is not a uid (0..{MAX_UID})")
    if len(uids) > limits.KS_MAX_SPLIT_UIDS:
        raise ValueError(f"--split-uid: {len(uids)} uids given, the eBPF dataplane holds at most "
                         f"{limits.KS_MAX_SPLIT_UIDS}")
    if len(schema) != limits.KS_SCHEMA_LEN:
        raise ValueError(f"schema fingerprint: {len(schema)} bytes, expected {limits.KS_SCHEMA_LEN}")
    return ConfigImage(schema, uids)
