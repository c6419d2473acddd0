"""Exchanges per second through Http2Session, on captured traffic (not a test).

Usage::

    .venv/bin/python benchmarks/bench_http2_parser.py [seconds-per-case]

Prints the best of five runs per case. Cases, from tests/fixtures/http2: ``grpc_unary``
(grpcio, 10 unary calls on one channel, fed one read/write per call); ``h2load_100`` (100
concurrent GETs on one connection, a handful of large reads/writes); and a minimal
"simple request/response" connection: a client preface, then 100 GET / 200 exchanges, each
request one write (HEADERS with END_STREAM, fields from the dynamic table after the first) and
each response one write (HEADERS + DATA "ok" with END_STREAM), encoded with the ``hpack``
library.

For scale, a 10M-iteration empty ``for`` loop is printed too: this pure-Python parser's rate
is proportional to the interpreter's speed on the machine at hand.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402
from common import BENCH_CONN as CONN  # noqa: E402
from common import FIXTURES_ROOT, bench_sessions, print_interpreter_scale, save_results  # noqa: E402

from otel_ebpf.protocols.http2 import PREFACE, Http2Session, Http2Stats  # noqa: E402
from otel_ebpf.records import Direction  # noqa: E402

FIXTURES = FIXTURES_ROOT / "http2"


def fixture_units(name: str) -> list[tuple[Direction, bytes]]:
    return common.fixture_units(FIXTURES, name)


def frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">BHBBL", len(payload) >> 16, len(payload) & 0xFFFF, ftype, flags, stream) + payload


def simple_units(count: int = 100) -> list[tuple[Direction, bytes]]:
    """A preface, SETTINGS both ways, then ``count`` GET / -> 200 "ok" exchanges."""
    from hpack import Encoder

    request_encoder, response_encoder = Encoder(), Encoder()
    settings = frame(4, 0, 0, b"")
    units = [(Direction.INGRESS, PREFACE + settings), (Direction.EGRESS, settings + frame(4, 1, 0, b""))]
    for i in range(count):
        stream = 2 * i + 1
        request = request_encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", "/"),
                                          (":authority", "example.com"), ("user-agent", "bench/1.0"),
                                          ("accept", "*/*")])
        response = response_encoder.encode([(":status", "200"), ("content-type", "text/plain"),
                                            ("content-length", "2"), ("server", "bench")])
        units.append((Direction.INGRESS, frame(1, 0x5, stream, request)))
        units.append((Direction.EGRESS, frame(1, 0x4, stream, response) + frame(0, 0x1, stream, b"ok")))
    return units


def bench(label: str, units: list[tuple[Direction, bytes]], seconds: float, trials: int = 5) -> float:
    """Best of ``trials`` runs of ``seconds / trials`` each (the best is the least disturbed)."""
    stats = Http2Stats()
    return bench_sessions(label, units, seconds, lambda: Http2Session(CONN, stats=stats), stats, width=56,
                          trials=trials)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    results = {
        "simple": bench("simple GET / 200 (preface + 100 exchanges), one call per write", simple_units(), seconds),
        "grpc_unary": bench("grpc_unary fixture (10 unary calls), one call per read/write", fixture_units("grpc_unary"),
                            seconds),
        "h2load_100": bench("h2load_100 fixture (100 concurrent streams)", fixture_units("h2load_100"), seconds),
    }
    print_interpreter_scale()
    save_results("bench_http2_parser", {"exchanges_per_s": results})


if __name__ == "__main__":
    main()
