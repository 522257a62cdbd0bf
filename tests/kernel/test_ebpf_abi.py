"""The hand-written ctypes mirrors (agent/dataplane/ebpf/abi.py) match what BCC compiles from
bpf/ks_types.h, field by field; and the generated kernel tree is what BCC compiles against."""
from __future__ import annotations

import ctypes as ct
import os

import pytest

from kernsplit.agent.dataplane.ebpf import abi, loader, sources
from kernsplit.agent.dataplane.ebpf.pins import MAPS, Pins
from kernsplit.agent.dataplane.ebpf.headers import bcc_environment

pytestmark = [pytest.mark.kernel, pytest.mark.bpf]


def layout(t):
    """A comparable description of a ctypes type: sizes, field names, offsets, element types."""
    if isinstance(t, type) and issubclass(t, ct.Structure):
        return ("struct", ct.sizeof(t),
                tuple((name, getattr(t, name).offset, layout(ft)) for name, ft, *_ in t._fields_))
    if isinstance(t, type) and issubclass(t, ct.Array):
        return ("array", t._length_, layout(t._type_))
    return ("scalar", ct.sizeof(t))


@pytest.fixture(scope="module")
def compiled(request):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    os.environ.update(bcc_environment())
    from bcc import BPF
    text = "\n".join((sources.BPF_SRC / f).read_text() for f in sources.SOURCES)
    bpf = BPF(text=text.encode(), cflags=[f"-I{sources.BPF_SRC}", "-Wno-unused-function"])
    yield bpf
    bpf.cleanup()


@pytest.mark.parametrize("name", list(abi.MAP_TYPES))
def test_mirror_matches_bcc_types(compiled, name):
    tbl = compiled.get_table(name.encode())
    key_t, value_t = abi.MAP_TYPES[name]
    assert layout(tbl.Key) == layout(key_t)
    leaf = tbl.Leaf
    if name in abi.PER_CPU_MAPS:          # BCC reports a per-CPU leaf as an array
        leaf = leaf._type_ if issubclass(leaf, ct.Array) else leaf
    assert layout(leaf) == layout(value_t)


def test_map_sizes_match_the_header_limits(compiled):
    assert compiled.get_table(b"ks_services").max_entries == abi.KS_MAX_SPLITS
    assert compiled.get_table(b"ks_counters").max_entries == abi.KS_MAX_SPLITS * abi.KS_MAX_BACKENDS
    assert compiled.get_table(b"ks_meta").max_entries == abi.KS_MAX_SPLITS
    assert compiled.get_table(b"ks_config").max_entries == 1
    assert compiled.get_table(b"ks_pods").max_entries == abi.KS_MAX_PODS
    assert compiled.get_table(b"ks_pairs").max_entries == abi.KS_PAIR_ENTRIES


def test_every_pinned_map_has_a_mirror(compiled):
    assert set(MAPS) == set(abi.MAP_TYPES)


def test_every_mirror_matches_the_compiled_btf(compiled):
    loader.check_alignment({n: compiled.get_table(n.encode()).map_fd for n in MAPS})


class WrongSlot(ct.Structure):
    # `port` and `backend` swapped: both 16 bits, so only their offsets give it away.
    _fields_ = [("last", ct.c_uint32), ("addr", ct.c_uint32 * 4), ("backend", ct.c_uint16),
                ("port", ct.c_uint16), ("flags", ct.c_uint32)]


def test_loading_with_a_wrong_mirror_fails_naming_the_field_and_pins_nothing(monkeypatch, tmp_path):
    monkeypatch.setitem(abi.MAP_TYPES, "ks_slots", (abi.SlotKey, WrongSlot))
    pins = Pins(tmp_path / "pins")
    with pytest.raises(loader.AlignmentError) as err:
        loader.compile_and_pin(pins)
    assert "ks_slots value (struct ks_slot).backend: at offset 22 compiled, 20 mirrored" in str(err.value)
    assert "fix abi.py" in str(err.value)
    assert not pins.root.exists()
