"""Exchanges per second through Http1Session, on captured traffic (not a test).

Usage::

    .venv/bin/python benchmarks/bench_http1_parser.py [seconds-per-case]

Cases: the keepalive_100 fixture (http.client -> http.server, ~140-byte requests, responses in
one or two writes) fed one read/write per call; the same with every request and response in one
call each (as a pipelining client/server would); and a minimal GET / 200 pair.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from otel_ebpf.protocols.http1 import Http1Session, Http1Stats
from otel_ebpf.records import Connection, Direction, Role

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "http1"
CONN = Connection(1, 3, 0, 4, "127.0.0.1", 8080, "127.0.0.1", 50000, Role.SERVER)
SIDE = {"c": Direction.INGRESS, "s": Direction.EGRESS}


def fixture_units(name: str) -> list[tuple[Direction, bytes]]:
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    streams = {"c": (FIXTURES / f"{name}.request.bin").read_bytes(), "s": (FIXTURES / f"{name}.response.bin").read_bytes()}
    offsets = {"c": 0, "s": 0}
    units: list[tuple[Direction, bytes]] = []
    for side, size in meta["chunks"]:
        data = streams[side][offsets[side]:offsets[side] + size]
        offsets[side] += size
        units.append((SIDE[side], data))
    return units


def bench(label: str, units: list[tuple[Direction, bytes]], seconds: float) -> float:
    stats = Http1Stats()
    exchanges = 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(20):
            session = Http1Session(CONN, stats=stats, max_pending=1 << 20)
            ts = 0
            for direction, data in units:
                ts += 1000
                exchanges += len(session.on_data(direction, data, ts, ts + 10, tid=7))
            exchanges += len(session.on_close(ts + 1))
    elapsed = time.perf_counter() - start
    rate = exchanges / elapsed
    print(f"{label:<48} {rate:>10,.0f} exchanges/s   ({exchanges} in {elapsed:.2f} s)")
    assert stats.parse_errors == 0 and stats.exchanges == exchanges
    return rate


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    units = fixture_units("keepalive_100")
    bench("keepalive_100, one call per read/write", units, seconds)
    requests = b"".join(data for d, data in units if d == Direction.INGRESS)
    responses = b"".join(data for d, data in units if d == Direction.EGRESS)
    bench("keepalive_100, all requests then all responses", [(Direction.INGRESS, requests),
                                                            (Direction.EGRESS, responses)], seconds)
    simple = [(Direction.INGRESS, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
              (Direction.EGRESS, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")] * 100
    bench("minimal GET / 200, one call per read/write", simple, seconds)


if __name__ == "__main__":
    main()
