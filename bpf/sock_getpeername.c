/* cgroup/getpeername4 and cgroup/getpeername6: show the application the service address it
 * dialled, not the endpoint connect4/6 chose (as kube-proxy's DNAT would). */
/* Compiled after lb.c, in one text (see lb.c). */
#include "ks_maps.h"

int sock4_getpeername(struct bpf_sock_addr *ctx)
{
	u64 cookie = bpf_get_socket_cookie(ctx);
	struct ks_service_key *orig = ks_origins.lookup(&cookie);
	if (orig && orig->family == 4) {
		ctx->user_ip4 = orig->addr[0];
		ctx->user_port = orig->port;
	}
	return 1;
}

int sock6_getpeername(struct bpf_sock_addr *ctx)
{
	u64 cookie = bpf_get_socket_cookie(ctx);
	struct ks_service_key *orig = ks_origins.lookup(&cookie);
	if (orig && orig->family == 6) {
		ctx->user_ip6[0] = orig->addr[0];
		ctx->user_ip6[1] = orig->addr[1];
		ctx->user_ip6[2] = orig->addr[2];
		ctx->user_ip6[3] = orig->addr[3];
		ctx->user_port = orig->port;
	}
	return 1;
}
