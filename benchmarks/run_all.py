"""`make bench`: every benchmark in turn. Not part of the tests; prints figures measured in one run.

Each benchmark prints its table (every figure next to its target) and writes its results as JSON to
``bench-results/<UTC time>/<benchmark>.json`` (``$OTEL_EBPF_BENCH_RESULTS`` overrides the directory).
"""

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
BENCHMARKS = (
    "bench_http1_parser.py",  # parsers alone
    "bench_http2_parser.py",
    "bench_pipeline.py",  # B2: replay, stage by stage
    "bench_export.py",  # B3: exporters
    "bench_e2e.py",  # B1: end to end, off / kernel-only / full
    "bench_bpf.py",  # kernel time per traced syscall, per program
    "bench_scaling.py",  # B4: connections and response sizes
    "bench_memory.py",  # agent RSS: idle, steady, peak, per connection
    "bench_flows.py",  # tcpflow records per connection and segment
    "bench_kube_cache.py",  # Kubernetes metadata cache per pod
)


def main() -> None:
    results = os.environ.setdefault(
        "OTEL_EBPF_BENCH_RESULTS", str(HERE.parent / "bench-results" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())))
    failed = []
    for script in BENCHMARKS:
        if not (HERE / script).exists():
            continue
        print(f"\n##### {script}", flush=True)
        if subprocess.run([sys.executable, str(HERE / script)]).returncode != 0:
            failed.append(script)
    print(f"\nresults (JSON): {results}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
