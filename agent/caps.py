"""The Linux capabilities each kernsplit role needs, checked at start.

Without the check, a container started with one capability too few fails deep inside a tool:
iptables-save says "Permission denied (you must be root)" to a process that is root, and BCC says
"Need super-user privileges to run". The check names the missing capability and the reason.

The sets were measured by running each role with its capability bounding set cut down (README,
"Least privilege"): a role's requirements are the capabilities whose removal broke it.
"""
from __future__ import annotations

import ctypes
import errno
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Bit numbers from linux/capability.h.
NUMBERS = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}
# bpf(2)'s syscall number differs per architecture.
BPF_SYSCALL = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "s390x": 351, "ppc64le": 361}


@dataclass(frozen=True)
class Requirement:
    """One need, met by any of `any_of` (the kernel accepts CAP_SYS_ADMIN where CAP_BPF was split
    out of it), with the reason given to the user."""
    any_of: tuple[str, ...]
    why: str

    def met_by(self, have: frozenset[str]) -> bool:
        return any(cap in have for cap in self.any_of)

    def __str__(self) -> str:
        return " or ".join(self.any_of)


class NotPermitted(RuntimeError):
    """A role lacks a capability it needs, or a syscall it needs is filtered; the message names
    which, and how to grant it."""


NET_ADMIN_TABLES = Requirement(("CAP_NET_ADMIN",), "to write the nat and filter tables")
NET_RAW_LEGACY = Requirement(("CAP_NET_RAW",), "for the iptables legacy backend's raw socket; not "
                                               "needed with --iptables-mode nft")
SETNS = Requirement(("CAP_SYS_ADMIN",), "to enter the --netns namespace (setns)")
BPF = Requirement(("CAP_BPF", "CAP_SYS_ADMIN"), "to load BPF programs and create maps")
NET_ADMIN_BPF = Requirement(("CAP_NET_ADMIN", "CAP_SYS_ADMIN"), "to load and attach cgroup socket "
                                                                 "programs, a networking program type")
PERFMON = Requirement(("CAP_PERFMON", "CAP_SYS_ADMIN"), "for the verifier to accept the interception "
                                                         "program's variable-offset stack pointer "
                                                         "arithmetic, which its Spectre v1 hardening "
                                                         "refuses to other loaders")


def iptables_needs(iptables_mode: str, netns: object = None) -> tuple[Requirement, ...]:
    """proxy-init and the iptables agent: NET_RAW only when the legacy backend may be used."""
    needs = [NET_ADMIN_TABLES]
    if iptables_mode != "nft":
        needs.append(NET_RAW_LEGACY)
    if netns is not None:
        needs.append(SETNS)
    return tuple(needs)


def ebpf_needs() -> tuple[Requirement, ...]:
    return (BPF, NET_ADMIN_BPF, PERFMON)


def effective(status: Path = Path("/proc/self/status")) -> frozenset[str]:
    """Names of the capabilities in this process's effective set (those we know of)."""
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            mask = int(line.split()[1], 16)
            return frozenset(name for name, bit in NUMBERS.items() if mask >> bit & 1)
    raise RuntimeError(f"{status}: no CapEff line")


def missing(needs: Iterable[Requirement], have: frozenset[str]) -> list[Requirement]:
    return [need for need in needs if not need.met_by(have)]


def require(role: str, needs: Iterable[Requirement], have: frozenset[str] | None = None) -> None:
    """Raise NotPermitted naming every missing capability of `role`, and why each is needed."""
    have = effective() if have is None else have
    lacking = missing(needs, have)
    if not lacking:
        return
    lacks = "; ".join(f"{need} ({need.why})" for need in lacking)
    held = ", ".join(sorted(have)) or "none"
    raise NotPermitted(
        f"{role} lacks {lacks}. Effective capabilities: {held}. Add "
        f"{', '.join(need.any_of[0].removeprefix('CAP_') for need in lacking)} to the container's "
        f"securityContext.capabilities.add")


def bpf_syscall_blocked() -> bool:
    """True when a seccomp filter (or an LSM) refuses the bpf() syscall itself, before any
    capability is checked. An unknown command is EINVAL from the kernel when bpf() is allowed; a
    filter answers EPERM. Container runtimes' default profiles allow bpf() only to CAP_SYS_ADMIN
    (containerd) or CAP_BPF (newer profiles)."""
    number = BPF_SYSCALL.get(platform.machine())
    if number is None:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, 0x7fff, None, 0) != -1:
        return False
    return ctypes.get_errno() == errno.EPERM



def require_bpf_syscall(role: str) -> None:
    if bpf_syscall_blocked():
        raise NotPermitted(f"{role}: the bpf() syscall is refused by this container's seccomp profile "
                           f"(EPERM before any capability check). Run it with securityContext."
                           f"seccompProfile.type: Unconfined, or a profile that allows bpf()")
