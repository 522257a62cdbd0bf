/* cgroup/connect4 and cgroup/connect6: rewrite a TCP connect to a split's ClusterIP:port to one
 * endpoint chosen by weight. */
/* Compiled after lb.c, in one text (see lb.c). */
#include "ks_maps.h"

int sock4_connect(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol != KS_IPPROTO_TCP)
		return 1;
	struct ks_service_key key = {};
	key.addr[0] = ctx->user_ip4;
	key.port = ctx->user_port;
	key.family = 4;
	key.proto = KS_IPPROTO_TCP;

	struct ks_slot s = {};
	int verdict = lb_choose(&key, &s);
	if (verdict == LB_REFUSE)
		return lb_refuse();
	if (verdict == LB_REWRITE) {
		ctx->user_ip4 = s.addr[0];
		ctx->user_port = s.port;
		lb_remember(ctx, &key);
	}
	return 1;
}

int sock6_connect(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol != KS_IPPROTO_TCP)
		return 1;
	struct ks_service_key key = {};
	key.addr[0] = ctx->user_ip6[0];
	key.addr[1] = ctx->user_ip6[1];
	key.addr[2] = ctx->user_ip6[2];
	key.addr[3] = ctx->user_ip6[3];
	key.port = ctx->user_port;
	key.family = 6;
	key.proto = KS_IPPROTO_TCP;

	struct ks_slot s = {};
	int verdict = lb_choose(&key, &s);
	if (verdict == LB_REFUSE)
		return lb_refuse();
	if (verdict == LB_REWRITE) {
		ctx->user_ip6[0] = s.addr[0];
		ctx->user_ip6[1] = s.addr[1];
		ctx->user_ip6[2] = s.addr[2];
		ctx->user_ip6[3] = s.addr[3];
		ctx->user_port = s.port;
		lb_remember(ctx, &key);
	}
	return 1;
}
