"""Compile the BPF programs with BCC, check the ctypes mirrors against the compiled object, then
load and pin every map and program (`pins` says where). BCC runs at first install only, in a
short-lived child process (`build`).
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping

from kernsplit.agent.dataplane.ebpf import abi, alignment, bpfsys
from kernsplit.agent.dataplane.ebpf.btf import Btf
from kernsplit.agent.dataplane.ebpf.pins import MAPS, PROGRAMS, LoaderError, Pins, all_programs
from kernsplit.agent.dataplane.ebpf.sources import BPF_SRC, SOURCES

log = logging.getLogger("kernsplit.agent.ebpf")


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
