"""Kernel records of the sockdata tracer, decoded with layouts taken from the object's BTF.

Usage::

    codec = SockDataCodec(BpfObjectInfo.from_file(path))
    for record in ring.drain():
        event = codec.decode(record)      # SockDataEvent | ConnEvent | None

The numbers of the Python enums below mirror the C enums of
``bpf/sockdata/sockdata.h`` (same names, ``EVENT_*`` ↔ ``EventType.*``);
:meth:`SockDataCodec.__init__` checks them against the object's BTF and refuses
to start on a mismatch, and the struct offsets are read from BTF, never typed here.
"""

from __future__ import annotations

import enum
import socket
import struct
from dataclasses import dataclass

from ..records import Direction, Role
from .btf import BpfObjectInfo, BtfError

__all__ = ["ConnEvent", "EventType", "SockDataCodec", "SockDataEvent", "Stat", "Syscall"]


class EventType(enum.IntEnum):
    """``enum event_type`` in sockdata.h."""

    SOCK_DATA = 1
    CONN_OPEN = 2
    CONN_CLOSE = 3


class Syscall(enum.IntEnum):
    """``enum syscall_id`` in sockdata.h."""

    READ = 1
    WRITE = 2
    READV = 3
    WRITEV = 4
    RECVFROM = 5
    SENDTO = 6
    RECVMSG = 7
    SENDMSG = 8
    RECVMMSG = 9
    SENDMMSG = 10
    SENDFILE = 11


class Stat(enum.IntEnum):
    """``enum stat_index`` in sockdata.h (per-CPU counters)."""

    EVENTS = 0
    LOST = 1
    ACTIVE_FULL = 2
    TRUNCATED = 3
    SELF_SKIPPED = 4
    H2_FORWARDED = 5
    LOST_WITH_ROOM = 6  # of LOST: refused while the ring had room (see count_lost in sockdata.bpf.c)


@dataclass(slots=True)
class SockDataEvent:
    tgid: int
    tid: int
    fd: int
    ts_enter: int
    ts_exit: int
    sock_id: int
    length: int  # bytes moved by the syscall
    direction: Direction
    role: Role
    syscall: Syscall
    family: int  # 4 or 6
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    data: bytes  # the captured prefix
    # Parts of the payload past the prefix, as (offset, bytes) in increasing order: HTTP/2 frame
    # headers and non-DATA frames the kernel forwarded from an oversized syscall (see h2_walk).
    segments: tuple[tuple[int, bytes], ...] = ()
    transport: int = 6  # IPPROTO_TCP (6), or IPPROTO_UDP (17) for DNS sockets
    total_retrans: int = 0  # TCP: the connection's retransmitted segments at this syscall
    srtt_us: int = 0  # TCP: its smoothed RTT then (0: no sample)

    @property
    def missing(self) -> int:
        """Uncaptured bytes right after ``data`` (up to the first segment, else to the end)."""
        if self.segments:
            return self.segments[0][0] - len(self.data)
        return self.length - len(self.data)

    def pieces(self) -> list[tuple[bytes, int]]:
        """The payload as (captured bytes, uncaptured bytes after them) pieces, in order."""
        if not self.segments:
            return [(self.data, self.length - len(self.data))]
        out = []
        data = self.data
        end = len(data)
        for offset, chunk in self.segments:
            out.append((data, offset - end))
            data = chunk
            end = offset + len(chunk)
        out.append((data, self.length - end))
        return out


@dataclass(slots=True)
class ConnEvent:
    type: EventType
    tgid: int
    tid: int
    fd: int
    ts: int
    sock_id: int
    role: Role
    family: int
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    comm: str = ""


_DATA_FIELDS = [
    "type", "tgid", "tid", "fd", "ts_enter", "ts_exit", "sock_id", "len", "captured", "direction", "role",
    "syscall", "proto", "ext_offset", "tuple.saddr", "tuple.daddr", "tuple.sport", "tuple.dport", "tuple.family",
    "total_retrans", "srtt_us",
]
_CONN_FIELDS = [
    "type", "tgid", "tid", "fd", "ts", "sock_id", "role",
    "tuple.saddr", "tuple.daddr", "tuple.sport", "tuple.dport", "tuple.family", "comm",
]
_ENUMS = {"event_type": (EventType, "EVENT_"), "syscall_id": (Syscall, "SYS_"), "stat_index": (Stat, "STAT_"),
          "direction": (Direction, "DIR_"), "conn_role": (Role, "ROLE_")}


