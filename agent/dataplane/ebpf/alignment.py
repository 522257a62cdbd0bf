"""The ctypes mirrors (abi.py) against the compiled object's BTF: Cilium's alignchecker.

A restarted agent reads and writes the pinned maps through the mirrors, never through the compiler,
so a mirror that drifted from bpf/ks_types.h would silently write fields at the wrong offsets. The
loader therefore compares, every time it loads the programs, each map's key and value mirror with
the types the compiled object declares for that map (sizes, member names, offsets, element counts,
recursively) and refuses to pin anything that disagrees, naming the map, the field and both views.
"""
from __future__ import annotations

import ctypes as ct
from collections.abc import Mapping

from kernsplit.agent.dataplane.ebpf.btf import Btf, Layout


def mirror_layout(t) -> Layout:
    """A ctypes type described like `Btf.layout`."""
    if isinstance(t, type) and issubclass(t, ct.Structure):
        return ("struct", ct.sizeof(t), tuple((name, getattr(t, name).offset, mirror_layout(ft))
                                              for name, ft, *_ in t._fields_))
    if isinstance(t, type) and issubclass(t, ct.Array):
        return ("array", t._length_, mirror_layout(t._type_))
    return ("scalar", ct.sizeof(t))


def _describe(layout: Layout) -> str:
    if layout[0] == "struct":
        return f"a struct of {layout[1]} bytes"
    if layout[0] == "array":
        return f"an array of {layout[1]}"
    return f"a {layout[1]}-byte scalar"


def differences(path: str, compiled: Layout, mirror: Layout) -> list[str]:
    """Where `mirror` disagrees with `compiled`, one readable line per disagreement."""
    if compiled[0] != mirror[0] or (compiled[0] != "struct" and compiled[1] != mirror[1]):
        return [f"{path}: compiled as {_describe(compiled)}, mirrored as {_describe(mirror)}"]
    if compiled[0] == "array":
        return differences(f"{path}[]", compiled[2], mirror[2])
    if compiled[0] == "scalar":
        return []
    out = [] if compiled[1] == mirror[1] else [f"{path}: {compiled[1]} bytes compiled, {mirror[1]} mirrored"]
    theirs = {name: (off, lay) for name, off, lay in compiled[2]}
    ours = {name: (off, lay) for name, off, lay in mirror[2]}
    for name in theirs.keys() | ours.keys():
        if name not in ours or name not in theirs:
            out.append(f"{path}.{name}: {'missing from the mirror' if name not in ours else 'not in the compiled struct'}")
        else:
            if theirs[name][0] != ours[name][0]:
                out.append(f"{path}.{name}: at offset {theirs[name][0]} compiled, {ours[name][0]} mirrored")
            out += differences(f"{path}.{name}", theirs[name][1], ours[name][1])
    return sorted(out)


def check(btf_of: Mapping[str, tuple[Btf, int, int]], mirrors: Mapping[str, tuple[type, type]]) -> list[str]:
    """`btf_of`: map name -> (its BTF, key type id, value type id), as the kernel reports them.
    Returns every disagreement with `mirrors` (map name -> (key, value) ctypes types)."""
    out = []
    for name, (key_t, value_t) in sorted(mirrors.items()):
        if name not in btf_of:
            out.append(f"{name}: the compiled object has no such map")
            continue
        btf, key_id, value_id = btf_of[name]
        for what, type_id, mirror in (("key", key_id, key_t), ("value", value_id, value_t)):
            if type_id == 0:
                continue        # no BTF for this side (e.g. a map BCC created without it)
            out += differences(f"{name} {what} ({btf.name_of(type_id)})", btf.layout(type_id), mirror_layout(mirror))
    return out
