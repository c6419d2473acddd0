"""The tcpflow tracer's event rate: records per connection and per packet at fixed connection rates.

    sudo .venv/bin/python benchmarks/bench_flows.py [--rates 1000 10000] [--seconds 3]

h2load (--h1, one request per connection, `-r` connections created per second) against nginx on
loopback, with the tcpflow tracer loaded in this process and its ring drained. For each rate it
prints the connections attempted and served, the kernel's TCP segments in and out over the run (/proc/net/snmp), the
records the tracer delivered and lost, and the ratios records/connection (2 expected: the client
end and the server end, one record each at close) and records/segment (no per-packet events: far
below 1). Also the flows' total bytes against what h2load counted, as a fidelity check.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import Nginx, save_results  # noqa: E402

from otel_ebpf.bpf.tcpflow import TcpFlowTracer  # noqa: E402


def tcp_segments() -> int:
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Tcp:")]
    fields = dict(zip(lines[0][1:], lines[1][1:], strict=True))
    return int(fields["InSegs"]) + int(fields["OutSegs"])


def run(rate: int, seconds: float, nginx: Nginx) -> dict[str, float]:
    conns = int(rate * seconds)
    tracer = TcpFlowTracer(flow_interval_s=15.0)
    tracer.start()
    flows = []
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            flows.extend(f for f in tracer.poll(50) if nginx.port in (f.local_port, f.remote_port))
        flows.extend(f for f in tracer.poll(0) if nginx.port in (f.local_port, f.remote_port))

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    seg0 = tcp_segments()
    t0 = time.monotonic()
    # -r: connections created per second (per thread); -c total clients, each doing -n/-c requests.
    out = subprocess.run(["timeout", str(int(seconds * 6 + 30)), "h2load", "--h1", "-t", "2", "-r", str(rate // 2),
                          "-c", str(conns), "-n", str(conns), f"http://127.0.0.1:{nginx.port}/index.html"],
                         capture_output=True, text=True).stdout
    elapsed = time.monotonic() - t0
    time.sleep(0.5)
    segments = tcp_segments() - seg0
    stop.set()
    reader.join(10)
    stats = tracer.stats()
    tracer.close()
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    done = int(m.group(2)) if m else 0
    return {
        "rate": rate, "connections": done, "achieved_conn_per_s": done / elapsed, "segments": segments,
        "records": len(flows), "lost": stats.get("lost", 0),
        "attempted": conns,
        "records_per_connection": len(flows) / conns,
        "records_per_segment": len(flows) / segments if segments else 0.0,
        "server_records": sum(1 for f in flows if f.local_port == nginx.port),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    nginx = Nginx()
    try:
        print(f"{'conn/s asked':>12} {'achieved':>9} {'attempted':>9} {'served':>7} {'segments':>9} {'records':>8}"
              f" {'lost':>5} {'rec/conn':>9} {'rec/segment':>12}")
        results = []
        for rate in args.rates:
            r = run(rate, args.seconds, nginx)
            results.append(r)
            print(f"{r['rate']:>12} {r['achieved_conn_per_s']:>9.0f} {r['attempted']:>9} {r['connections']:>7}"
                  f" {r['segments']:>9}"
                  f" {r['records']:>8} {r['lost']:>5} {r['records_per_connection']:>9.2f}"
                  f" {r['records_per_segment']:>12.3f}", flush=True)
        print("target: one record per connection at close (+ one per live connection per interval), none per packet")
        save_results("bench_flows", results)
    finally:
        nginx.stop()


if __name__ == "__main__":
    main()
