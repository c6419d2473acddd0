"""Exchanges per second through Http1Session, on captured traffic (not a test).

Usage::

    .venv/bin/python benchmarks/bench_http1_parser.py [seconds-per-case]

Prints the best of five runs per case. Cases: the keepalive_100 fixture
(http.client -> http.server, ~140-byte requests, responses in one or two writes) fed one
read/write per call; the same with every request and response in one call each (as a
pipelining client/server would); and a minimal GET / 200 pair.

For scale, a 10M-iteration empty ``for`` loop is printed too: this pure-Python parser's rate
is proportional to the interpreter's speed on the machine at hand.
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
    streams = {"c": (FIXTURES / f"{name}.request.bin").read_bytes(),
               "s": (FIXTURES / f"{name}.response.bin").read_bytes()}
    offsets = {"c": 0, "s": 0}
    units: list[tuple[Direction, bytes]] = []
    for side, size in meta["chunks"]:
        data = streams[side][offsets[side]:offsets[side] + size]
        offsets[side] += size
        units.append((SIDE[side], data))
    return units


def bench(label: str, units: list[tuple[Direction, bytes]], seconds: float, trials: int = 5) -> float:
    """Best of ``trials`` runs of ``seconds / trials`` each (the best is the least disturbed)."""
    stats = Http1Stats()
    rates = []
    for _ in range(trials):
        exchanges = 0
        start = time.perf_counter()
        deadline = start + seconds / trials
        while time.perf_counter() < deadline:
            for _ in range(10):
                session = Http1Session(CONN, stats=stats, max_pending=1 << 20)
                ts = 0
                for direction, data in units:
                    ts += 1000
                    exchanges += len(session.on_data(direction, data, ts, ts + 10, tid=7))
                exchanges += len(session.on_close(ts + 1))
        rates.append(exchanges / (time.perf_counter() - start))
    rates.sort()
    print(f"{label:<48} {rates[-1]:>10,.0f} exchanges/s  (median of {trials}: {rates[trials // 2]:,.0f})")
    assert stats.parse_errors == 0 and stats.exchanges > 0
    return rates[-1]


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    units = fixture_units("keepalive_100")
    bench("keepalive_100, one call per read/write", units, seconds)
    requests = b"".join(data for d, data in units if d == Direction.INGRESS)
    responses = b"".join(data for d, data in units if d == Direction.EGRESS)
    bench("keepalive_100, all requests then all responses", [(Direction.INGRESS, requests),
                                                            (Direction.EGRESS, responses)], seconds)
    simple = [(Direction.INGRESS, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
              (Direction.EGRESS, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")] * 100
    bench("minimal GET / 200, one call per read/write", simple, seconds)
    start = time.perf_counter()
    for _ in range(10_000_000):
        pass
    print(f"(interpreter scale: 10M-iteration empty loop takes {time.perf_counter() - start:.3f} s)")


if __name__ == "__main__":
    main()