# Enum members by value, for the decoder's hot path: an index instead of an Enum() call per record
# (values are checked against the object's BTF at start; an unknown value raises IndexError/KeyError,
# counted as a decode error).
_DIRECTIONS = tuple(Direction)
_ROLES = tuple(Role)
_SYSCALLS = {s.value: s for s in Syscall}


def check_enums(info: BpfObjectInfo, enums: dict | None = None) -> None:
    """Raise BtfError when a Python enum disagrees with the object's C enum. ``enums`` maps C enum
    names to (Python enum, prefix of the C names); default: sockdata's."""
    for c_name, (py_enum, prefix) in (_ENUMS if enums is None else enums).items():
        c_values = {k[len(prefix):]: v for k, v in info.btf.enum(c_name).items() if k != prefix + "MAX"}
        py_values = {m.name: m.value for m in py_enum}
        if c_values != py_values:
            raise BtfError(f"enum {c_name} in the BPF object {c_values} differs from {py_enum.__name__} {py_values}")


_addr_cache: dict[tuple[int, bytes], str] = {}


def format_address(family: int, raw: bytes) -> str:
    """Text of a 16-byte kernel address (IPv4 in the first 4 bytes; IPv4-mapped IPv6 as IPv4). Cached."""
    key = (family, raw)
    text = _addr_cache.get(key)
    if text is None:
        if family == socket.AF_INET:
            text = socket.inet_ntop(socket.AF_INET, raw[:4])
        else:
            text = socket.inet_ntop(socket.AF_INET6, raw)
            if text.startswith("::ffff:") and "." in text:
                text = text[7:]  # IPv4-mapped: report the IPv4 address
        if len(_addr_cache) > 4096:
            _addr_cache.clear()
        _addr_cache[key] = text
    return text


class SockDataCodec:
    """Decodes sockdata ring-buffer records; layouts come from the object's BTF."""

    def __init__(self, info: BpfObjectInfo):
        check_enums(info)
        self._data = info.btf.decoder("sock_data_event", _DATA_FIELDS)
        self._data_size = info.btf.struct_size("sock_data_event")
        self._conn = info.btf.decoder("conn_event", _CONN_FIELDS)
        self._segment = info.btf.decoder("data_segment", ["offset", "size"])
        self._segment_size = info.btf.struct_size("data_segment")
        self.decode_errors = 0
        self.bad_segments = 0

    def decode(self, rec: bytes) -> SockDataEvent | ConnEvent | None:
        try:
            kind = rec[0]
            if kind == EventType.SOCK_DATA:
                (_t, tgid, tid, fd, ts_enter, ts_exit, sock_id, length, captured, direction, role, syscall, proto,
                 ext_offset, saddr, daddr, sport, dport, family, retrans, srtt) = self._data.unpack_from(rec, 0)
                start = self._data_size
                segments = ()
                if ext_offset:
                    segments = self._segments(rec, start + ext_offset, start + captured, ext_offset, length)
                    captured = ext_offset
                return SockDataEvent(
                    tgid, tid, fd, ts_enter, ts_exit, sock_id, length, _DIRECTIONS[direction], _ROLES[role],
                    _SYSCALLS[syscall], 4 if family == socket.AF_INET else 6, format_address(family, saddr), sport,
                    format_address(family, daddr), dport, rec[start : start + captured], segments, proto, retrans, srtt,
                )
            if kind in (EventType.CONN_OPEN, EventType.CONN_CLOSE):
                (t, tgid, tid, fd, ts, sock_id, role, saddr, daddr, sport, dport, family,
                 comm) = self._conn.unpack_from(rec, 0)
                return ConnEvent(
                    EventType(t), tgid, tid, fd, ts, sock_id, Role(role), 4 if family == socket.AF_INET else 6,
                    format_address(family, saddr), sport, format_address(family, daddr), dport,
                    comm.split(b"\0", 1)[0].decode("utf-8", "replace"),
                )
        except (ValueError, IndexError, KeyError, OSError, struct.error):
            pass
        self.decode_errors += 1
        return None

    def _segments(self, rec: bytes, pos: int, end: int, head: int, length: int) -> tuple[tuple[int, bytes], ...]:
        """Segments in rec[pos:end]; those that break the order or the payload's bounds (never
        written so by the kernel) end the list: the rest of the payload then counts as uncaptured."""
        out = []
        unpack = self._segment.unpack_from
        size = self._segment_size
        covered = head
        while pos + size <= end:
            offset, n = unpack(rec, pos)
            pos += size
            if offset < covered or offset + n > length or pos + n > end:
                self.bad_segments += 1
                break
            out.append((offset, rec[pos:pos + n]))
            pos += n
            covered = offset + n
        return tuple(out)
