"""HTTP/2 frames forwarded past the capture (sockdata's h2_walk): a model of the kernel walk feeds
the connection table, which must then parse exactly as if every byte had been captured. Also the
h2c upgrade hand-over from HTTP/1.1 to HTTP/2."""

from __future__ import annotations

import pytest

from otel_ebpf.bpf.clock import MonotonicClock
from otel_ebpf.protocols.http1 import Http1Stats
from otel_ebpf.protocols.http2 import Http2Stats
from otel_ebpf.records import Connection, Direction, Role
from otel_ebpf.stream.conntable import ConnectionTable, ListeningPorts
from otel_ebpf.stream.detect import DetectingSession

from ..protocols.feeding import FIXTURES_ROOT, load
from .events_factory import FakeSocket, write_proc_net_tcp

CAPTURE = 4096
KNOWN_TYPES = range(10)


class KernelWalk:
    """What h2_walk forwards for one direction: state carried between syscalls, adoption on an
    exact chain of known frame types, every frame header and non-DATA frame past the head."""

    def __init__(self) -> None:
        self.known = False
        self.skip = 0
        self.keep = False
        self.partial = b""

    def segments(self, data: bytes, captured: int) -> list[tuple[int, bytes]]:
        wanted: list[tuple[int, int]] = []
        off = 0
        n = len(data)
        strict = not self.known
        if self.known:
            if self.partial:
                need = 9 - len(self.partial)
                header = self.partial + data[:need]
                wanted.append((0, need))
                self.skip, self.keep, self.partial = int.from_bytes(header[:3], "big"), header[3] != 0, b""
                off = need
            k = min(self.skip, n - off)
            if self.keep:
                wanted.append((off, off + k))
            off += k
            self.skip -= k
        frames = 0
        while off < n:
            if n - off < 9:
                self.partial = data[off:]
                wanted.append((off, n))
                off = n
                break
            length, ftype = int.from_bytes(data[off:off + 3], "big"), data[off + 3]
            if strict and ftype not in KNOWN_TYPES:
                return []
            end = off + 9 + length
            wanted.append((off, off + 9 if ftype == 0 else min(end, n)))
            frames += 1
            if end > n:
                self.skip, self.keep = end - n, ftype != 0
                off = n
            else:
                self.skip, self.keep, off = 0, False, end
        if strict and (self.skip or self.partial or not frames):
            self.skip, self.partial = 0, b""
            return []
        self.known = True
        out: list[tuple[int, bytes]] = []
        for a, b in wanted:
            a = max(a, captured)
            if b <= a:
                continue
            if out and out[-1][0] + len(out[-1][1]) == a:
                out[-1] = (out[-1][0], out[-1][1] + data[a:b])
            else:
                out.append((a, data[a:b]))
        return out


@pytest.fixture
def table(tmp_path) -> ConnectionTable:
    clock = MonotonicClock()
    clock.offset_ns = 1_700_000_000_000_000_000
    return ConnectionTable(clock=clock, stats=Http1Stats(),
                           listening=ListeningPorts(proc_root=str(write_proc_net_tcp(tmp_path / "proc"))))


def _run(table: ConnectionTable, name: str, *, capture: int | None, forward: bool) -> list:
    sock = FakeSocket(pid=100, role=Role.SERVER)
    walks = {Direction.INGRESS: KernelWalk(), Direction.EGRESS: KernelWalk()}
    out = table.handle(sock.open(ts=1_000))
    ts = 2_000
    for side, data in load(name, FIXTURES_ROOT / "http2"):
        direction = Direction.INGRESS if side == "c" else Direction.EGRESS
        head = data if capture is None else data[:capture]
        segments = walks[direction].segments(data, len(head)) if forward and len(head) < len(data) else ()
        if forward and len(head) == len(data):
            walks[direction].segments(data, len(head))  # the walk runs on every syscall
        out += table.handle(sock.data(direction, head, ts_enter=ts, ts_exit=ts + 100, length=len(data),
                                      segments=tuple(segments)))
        ts += 1_000
    out += table.handle(sock.close(ts=ts))
    return out


def _summary(exchanges) -> list[tuple]:
    return [(e.request.target, e.response.status if e.response else None,
             e.response.trailers if e.response else None) for e in exchanges]


@pytest.mark.parametrize("name", ["grpc_large", "grpc_server_streaming", "grpc_unary", "grpc_many",
                                  "curl_prior_knowledge"])
def test_forwarded_frames_parse_as_if_everything_had_been_captured(table, name):
    full = _summary(_run(table, name, capture=None, forward=False))
    assert full and all(status for _, status, _ in full)

    forwarded = _summary(_run(table, name, capture=CAPTURE, forward=True))

    assert forwarded == full


def test_without_forwarded_frames_the_trailers_of_large_responses_are_lost(table):
    full = _summary(_run(table, "grpc_large", capture=None, forward=False))
    truncated = _summary(_run(table, "grpc_large", capture=CAPTURE, forward=False))
    assert any(("grpc-status", "0") in (trailers or ()) for _, _, trailers in full)
    assert truncated != full  # the model test above is not vacuous


def test_segments_split_a_syscall_into_pieces_with_exact_gaps():
    sock = FakeSocket()
    event = sock.write(b"HEAD", ts_enter=1, ts_exit=2, length=100, segments=((10, b"abc"), (13, b"de"), (50, b"x")))
    assert event.missing == 6
    assert event.pieces() == [(b"HEAD", 6), (b"abc", 0), (b"de", 35), (b"x", 49)]
    assert sum(len(d) + m for d, m in event.pieces()) == 100


def test_an_h2c_upgrade_is_one_exchange_continued_by_http2(table):
    """curl --http2 against a server that answers Upgrade: h2c with 101: the HTTP/1.1 request is
    stream 1 of the HTTP/2 session that takes over after the 101 head; the 101 is not an exchange."""
    sock = FakeSocket(pid=100, role=Role.SERVER)
    session = DetectingSession(_connection(sock), http1_stats=Http1Stats(), http2_stats=Http2Stats())
    starts = []
    session.on_request = starts.append
    out = []
    for i, (side, data) in enumerate(load("curl_upgrade", FIXTURES_ROOT / "http2")):
        direction = Direction.INGRESS if side == "c" else Direction.EGRESS
        out += session.on_data(direction, data, 1_000 * i, 1_000 * i + 10, tid=7)
    out += session.on_close(10_000)
    (ex,) = out
    assert [s.exchange_id for s in starts] == [ex.exchange_id]
    assert ex.protocol == "http2" and ex.request.target == "/upgraded" and ex.request.version == "1.1"
    assert (ex.response.status, ex.response.version) == (200, "2")
    assert session.protocol == "http2" and not session.dead


def _connection(sock: FakeSocket) -> Connection:
    return Connection(pid=sock.pid, fd=sock.fd, sock_id=sock.sock_id, family=4, local_address=sock.local[0],
                      local_port=sock.local[1], remote_address=sock.remote[0], remote_port=sock.remote[1],
                      role=sock.role)
