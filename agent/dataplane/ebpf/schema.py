"""The schema fingerprint of an eBPF install: which programs and map layouts it was built from.

A restarted agent adopts pinned programs and maps without compiling (traffic keeps flowing).
That is only safe when they were built from the same bpf/ sources and read with the same ctypes
mirrors (abi.py) as this agent's. The fingerprint, a sha256 over both, is written into the pinned
ks_config map at install time; on adoption a different (or unreadable) fingerprint means "an
install from another version": replace it (dataplane.py) instead of reusing it.
"""
from __future__ import annotations

import ctypes as ct
import hashlib
from pathlib import Path

from kernsplit.agent.dataplane.ebpf import abi
from kernsplit.agent.dataplane.ebpf.sources import BPF_SRC


def _layout(t) -> str:
    if isinstance(t, type) and issubclass(t, ct.Structure):
        inner = ",".join(f"{n}@{getattr(t, n).offset}:{_layout(ft)}" for n, ft, *_ in t._fields_)
        return f"{{{inner}}}{ct.sizeof(t)}"
    if isinstance(t, type) and issubclass(t, ct.Array):
        return f"{_layout(t._type_)}[{t._length_}]"
    return str(ct.sizeof(t))


def abi_text() -> str:
    """The limits and the mirrors' layouts as one canonical text."""
    limits = sorted((k, v) for k, v in vars(abi).items() if k.startswith("KS_") and isinstance(v, int))
    maps = sorted((name, _layout(k), _layout(v)) for name, (k, v) in abi.MAP_TYPES.items())
    return repr((limits, maps))


def fingerprint(src: Path = BPF_SRC) -> bytes:
    """sha256 over every bpf/*.c and *.h file (name and content) and `abi_text()`."""
    h = hashlib.sha256()
    for path in sorted(src.glob("*.[ch]")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(abi_text().encode())
    return h.digest()
