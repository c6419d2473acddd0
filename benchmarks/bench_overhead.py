"""Agent overhead, measured in one run: nginx under wrk with the agent off, then on, then off again.

    sudo .venv/bin/python benchmarks/bench_overhead.py [--seconds 10]

Prints throughput and p99 latency ratios (on / mean of the two off runs), the agent's CPU-seconds per
10k requests, its peak RSS, and how many spans it produced versus requests served (fidelity under a
closed-loop load that is far above what the default pipeline is sized for, so drops are expected and
counted in otel_ebpf.pipeline.dropped). Also a fixed-rate run (h2load, 1,000 req/s) for fidelity.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import Nginx, cpu_seconds, h2load_h1, rss_mib, wrk  # noqa: E402


def start_agent(port: int, data_dir: Path) -> subprocess.Popen:
    cfg = data_dir / "bench.yaml"
    cfg.write_text(f"""
receivers: {{http: {{ports: [{port}]}}}}
processors: {{redaction: {{}}, routes: {{}}}}
exporters: {{file: {{directory: {data_dir}}}}}
service:
  pipelines:
    traces: {{receivers: [http], processors: [redaction, routes], exporters: [file]}}
    metrics: {{receivers: [http], processors: [redaction, routes], exporters: [file]}}
""")
    proc = subprocess.Popen([sys.executable, "-m", "otel_ebpf.cli", "--log-level", "warning", "run", "--config",
                             str(cfg), "--no-summary"], stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "otel-ebpf ready" in line:
            return proc
    raise RuntimeError("agent did not start")


PROBES_ONLY = """
import sys, signal
from otel_ebpf.bpf.sockdata import SockDataTracer
t = SockDataTracer(ports=[int(sys.argv[1])]); t.start()
print("otel-ebpf ready", file=sys.stderr, flush=True)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
n = 0
while not stop:
    n += len(t.poll_raw(100))
t.close()
print(n)
"""


def start_probes_only(port: int) -> subprocess.Popen:
    """The kernel side alone: probes attached, ring drained, records discarded."""
    proc = subprocess.Popen([sys.executable, "-c", PROBES_ONLY, str(port)], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "otel-ebpf ready" in line:
            return proc
    raise RuntimeError("probes did not start")


def count_spans(path: Path) -> int:
    n = 0
    if path.exists():
        for line in path.read_text().splitlines():
            for rs in json.loads(line).get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    n += len(ss.get("spans", []))
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    nginx = Nginx()
    try:
        wrk(nginx.url, seconds=2)  # warm-up
        off1 = wrk(nginx.url, seconds=args.seconds)
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            agent = start_agent(nginx.port, data)
            time.sleep(1.0)
            cpu0 = cpu_seconds(agent.pid)
            on = wrk(nginx.url, seconds=args.seconds)
            time.sleep(2.0)  # let the agent finish what it captured
            cpu1 = cpu_seconds(agent.pid)
            rss = rss_mib(agent.pid)
            agent.send_signal(signal.SIGTERM)
            agent.wait(120)
            spans_closed = count_spans(data / "traces.jsonl")
        off2 = wrk(nginx.url, seconds=args.seconds)
        probes = start_probes_only(nginx.port)
        time.sleep(0.5)
        pcpu0 = cpu_seconds(probes.pid)
        kernel_only = wrk(nginx.url, seconds=args.seconds)
        pcpu = cpu_seconds(probes.pid) - pcpu0
        probes.send_signal(signal.SIGTERM)
        records = int(probes.communicate(timeout=60)[0].strip() or 0)

        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            agent = start_agent(nginx.port, data)
            time.sleep(1.0)
            fixed = h2load_h1(nginx.url, requests=10_000, clients=10, rps_per_client=100)
            time.sleep(2.0)
            agent.send_signal(signal.SIGTERM)
            agent.wait(120)
            spans_fixed = count_spans(data / "traces.jsonl")
    finally:
        nginx.stop()

    off_rps = (off1["rps"] + off2["rps"]) / 2
    off_p99 = (off1["p99_ms"] + off2["p99_ms"]) / 2
    cpu = cpu1 - cpu0
    print("== agent overhead: nginx under wrk (8 connections, closed loop), agent capturing its port ==")
    print(f"off: {off_rps:,.0f} req/s  p99 {off_p99:.3f} ms   (runs: {off1['rps']:,.0f}, {off2['rps']:,.0f})")
    print(f"on:  {on['rps']:,.0f} req/s  p99 {on['p99_ms']:.3f} ms")
    print(f"throughput ratio on/off: {on['rps'] / off_rps:.3f}")
    print(f"p99 latency ratio on/off: {on['p99_ms'] / off_p99:.3f}")
    print(f"agent CPU-seconds per 10k requests: {cpu / on['requests'] * 10_000:.3f}  (total {cpu:.1f} s)")
    print(f"agent peak RSS: {rss:.0f} MiB")
    print(f"spans (server+client) per request under closed-loop load: {spans_closed / max(1, on['requests']):.3f}"
          f"  ({spans_closed:,} spans for {on['requests']:,} requests; 2.0 = every exchange from both ends)")
    print(f"probes only (kernel capture + ring drained, no parsing): {kernel_only['rps']:,.0f} req/s, "
          f"throughput ratio {kernel_only['rps'] / off_rps:.3f}, p99 ratio {kernel_only['p99_ms'] / off_p99:.3f}, "
          f"{records / max(1, kernel_only['requests']):.1f} records/request, reader CPU {pcpu:.1f} s")
    print("== fidelity at a fixed rate: h2load --h1, 10,000 requests at 1,000 req/s ==")
    print(f"succeeded {fixed['succeeded']:,}; spans {spans_fixed:,} "
          f"(ratio {spans_fixed / max(1, 2 * fixed['succeeded']):.4f} of server+client exchanges)")


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root: the agent loads BPF programs")
    main()
