"""Builders of decoded kernel events and of the raw records they come from (plain data, no parsing).

Usage::

    sock = FakeSocket(pid=100, fd=7, sock_id=0xA1, role=Role.SERVER)
    table.handle(sock.open(ts=1_000))
    table.handle(sock.read(b"GET / HTTP/1.1\\r\\n\\r\\n", ts_enter=2_000, ts_exit=2_100))
    table.handle(sock.write(response, ts_enter=3_000, ts_exit=3_200))
    table.handle(sock.close(ts=4_000))

    raw = sock_data_record(info, tgid=100, fd=7, ..., payload=b"...")   # bytes as the kernel writes them
    write_proc_net_tcp(tmp_path, listening=[8080], listening6=[9090])     # a /proc/net/tcp{,6} look-alike

Raw records are packed with the offsets and sizes of ``Btf.struct_layout`` of the compiled
object, never with a layout typed here.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from otel_ebpf.bpf.btf import BpfObjectInfo
from otel_ebpf.bpf.events import ConnEvent, EventType, SockDataEvent, Syscall
from otel_ebpf.records import Direction, Role

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


# ---------------------------------------------------------------------------------------------
# Captured traffic
# ---------------------------------------------------------------------------------------------


def fixture_chunks(name: str) -> list[tuple[str, bytes]]:
    """The chunks of tests/fixtures/http1/<name> in capture order: ("c", client bytes) / ("s", server bytes)."""
    base = FIXTURES / "http1"
    meta = json.loads((base / f"{name}.json").read_text())
    streams = {"c": (base / f"{name}.request.bin").read_bytes(), "s": (base / f"{name}.response.bin").read_bytes()}
    offsets = {"c": 0, "s": 0}
    chunks = []
    for side, size in meta["chunks"]:
        chunks.append((side, streams[side][offsets[side] : offsets[side] + size]))
        offsets[side] += size
    return chunks


# ---------------------------------------------------------------------------------------------
# Decoded events
# ---------------------------------------------------------------------------------------------


@dataclass
class FakeSocket:
    """One TCP socket of one process; its methods build the events the kernel would report for it."""

    pid: int = 100
    fd: int = 7
    sock_id: int = 0xFFFF_8880_0000_1000
    role: Role = Role.SERVER
    local: tuple[str, int] = ("10.0.0.1", 8080)
    remote: tuple[str, int] = ("10.0.0.2", 50000)
    tid: int = 0  # 0: same as pid
    comm: str = "server"

    @property
    def family(self) -> int:
        return 6 if ":" in self.local[0] else 4

    def _conn(self, kind: EventType, ts: int) -> ConnEvent:
        return ConnEvent(
            type=kind, tgid=self.pid, tid=self.tid or self.pid, fd=self.fd, ts=ts, sock_id=self.sock_id,
            role=self.role, family=self.family, local_address=self.local[0], local_port=self.local[1],
            remote_address=self.remote[0], remote_port=self.remote[1], comm=self.comm,
        )

    def open(self, *, ts: int) -> ConnEvent:
        return self._conn(EventType.CONN_OPEN, ts)

    def close(self, *, ts: int) -> ConnEvent:
        return self._conn(EventType.CONN_CLOSE, ts)

    def data(self, direction: Direction, payload: bytes, *, ts_enter: int, ts_exit: int, length: int | None = None,
             tid: int | None = None, segments: tuple[tuple[int, bytes], ...] = ()) -> SockDataEvent:
        return SockDataEvent(
            tgid=self.pid, tid=tid if tid is not None else (self.tid or self.pid), fd=self.fd, ts_enter=ts_enter,
            ts_exit=ts_exit, sock_id=self.sock_id, length=len(payload) if length is None else length,
            direction=direction, role=self.role,
            syscall=Syscall.READ if direction == Direction.INGRESS else Syscall.WRITE, family=self.family,
            local_address=self.local[0], local_port=self.local[1], remote_address=self.remote[0],
            remote_port=self.remote[1], data=payload, segments=segments,
        )

    def read(self, payload: bytes, *, ts_enter: int, ts_exit: int, **kw) -> SockDataEvent:
        return self.data(Direction.INGRESS, payload, ts_enter=ts_enter, ts_exit=ts_exit, **kw)

    def write(self, payload: bytes, *, ts_enter: int, ts_exit: int, **kw) -> SockDataEvent:
        return self.data(Direction.EGRESS, payload, ts_enter=ts_enter, ts_exit=ts_exit, **kw)


# ---------------------------------------------------------------------------------------------
# Raw kernel records (struct sock_data_event / struct conn_event)
# ---------------------------------------------------------------------------------------------


def raw_address(family: int, text: str) -> bytes:
    """16 bytes as in ``conn_tuple.saddr``: IPv4 in the first 4 bytes (network order), zero-padded."""
    packed = socket.inet_pton(family, text)
    return packed + bytes(16 - len(packed))


def pack_struct(info: BpfObjectInfo, struct_name: str, values: dict[str, object]) -> bytearray:
    """``struct_name`` with ``values`` (flattened member names) at the offsets the object's BTF gives."""
    layout = {m.name: m for m in info.btf.struct_layout(struct_name)}
    buf = bytearray(info.btf.struct_size(struct_name))
    for name, value in values.items():
        member = layout[name]
        struct.pack_into("<" + member.fmt, buf, member.offset, value)
    return buf


