/* kernsplit maps (BCC declarations). Key and value types: ks_types.h. All are pinned by the
 * loader under the bpffs directory, so they outlive the agent. */
#ifndef KS_MAPS_H
#define KS_MAPS_H
#include "ks_types.h"

BPF_HASH(ks_services, struct ks_service_key, struct ks_service, KS_MAX_SPLITS);
/* Tables come and go with splits; allocate on demand rather than reserve the worst case. */
BPF_F_TABLE("hash", struct ks_slot_key, struct ks_slot, ks_slots, KS_SLOT_ENTRIES, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", u32, struct ks_meta, ks_meta, KS_MAX_SPLITS, BPF_F_NO_PREALLOC);
/* New connections per (split, backend): per-CPU, so concurrent connects never contend. */
BPF_PERCPU_ARRAY(ks_counters, u64, KS_MAX_SPLITS * KS_MAX_BACKENDS);
/* socket cookie -> service address dialled, for getpeername. LRU: closed sockets age out. */
BPF_TABLE("lru_hash", u64, struct ks_service_key, ks_origins, KS_ORIGIN_ENTRIES);
/* One entry: settings and schema fingerprint (struct ks_config). */
BPF_ARRAY(ks_config, struct ks_config, 1);

/* Interception: pod settings by netns cookie (written by proxy-init), what each intercepted
 * socket was meant for (socket-local storage: dies with the socket, needs no LRU), redirected
 * connects waiting for the proxy's accept, and per-pod counters. */
BPF_F_TABLE("hash", u64, struct ks_pod, ks_pods, KS_MAX_PODS, BPF_F_NO_PREALLOC);
BPF_SK_STORAGE(ks_sk_origins, struct ks_origin);
BPF_TABLE("lru_hash", struct ks_pair_key, struct ks_origin, ks_pairs, KS_PAIR_ENTRIES);
BPF_F_TABLE("hash", struct ks_addr_key, u64, ks_pod_addrs, KS_MAX_PODS * KS_POD_ADDRS, BPF_F_NO_PREALLOC);
BPF_PERCPU_HASH(ks_pod_counters, u64, struct ks_pod_counters, KS_MAX_PODS);

#endif
