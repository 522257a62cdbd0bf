/* kernsplit: weighted endpoint selection shared by the connect hooks.
 *
 * BCC rewrites map method calls (ks_slots.lookup(...)) only in the text it is handed, not in
 * #included files, so the loader compiles lb.c, sock_connect.c and sock_getpeername.c as one
 * text in that order (agent/dataplane/ebpf/loader.py: SOURCES). Only ks_types.h/ks_maps.h,
 * which hold declarations, are #included. */
#include "ks_maps.h"

#define KS_IPPROTO_TCP 6
#define KS_ECONNREFUSED 111

enum lb_verdict { LB_PASS = 0, LB_REWRITE = 1, LB_REFUSE = 2 };

/* First slot whose `last` >= r: binary search over the table's cumulative bounds, O(log n) map
 * lookups, bounded for the verifier by KS_SLOTS_LOG2 + 1 steps (a bounded loop, kernel >= 5.3:
 * not unrolled, so the program stays small). */
static __always_inline struct ks_slot *lb_search(__u32 table, __u32 count, __u32 r)
{
	__u32 lo = 0, hi = count - 1;
	struct ks_slot_key k = { .table = table };

	for (int step = 0; step < KS_SLOTS_LOG2 + 1; step++) {
		if (lo >= hi)
			break;
		__u32 mid = lo + (hi - lo) / 2;
		k.slot = mid;
		struct ks_slot *s = ks_slots.lookup(&k);
		if (!s)
			return 0;
		if (s->last >= r)
			hi = mid;
		else
			lo = mid + 1;
	}
	k.slot = lo;
	return ks_slots.lookup(&k);
}

static __always_inline void lb_count(__u32 split_id, __u16 backend)
{
	if (split_id >= KS_MAX_SPLITS || backend >= KS_MAX_BACKENDS)
		return;
	int idx = split_id * KS_MAX_BACKENDS + backend;
	u64 *n = ks_counters.lookup(&idx);
	if (n)
		*n += 1;
}

/* Is this connect one we split? Every connect unless split uids are configured; then only the
 * mesh proxy's (bpf_get_current_uid_gid: the task calling connect()). Asked only for connects
 * to a split's address, so all other connects pay nothing for it. */
static __always_inline int lb_uid_selected(void)
{
	int zero = 0;
	struct ks_config *cfg = ks_config.lookup(&zero);
	if (!cfg || cfg->nuids == 0)
		return 1;
	__u32 uid = (__u32)bpf_get_current_uid_gid();
	for (int i = 0; i < KS_MAX_SPLIT_UIDS; i++) {
		if (i >= cfg->nuids)
			break;
		if (cfg->uids[i] == uid)
			return 1;
	}
	return 0;
}

/* Decide for one connect: pass (not a split of ours), refuse (the chosen slot is a refusal), or
 * rewrite to *out. */
static __always_inline int lb_choose(struct ks_service_key *key, struct ks_slot *out)
{
	struct ks_service *svc = ks_services.lookup(key);
	if (!svc || !lb_uid_selected())
		return LB_PASS;
	if (svc->count == 0)
		return LB_REFUSE;
	struct ks_slot *s = lb_search(svc->table, svc->count, bpf_get_prandom_u32());
	if (!s)
		return LB_PASS;   /* torn state cannot happen (flip is last); fail open, never hang */
	lb_count(svc->split_id, s->backend);
	if (s->flags & KS_SLOT_REFUSE)
		return LB_REFUSE; /* a refused share, chosen by weight like an endpoint */
	__builtin_memcpy(out, s, sizeof(*out));
	return LB_REWRITE;
}

/* Remember what the application dialled, for getpeername. */
static __always_inline void lb_remember(void *ctx, struct ks_service_key *key)
{
	u64 cookie = bpf_get_socket_cookie(ctx);
	ks_origins.update(&cookie, key);
}

/* connect() fails with ECONNREFUSED at once: return 0 (reject) with the error set explicitly,
 * instead of the EPERM a bare reject gives (bpf_set_retval, kernel >= 5.18). */
static __always_inline int lb_refuse(void)
{
	bpf_set_retval(-KS_ECONNREFUSED);
	return 0;
}
