"""Reading BPF Type Format (BTF): the types a compiled BPF object (or the kernel) describes itself
with. Pure: bytes in, layouts out. Only what the alignment check needs: struct members with their
offsets, arrays, and the sizes of scalars; typedefs and qualifiers are looked through.

Format: include/uapi/linux/btf.h (a header, then the type section, then the string section).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = 0xEB9F
# kind -> bytes of kind-specific data after the 12-byte `struct btf_type`, per member (vlen) or once
_PER_MEMBER = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}
_ONCE = {1: 4, 3: 12, 14: 4, 17: 4}
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 12, 13, 14, 15, 16, 17, 18, 19
_QUALIFIERS = {TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG}
_SIZED = {INT, ENUM, FLOAT, ENUM64}

# A layout: ("struct", size, ((member, byte offset, layout), ...)) | ("array", count, layout) |
# ("scalar", size). The ctypes mirrors are described the same way (see `alignment`).
Layout = tuple


class BtfError(ValueError):
    """Not BTF, or a type the alignment check cannot describe."""


@dataclass(frozen=True)
class _Type:
    name: str
    kind: int
    kind_flag: bool
    size_or_type: int
    extra: bytes          # the kind-specific data


class Btf:
    def __init__(self, raw: bytes):
        if len(raw) < 24:
            raise BtfError("BTF blob too short")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", raw)
        if magic != MAGIC:
            raise BtfError(f"not BTF (magic {magic:#x})")
        self._strings = raw[hdr_len + str_off:hdr_len + str_off + str_len]
        self.types: list[_Type | None] = [None]          # type id 0 is void
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            name_off, info, size_or_type = struct.unpack_from("<III", raw, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            extra_len = _PER_MEMBER.get(kind, 0) * vlen + _ONCE.get(kind, 0)
            self.types.append(_Type(self._name(name_off), kind, bool(info >> 31), size_or_type,
                                    raw[pos + 12:pos + 12 + extra_len]))
            pos += 12 + extra_len

    def _name(self, off: int) -> str:
        return self._strings[off:self._strings.index(b"\0", off)].decode()

    def find(self, name: str, kind: int = STRUCT) -> int:
        """The id of the first type of `kind` called `name`."""
        for i, t in enumerate(self.types):
            if t is not None and t.kind == kind and t.name == name:
                return i
        raise BtfError(f"no type {name!r} of kind {kind} in this BTF")

    def name_of(self, type_id: int) -> str:
        t = self.types[self._resolve(type_id)]
        return f"struct {t.name}" if t and t.kind == STRUCT else (t.name if t else "void")

    def _resolve(self, type_id: int) -> int:
        while (t := self.types[type_id]) is not None and t.kind in _QUALIFIERS:
            type_id = t.size_or_type
        return type_id

    def layout(self, type_id: int) -> Layout:
        t = self.types[self._resolve(type_id)]
        if t is None:
            raise BtfError("void has no layout")
        if t.kind in _SIZED:
            return ("scalar", t.size_or_type)
        if t.kind == PTR:
            return ("scalar", 8)
        if t.kind == ARRAY:
            elem, _index, count = struct.unpack_from("<III", t.extra)
            return ("array", count, self.layout(elem))
        if t.kind == STRUCT:
            return ("struct", t.size_or_type, tuple(self._members(t)))
        raise BtfError(f"type {t.name or '(anonymous)'} of kind {t.kind} is not described")

    def _members(self, t: _Type):
        for i in range(len(t.extra) // 12):
            name_off, member_type, offset = struct.unpack_from("<III", t.extra, i * 12)
            bits = offset & 0xFFFFFF if t.kind_flag else offset
            if bits % 8 or (t.kind_flag and offset >> 24):
                raise BtfError(f"struct {t.name}: bitfield member {self._name(name_off)!r} has no ctypes mirror")
            yield self._name(name_off), bits // 8, self.layout(member_type)
