/* cgroup/connect4, cgroup/connect6: an application's connect() from a registered pod goes to
 * the proxy's outbound port on loopback; what it asked for is kept in the socket's local
 * storage. cgroup/getpeername4/6 show the application that address again, as REDIRECT's NAT
 * would. Compiled after intercept.c, in one text (see lb.c). */
#include "ks_maps.h"

/* Save the original destination on the socket; only a socket that has it is redirected, so a
 * proxy always finds what it asks SO_ORIGINAL_DST for. */
static __always_inline int ic_save(struct bpf_sock_addr *ctx, struct ks_origin *o, u64 cookie)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 0;
	struct ks_origin *saved = ks_sk_origins.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!saved)
		return 0;
	o->flags = KS_ORIGIN_REDIRECTED;
	o->netns = cookie;
	__builtin_memcpy(saved, o, sizeof(*saved));
	ic_count(cookie, 0);
	return 1;
}

/* The pod a TCP connect() comes from, or 0 when its namespace is not registered. */
static __always_inline struct ks_pod *ic_connecting_pod(struct bpf_sock_addr *ctx, u64 *cookie)
{
	if (ctx->protocol != KS_IPPROTO_TCP)
		return 0;
	*cookie = bpf_get_netns_cookie(ctx);
	return ic_pod(*cookie);
}

int ks_ic_connect4(struct bpf_sock_addr *ctx)
{
	u64 cookie = 0;
	struct ks_pod *pod = ic_connecting_pod(ctx, &cookie);
	if (!pod)
		return 1;
	struct ks_origin o = {};
	o.addr[0] = ctx->user_ip4;
	o.port = ctx->user_port;
	o.family = 4;
	if (!ic_outbound_wanted(pod, &o) || !ic_save(ctx, &o, cookie))
		return 1;
	ctx->user_ip4 = bpf_htonl(0x7f000001);
	ctx->user_port = bpf_htons(pod->outbound_port);
	return 1;
}

int ks_ic_connect6(struct bpf_sock_addr *ctx)
{
	u64 cookie = 0;
	struct ks_pod *pod = ic_connecting_pod(ctx, &cookie);
	if (!pod)
		return 1;
	struct ks_origin o = {};
	/* An IPv4-mapped address (a dual-stack socket dialling IPv4) is IPv4: connect4 never runs
	 * for it, so the IPv4 rules apply here and the proxy reads it with SOL_IP. */
	int mapped = ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 &&
		     ctx->user_ip6[2] == bpf_htonl(0xffff);
	if (mapped) {
		o.addr[0] = ctx->user_ip6[3];
		o.family = 4;
	} else {
		o.addr[0] = ctx->user_ip6[0];
		o.addr[1] = ctx->user_ip6[1];
		o.addr[2] = ctx->user_ip6[2];
		o.addr[3] = ctx->user_ip6[3];
		o.family = 6;
	}
	o.port = ctx->user_port;
	if (!ic_outbound_wanted(pod, &o) || !ic_save(ctx, &o, cookie))
		return 1;
	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	ctx->user_ip6[2] = mapped ? bpf_htonl(0xffff) : 0;
	ctx->user_ip6[3] = mapped ? bpf_htonl(0x7f000001) : bpf_htonl(1);
	ctx->user_port = bpf_htons(pod->outbound_port);
	return 1;
}

static __always_inline struct ks_origin *ic_redirected(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 0;
	struct ks_origin *o = ks_sk_origins.sk_storage_get(sk, 0, 0);
	return o && (o->flags & KS_ORIGIN_REDIRECTED) ? o : 0;
}

int ks_ic_getpeername4(struct bpf_sock_addr *ctx)
{
	struct ks_origin *o = ic_redirected(ctx);
	if (o && o->family == 4) {
		ctx->user_ip4 = o->addr[0];
		ctx->user_port = o->port;
	}
	return 1;
}

int ks_ic_getpeername6(struct bpf_sock_addr *ctx)
{
	struct ks_origin *o = ic_redirected(ctx);
	if (!o)
		return 1;
	if (o->family == 4) {          /* a dual-stack socket that dialled an IPv4-mapped address */
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = o->addr[0];
	} else {
		ctx->user_ip6[0] = o->addr[0];
		ctx->user_ip6[1] = o->addr[1];
		ctx->user_ip6[2] = o->addr[2];
		ctx->user_ip6[3] = o->addr[3];
	}
	ctx->user_port = o->port;
	return 1;
}
