"""Facts read from, and the one sysctl written to, the target network namespace (besides iptables).

Both go through a thread entering the namespace (`agent.netns.entered`): /proc/thread-self/net and
/proc/sys/net resolve to the namespace of the calling thread, so nothing outside it is read or
written.
"""
from __future__ import annotations

import os
from pathlib import Path

from kernsplit.agent.netns import entered

CLOSE_WAIT_SYSCTL = Path("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait")


def has_ipv6(netns: str | os.PathLike | None) -> bool:
    """True when an interface other than loopback has an IPv6 address (link-local counts).

    Only ::1 on lo means nothing can leave or arrive over IPv6, and loopback is never intercepted,
    so IPv6 rules would have nothing to do.
    """
    with entered(netns):
        try:
            text = Path("/proc/thread-self/net/if_inet6").read_text()
        except FileNotFoundError:      # kernel without IPv6, or IPv6 disabled at boot
            return False
    return any(line.split()[-1] != "lo" for line in text.splitlines() if line.strip())


def set_close_wait_timeout(netns: str | os.PathLike | None, seconds: int) -> None:
    """linkerd's --timeout-close-wait-secs: conntrack's CLOSE_WAIT timeout, a per-namespace sysctl."""
    with entered(netns):
        with open(CLOSE_WAIT_SYSCTL, "w") as f:
            f.write(f"{seconds}\n")

