"""Read the BTF and symbols of a compiled BPF object, and build decoders from them.

Usage::

    from otel_ebpf.bpf.btf import BpfObjectInfo
    info = BpfObjectInfo.from_file("sockdata.bpf.o")
    layout = info.btf.struct_layout("sock_data_event")      # flattened, dotted member names
    decoder = info.btf.decoder("sock_data_event", ["type", "tgid", "tuple.sport"])
    values = decoder.unpack_from(record)                  # a tuple in the order asked for
    info.btf.enum("event_type")                           # {"EVENT_SOCK_DATA": 1, ...}
    info.rodata_symbols                                   # {"max_capture_bytes": (offset, size)}

User-space decoders of kernel records are built here from the object's own BTF,
so the C structs in ``bpf/<tracer>/<tracer>.h`` and Python cannot drift: a field
that is renamed, resized or moved changes the decoder or fails loudly at start.
This is a small pure-Python reader of the ELF64 section table, the symbol table
and the BTF type section (only the kinds a tracer's shared header uses).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

_BTF_MAGIC = 0xEB9F

# BTF kinds (include/uapi/linux/btf.h)
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF, _VOLATILE, _CONST, _RESTRICT = range(1, 12)
_FUNC, _FUNC_PROTO, _VAR, _DATASEC, _FLOAT, _DECL_TAG, _TYPE_TAG, _ENUM64 = range(12, 20)
_MODIFIERS = (_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG)


class BtfError(ValueError):
    """The object has no usable BTF, or a struct/enum/field is missing from it."""


@dataclass(frozen=True, slots=True)
class Member:
    name: str  # dotted path for nested structs, e.g. "tuple.sport"
    offset: int  # bytes from the start of the outer struct
    size: int
    fmt: str  # struct module code: B H I Q b h i q, or "Ns" for byte arrays


@dataclass(frozen=True, slots=True)
class _Type:
    kind: int
    name: str
    size_or_type: int
    vlen: int
    kind_flag: bool
    extra: tuple  # kind-specific records


class Btf:
    """Types of one BTF blob."""

    def __init__(self, blob: bytes):
        if len(blob) < 24:
            raise BtfError("BTF section too short")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            "<HBBIIIII", blob, 0
        )
        if magic != _BTF_MAGIC:
            raise BtfError(f"bad BTF magic {magic:#x}")
        types = blob[hdr_len + type_off : hdr_len + type_off + type_len]
        self._strings = blob[hdr_len + str_off : hdr_len + str_off + str_len]
        self._types: list[_Type | None] = [None]  # type id 0 is void
        self._parse(types)
        self._by_name: dict[tuple[int, str], int] = {}
        for tid, t in enumerate(self._types):
            if t is not None and t.name:
                self._by_name.setdefault((t.kind, t.name), tid)

    def _str(self, off: int) -> str:
        end = self._strings.index(b"\0", off)
        return self._strings[off:end].decode()

    def _parse(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            name_off, info, size_or_type = struct.unpack_from("<III", data, pos)
            pos += 12
            vlen = info & 0xFFFF
            kind = (info >> 24) & 0x1F
            kind_flag = bool(info >> 31)
            extra: tuple = ()
            if kind == _INT:
                extra = struct.unpack_from("<I", data, pos)
                pos += 4
            elif kind == _ARRAY:
                extra = struct.unpack_from("<III", data, pos)
                pos += 12
            elif kind in (_STRUCT, _UNION):
                extra = tuple(
                    (self._str(n), t, o) for n, t, o in struct.iter_unpack("<III", data[pos : pos + 12 * vlen])
                )
                pos += 12 * vlen
            elif kind == _ENUM:
                extra = tuple((self._str(n), v) for n, v in struct.iter_unpack("<Ii", data[pos : pos + 8 * vlen]))
                pos += 8 * vlen
            elif kind == _ENUM64:
                extra = tuple(
                    (self._str(n), lo | (hi << 32))
                    for n, lo, hi in struct.iter_unpack("<III", data[pos : pos + 12 * vlen])
                )
                pos += 12 * vlen
            elif kind == _FUNC_PROTO:
                pos += 8 * vlen
            elif kind == _VAR:
                pos += 4
            elif kind == _DATASEC:
                extra = tuple(struct.iter_unpack("<III", data[pos : pos + 12 * vlen]))
                pos += 12 * vlen
            elif kind == _DECL_TAG:
                pos += 4
            elif kind not in (_PTR, _FWD, _TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _FUNC, _FLOAT, _TYPE_TAG):
                raise BtfError(f"unknown BTF kind {kind}")
            self._types.append(_Type(kind, self._str(name_off), size_or_type, vlen, kind_flag, extra))

    def _resolve(self, tid: int) -> _Type:
        t = self._types[tid]
        while t is not None and t.kind in _MODIFIERS:
            t = self._types[t.size_or_type]
        if t is None:
            raise BtfError("void type where a sized type was expected")
        return t

    def _sizeof(self, t: _Type) -> int:
        if t.kind in (_INT, _STRUCT, _UNION, _ENUM, _ENUM64, _FLOAT):
            return t.size_or_type
        if t.kind == _PTR:
            return 8
        if t.kind == _ARRAY:
            elem, _index, nelems = t.extra
            return self._sizeof(self._resolve(elem)) * nelems
        raise BtfError(f"cannot size BTF kind {t.kind}")

    def struct_layout(self, name: str) -> list[Member]:
        """Members of ``struct name``, nested structs flattened with dotted names."""
        tid = self._by_name.get((_STRUCT, name))
        if tid is None:
            raise BtfError(f"struct {name} not found in BTF")
        out: list[Member] = []
        self._flatten(self._types[tid], "", 0, out)
        return out

    def struct_size(self, name: str) -> int:
        tid = self._by_name.get((_STRUCT, name))
        if tid is None:
            raise BtfError(f"struct {name} not found in BTF")
        return self._types[tid].size_or_type

    def _flatten(self, t: _Type, prefix: str, base: int, out: list[Member]) -> None:
        for mname, mtid, moff in t.extra:
            if t.kind_flag:  # bitfield encoding: low 24 bits are the bit offset
                if moff >> 24:
                    continue  # bitfields are not part of any shared record
                moff &= 0xFFFFFF
            if moff % 8:
                continue
            mt = self._resolve(mtid)
            off = base + moff // 8
            path = prefix + mname
            if mt.kind in (_STRUCT, _UNION):
                self._flatten(mt, path + ".", off, out)
            elif mt.kind == _ARRAY:
                elem, _index, nelems = mt.extra
                if nelems:  # flexible array members have no bytes in the header
                    out.append(Member(path, off, self._sizeof(mt), f"{self._sizeof(mt)}s"))
            else:
                size = self._sizeof(mt)
                signed = mt.kind == _INT and bool((mt.extra[0] >> 24) & 1)
                code = {1: "b", 2: "h", 4: "i", 8: "q"}[size]
                out.append(Member(path, off, size, code if signed else code.upper()))

    def enum(self, name: str) -> dict[str, int]:
        tid = self._by_name.get((_ENUM, name)) or self._by_name.get((_ENUM64, name))
        if tid is None:
            raise BtfError(f"enum {name} not found in BTF")
        return dict(self._types[tid].extra)

    def decoder(self, struct_name: str, fields: list[str]) -> struct.Struct:
        """A ``struct.Struct`` whose ``unpack_from`` yields ``fields`` in order.

        Fields must appear in ascending offset order in the struct; gaps become pad bytes.
        """
        by_name = {m.name: m for m in self.struct_layout(struct_name)}
        fmt = "<"
        pos = 0
        for name in fields:
            m = by_name.get(name)
            if m is None:
                raise BtfError(f"struct {struct_name} has no member {name!r} (BTF of the loaded object)")
            if m.offset < pos:
                raise BtfError(f"member {name!r} of struct {struct_name} is out of order for a decoder")
            if m.offset > pos:
                fmt += f"{m.offset - pos}x"
            fmt += m.fmt
            pos = m.offset + m.size
        return struct.Struct(fmt)


@dataclass(frozen=True)
class BpfObjectInfo:
    """What user space needs to know about a compiled BPF object, from its ELF file."""

    btf: Btf
    rodata_symbols: dict[str, tuple[int, int]]  # name -> (offset in .rodata, size)

    @classmethod
    def from_file(cls, path: str | Path) -> BpfObjectInfo:
        data = Path(path).read_bytes()
        sections = _elf_sections(data)
        if ".BTF" not in sections:
            raise BtfError(f"{path}: no .BTF section (build with clang -g)")
        index, blob = sections[".BTF"]
        if len(blob) < 24:
            raise BtfError(f"{path}: .BTF section is truncated")
        btf = Btf(sections[".BTF"][1])
        rodata: dict[str, tuple[int, int]] = {}
        if ".symtab" in sections and ".rodata" in sections:
            rodata_index = sections[".rodata"][0]
            strtab = sections[".strtab"][1]
            for st_name, _info, _other, shndx, value, size in struct.iter_unpack("<IBBHQQ", sections[".symtab"][1]):
                if shndx == rodata_index and st_name:
                    end = strtab.index(b"\0", st_name)
                    rodata[strtab[st_name:end].decode()] = (value, size)
        return cls(btf=btf, rodata_symbols=rodata)


def _elf_sections(data: bytes) -> dict[str, tuple[int, bytes]]:
    """ELF64 little-endian section name -> (index, contents)."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise BtfError("not a little-endian ELF64 object")
    try:
        return _read_sections(data)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as e:
        raise BtfError(f"truncated or corrupt ELF object ({e})") from None


def _read_sections(data: bytes) -> dict[str, tuple[int, bytes]]:
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = []
    for i in range(shnum):
        _name, _type, _flags, _addr, off, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        headers.append((_name, off, size))
    _n, stroff, strsize = headers[shstrndx]
    if stroff + strsize > len(data):
        raise BtfError("ELF section names extend past the end of the file")
    names = data[stroff : stroff + strsize]
    out: dict[str, tuple[int, bytes]] = {}
    for i, (name_off, off, size) in enumerate(headers):
        end = names.index(b"\0", name_off)
        out[names[name_off:end].decode()] = (i, data[off : off + size])
    return out
