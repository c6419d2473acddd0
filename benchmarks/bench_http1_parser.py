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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402
from common import BENCH_CONN as CONN  # noqa: E402
from common import FIXTURES_ROOT, bench_sessions, print_interpreter_scale, save_results  # noqa: E402

from otel_ebpf.protocols.http1 import Http1Session, Http1Stats  # noqa: E402
from otel_ebpf.records import Direction  # noqa: E402

FIXTURES = FIXTURES_ROOT / "http1"


def fixture_units(name: str) -> list[tuple[Direction, bytes]]:
    return common.fixture_units(FIXTURES, name)


def bench(label: str, units: list[tuple[Direction, bytes]], seconds: float, trials: int = 5) -> float:
    """Best of ``trials`` runs of ``seconds / trials`` each (the best is the least disturbed)."""
    stats = Http1Stats()
    return bench_sessions(label, units, seconds, lambda: Http1Session(CONN, stats=stats, max_pending=1 << 20), stats,
                          width=48, trials=trials)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    units = fixture_units("keepalive_100")
    results = {}
    results["keepalive_100"] = bench("keepalive_100, one call per read/write", units, seconds)
    requests = b"".join(data for d, data in units if d == Direction.INGRESS)
    responses = b"".join(data for d, data in units if d == Direction.EGRESS)
    results["keepalive_100_batched"] = bench("keepalive_100, all requests then all responses", [(Direction.INGRESS, requests),
                                                            (Direction.EGRESS, responses)], seconds)
    simple = [(Direction.INGRESS, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
              (Direction.EGRESS, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")] * 100
    results["minimal"] = bench("minimal GET / 200, one call per read/write", simple, seconds)
    print_interpreter_scale()
    save_results("bench_http1_parser", {"exchanges_per_s": results})


if __name__ == "__main__":
    main()
