"""Thin executor over libbpf (the system's libbpf.so.1, which BCC itself links): pins, map
elements, cgroup links. No planning here; every failure names the object it concerns."""
from __future__ import annotations

import ctypes as ct
import errno
import functools
import os
from pathlib import Path

_SIGNATURES = {
    "bpf_obj_get": [ct.c_char_p],
    "bpf_obj_pin": [ct.c_int, ct.c_char_p],
    "bpf_map_update_elem": [ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_uint64],
    "bpf_map_lookup_elem": [ct.c_int, ct.c_void_p, ct.c_void_p],
    "bpf_map_delete_elem": [ct.c_int, ct.c_void_p],
    "bpf_map_get_next_key": [ct.c_int, ct.c_void_p, ct.c_void_p],
    "bpf_link_create": [ct.c_int, ct.c_int, ct.c_int, ct.c_void_p],
    "bpf_link_detach": [ct.c_int],
    "bpf_link_update": [ct.c_int, ct.c_int, ct.c_void_p],
    "bpf_obj_get_info_by_fd": [ct.c_int, ct.c_void_p, ct.POINTER(ct.c_uint32)],
    "bpf_btf_get_fd_by_id": [ct.c_uint32],
}


@functools.cache
def _lib() -> ct.CDLL:
    """libbpf, opened on first use: importing this module (or anything that imports it) touches
    no shared library, so a host without libbpf can still plan, render and run unit tests."""
    lib = ct.CDLL("libbpf.so.1", use_errno=True)
    for name, args in _SIGNATURES.items():
        getattr(lib, name).argtypes = args
        getattr(lib, name).restype = ct.c_int
    return lib


class BpfError(OSError):
    pass


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = -rc if rc != -1 else (ct.get_errno() or errno.EIO)
        raise BpfError(err, f"{what}: {os.strerror(err)}")
    return rc


def obj_info(fd: int, info: ct.Structure, what: str) -> None:
    """Fill `info` (the head of a struct bpf_*_info) for an open BPF object."""
    size = ct.c_uint32(ct.sizeof(info))
    _check(_lib().bpf_obj_get_info_by_fd(fd, ct.byref(info), ct.byref(size)), what)


def obj_get(path: Path) -> int:
    """Open a pinned object; the caller owns (and closes) the fd."""
    return _check(_lib().bpf_obj_get(str(path).encode()), f"open pin {path}")


def obj_pin(fd: int, path: Path) -> None:
    _check(_lib().bpf_obj_pin(fd, str(path).encode()), f"pin {path}")


