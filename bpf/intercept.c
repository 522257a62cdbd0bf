/* kernsplit interception: what the interception programs share (compiled after lb.c, in one text;
 * see lb.c). A pod is intercepted only when proxy-init registered its network namespace in
 * ks_pods; every other namespace passes untouched, whatever cgroup the programs are attached to. */
#include "ks_maps.h"

#define KS_SOL_IP          0
#define KS_SOL_IPV6        41
#define KS_SO_ORIGINAL_DST 80      /* SOL_IP and SOL_IPV6 (IP6T_SO_ORIGINAL_DST) alike */
#define KS_AF_INET         2
#define KS_AF_INET6        10

static __always_inline struct ks_pod *ic_pod(u64 cookie)
{
	return ks_pods.lookup(&cookie);
}

/* The loops over a pod's lists are fully unrolled and have no data-dependent exit: every access
 * is then at a constant offset, and there is no loop for the verifier to bound. Written as loops
 * that stop at the list's length, LLVM turns them into a rotated loop with a walking pointer that
 * the verifier of 6.1 (Debian 12's kernel) cannot bound, and it refuses the programs ("invalid
 * access to map value", "sequence of jumps is too complex"); 6.18's accepts either form. */
static __always_inline int ic_in_ranges(const struct ks_port_range *r, __u8 n, __u16 port)
{
	int found = 0;
#pragma clang loop unroll(full)
	for (int i = 0; i < KS_POD_PORT_RANGES; i++)
		if (i < n && port >= r[i].first && port <= r[i].last)
			found = 1;
	return found;
}

/* addr (network byte order, 4 words; IPv4 in word 0) inside one of the first n blocks? `max`:
 * the array's length, a constant after inlining. */
static __always_inline int ic_in_cidrs(const struct ks_cidr *c, __u8 n, int max, const __u32 *addr,
				       __u8 family)
{
	int found = 0;
#pragma clang loop unroll(full)
	for (int i = 0; i < max; i++)
		if (i < n && c[i].family == family &&
		    (addr[0] & c[i].mask[0]) == c[i].net[0] && (addr[1] & c[i].mask[1]) == c[i].net[1] &&
		    (addr[2] & c[i].mask[2]) == c[i].net[2] && (addr[3] & c[i].mask[3]) == c[i].net[3])
			found = 1;
	return found;
}

/* Loopback, the unspecified address, or one of the pod's own: the connection never leaves the
 * pod, so it is not the outbound proxy's business (iptables' `-o lo RETURN`). */
static __always_inline int ic_local(const struct ks_pod *pod, const __u32 *addr, __u8 family)
{
	if (family == 4) {
		__u32 a = bpf_ntohl(addr[0]);
		if ((a >> 24) == 127 || a == 0)
			return 1;
	} else if (addr[0] == 0 && addr[1] == 0 && addr[2] == 0 &&
		   (addr[3] == 0 || addr[3] == bpf_htonl(1))) {
		return 1;
	}
	return ic_in_cidrs(pod->addrs, pod->naddrs, KS_POD_ADDRS, addr, family);
}

/* The proxy's own connects are never redirected (iptables' --uid-owner / --gid-owner). */
static __always_inline int ic_proxy_identity(const struct ks_pod *pod)
{
	u64 ids = bpf_get_current_uid_gid();
	if ((pod->flags & KS_POD_UID) && (__u32)ids == pod->proxy_uid)
		return 1;
	if ((pod->flags & KS_POD_GID) && (__u32)(ids >> 32) == pod->proxy_gid)
		return 1;
	return 0;
}

/* Should this connect() from the pod go to the outbound proxy? */
static __always_inline int ic_outbound_wanted(const struct ks_pod *pod, const struct ks_origin *o)
{
	if (o->family == 6 && !(pod->flags & KS_POD_IPV6))
		return 0;
	if (ic_local(pod, o->addr, o->family) || ic_proxy_identity(pod))
		return 0;
	if (ic_in_cidrs(pod->subnets, pod->nsubnets, KS_POD_CIDRS, o->addr, o->family))
		return 0;
	return !ic_in_ranges(pod->out_ignore, pod->nout_ignore, bpf_ntohs(o->port));
}

/* Should a connection arriving at the pod for (source, port) go to the inbound proxy? */
static __always_inline int ic_inbound_wanted(const struct ks_pod *pod, const __u32 *saddr, __u8 family,
					     __u16 port)
{
	if (family == 6 && !(pod->flags & KS_POD_IPV6))
		return 0;
	if (pod->nredirect && !ic_in_ranges(pod->redirect, pod->nredirect, port))
		return 0;
	if (ic_in_ranges(pod->in_ignore, pod->nin_ignore, port))
		return 0;
	return !ic_in_cidrs(pod->subnets, pod->nsubnets, KS_POD_CIDRS, saddr, family);
}

static __always_inline void ic_count(u64 cookie, int inbound)
{
	struct ks_pod_counters *c = ks_pod_counters.lookup(&cookie);
	if (!c)
		return;          /* proxy-init creates the entry when it registers the pod */
	if (inbound)
		c->inbound += 1;
	else
		c->outbound += 1;
}
