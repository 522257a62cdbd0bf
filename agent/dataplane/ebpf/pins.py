"""What an eBPF install is made of and where it is pinned: the maps and programs, the layout under
the bpffs directory (default /sys/fs/bpf/kernsplit), and pinning again what lost its pin.

    maps/<map>     the maps of bpf/ks_maps.h
    progs/<prog>   the four split programs, the interception programs and the tc program
    links/<prog>   their cgroup attachments (BPF links: detaching = link detach + unpin);
                   the interception programs' only with interception on

A restarted agent finds these pins and uses them: no recompilation, no reattachment when the
links are still attached to the requested cgroup (`links`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kernsplit.agent import mounts
from kernsplit.agent.dataplane.ebpf import bpfsys

# ks_sk_origins (socket-local storage) is not pinned: only the programs use it, and it needs no
# reading from user space.
MAPS = ("ks_services", "ks_slots", "ks_meta", "ks_counters", "ks_origins", "ks_config",
        "ks_pods", "ks_pairs", "ks_pod_addrs", "ks_pod_counters")
# enum bpf_prog_type (uapi/linux/bpf.h)
SCHED_CLS, SOCK_OPS, CGROUP_SOCK_ADDR, CGROUP_SOCKOPT = 3, 13, 18, 25
# split program -> enum bpf_attach_type (uapi/linux/bpf.h); all CGROUP_SOCK_ADDR
PROGRAMS = {
    "sock4_connect": 10,       # BPF_CGROUP_INET4_CONNECT
    "sock6_connect": 11,       # BPF_CGROUP_INET6_CONNECT
    "sock4_getpeername": 29,   # BPF_CGROUP_INET4_GETPEERNAME
    "sock6_getpeername": 30,   # BPF_CGROUP_INET6_GETPEERNAME
}
# interception program -> (program type, attach type); attached beside the split programs
INTERCEPT_PROGRAMS = {
    "ks_ic_connect4": (CGROUP_SOCK_ADDR, 10),
    "ks_ic_connect6": (CGROUP_SOCK_ADDR, 11),
    "ks_ic_getpeername4": (CGROUP_SOCK_ADDR, 29),
    "ks_ic_getpeername6": (CGROUP_SOCK_ADDR, 30),
    "ks_ic_sockops": (SOCK_OPS, 3),              # BPF_CGROUP_SOCK_OPS
    "ks_ic_getsockopt": (CGROUP_SOCKOPT, 21),    # BPF_CGROUP_GETSOCKOPT
}
TC_PROGRAM = "ks_ic_ingress"   # SCHED_CLS, attached by proxy-init in the pod's namespace


def all_programs() -> dict[str, tuple[int, int]]:
    """Every program we load: name -> (program type, attach type; -1 for tc)."""
    return {**{n: (CGROUP_SOCK_ADDR, a) for n, a in PROGRAMS.items()}, **INTERCEPT_PROGRAMS,
            TC_PROGRAM: (SCHED_CLS, -1)}


def cgroup_programs(interception: bool) -> dict[str, int]:
    """The programs to attach to the cgroup: name -> attach type."""
    wanted = dict(PROGRAMS)
    if interception:
        wanted.update({n: a for n, (_t, a) in INTERCEPT_PROGRAMS.items()})
    return wanted


def attachable() -> tuple[str, ...]:
    return (*PROGRAMS, *INTERCEPT_PROGRAMS)


class LoaderError(RuntimeError):
    pass


@dataclass(frozen=True)
class Pins:
    root: Path

    def map(self, name: str) -> Path:
        return self.root / "maps" / name

    def prog(self, name: str) -> Path:
        return self.root / "progs" / name

    def link(self, name: str) -> Path:
        return self.root / "links" / name

    def complete(self) -> bool:
        """Maps and split programs pinned. The interception programs may be missing: a kernel that
        refuses them still runs the splits (see `compile_and_pin`)."""
        return (all(self.map(m).exists() for m in MAPS)
                and all(self.prog(p).exists() for p in PROGRAMS))

    def missing(self, interception: bool = False) -> list[Path]:
        """The map and split program pins that `complete` needs and that are not there; with
        `interception`, the interception programs' too."""
        progs = [*PROGRAMS, *INTERCEPT_PROGRAMS, TC_PROGRAM] if interception else PROGRAMS
        return self.missing_maps() + [self.prog(p) for p in progs if not self.prog(p).exists()]

    def missing_maps(self) -> list[Path]:
        return [self.map(m) for m in MAPS if not self.map(m).exists()]

    def any(self) -> bool:
        return self.root.exists() and any(self.root.rglob("*"))

    def attached(self) -> bool:
        """Some program of ours is (or was) attached: replacing must not open a gap."""
        return any(self.link(p).exists() for p in attachable())

    def intercepting(self) -> bool:
        """The interception programs are attached (the agent runs with interception on)."""
        return all(self.link(p).exists() for p in INTERCEPT_PROGRAMS)

    def staging(self) -> "Pins":
        """Where a replacement install is built beside the live one (see `swap`)."""
        return Pins(self.root / "staging")


def ensure_bpffs(root: Path) -> None:
    """bpffs must hold our pins; mount it at /sys/fs/bpf when nothing is mounted there."""
    if not mounts.ensure_bpffs(root):
        raise LoaderError(f"{root}: not on a bpf filesystem (mount -t bpf bpf {root.parent})")


class MissingPins(LoaderError):
    """Pins of an install are gone: reading it would fail half-way."""

    def __init__(self, pins: Pins, missing: list[Path]):
        super().__init__(f"the eBPF install under {pins.root} is incomplete: missing pin "
                         f"{', '.join(map(str, missing))} (a running agent re-pins it at its next full "
                         "resync; an agent started now repairs it)")
        self.missing = missing


@dataclass(frozen=True)
class Repair:
    """One kernel object of ours found broken and repaired."""
    kind: str         # "link", "map pin", "program pin"
    name: str         # the program or map
    why: str          # what was wrong, and what was done

    @property
    def metric(self) -> str:
        """The `what` label of kernsplit_kernel_repairs."""
        return "ebpf_" + self.kind.replace(" ", "_")

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.why}"


def repin(held: Mapping[Path, int], kind: str) -> list[Repair]:
    """Pin again, from the fd this process holds, each object whose pin is gone (the object lives
    on while anything holds it: the pin is only its name). The same object, so a map keeps its
    entries and counters and a program keeps its attachments."""
    done = []
    for path, fd in held.items():
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        bpfsys.obj_pin(fd, path)
        done.append(Repair(kind, path.name, f"pin {path} was missing: pinned the same object again"))
    return done


def held_programs(pins: Pins) -> dict[Path, int]:
    """An fd on every pinned program (for `repin`; the caller closes them)."""
    fds: dict[Path, int] = {}
    try:
        for name in all_programs():
            if pins.prog(name).exists():
                fds[pins.prog(name)] = bpfsys.obj_get(pins.prog(name))
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds
