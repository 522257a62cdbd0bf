/* tc ingress on the pod's interfaces (attached by proxy-init inside the pod's namespace): a TCP
 * connection arriving for a port that is not ignored is handed to the proxy's inbound listener
 * with bpf_sk_assign. The pod is found by the destination address (ks_pod_addrs, see
 * ks_types.h), and its entry must still be in ks_pods. Nothing in the packet is rewritten: the accepted socket's local address is
 * the one the client asked for, which is what SO_ORIGINAL_DST then answers (intercept_sockops.c).
 * Compiled after intercept.c, in one text (see lb.c). */
#include "ks_maps.h"
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>

#define KS_TC_ACT_OK      0
#define KS_TC_ACT_SHOT    2
#define KS_ETH_HLEN       14
#define KS_ETH_P_IP       0x0800
#define KS_ETH_P_IPV6     0x86DD
#define KS_TCP_LISTEN     10
#define KS_TCP_FLAG_SYN   0x02
#define KS_TCP_FLAG_ACK   0x10

struct ic_packet {
	struct bpf_sock_tuple tuple;
	__u32 saddr[4];            /* source, in ks_cidr layout (IPv4 in word 0) */
	struct ks_addr_key dst;
	__u8  family;
	__u8  tcp_flags;
};

/* Read the IP and TCP headers (no options or extension headers: anything else passes). */
static __always_inline int ic_parse(struct __sk_buff *skb, struct ic_packet *p)
{
	__u32 off;
	__u8 proto;
	if (skb->protocol == bpf_htons(KS_ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, KS_ETH_HLEN, &ip, sizeof(ip)) < 0 || ip.protocol != KS_IPPROTO_TCP)
			return 0;
		if (ip.frag_off & bpf_htons(0x1fff))
			return 0;          /* a later fragment: no TCP header */
		p->tuple.ipv4.saddr = ip.saddr;
		p->tuple.ipv4.daddr = ip.daddr;
		p->saddr[0] = ip.saddr;
		p->dst.addr[0] = ip.daddr;
		p->family = 4;
		off = KS_ETH_HLEN + ip.ihl * 4;
	} else if (skb->protocol == bpf_htons(KS_ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, KS_ETH_HLEN, &ip6, sizeof(ip6)) < 0 || ip6.nexthdr != KS_IPPROTO_TCP)
			return 0;
		__builtin_memcpy(p->tuple.ipv6.saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->tuple.ipv6.daddr, &ip6.daddr, 16);
		__builtin_memcpy(p->saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->dst.addr, &ip6.daddr, 16);
		p->family = 6;
		off = KS_ETH_HLEN + sizeof(ip6);
	} else {
		return 0;
	}
	p->dst.family = p->family;
	__u16 ports[2];
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0 ||
	    bpf_skb_load_bytes(skb, off + 13, &p->tcp_flags, 1) < 0)
		return 0;
	if (p->family == 4) {
		p->tuple.ipv4.sport = ports[0];
		p->tuple.ipv4.dport = ports[1];
	} else {
		p->tuple.ipv6.sport = ports[0];
		p->tuple.ipv6.dport = ports[1];
	}
	return 1;
}

/* The socket for the packet's tuple: established or a request first, else a listener. */
static __always_inline struct bpf_sock *ic_lookup(struct __sk_buff *skb, struct ic_packet *p)
{
	if (p->family == 4)
		return bpf_skc_lookup_tcp(skb, &p->tuple, sizeof(p->tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	return bpf_skc_lookup_tcp(skb, &p->tuple, sizeof(p->tuple.ipv6), BPF_F_CURRENT_NETNS, 0);
}

/* A packet of a connection the pod already has (established, or a handshake under way) goes its
 * usual way: only a packet no socket expects is steered (a SYN, or the ACK of a SYN cookie). */
static __always_inline int ic_has_connection(struct __sk_buff *skb, struct ic_packet *p)
{
	if ((p->tcp_flags & KS_TCP_FLAG_SYN) && !(p->tcp_flags & KS_TCP_FLAG_ACK))
		return 0;
	struct bpf_sock *sk = ic_lookup(skb, p);
	if (!sk)
		return 0;
	int established = sk->state != KS_TCP_LISTEN;
	bpf_sk_release(sk);
	return established;
}

static __always_inline int ic_steer(struct __sk_buff *skb, struct ic_packet *p, __u16 port)
{
	if (p->family == 4)
		p->tuple.ipv4.dport = bpf_htons(port);
	else
		p->tuple.ipv6.dport = bpf_htons(port);
	struct bpf_sock *sk = ic_lookup(skb, p);
	if (!sk)
		return -1;
	long err = sk->state == KS_TCP_LISTEN ? bpf_sk_assign(skb, sk, 0) : -1;
	bpf_sk_release(sk);
	return err;
}

int ks_ic_ingress(struct __sk_buff *skb)
{
	struct ic_packet p = {};
	if (!ic_parse(skb, &p))
		return KS_TC_ACT_OK;
	u64 *owner = ks_pod_addrs.lookup(&p.dst);
	if (!owner)
		return KS_TC_ACT_OK;
	u64 cookie = *owner;
	struct ks_pod *pod = ic_pod(cookie);
	if (!pod)
		return KS_TC_ACT_OK;
	__u16 dport = bpf_ntohs(p.family == 4 ? p.tuple.ipv4.dport : p.tuple.ipv6.dport);
	if (!ic_inbound_wanted(pod, p.saddr, p.family, dport) || ic_has_connection(skb, &p))
		return KS_TC_ACT_OK;
	int syn = (p.tcp_flags & KS_TCP_FLAG_SYN) && !(p.tcp_flags & KS_TCP_FLAG_ACK);
	if (ic_steer(skb, &p, pod->inbound_port) < 0)
		/* No inbound listener yet (the proxy is starting): drop, so that the client's SYN is
		 * retried rather than delivered to the application around the proxy. */
		return KS_TC_ACT_SHOT;
	if (syn)
		ic_count(cookie, 1);
	return KS_TC_ACT_OK;
}
