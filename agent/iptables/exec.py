"""Thin executor for iptables: save, restore, backend detection. No planning here.

Rules are always applied with one `iptables-restore --noflush` per family, so a ruleset lands
whole or not at all. Commands that take the xtables lock (legacy backend) wait for it at most
`--wait` seconds; a restore that found the lock held says so in the log, and one that timed out
raises `XtablesLockHeld` having written nothing.
"""
from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator, Sequence

from kernsplit.agent.iptables import xlock
from kernsplit.agent.iptables.kinds import Family, IptablesBackend
from kernsplit.agent.netns import wrap_command

log = logging.getLogger("kernsplit.iptables")

# What iptables prints when `--wait N` ran out (xshared.c); its exit code (4) is shared with
# other resource problems.
_LOCK_BUSY = "holding the xtables lock"


class IptablesError(RuntimeError):
    """An iptables command failed; the message carries its stderr."""


class XtablesLockHeld(IptablesError):
    """The xtables lock stayed held past the wait bound: the command wrote nothing."""


def binary(tool: str, backend: IptablesBackend, family: Family) -> str:
    """e.g. binary("restore", NFT, V6) -> "ip6tables-nft-restore"."""
    base = "ip6tables" if family is Family.V6 else "iptables"
    suffix = "" if tool == "" else f"-{tool}"
    return f"{base}-{backend.value}{suffix}"


def _run(argv: Sequence[str], netns: str | os.PathLike | None, stdin: str | None = None,
         wait: int | None = None) -> str:
    cmd = wrap_command(argv, netns)
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise IptablesError(f"{argv[0]} not found: install the iptables package") from exc
    if proc.returncode != 0:
        where = f" in netns {netns}" if netns else ""
        if wait is not None and _LOCK_BUSY in proc.stderr:
            by = xlock.holder()
            raise XtablesLockHeld(f"{argv[0]}{where}: the xtables lock {xlock.path()} was still held"
                                  f"{f' by {by}' if by else ''} after {wait} s (--wait {wait}); "
                                  "nothing was written")
        raise IptablesError(f"{' '.join(argv)}{where} failed (exit {proc.returncode}): "
                            f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def save(netns: str | os.PathLike | None, backend: IptablesBackend, family: Family = Family.V4,
         table: str | None = None, counters: bool = False) -> str:
    argv = [binary("save", backend, family)]
    if table:
        argv += ["-t", table]
    if counters:
        argv.append("-c")
    return _run(argv, netns)


def save_lines(netns: str | os.PathLike | None, backend: IptablesBackend, family: Family = Family.V4,
               counters: bool = False) -> Iterator[str]:
    """`save`, line by line as iptables-save writes them: tens of thousands of rules are never
    held as one text. Raises IptablesError at the end when the command failed."""
    argv = [binary("save", backend, family), *(["-c"] if counters else [])]
    try:
        proc = subprocess.Popen(wrap_command(argv, netns), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError as exc:
        raise IptablesError(f"{argv[0]} not found: install the iptables package") from exc
    with proc:
        yield from proc.stdout
        stderr = proc.stderr.read()
    if proc.returncode != 0:
        where = f" in netns {netns}" if netns else ""
        raise IptablesError(f"{' '.join(argv)}{where} failed (exit {proc.returncode}): {stderr.strip()}")


def list_chain(netns: str | os.PathLike | None, backend: IptablesBackend, family: Family, table: str, chain: str,
               counters: bool = False, wait: int = xlock.DEFAULT_WAIT) -> str:
    """`iptables -t TABLE -S CHAIN [-v]`: one chain's rules (with `-c PKTS BYTES` when counters).
    iptables-legacy takes the xtables lock even to list: wait for it at most `wait` seconds."""
    argv = [binary("", backend, family), "--wait", str(wait), "-t", table, "-S", chain]
    if counters:
        argv.append("-v")
    return _run(argv, netns, wait=wait)


def restore(netns: str | os.PathLike | None, backend: IptablesBackend, family: Family, text: str,
            noflush: bool = True, wait: int = xlock.DEFAULT_WAIT, counters: bool = False) -> str | None:
    """Apply `text` in one iptables-restore. counters: honour `[pkts:bytes]` prefixes in `text`
    (iptables-restore --counters). wait: seconds to wait for the xtables lock (`--wait`; at least 1,
    as 0 would mean for ever to iptables); past them XtablesLockHeld is raised.

    Returns who held the xtables lock when the restore started (it then waited), else None."""
    if wait < 1:
        raise ValueError(f"xtables lock wait must be at least 1 second, not {wait}")
    argv = [binary("restore", backend, family), "--wait", str(wait)]
    if noflush:
        argv.append("--noflush")
    if counters:
        argv.append("--counters")
    # Only iptables-legacy takes the lock; iptables-nft accepts --wait and ignores it.
    held = xlock.holder() if backend is IptablesBackend.LEGACY else None
    if held:
        log.info("the xtables lock %s is held by %s: %s waits up to %d s for it", xlock.path(), held,
                 argv[0], wait)
    start = time.monotonic()
    _run(argv, netns, stdin=text, wait=wait)
    if held:
        log.info("%s got the xtables lock and applied its rules after %.1f s", argv[0], time.monotonic() - start)
    return held


def _has_rules(saved: str) -> bool:
    """True when an iptables-save text holds any rule or user chain (not only empty built-ins)."""
    for line in saved.splitlines():
        if line.startswith("-A "):
            return True
        if line.startswith(":") and line.split()[1] == "-":  # user chains have no policy
            return True
    return False


def detect_backend(netns: str | os.PathLike | None, family: Family = Family.V4) -> tuple[IptablesBackend, str]:
    """Pick the backend for a namespace, Istio-style, and say why.

    legacy when legacy rules already exist there (mixing backends makes both half-blind);
    else nft when it works; else legacy.
    """
    try:
        if _has_rules(save(netns, IptablesBackend.LEGACY, family)):
            return IptablesBackend.LEGACY, "legacy rules already present in this namespace"
    except IptablesError:
        pass
    try:
        save(netns, IptablesBackend.NFT, family)
        return IptablesBackend.NFT, "no legacy rules present and the nf_tables backend works"
    except IptablesError as exc:
        return IptablesBackend.LEGACY, f"nf_tables backend unusable ({exc}); falling back to legacy"