def _tuple_values(family: int, local: tuple[str, int], remote: tuple[str, int]) -> dict[str, object]:
    return {
        "tuple.saddr": raw_address(family, local[0]),
        "tuple.daddr": raw_address(family, remote[0]),
        "tuple.sport": local[1],
        "tuple.dport": remote[1],
        "tuple.family": family,
    }


def sock_data_record(
    info: BpfObjectInfo,
    *,
    tgid: int = 100,
    tid: int = 101,
    fd: int = 7,
    ts_enter: int = 1_000,
    ts_exit: int = 2_000,
    sock_id: int = 0xFFFF_8880_0000_1000,
    direction: Direction = Direction.INGRESS,
    role: Role = Role.SERVER,
    syscall: Syscall = Syscall.READ,
    family: int = socket.AF_INET,
    local: tuple[str, int] = ("10.0.0.1", 8080),
    remote: tuple[str, int] = ("10.0.0.2", 50000),
    payload: bytes = b"",
    length: int | None = None,
    trailing: bytes = b"",
    segments: list[tuple[int, bytes]] = (),
    proto: int = 6,
    total_retrans: int = 0,
    srtt_us: int = 0,
) -> bytes:
    """A ``struct sock_data_event`` followed by ``payload`` (the head), then ``segments`` (each a
    ``struct data_segment`` and its bytes) and ``trailing`` junk."""
    ext = b"".join(bytes(pack_struct(info, "data_segment", {"offset": off, "size": len(chunk)})) + chunk
                   for off, chunk in segments)
    values = {
        "type": EventType.SOCK_DATA, "tgid": tgid, "tid": tid, "fd": fd, "ts_enter": ts_enter, "ts_exit": ts_exit,
        "sock_id": sock_id, "len": len(payload) if length is None else length, "captured": len(payload) + len(ext),
        "ext_offset": len(payload) if segments else 0, "proto": proto, "total_retrans": total_retrans,
        "srtt_us": srtt_us,
        "direction": direction, "role": role, "syscall": syscall, **_tuple_values(family, local, remote),
    }
    return bytes(pack_struct(info, "sock_data_event", values)) + payload + ext + trailing


def conn_record(
    info: BpfObjectInfo,
    *,
    kind: EventType = EventType.CONN_OPEN,
    tgid: int = 100,
    tid: int = 101,
    fd: int = 7,
    ts: int = 500,
    sock_id: int = 0xFFFF_8880_0000_1000,
    role: Role = Role.SERVER,
    family: int = socket.AF_INET,
    local: tuple[str, int] = ("10.0.0.1", 8080),
    remote: tuple[str, int] = ("10.0.0.2", 50000),
    comm: bytes = b"server",
) -> bytes:
    """A ``struct conn_event`` (``comm`` is the raw 16-byte field, NUL-padded)."""
    values = {
        "type": kind, "tgid": tgid, "tid": tid, "fd": fd, "ts": ts, "sock_id": sock_id, "role": role,
        **_tuple_values(family, local, remote), "comm": comm,
    }
    return bytes(pack_struct(info, "conn_event", values))


# ---------------------------------------------------------------------------------------------
# /proc/net/tcp{,6}
# ---------------------------------------------------------------------------------------------

_TCP_HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")
_TCP6_HEADER = ("  sl  local_address                         remote_address                        st tx_queue "
                "rx_queue tr tm->when retrnsmt   uid  timeout inode\n")


def _tcp_line(sl: int, local: str, remote: str, state: str, inode: int) -> str:
    return (f"{sl:4d}: {local} {remote} {state} 00000000:00000000 00:00000000 00000000  1000        0 {inode} 1 "
            f"0000000000000000 100 0 0 10 0\n")


def write_proc_net_tcp(root: Path, *, listening: list[int] = (), listening6: list[int] = (),
                       established: list[tuple[int, int]] = ()) -> Path:
    """Write ``root/net/tcp`` and ``root/net/tcp6`` in the kernel's format; returns ``root``.

    ``listening`` ports are LISTEN (0A) on 0.0.0.0, ``listening6`` on ::, and each (local, remote)
    port pair of ``established`` is an ESTABLISHED (01) loopback connection.
    """
    net = root / "net"
    net.mkdir(parents=True, exist_ok=True)
    lines = [_TCP_HEADER]
    for port in listening:
        lines.append(_tcp_line(len(lines) - 1, f"00000000:{port:04X}", "00000000:0000", "0A", 31000 + port))
    for lport, rport in established:
        lines.append(_tcp_line(len(lines) - 1, f"0100007F:{lport:04X}", f"0100007F:{rport:04X}", "01", 0))
    (net / "tcp").write_text("".join(lines))
    lines6 = [_TCP6_HEADER]
    for port in listening6:
        lines6.append(_tcp_line(len(lines6) - 1, f"{'0' * 32}:{port:04X}", f"{'0' * 32}:0000", "0A", 41000 + port))
    (net / "tcp6").write_text("".join(lines6))
    return root
