"""Attaching the pinned programs to a cgroup through pinned BPF links, checking those links,
replacing a live install by a staged one without a gap, and taking everything down again.

The tc program (inbound interception) is attached by proxy-init, inside each registered pod's
network namespace, from its pin.
"""
from __future__ import annotations

import ctypes as ct
import os
from pathlib import Path

from kernsplit.agent.dataplane.ebpf import bpfsys
from kernsplit.agent.dataplane.ebpf.pins import (INTERCEPT_PROGRAMS, PROGRAMS, TC_PROGRAM, LoaderError, Pins, Repair,
                                                 attachable, cgroup_programs)


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
