"""The xtables lock: which file it is, and who holds it now (read from /proc/locks, never taken).

iptables-legacy serialises its writers with flock() on this file; iptables-nft does not use it.
Without `--wait`, iptables-legacy-restore waits for it for ever, silently; with `--wait N` it gives
up after N seconds. Looking at /proc/locks before a restore tells whether that restore is about to
wait, and on whom, without ever holding the lock ourselves (which would delay kube-proxy).
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_PATH = "/run/xtables.lock"      # iptables' XT_LOCK_NAME
ENV = "XTABLES_LOCKFILE"                # iptables' own override of the path
DEFAULT_WAIT = 5                        # seconds a restore may wait for it before the sync fails
PROC_LOCKS = Path("/proc/locks")


def path() -> str:
    """The lock file iptables uses from this process's environment and mount namespace
    (`nsenter --net` keeps both, so it is the one the commands we run take)."""
    return os.environ.get(ENV) or DEFAULT_PATH


def holders_in(proc_locks: str, dev: int, inode: int) -> list[int]:
    """Pids holding a lock on the file (dev, inode), from the text of /proc/locks. Pure.

    Lines look like `1: FLOCK  ADVISORY  WRITE 4242 00:1a:1234 0 EOF` (device in hex); waiters
    are listed as `1: -> FLOCK ...` and do not hold it."""
    want = f"{os.major(dev):02x}:{os.minor(dev):02x}:{inode}"
    found = []
    for line in proc_locks.splitlines():
        words = line.split()
        if len(words) >= 6 and words[1] != "->" and words[5] == want:
            found.append(int(words[4]))
    return found


def holder(lock: str | None = None) -> str | None:
    """Who holds the lock now ("pid 4242 (kube-proxy)"), or None when it is free (or cannot be
    told: no lock file yet, /proc/locks unreadable)."""
    lock = lock or path()
    try:
        st = os.stat(lock)
        pids = holders_in(PROC_LOCKS.read_text(), st.st_dev, st.st_ino)
    except (OSError, ValueError):
        return None
    if not pids:
        return None
    pid = pids[0]
    if pid <= 0:                       # not visible from this pid namespace
        return "a process in another pid namespace"
    try:
        return f"pid {pid} ({Path(f'/proc/{pid}/comm').read_text().strip()})"
    except OSError:
        return f"pid {pid}"