def possible_cpus() -> int:
    """Per-CPU map values hold one slot per possible CPU ("0-3" style ranges)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    return max(int(part.split("-")[-1]) for part in text.split(",")) + 1


class Map:
    """One pinned map, typed with the ctypes mirrors of bpf/ks_types.h."""

    def __init__(self, path: Path, key_type, value_type, per_cpu: bool = False):
        self.path, self.key_type = path, key_type
        self.value_type = value_type * possible_cpus() if per_cpu else value_type
        self.fd = obj_get(path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def update(self, key, value) -> None:
        _check(_lib().bpf_map_update_elem(self.fd, ct.byref(key), ct.byref(value), 0),
               f"update {self.path.name}")

    def lookup(self, key):
        value = self.value_type()
        rc = _lib().bpf_map_lookup_elem(self.fd, ct.byref(key), ct.byref(value))
        if rc < 0 and (-rc == errno.ENOENT or ct.get_errno() == errno.ENOENT):
            return None
        _check(rc, f"lookup {self.path.name}")
        return value

    def delete(self, key) -> bool:
        rc = _lib().bpf_map_delete_elem(self.fd, ct.byref(key))
        if rc < 0 and (-rc == errno.ENOENT or ct.get_errno() == errno.ENOENT):
            return False
        _check(rc, f"delete from {self.path.name}")
        return True

    def keys(self) -> list:
        out, prev = [], None
        while True:
            nxt = self.key_type()
            rc = _lib().bpf_map_get_next_key(self.fd, None if prev is None else ct.byref(prev), ct.byref(nxt))
            if rc < 0:
                if -rc == errno.ENOENT or ct.get_errno() == errno.ENOENT:
                    return out
                _check(rc, f"iterate {self.path.name}")
            out.append(nxt)
            prev = nxt


class _MapInfo(ct.Structure):
    # struct bpf_map_info head (uapi/linux/bpf.h); the tail is left zero for the kernel.
    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("key_size", ct.c_uint32),
                ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32), ("map_flags", ct.c_uint32),
                ("name", ct.c_char * 16), ("ifindex", ct.c_uint32), ("btf_vmlinux_value_type_id", ct.c_uint32),
                ("netns_dev", ct.c_uint64), ("netns_ino", ct.c_uint64), ("btf_id", ct.c_uint32),
                ("btf_key_type_id", ct.c_uint32), ("btf_value_type_id", ct.c_uint32), ("rest", ct.c_uint8 * 52)]


class _BtfInfo(ct.Structure):
    # struct bpf_btf_info (uapi/linux/bpf.h)
    _fields_ = [("btf", ct.c_uint64), ("btf_size", ct.c_uint32), ("id", ct.c_uint32), ("name", ct.c_uint64),
                ("name_len", ct.c_uint32), ("kernel_btf", ct.c_uint32)]


def map_sizes(fd: int, what: str) -> tuple[int, int]:
    """(key size, value size) of an open map: checked before reading a map whose layout we did
    not create (an install from another agent version), so a lookup never overruns our buffer."""
    info = _MapInfo()
    obj_info(fd, info, f"map info {what}")
    return info.key_size, info.value_size


# enum bpf_map_type (uapi/linux/bpf.h): maps whose every index always exists
_ARRAY_TYPES = {2, 6}      # BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY


def map_fill(m: Map) -> tuple[int, int] | None:
    """(entries in use, max entries) of a hash-like map; None for an array, which is always full."""
    info = _MapInfo()
    obj_info(m.fd, info, f"map info {m.path.name}")
    if info.type in _ARRAY_TYPES:
        return None
    return len(m.keys()), info.max_entries


def map_btf(fd: int, what: str) -> tuple[int, int, int]:
    """(BTF object id, key type id, value type id) of an open map; zeros when it has no BTF."""
    info = _MapInfo()
    obj_info(fd, info, f"map info {what}")
    return info.btf_id, info.btf_key_type_id, info.btf_value_type_id


def _own_btf_fd(btf_id: int) -> int | None:
    """A new fd for BTF object `btf_id` if this process already holds one (BCC keeps the BTF of
    the object it just compiled open): reading it through our own fd needs no CAP_SYS_ADMIN,
    which opening a BTF object by id does, and the agent runs without it."""
    fds = Path("/proc/self/fd")
    for entry in fds.iterdir():
        try:
            if os.readlink(entry) != "anon_inode:btf":
                continue
            info = _BtfInfo()
            obj_info(int(entry.name), info, f"BTF fd {entry.name}")
        except OSError:
            continue        # an fd closed meanwhile, or the listing's own fd
        if info.id == btf_id:
            return os.dup(int(entry.name))
    return None


def btf_bytes(btf_id: int) -> bytes:
    """The raw BTF (header, types, strings) of a loaded BTF object: through an fd this process
    holds, else opened by id (which the kernel allows only with CAP_SYS_ADMIN)."""
    fd = _own_btf_fd(btf_id)
    if fd is None:
        fd = _check(_lib().bpf_btf_get_fd_by_id(btf_id), f"open BTF {btf_id}")
    try:
        info = _BtfInfo()
        obj_info(fd, info, f"BTF {btf_id} info")
        buf = ct.create_string_buffer(info.btf_size)
        info = _BtfInfo(btf=ct.addressof(buf), btf_size=len(buf))
        obj_info(fd, info, f"BTF {btf_id}")
        return buf.raw[:info.btf_size]
    finally:
        os.close(fd)


class _LinkInfo(ct.Structure):
    # struct bpf_link_info head and its cgroup member (uapi/linux/bpf.h).
    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("prog_id", ct.c_uint32),
                ("pad", ct.c_uint32), ("cgroup_id", ct.c_uint64), ("attach_type", ct.c_uint32),
                ("rest", ct.c_uint8 * 228)]


def link_create(prog_fd: int, cgroup_fd: int, attach_type: int, what: str) -> int:
    """Attach through a BPF link: multi-attach (foreign programs on the cgroup stay), and the
    attachment lives as long as the link's pin, not as long as this process."""
    return _check(_lib().bpf_link_create(prog_fd, cgroup_fd, attach_type, None), f"attach {what}")


def link_update(link_fd: int, prog_fd: int, what: str) -> None:
    """Swap the program behind an attached link in one step (BPF_LINK_UPDATE): no moment in
    which the cgroup runs neither the old program nor the new one."""
    _check(_lib().bpf_link_update(link_fd, prog_fd, None), f"replace program of {what}")


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE; bpffs supports it)."""
    if ct.CDLL(None, use_errno=True).renameat2(_AT_FDCWD, str(a).encode(), _AT_FDCWD, str(b).encode(), _RENAME_EXCHANGE) != 0:
        err = ct.get_errno()
        raise BpfError(err, f"exchange {a} and {b}: {os.strerror(err)}")


def link_detach(link_fd: int, what: str) -> None:
    _check(_lib().bpf_link_detach(link_fd), f"detach {what}")


def link_target(link_fd: int) -> tuple[int, int]:
    """(program id, cgroup id) of a cgroup link; cgroup id 0 once the link is detached."""
    info = _LinkInfo()
    obj_info(link_fd, info, "link info")
    return info.prog_id, info.cgroup_id
