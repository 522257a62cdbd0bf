"""The limits #defined in bpf/ks_types.h, as plain numbers (no ctypes: the pure planner uses them).

Checked against the compiled program by tests/kernel/test_ebpf_abi.py and, at load time, by
`alignment` (see abi.py).
"""
from __future__ import annotations

KS_MAX_SPLITS = 16384
KS_MAX_BACKENDS = 17      # 16 backendRefs + the root's own endpoints on fallback
KS_SLOTS_LOG2 = 12
KS_MAX_SLOTS = 1 << KS_SLOTS_LOG2
KS_NAME_LEN = 64
KS_SPLIT_NAME_LEN = 256
KS_KIND_LEN = 16
KS_SCHEMA_LEN = 32
KS_MAX_SPLIT_UIDS = 8
KS_SLOT_REFUSE = 1        # ks_slot.flags: a refusal, not an endpoint
KS_NO_BACKEND = 0xFFFF    # ks_slot.backend of a refusal counted against no listed backend
KS_POD_PORT_RANGES = 16   # interception: port ranges per list in a pod entry
KS_POD_CIDRS = 16         # ignored subnets per pod
KS_POD_ADDRS = 8          # a pod's own addresses
KS_POD_NAME_LEN = 128
KS_MAX_PODS = 4096
KS_PAIR_ENTRIES = 65536
KS_POD_UID = 1            # ks_pod.flags
KS_POD_GID = 2
KS_POD_IPV6 = 4
