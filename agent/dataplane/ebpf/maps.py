"""The pinned maps as kernel state: read them back as plan images, apply planned operations,
read counters. Encoding between images (plan.py) and the C structs (abi.py) lives here."""
from __future__ import annotations

import ctypes as ct
import ipaddress
import socket
from fractions import Fraction
from pathlib import Path

from kernsplit.agent.dataplane.ebpf import abi, bpfsys, plan
from kernsplit.agent.dataplane.ebpf.pins import MAPS, Pins


def _addr_words(ip: str):
    return (ct.c_uint32 * 4).from_buffer_copy(ipaddress.ip_address(ip).packed.ljust(16, b"\0"))


def _addr_text(words, family: int) -> str:
    raw = bytes(words)
    return ipaddress.ip_address(raw[:4] if family == 4 else raw).compressed


def encode_key(key: plan.Addr) -> abi.ServiceKey:
    return abi.ServiceKey(_addr_words(key.ip), socket.htons(key.port), key.family, key.proto)


def decode_key(k: abi.ServiceKey) -> plan.Addr:
    return plan.Addr(k.family, _addr_text(k.addr, k.family), socket.ntohs(k.port), k.proto)


def encode_slot(s: plan.SlotImage) -> abi.Slot:
    return abi.Slot(s.last, _addr_words(s.ip), socket.htons(s.port), s.backend,
                    abi.KS_SLOT_REFUSE if s.refuse else 0)


def decode_slot(v: abi.Slot, family: int) -> plan.SlotImage:
    return plan.SlotImage(v.last, _addr_text(v.addr, family), socket.ntohs(v.port), v.backend,
                          bool(v.flags & abi.KS_SLOT_REFUSE))


# ks_backend_meta.resolved: 0 cannot serve, 1 ready endpoints, 2 terminating endpoints (last resort)
RESOLVED_TERMINATING = 2


def _resolved_code(b: plan.BackendImage) -> int:
    return RESOLVED_TERMINATING if b.resolved and b.terminating else int(b.resolved)


def encode_meta(m: plan.MetaImage) -> abi.Meta:
    out = abi.Meta(m.namespace.encode(), m.service.encode(), m.split.encode(), m.kind.encode(),
                   len(m.backends))
    for i, b in enumerate(m.backends):
        out.backends[i] = abi.BackendMeta(b.name.encode(), b.weight, b.share.numerator,
                                          b.share.denominator, _resolved_code(b))
    return out


def decode_meta(v: abi.Meta) -> plan.MetaImage:
    backends = tuple(
        plan.BackendImage(b.name.decode(), b.weight, Fraction(b.share_num, b.share_den or 1),
                          bool(b.resolved), b.resolved == RESOLVED_TERMINATING)
        for b in v.backends[:min(v.nbackends, abi.KS_MAX_BACKENDS)])
    return plan.MetaImage(v.ns.decode(), v.service.decode(), v.split.decode(), v.kind.decode(),
                          backends)


_NO_META = plan.MetaImage("", "", "", "", ())
_ZERO = ct.c_uint32(0)


def encode_config(c: plan.ConfigImage) -> abi.Config:
    out = abi.Config()
    ct.memmove(out.schema, c.schema, abi.KS_SCHEMA_LEN)
    out.nuids = len(c.split_uids)
    for i, uid in enumerate(c.split_uids):
        out.uids[i] = uid
    return out


def decode_config(v: abi.Config) -> plan.ConfigImage:
    return plan.ConfigImage(bytes(v.schema), tuple(v.uids[:min(v.nuids, abi.KS_MAX_SPLIT_UIDS)]))


def installed_schema(pins: Pins) -> bytes | None:
    """The schema fingerprint of the install under `pins`, or None when it has none we can read
    (no ks_config pin: an install older than the fingerprint; or a ks_config of another size)."""
    path = pins.map("ks_config")
    if not path.exists():
        return None
    cfg = bpfsys.Map(path, ct.c_uint32, abi.Config)
    try:
        if bpfsys.map_sizes(cfg.fd, path.name) != (ct.sizeof(ct.c_uint32), ct.sizeof(abi.Config)):
            return None
        value = cfg.lookup(_ZERO)
        return bytes(value.schema) if value is not None else None
    finally:
        cfg.close()


def _open(pins: Pins, name: str) -> bpfsys.Map:
    key_t, val_t = abi.MAP_TYPES[name]
    return bpfsys.Map(pins.map(name), key_t, val_t, per_cpu=name in abi.PER_CPU_MAPS)


def carry(old: Pins, new: Pins) -> list[str]:
    """Copy every entry of the maps still pinned under `old` into the same maps under `new`, an
    install of the same schema (same layouts) that is not live yet: split tables and their
    connection counters, socket origins, registered pods. ks_config is the new install's own.
    Returns the maps copied. ks_counters, an array of every (split, backend) slot, is copied
    only for the splits the old install lists."""
    copied = []
    for name in MAPS:
        if name == "ks_config" or not old.map(name).exists():
            continue
        src, dst = _open(old, name), _open(new, name)
        try:
            if name == "ks_counters":
                keys = [ct.c_int32(i * abi.KS_MAX_BACKENDS + b) for i in _split_ids(old)
                        for b in range(abi.KS_MAX_BACKENDS)]
            else:
                keys = src.keys()
            for key in keys:
                value = src.lookup(key)
                if value is not None:
                    dst.update(key, value)
        finally:
            src.close()
            dst.close()
        copied.append(name)
    return copied


