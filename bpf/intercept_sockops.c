/* sockops and cgroup/getsockopt: hand the original destination from the application's socket to
 * the socket the proxy accepted, and answer SO_ORIGINAL_DST from it.
 *
 * The app's socket knows its origin from connect(); the proxy asks on the other end of the
 * loopback connection. When the app's SYN is about to leave (TCP_CONNECT, its port now chosen)
 * the origin is filed in ks_pairs under (netns, app address, app port); when the proxy side is
 * established (PASSIVE_ESTABLISHED, before accept() returns) it is moved into the accepted
 * socket's storage. A connection accepted from outside the pod gets its own local address, which
 * is what conntrack answers for a connection nothing rewrote (and the address the client asked
 * for, as the tc program steers without rewriting). Compiled after intercept.c (see lb.c). */
#include "ks_maps.h"

#define KS_SOCK_OPS_TCP_CONNECT_CB          3
#define KS_SOCK_OPS_PASSIVE_ESTABLISHED_CB  5

/* The address and port of one end of the connection. The verifier wants each context field read
 * at its own constant offset: the empty asm statements keep the compiler from merging the
 * branches' reads into one read through a computed pointer. */
static __always_inline void ic_local_end(struct bpf_sock_ops *ctx, struct ks_pair_key *k)
{
	if (ctx->family == KS_AF_INET) {
		k->family = 4;
		k->addr[0] = ctx->local_ip4;
		asm volatile("" ::: "memory");
	} else {
		k->family = 6;
		k->addr[0] = ctx->local_ip6[0];
		k->addr[1] = ctx->local_ip6[1];
		k->addr[2] = ctx->local_ip6[2];
		k->addr[3] = ctx->local_ip6[3];
	}
	k->port = bpf_htons((__u16)ctx->local_port);     /* host byte order in the context */
}

static __always_inline void ic_remote_end(struct bpf_sock_ops *ctx, struct ks_pair_key *k)
{
	if (ctx->family == KS_AF_INET) {
		k->family = 4;
		k->addr[0] = ctx->remote_ip4;
		asm volatile("" ::: "memory");
	} else {
		k->family = 6;
		k->addr[0] = ctx->remote_ip6[0];
		k->addr[1] = ctx->remote_ip6[1];
		k->addr[2] = ctx->remote_ip6[2];
		k->addr[3] = ctx->remote_ip6[3];
	}
	/* network byte order, but shifted into the upper half on little-endian hosts (a quirk the
	 * kernel keeps for compatibility); the lower half on big-endian ones */
	__u32 port = ctx->remote_port;
	k->port = port > 0xffff ? port >> 16 : port;
}

static __always_inline void ic_file_pair(struct bpf_sock_ops *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return;
	struct ks_origin *o = ks_sk_origins.sk_storage_get(sk, 0, 0);
	if (!o || !(o->flags & KS_ORIGIN_REDIRECTED))
		return;
	struct ks_pair_key k = {};
	k.netns = o->netns;
	ic_local_end(ctx, &k);
	ks_pairs.update(&k, o);
}

static __always_inline void ic_take_pair(struct bpf_sock_ops *ctx)
{
	u64 cookie = bpf_get_netns_cookie(ctx);
	if (!ic_pod(cookie))
		return;
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return;
	struct ks_origin *saved = ks_sk_origins.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!saved)
		return;
	struct ks_pair_key k = {};
	k.netns = cookie;
	ic_remote_end(ctx, &k);
	struct ks_origin *o = ks_pairs.lookup(&k);
	if (o) {
		__builtin_memcpy(saved, o, sizeof(*saved));
		ks_pairs.delete(&k);
	} else {
		struct ks_pair_key local = {};
		ic_local_end(ctx, &local);
		__builtin_memcpy(saved->addr, local.addr, sizeof(saved->addr));
		saved->port = local.port;
		saved->family = local.family;
		saved->netns = cookie;
	}
	saved->flags = KS_ORIGIN_ACCEPTED;
}

int ks_ic_sockops(struct bpf_sock_ops *ctx)
{
	if (ctx->op == KS_SOCK_OPS_TCP_CONNECT_CB)
		ic_file_pair(ctx);
	else if (ctx->op == KS_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		ic_take_pair(ctx);
	return 1;
}

/* struct sockaddr_in and sockaddr_in6 as SO_ORIGINAL_DST returns them */
struct ks_sockaddr4 {
	__u16 family;
	__u16 port;
	__u32 addr;
	__u8  zero[8];
};

struct ks_sockaddr6 {
	__u16 family;
	__u16 port;
	__u32 flowinfo;
	__u32 addr[4];
	__u32 scope_id;
};

int ks_ic_getsockopt(struct bpf_sockopt *ctx)
{
	if (ctx->optname != KS_SO_ORIGINAL_DST || (ctx->level != KS_SOL_IP && ctx->level != KS_SOL_IPV6))
		return 1;
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct ks_origin *o = ks_sk_origins.sk_storage_get(sk, 0, 0);
	if (!o)
		return 1;
	void *val = ctx->optval, *end = ctx->optval_end;
	if (ctx->level == KS_SOL_IP && o->family == 4) {
		struct ks_sockaddr4 *sin = val;
		if (val + sizeof(*sin) > end)
			return 1;
		__builtin_memset(sin, 0, sizeof(*sin));
		sin->family = KS_AF_INET;
		sin->port = o->port;
		sin->addr = o->addr[0];
		ctx->optlen = sizeof(*sin);
		ctx->retval = 0;
	} else if (ctx->level == KS_SOL_IPV6 && o->family == 6) {
		struct ks_sockaddr6 *sin6 = val;
		if (val + sizeof(*sin6) > end)
			return 1;
		__builtin_memset(sin6, 0, sizeof(*sin6));
		sin6->family = KS_AF_INET6;
		sin6->port = o->port;
		__builtin_memcpy(sin6->addr, o->addr, 16);
		ctx->optlen = sizeof(*sin6);
		ctx->retval = 0;
	}
	return 1;
}
