"""The alignment check (Cilium's alignchecker) on a real compiled object's BTF without privileges:
the running kernel's own BTF. A correct ctypes mirror of `struct sockaddr_in` passes; deliberately
wrong mirrors are refused, each naming the field and both views. (The agent's own mirrors against
its own compiled programs: tests/kernel/test_ebpf_abi.py.)"""
from __future__ import annotations

import ctypes as ct
from pathlib import Path

import pytest

from kernsplit.agent.dataplane.ebpf.alignment import differences, mirror_layout
from kernsplit.agent.dataplane.ebpf.btf import Btf, BtfError

VMLINUX = Path("/sys/kernel/btf/vmlinux")


class InAddr(ct.Structure):
    _fields_ = [("s_addr", ct.c_uint32)]


class SockaddrIn(ct.Structure):
    _fields_ = [("sin_family", ct.c_uint16), ("sin_port", ct.c_uint16), ("sin_addr", InAddr),
                ("__pad", ct.c_uint8 * 8)]


class PortTooWide(ct.Structure):
    _fields_ = [("sin_family", ct.c_uint16), ("sin_port", ct.c_uint32), ("sin_addr", InAddr),
                ("__pad", ct.c_uint8 * 4)]


class Renamed(ct.Structure):
    _fields_ = [("sin_family", ct.c_uint16), ("port", ct.c_uint16), ("sin_addr", InAddr),
                ("__pad", ct.c_uint8 * 8)]


class ShortPad(ct.Structure):
    _fields_ = [("sin_family", ct.c_uint16), ("sin_port", ct.c_uint16), ("sin_addr", InAddr),
                ("__pad", ct.c_uint8 * 4)]


@pytest.fixture(scope="module")
def sockaddr_in():
    assert VMLINUX.exists(), "the kernel exposes its BTF at /sys/kernel/btf/vmlinux"
    btf = Btf(VMLINUX.read_bytes())
    return btf.layout(btf.find("sockaddr_in"))


def check(compiled, mirror):
    return differences("sockaddr_in", compiled, mirror_layout(mirror))


def test_a_correct_mirror_passes(sockaddr_in):
    assert check(sockaddr_in, SockaddrIn) == []


def test_a_wider_field_is_named_with_both_offsets(sockaddr_in):
    assert check(sockaddr_in, PortTooWide) == [
        "sockaddr_in.__pad: at offset 8 compiled, 12 mirrored",
        "sockaddr_in.__pad: compiled as an array of 8, mirrored as an array of 4",
        "sockaddr_in.sin_addr: at offset 4 compiled, 8 mirrored",
        "sockaddr_in.sin_port: at offset 2 compiled, 4 mirrored",
        "sockaddr_in.sin_port: compiled as a 2-byte scalar, mirrored as a 4-byte scalar",
    ]


def test_a_renamed_field_and_a_short_array_are_named(sockaddr_in):
    assert check(sockaddr_in, Renamed) == ["sockaddr_in.port: not in the compiled struct",
                                           "sockaddr_in.sin_port: missing from the mirror"]
    assert check(sockaddr_in, ShortPad) == ["sockaddr_in.__pad: compiled as an array of 8, mirrored as an array of 4",
                                            "sockaddr_in: 16 bytes compiled, 12 mirrored"]


def test_not_btf_is_a_clear_error():
    with pytest.raises(BtfError, match="not BTF"):
        Btf(b"\0" * 32)
