"""Compile, load, pin and attach the BPF programs (BCC at first install only), and take them
down again. Layout under the bpffs directory (default /sys/fs/bpf/kernsplit):

    maps/<map>     the maps of bpf/ks_maps.h
    progs/<prog>   the four split programs, the interception programs and the tc program
    links/<prog>   their cgroup attachments (BPF links: detaching = link detach + unpin);
                   the interception programs' only with interception on

The tc program (inbound interception) is attached by proxy-init, inside each registered pod's
network namespace, from its pin.

A restarted agent finds these pins and uses them: no recompilation, no reattachment when the
links are still attached to the requested cgroup.
"""
from __future__ import annotations

import ctypes as ct
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kernsplit.agent import mounts
from kernsplit.agent.dataplane.ebpf import abi, alignment, bpfsys
from kernsplit.agent.dataplane.ebpf.btf import Btf
from kernsplit.agent.dataplane.ebpf.sources import BPF_SRC, SOURCES

log = logging.getLogger("kernsplit.agent.ebpf")

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


def compile_and_pin(pins: Pins) -> float:
    """Compile bpf/ with BCC, load the programs and pin programs and maps. Returns seconds."""
    from kernsplit.agent.dataplane.ebpf.headers import bcc_environment
    os.environ.update(bcc_environment())
    from bcc import BPF  # imported here: only a first install pays for BCC

    started = time.perf_counter()
    text = "\n".join((BPF_SRC / f).read_text() for f in SOURCES)
    bpf = BPF(text=text.encode(), cflags=[f"-I{BPF_SRC}", "-Wno-unused-function"])
    try:
        check_alignment({name: bpf.get_table(name.encode()).map_fd for name in MAPS})
        for sub in ("maps", "progs", "links"):
            (pins.root / sub).mkdir(parents=True, exist_ok=True)
        for name in MAPS:
            bpfsys.obj_pin(bpf.get_table(name.encode()).map_fd, pins.map(name))
        for name, (prog_type, attach_type) in all_programs().items():
            try:
                fn = bpf.load_func(name.encode(), prog_type, attach_type=attach_type)
            except Exception as exc:     # BCC raises a bare Exception with the verifier's verdict
                if name in PROGRAMS:
                    raise
                # An interception program this kernel refuses must not cost the splits: it stays
                # unpinned, and `attach(..., interception=True)` says so.
                log.warning("ebpf: interception program %s not loaded on this kernel: %s", name, exc)
                continue
            bpfsys.obj_pin(fn.fd, pins.prog(name))
    finally:
        bpf.cleanup()
    return time.perf_counter() - started


class AlignmentError(LoaderError):
    """The ctypes mirrors (abi.py) disagree with the compiled object: nothing was pinned."""


def check_alignment(map_fds: Mapping[str, int], mirrors: Mapping[str, tuple[type, type]] | None = None) -> None:
    """Compare each map's key and value mirror with the BTF the compiled object gave the map
    (see `alignment`); raise AlignmentError naming every disagreement. Maps without BTF (a
    kernel or BCC without it) are not checked, and the log says so."""
    mirrors = abi.MAP_TYPES if mirrors is None else mirrors
    btfs: dict[int, Btf] = {}
    found = {}
    for name, fd in map_fds.items():
        btf_id, key_id, value_id = bpfsys.map_btf(fd, name)
        if btf_id == 0:
            log.warning("ebpf: map %s has no BTF: its ctypes mirror cannot be checked at load", name)
            continue
        if btf_id not in btfs:
            btfs[btf_id] = Btf(bpfsys.btf_bytes(btf_id))
        found[name] = (btfs[btf_id], key_id, value_id)
    problems = alignment.check(found, {n: mirrors[n] for n in found if n in mirrors})
    if problems:
        raise AlignmentError("the ctypes mirrors in agent/dataplane/ebpf/abi.py disagree with the compiled "
                             "bpf/ks_types.h (fix abi.py to match the header; nothing was loaded): "
                             + "; ".join(problems))


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


class _ProgInfo(ct.Structure):
    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("rest", ct.c_uint8 * 248)]


def prog_id(path: Path) -> int:
    fd = bpfsys.obj_get(path)
    try:
        info = _ProgInfo()
        bpfsys.obj_info(fd, info, f"program info {path}")
        return info.id
    finally:
        os.close(fd)


def link_problem(target: tuple[int, int] | None, prog: int, cgroup_id: int, cgroup: Path) -> str | None:
    """What is wrong with a link found as `target` ((program id, cgroup id) of the pinned link; None:
    no pin) when it should run program `prog` on `cgroup`; None when nothing is."""
    if target is None:
        return "its link pin was missing"
    found_prog, found_cgroup = target
    if found_cgroup == 0:
        return "it was detached (or its cgroup was removed)"
    if found_cgroup != cgroup_id:
        return (f"it was attached to cgroup id {found_cgroup}, not to {cgroup} (id {cgroup_id}): the cgroup "
                "was removed and recreated, or --cgroup changed")
    if found_prog != prog:
        return f"it ran program id {found_prog}, not the pinned one (id {prog})"
    return None