def _split_ids(pins: Pins) -> set[int]:
    """Split ids in use under `pins`: in ks_services' entries and ks_meta's keys, either may be gone."""
    ids: set[int] = set()
    if pins.map("ks_services").exists():
        services = _open(pins, "ks_services")
        try:
            ids |= {v.split_id for v in map(services.lookup, services.keys()) if v is not None}
        finally:
            services.close()
    if pins.map("ks_meta").exists():
        metas = _open(pins, "ks_meta")
        try:
            ids |= {k.value for k in metas.keys()}
        finally:
            metas.close()
    return ids


class KernelMaps:
    """Open fds on our pinned maps (no BCC, no compilation)."""

    def __init__(self, pins: Pins):
        self.maps: dict[str, bpfsys.Map] = {}
        try:
            for name in MAPS:
                self.maps[name] = _open(pins, name)
        except BaseException:
            self.close()
            raise

    def held(self) -> dict[Path, int]:
        """Pin path -> our fd, for each map (to pin it again if its pin is removed)."""
        return {m.path: m.fd for m in self.maps.values()}

    def close(self) -> None:
        for m in self.maps.values():
            m.close()
        self.maps.clear()

    # --- reading -----------------------------------------------------------------------------

    def read_all(self) -> dict[plan.Addr, plan.Installed]:
        services, slots, metas = (self.maps[n] for n in ("ks_services", "ks_slots", "ks_meta"))
        out: dict[plan.Addr, plan.Installed] = {}
        for k in services.keys():
            svc = services.lookup(k)
            if svc is None:
                continue      # removed while we iterated
            addr = decode_key(k)
            found = []
            for i in range(svc.count):
                v = slots.lookup(abi.SlotKey(svc.table, i))
                # A missing slot reads as an impossible one, so the split compares unequal and
                # is rewritten whole.
                found.append(decode_slot(v, addr.family) if v is not None
                             else plan.SlotImage(-1, "", 0, 0))
            meta = metas.lookup(ct.c_uint32(svc.split_id))
            out[addr] = plan.Installed(
                plan.SplitImage(addr, tuple(found), decode_meta(meta) if meta is not None else _NO_META),
                svc.split_id, svc.table)
        return out

    def config(self) -> plan.ConfigImage:
        return decode_config(self.maps["ks_config"].lookup(_ZERO))

    def write_config(self, c: plan.ConfigImage) -> None:
        self.maps["ks_config"].update(_ZERO, encode_config(c))

    def fill(self) -> dict[str, tuple[int, int]]:
        """(entries in use, max entries) of each hash-like map: how close the node is to a limit."""
        found = {name: bpfsys.map_fill(m) for name, m in self.maps.items()}
        return {name: f for name, f in found.items() if f is not None}

    def slot_keys(self) -> list[tuple[int, int]]:
        return [(k.table, k.slot) for k in self.maps["ks_slots"].keys()]

    def meta_ids(self) -> list[int]:
        return [k.value for k in self.maps["ks_meta"].keys()]

    def counters(self, split_id: int, nbackends: int) -> list[int]:
        m = self.maps["ks_counters"]
        out = []
        for b in range(nbackends):
            per_cpu = m.lookup(ct.c_int32(split_id * abi.KS_MAX_BACKENDS + b))
            out.append(sum(per_cpu) if per_cpu is not None else 0)
        return out

    # --- writing -----------------------------------------------------------------------------

    def apply(self, ops) -> None:
        m = self.maps
        zeros = m["ks_counters"].value_type()
        for op in ops:
            match op:
                case plan.WriteSlot(table=t, slot=s, value=v):
                    m["ks_slots"].update(abi.SlotKey(t, s), encode_slot(v))
                case plan.WriteMeta(split_id=i, meta=meta):
                    m["ks_meta"].update(ct.c_uint32(i), encode_meta(meta))
                case plan.ResetCounters(split_id=i):
                    for b in range(abi.KS_MAX_BACKENDS):
                        m["ks_counters"].update(ct.c_int32(i * abi.KS_MAX_BACKENDS + b), zeros)
                case plan.WriteService(key=k, split_id=i, table=t, count=c):
                    m["ks_services"].update(encode_key(k), abi.Service(i, t, c, 0))
                case plan.DeleteService(key=k):
                    m["ks_services"].delete(encode_key(k))
                case plan.DeleteSlot(table=t, slot=s):
                    m["ks_slots"].delete(abi.SlotKey(t, s))
                case plan.DeleteMeta(split_id=i):
                    m["ks_meta"].delete(ct.c_uint32(i))
                case _:
                    raise TypeError(f"unknown map operation {op!r}")
