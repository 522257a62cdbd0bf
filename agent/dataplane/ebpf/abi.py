"""ctypes mirrors of bpf/ks_types.h, for maps opened from their pins without compiling.

A restarted agent adopts pinned maps without recompiling, so it has no BCC module to take the
types from. These mirrors are checked field by field (names, offsets, sizes) against the compiled
object's BTF every time the loader compiles the programs (`alignment`: a mismatch stops the load
with an error naming the field), and by tests/kernel/test_ebpf_abi.py; keep them in step with the
header.
"""
from __future__ import annotations

import ctypes as ct

# The limits are part of the ABI (and of the schema fingerprint): re-exported here.
from kernsplit.agent.dataplane.ebpf.limits import (  # noqa: F401
    KS_KIND_LEN, KS_MAX_BACKENDS, KS_MAX_SLOTS, KS_MAX_SPLIT_UIDS, KS_MAX_SPLITS, KS_NAME_LEN,
    KS_NO_BACKEND, KS_SCHEMA_LEN, KS_SLOT_REFUSE, KS_SLOTS_LOG2, KS_SPLIT_NAME_LEN,
    KS_MAX_PODS, KS_PAIR_ENTRIES, KS_POD_ADDRS, KS_POD_CIDRS, KS_POD_GID, KS_POD_IPV6, KS_POD_NAME_LEN,
    KS_POD_PORT_RANGES, KS_POD_UID)


class ServiceKey(ct.Structure):
    _fields_ = [("addr", ct.c_uint32 * 4), ("port", ct.c_uint16), ("family", ct.c_uint8),
                ("proto", ct.c_uint8)]


class Service(ct.Structure):
    _fields_ = [("split_id", ct.c_uint32), ("table", ct.c_uint32), ("count", ct.c_uint32),
                ("flags", ct.c_uint32)]


class SlotKey(ct.Structure):
    _fields_ = [("table", ct.c_uint32), ("slot", ct.c_uint32)]


class Slot(ct.Structure):
    _fields_ = [("last", ct.c_uint32), ("addr", ct.c_uint32 * 4), ("port", ct.c_uint16),
                ("backend", ct.c_uint16), ("flags", ct.c_uint32)]


class BackendMeta(ct.Structure):
    _fields_ = [("name", ct.c_char * KS_NAME_LEN), ("weight", ct.c_uint64),
                ("share_num", ct.c_uint64), ("share_den", ct.c_uint64),
                ("resolved", ct.c_uint32), ("pad", ct.c_uint32)]


class Meta(ct.Structure):
    _fields_ = [("ns", ct.c_char * KS_NAME_LEN), ("service", ct.c_char * KS_NAME_LEN),
                ("split", ct.c_char * KS_SPLIT_NAME_LEN), ("kind", ct.c_char * KS_KIND_LEN),
                ("nbackends", ct.c_uint32), ("pad", ct.c_uint32),
                ("backends", BackendMeta * KS_MAX_BACKENDS)]


class Config(ct.Structure):
    # `schema` first, always (see bpf/ks_types.h): older and newer installs can be told apart.
    _fields_ = [("schema", ct.c_uint8 * KS_SCHEMA_LEN), ("nuids", ct.c_uint32),
                ("uids", ct.c_uint32 * KS_MAX_SPLIT_UIDS)]


class PortRange(ct.Structure):
    _fields_ = [("first", ct.c_uint16), ("last", ct.c_uint16)]


class Cidr(ct.Structure):
    _fields_ = [("net", ct.c_uint32 * 4), ("mask", ct.c_uint32 * 4), ("family", ct.c_uint8),
                ("pad", ct.c_uint8 * 3)]


class Pod(ct.Structure):
    _fields_ = [("flags", ct.c_uint32), ("proxy_uid", ct.c_uint32), ("proxy_gid", ct.c_uint32),
                ("inbound_port", ct.c_uint16), ("outbound_port", ct.c_uint16),
                ("nredirect", ct.c_uint8), ("nin_ignore", ct.c_uint8), ("nout_ignore", ct.c_uint8),
                ("nsubnets", ct.c_uint8), ("naddrs", ct.c_uint8), ("pad", ct.c_uint8 * 3),
                ("redirect", PortRange * KS_POD_PORT_RANGES), ("in_ignore", PortRange * KS_POD_PORT_RANGES),
                ("out_ignore", PortRange * KS_POD_PORT_RANGES), ("subnets", Cidr * KS_POD_CIDRS),
                ("addrs", Cidr * KS_POD_ADDRS), ("netns", ct.c_char * KS_POD_NAME_LEN)]


class Origin(ct.Structure):
    _fields_ = [("addr", ct.c_uint32 * 4), ("port", ct.c_uint16), ("family", ct.c_uint8),
                ("flags", ct.c_uint8), ("pad", ct.c_uint32), ("netns", ct.c_uint64)]


class PairKey(ct.Structure):
    _fields_ = [("netns", ct.c_uint64), ("addr", ct.c_uint32 * 4), ("port", ct.c_uint16),
                ("family", ct.c_uint8), ("pad", ct.c_uint8 * 5)]


class AddrKey(ct.Structure):
    _fields_ = [("addr", ct.c_uint32 * 4), ("family", ct.c_uint8), ("pad", ct.c_uint8 * 3)]


class PodCounters(ct.Structure):
    _fields_ = [("outbound", ct.c_uint64), ("inbound", ct.c_uint64)]


# map name -> (key type, value type); ks_counters and ks_pod_counters values are per CPU.
MAP_TYPES = {
    "ks_services": (ServiceKey, Service),
    "ks_slots": (SlotKey, Slot),
    "ks_meta": (ct.c_uint32, Meta),
    "ks_counters": (ct.c_int32, ct.c_uint64),
    "ks_origins": (ct.c_uint64, ServiceKey),
    "ks_config": (ct.c_uint32, Config),
    "ks_pods": (ct.c_uint64, Pod),
    "ks_pairs": (PairKey, Origin),
    "ks_pod_addrs": (AddrKey, ct.c_uint64),
    "ks_pod_counters": (ct.c_uint64, PodCounters),
}
PER_CPU_MAPS = ("ks_counters", "ks_pod_counters")
