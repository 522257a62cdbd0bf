"""Thin executor for iptables: save, restore, backend detection. No planning here.

Rules are always applied with one `iptables-restore --noflush` per family, so a ruleset lands
whole or not at all.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from kernsplit.agent.iptables.kinds import Family, IptablesBackend
from kernsplit.agent.netns import wrap_command


class IptablesError(RuntimeError):
    """An iptables command failed; the message carries its stderr."""


def binary(tool: str, backend: IptablesBackend, family: Family) -> str:
    """e.g. binary("restore", NFT, V6) -> "ip6tables-nft-restore"."""
    base = "ip6tables" if family is Family.V6 else "iptables"
    suffix = "" if tool == "" else f"-{tool}"
    return f"{base}-{backend.value}{suffix}"


def _run(argv: Sequence[str], netns: str | os.PathLike | None, stdin: str | None = None) -> str:
    cmd = wrap_command(argv, netns)
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise IptablesError(f"{argv[0]} not found: install the iptables package") from exc
    if proc.returncode != 0:
        where = f" in netns {netns}" if netns else ""
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


def list_chain(netns: str | os.PathLike | None, backend: IptablesBackend, family: Family, table: str, chain: str,
               counters: bool = False) -> str:
    """`iptables -t TABLE -S CHAIN [-v]`: one chain's rules (with `-c PKTS BYTES` when counters)."""
    argv = [binary("", backend, family), "-t", table, "-S", chain]
    if counters:
        argv.append("-v")
    return _run(argv, netns)


def restore(netns: str | os.PathLike | None, backend: IptablesBackend, family: Family, text: str,
            noflush: bool = True, wait: bool = False, counters: bool = False) -> None:
    """counters: honour `[pkts:bytes]` prefixes in `text` (iptables-restore --counters)."""
    argv = [binary("restore", backend, family)]
    if noflush:
        argv.append("--noflush")
    if counters:
        argv.append("--counters")
    if wait:
        argv.append("--wait")
    _run(argv, netns, stdin=text)


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
