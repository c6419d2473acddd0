"""B4, scaling: the agent's cost as connections and response sizes grow, at one fixed total rate.

    sudo .venv/bin/python benchmarks/bench_scaling.py [--rate 1000] [--seconds 5]

nginx on loopback, h2load (`--h1`, `--rps` per client) at the same total request rate with 1, 100,
1,000 and 3,000 concurrent keep-alive connections (nginx is configured for 4,096), then with
responses of 0 B, 1 KiB, 64 KiB and 1 MiB on 10 connections. The full agent captures the port. For
each run: agent CPU-seconds per 10k requests, agent RSS, and spans per request (2.0 = both ends of
every request). Cost should stay flat once responses exceed the capture cap (4 KiB): bodies past it
are skipped by length, never copied. Memory per tracked connection comes from the RSS difference
between the 1-connection and the 3,000-connection runs.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_e2e import Agent  # noqa: E402
from bench_overhead import count_spans  # noqa: E402
from common import Nginx  # noqa: E402


def h2load(url: str, *, clients: int, rate: float, seconds: float) -> int:
    threads = 1 if clients < 100 else 2
    per_client = max(0.1, rate / clients)
    out = subprocess.run(["timeout", str(int(seconds) + 60), "h2load", "--h1", "-t", str(threads), "-c",
                          str(clients), "-D", f"{seconds:g}", "--rps", f"{per_client:.2f}", url],
                         capture_output=True, text=True).stdout
    m = re.search(r"(\d+) succeeded", out)
    return int(m.group(1)) if m else 0


def measure(nginx: Nginx, url: str, *, clients: int, rate: float, seconds: float) -> dict:
    agent = Agent("full", nginx.port)
    try:
        time.sleep(0.5)
        cpu0 = agent.cpu()
        done = h2load(url, clients=clients, rate=rate, seconds=seconds)
        time.sleep(2.0)
        cpu = agent.cpu() - cpu0
        rss = agent.rss()
    finally:
        lost = agent.stop()
    spans = count_spans(agent.dir / "traces.jsonl")
    return {"requests": done, "cpu_per_10k": cpu / max(1, done) * 10_000, "rss_mib": rss,
            "spans_per_request": spans / max(1, done), "lost": lost}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    nginx = Nginx()
    www = nginx.dir / "www"
    for name, size in (("0b", 0), ("1k", 1024), ("64k", 64 * 1024), ("1m", 1024 * 1024)):
        (www / f"{name}.bin").write_bytes(os.urandom(size))
    try:
        print(f"B4: {args.rate:g} req/s in total, {args.seconds:g} s per run, full agent")
        print(f"{'connections':>11} {'response':>9} {'requests':>9} {'CPU-s/10k':>10} {'RSS MiB':>8}"
              f" {'spans/req':>10} {'lost':>5}")
        rss_by_conns = {}
        for clients in (1, 100, 1000, 3000):
            r = measure(nginx, nginx.url, clients=clients, rate=args.rate, seconds=args.seconds)
            rss_by_conns[clients] = r["rss_mib"]
            print(f"{clients:>11} {'136 B':>9} {r['requests']:>9} {r['cpu_per_10k']:>10.3f} {r['rss_mib']:>8.0f}"
                  f" {r['spans_per_request']:>10.3f} {r['lost']:>5}", flush=True)
        for name in ("0b", "1k", "64k", "1m"):
            url = f"http://127.0.0.1:{nginx.port}/{name}.bin"
            rate = args.rate if name != "1m" else min(args.rate, 200.0)  # 1 MiB at 1k/s is 1 GiB/s of loopback
            r = measure(nginx, url, clients=10, rate=rate, seconds=args.seconds)
            print(f"{10:>11} {name:>9} {r['requests']:>9} {r['cpu_per_10k']:>10.3f} {r['rss_mib']:>8.0f}"
                  f" {r['spans_per_request']:>10.3f} {r['lost']:>5}", flush=True)
        per_conn = (rss_by_conns[3000] - rss_by_conns[1]) * 1024 * 1024 / 2999
        print(f"memory per tracked connection (RSS, 3,000 vs 1 connection): {per_conn / 1024:.1f} KiB"
              f" (both ends tracked: the client's and nginx's socket)")
    finally:
        nginx.stop()


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root: the agent loads BPF programs")
    with tempfile.TemporaryDirectory():
        main()