def unattached(pins: Pins) -> list[str]:
    """What is wrong with the links of the installed programs, read from the pins alone (which
    cgroup they should be on is the agent's --cgroup): a split program's link missing, or any
    link detached."""
    found = []
    for name in attachable():
        link = pins.link(name)
        if not link.exists():
            if name in PROGRAMS:
                found.append(f"program {name} is not attached (no link pin {link})")
            continue
        fd = bpfsys.obj_get(link)
        try:
            if bpfsys.link_target(fd)[1] == 0:
                found.append(f"program {name} is detached (link {link}, or its cgroup was removed)")
        finally:
            os.close(fd)
    return found


def attach(pins: Pins, cgroup: Path, interception: bool = False) -> list[Repair]:
    """Make every program attached to `cgroup` through a pinned link (the interception programs
    only with `interception`; without it, links of theirs left by an earlier run are removed).
    Returns the links created, each with what was wrong before (a first install: no pin)."""
    try:
        cgroup_id = os.stat(cgroup).st_ino     # a cgroup v2 directory's inode is its cgroup id
    except FileNotFoundError:
        raise LoaderError(f"cgroup {cgroup} does not exist: nothing can be attached to it") from None
    created = []
    (pins.root / "links").mkdir(parents=True, exist_ok=True)
    wanted = cgroup_programs(interception)
    refused = [n for n in (*INTERCEPT_PROGRAMS, TC_PROGRAM) if not pins.prog(n).exists()] if interception else []
    if refused:
        raise LoaderError(f"interception programs {', '.join(refused)} are not loaded under {pins.root} "
                          "(this kernel refused them when they were compiled: see the agent's log)")
    for name in INTERCEPT_PROGRAMS:
        if name not in wanted and pins.link(name).exists():
            _unlink(pins.link(name))
    cg_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name, attach_type in wanted.items():
            want_prog = prog_id(pins.prog(name))
            link = pins.link(name)
            target = None
            if link.exists():
                fd = bpfsys.obj_get(link)
                try:
                    target = bpfsys.link_target(fd)
                    if link_problem(target, want_prog, cgroup_id, cgroup) is None:
                        continue
                    _detach_fd(fd, name)
                finally:
                    os.close(fd)
                link.unlink()
            prog_fd = bpfsys.obj_get(pins.prog(name))
            try:
                link_fd = bpfsys.link_create(prog_fd, cg_fd, attach_type, f"{name} to {cgroup}")
            finally:
                os.close(prog_fd)
            try:
                bpfsys.obj_pin(link_fd, link)
            finally:
                os.close(link_fd)
            created.append(Repair("link", name, f"{link_problem(target, want_prog, cgroup_id, cgroup)}: "
                                                f"attached {name} to {cgroup} again"))
    finally:
        os.close(cg_fd)
    return created


def swap(pins: Pins, staged: Pins) -> None:
    """Make the (already filled) install under `staged` the live one under `pins`.

    Every attached link gets its program replaced in place (BPF_LINK_UPDATE, cgroup links since
    5.7): each connect runs either the old program on the old maps or the new program on the
    new maps, with no moment without a program. Then the pin directories are exchanged
    atomically (RENAME_EXCHANGE) and the old objects, now under `staged`, are removed.
    Programs first, maps (which hold the fingerprint) last: a crash in between leaves the old
    fingerprint live, so the next start replaces again rather than adopting a mixed install.
    """
    for name in attachable():
        link = pins.link(name)
        if not link.exists():
            continue      # not attached yet: `attach` creates it with the new program
        link_fd = bpfsys.obj_get(link)
        try:
            prog_fd = bpfsys.obj_get(staged.prog(name))
            try:
                bpfsys.link_update(link_fd, prog_fd, name)
            except bpfsys.BpfError:
                pass      # a defunct link (its cgroup is gone): `attach` replaces it
            finally:
                os.close(prog_fd)
        finally:
            os.close(link_fd)
    for sub in ("progs", "maps"):
        live, new = pins.root / sub, staged.root / sub
        if live.exists():
            bpfsys.exchange(new, live)
        else:
            new.rename(live)
    remove(staged)


def _detach_fd(fd: int, name: str) -> None:
    try:
        bpfsys.link_detach(fd, name)
    except bpfsys.BpfError:
        pass   # already defunct (its cgroup was removed): nothing left to detach


def _unlink(link: Path) -> None:
    """Detach one pinned link and remove its pin."""
    fd = bpfsys.obj_get(link)
    try:
        _detach_fd(fd, link.name)
    finally:
        os.close(fd)
    link.unlink()


def remove(pins: Pins) -> None:
    """Detach every link of ours, then remove every pin and our directory."""
    links = pins.root / "links"
    if links.is_dir():
        for link in links.iterdir():
            _unlink(link)
    if pins.root.exists():
        # bpffs has no recursive delete: unlink pins, then directories, deepest first.
        for path in sorted(pins.root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        pins.root.rmdir()


__all__ = ["Pins", "LoaderError", "MissingPins", "Repair", "repin", "held_programs", "link_problem", "unattached",
           "AlignmentError", "check_alignment", "ensure_bpffs", "compile_and_pin", "attach",
           "swap", "remove", "prog_id", "all_programs", "cgroup_programs", "INTERCEPT_PROGRAMS",
           "TC_PROGRAM"]
