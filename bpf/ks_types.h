/* kernsplit: the one schema shared by the BPF programs and the agent.
 *
 * Every map key and value lives here. Python reads them through BCC's compiled types; the ctypes
 * mirror in agent/dataplane/ebpf/abi.py (used when adopting pinned maps without compiling) is
 * checked field by field against BCC's by tests/kernel/test_ebpf_abi.py.
 *
 * Addresses and ports are stored in network byte order, as the sock_addr context holds them.
 * IPv4 uses addr[0] only; addr[1..3] are zero.
 */
#ifndef KS_TYPES_H
#define KS_TYPES_H

#define KS_MAX_SPLITS      16384   /* split ports (root ClusterIP:port) per node */
/* backends per split: Gateway API allows 16 backendRefs, and the model appends the root itself
 * (its own endpoints) when every weight is zero: 16 + 1. */
#define KS_MAX_BACKENDS    17
#define KS_SLOTS_LOG2      12
#define KS_MAX_SLOTS       (1 << KS_SLOTS_LOG2)  /* endpoints per split port */
#define KS_SLOT_ENTRIES    262144  /* all tables together, old and new during a flip */
#define KS_ORIGIN_ENTRIES  65536   /* LRU: sockets whose service address getpeername restores */
#define KS_NAME_LEN        64
#define KS_SPLIT_NAME_LEN  256
#define KS_KIND_LEN        16
#define KS_SCHEMA_LEN      32      /* sha256 */
#define KS_MAX_SPLIT_UIDS  8

/* ks_services key: a root service address as the application dialled it. */
struct ks_service_key {
	__u32 addr[4];
	__u16 port;
	__u8  family;    /* 4 or 6 */
	__u8  proto;     /* IPPROTO_TCP */
};

/* ks_services value: where the live endpoint table of a split port is. Written last (the flip). */
struct ks_service {
	__u32 split_id;  /* index of the split's counters and metadata */
	__u32 table;     /* id of the live table in ks_slots: split_id * 2 + generation */
	__u32 count;     /* slots in that table (>= 1; 0, never written, also refuses) */
	__u32 flags;
};

struct ks_slot_key {
	__u32 table;
	__u32 slot;
};

/* ks_slot.flags */
#define KS_SLOT_REFUSE     1       /* no endpoint: the connect fails with ECONNREFUSED */
/* ks_slot.backend of a refusal that belongs to no listed backend: not counted per backend */
#define KS_NO_BACKEND      0xffff

/* One share of a table: an endpoint, or a refusal (flags & KS_SLOT_REFUSE: addr and port are
 * zero). Slot i owns the random values (last[i-1], last[i]]; the last slot's `last` is
 * 0xffffffff, so the whole u32 space is covered exactly. A Gateway route's backendRef that cannot
 * serve keeps its weight as a refusal slot; a split port that nothing serves is one refusal slot. */
struct ks_slot {
	__u32 last;
	__u32 addr[4];
	__u16 port;
	__u16 backend;   /* index into the split's backends: counters and metadata */
	__u32 flags;
};

struct ks_backend_meta {
	char  name[KS_NAME_LEN];
	__u64 weight;        /* normalised weight as configured */
	__u64 share_num;     /* desired share = share_num / share_den */
	__u64 share_den;
	__u32 resolved;
	__u32 pad;
};

/* What `kernsplit show` needs while the agent is stopped: kept in a pinned map, not a file. */
struct ks_meta {
	char  ns[KS_NAME_LEN];
	char  service[KS_NAME_LEN];
	char  split[KS_SPLIT_NAME_LEN];
	char  kind[KS_KIND_LEN];
	__u32 nbackends;
	__u32 pad;
	struct ks_backend_meta backends[KS_MAX_BACKENDS];
};

/* ks_config[0]: what the agent tells the programs, and which schema this install was built from.
 *
 * `schema` must stay the FIRST field, KS_SCHEMA_LEN bytes, in every future version: a newer agent
 * reads it from an older install (after checking the map's value size) to decide whether the
 * pinned programs and maps can be adopted or must be replaced (agent/dataplane/ebpf/schema.py). */
struct ks_config {
	__u8  schema[KS_SCHEMA_LEN];
	/* Mesh-aware splitting: 0 = rewrite every connect; otherwise only connects made by one of
	 * uids[0..nuids) (the mesh proxy), so the app's own connect reaches its proxy unchanged and
	 * the proxy still sees the ClusterIP as SO_ORIGINAL_DST. */
	__u32 nuids;
	__u32 uids[KS_MAX_SPLIT_UIDS];
};

/* ---- Interception (proxy-init --mode ebpf) ------------------------------------------------
 * A pod is registered by proxy-init: one ks_pods entry keyed by the cookie of its network
 * namespace (getsockopt SO_NETNS_COOKIE in user space, bpf_get_netns_cookie in the programs).
 * A namespace without an entry is never intercepted. Ports here are in host byte order. */
#define KS_POD_PORT_RANGES 16      /* per list: redirected, ignored inbound, ignored outbound */
#define KS_POD_CIDRS       16      /* ignored subnets, both families */
#define KS_POD_ADDRS       8       /* the pod's own addresses: connects to them stay local */
#define KS_POD_NAME_LEN    128
#define KS_MAX_PODS        4096
#define KS_PAIR_ENTRIES    65536   /* LRU: redirected connects between connect() and accept */

/* ks_pod.flags */
#define KS_POD_UID   1             /* proxy_uid is set: its connects are not redirected */
#define KS_POD_GID   2             /* proxy_gid is set */
#define KS_POD_IPV6  4             /* IPv6 is intercepted too */

struct ks_port_range {
	__u16 first;
	__u16 last;                /* inclusive */
};

/* An address block: (addr & mask) == net. Network byte order; IPv4 uses word 0 only. */
struct ks_cidr {
	__u32 net[4];
	__u32 mask[4];
	__u8  family;              /* 4 or 6 */
	__u8  pad[3];
};

/* ks_pods value: the settings of one pod, as proxy-init's flags gave them. */
struct ks_pod {
	__u32 flags;
	__u32 proxy_uid;
	__u32 proxy_gid;
	__u16 inbound_port;
	__u16 outbound_port;
	__u8  nredirect;           /* 0: every inbound port is redirected */
	__u8  nin_ignore;
	__u8  nout_ignore;
	__u8  nsubnets;
	__u8  naddrs;
	__u8  pad[3];
	struct ks_port_range redirect[KS_POD_PORT_RANGES];
	struct ks_port_range in_ignore[KS_POD_PORT_RANGES];
	struct ks_port_range out_ignore[KS_POD_PORT_RANGES];
	struct ks_cidr subnets[KS_POD_CIDRS];
	struct ks_cidr addrs[KS_POD_ADDRS];
	char  netns[KS_POD_NAME_LEN];   /* how proxy-init was told the namespace: for `show --pods` */
};

/* ks_origin.flags */
#define KS_ORIGIN_REDIRECTED 1     /* the app's socket: connect() was sent to the proxy */
#define KS_ORIGIN_ACCEPTED   2     /* a socket the pod accepted: SO_ORIGINAL_DST answers from it */

/* Socket-local storage: where a connection was meant to go (network byte order). */
struct ks_origin {
	__u32 addr[4];
	__u16 port;
	__u8  family;              /* 4 or 6; 0: nothing saved */
	__u8  flags;
	__u32 pad;
	__u64 netns;               /* the pod's netns cookie */
};

/* ks_pairs key: the app socket's own address and port, which the proxy's accepted socket sees
 * as its peer. The netns cookie keeps pods apart (every pod has 127.0.0.1). */
struct ks_pair_key {
	__u64 netns;
	__u32 addr[4];
	__u16 port;                /* network byte order */
	__u8  family;
	__u8  pad[5];
};

/* ks_pod_addrs key: one of a registered pod's addresses. The tc program finds its pod by the
 * destination address: at tc ingress the netns cookie helper answers with the namespace of the
 * sending socket when the sender is on the same node (skb->sk is still set), not the pod's. */
struct ks_addr_key {
	__u32 addr[4];
	__u8  family;
	__u8  pad[3];
};

/* ks_pod_counters value (per CPU): connections intercepted in one pod. */
struct ks_pod_counters {
	__u64 outbound;            /* connect()s sent to the proxy's outbound port */
	__u64 inbound;             /* connection attempts (SYNs) steered to the inbound port */
};

#endif
