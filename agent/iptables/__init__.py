"""iptables: the one place that runs iptables-save / iptables-restore (legacy or nft backend)."""
