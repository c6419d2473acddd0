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

import json
import struct
import sys
import time
from pathlib import Path

from otel_ebpf.protocols.http2 import PREFACE, Http2Session, Http2Stats
from otel_ebpf.records import Connection, Direction, Role

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "http2"
CONN = Connection(1, 3, 0, 4, "127.0.0.1", 8080, "127.0.0.1", 50000, Role.SERVER)
SIDE = {"c": Direction.INGRESS, "s": Direction.EGRESS}


def fixture_units(name: str) -> list[tuple[Direction, bytes]]:
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    streams = {"c": (FIXTURES / f"{name}.request.bin").read_bytes(),
               "s": (FIXTURES / f"{name}.response.bin").read_bytes()}
    offsets = {"c": 0, "s": 0}
    units: list[tuple[Direction, bytes]] = []
    for side, size in meta["chunks"]:
        units.append((SIDE[side], streams[side][offsets[side]:offsets[side] + size]))
        offsets[side] += size
    return units


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
    rates = []
    for _ in range(trials):
        exchanges = 0
        start = time.perf_counter()
        deadline = start + seconds / trials
        while time.perf_counter() < deadline:
            for _ in range(10):
                session = Http2Session(CONN, stats=stats)
                ts = 0
                for direction, data in units:
                    ts += 1000
                    exchanges += len(session.on_data(direction, data, ts, ts + 10, tid=7))
                exchanges += len(session.on_close(ts + 1))
        rates.append(exchanges / (time.perf_counter() - start))
    rates.sort()
    print(f"{label:<56} {rates[-1]:>10,.0f} exchanges/s  (median of {trials}: {rates[trials // 2]:,.0f})")
    assert stats.parse_errors == 0 and stats.exchanges > 0, stats
    return rates[-1]


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    bench("simple GET / 200 (preface + 100 exchanges), one call per write", simple_units(), seconds)
    bench("grpc_unary fixture (10 unary calls), one call per read/write", fixture_units("grpc_unary"), seconds)
    bench("h2load_100 fixture (100 concurrent streams)", fixture_units("h2load_100"), seconds)
    start = time.perf_counter()
    for _ in range(10_000_000):
        pass
    print(f"(interpreter scale: 10M-iteration empty loop takes {time.perf_counter() - start:.3f} s)")


if __name__ == "__main__":
    main()
