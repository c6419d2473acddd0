"""B4, scaling: the agent's cost as connections and response sizes grow, at one fixed total rate.

    sudo .venv/bin/python benchmarks/bench_scaling.py [--rate 1000] [--seconds 5]

nginx on loopback, h2load (`--h1`, `--rps` per client) at the same total request rate with 1, 100,
1,000 and 10,000 concurrent keep-alive connections (nginx is configured for 16,384), then with
responses of 0 B, 1 KiB, 64 KiB and 1 MiB on 10 connections. The full agent watches nginx (one
SERVER span per request) and exports over OTLP/HTTP to a span-counting receiver in another
process. For each run: agent CPU-seconds per 10k requests, agent RSS, span completeness (spans per
request served) and lost events. Cost should stay flat once responses exceed the capture cap
(4 KiB). Memory per tracked connection comes from the RSS difference between the 1-connection and
the 10,000-connection runs.
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
from bench_e2e import Agent, SpanSink  # noqa: E402
from common import Nginx, save_results  # noqa: E402

CONNECTIONS = (1, 100, 1000, 10_000)


def h2load(url: str, *, clients: int, rate: float, seconds: float) -> int:
    threads = 1 if clients < 100 else 2
    per_client = max(0.01, rate / clients)
    out = subprocess.run(["timeout", str(int(seconds) + 120), "h2load", "--h1", "-t", str(threads), "-c",
                          str(clients), "-D", f"{seconds:g}", "--rps", f"{per_client:.2f}", url],
                         capture_output=True, text=True).stdout
    m = re.search(r"(\d+) succeeded", out)
    return int(m.group(1)) if m else 0


def measure(nginx: Nginx, sink: SpanSink, url: str, *, clients: int, rate: float, seconds: float) -> dict:
    spans0 = sink.count()
    agent = Agent("full", nginx.proc.pid, sink, None)
    try:
        time.sleep(0.5)
        cpu0 = agent.cpu()
        done = h2load(url, clients=clients, rate=rate, seconds=seconds)
        sink.wait_settled()
        cpu = agent.cpu() - cpu0
        rss = agent.rss()
    finally:
        lost, events = agent.stop()
    time.sleep(0.5)
    spans = sink.count() - spans0
    return {"connections": clients, "requests": done, "cpu_per_10k": cpu / max(1, done) * 10_000, "rss_mib": rss,
            "spans_per_request": spans / max(1, done), "events_per_request": events / max(1, done), "lost": lost}


def row(label: str, clients: int, r: dict) -> None:
    print(f"{clients:>11,} {label:>9} {r['requests']:>9} {r['cpu_per_10k']:>10.3f} {r['rss_mib']:>8.0f}"
          f" {100 * r['spans_per_request']:>9.2f}% {r['events_per_request']:>7.2f} {r['lost']:>5}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))  # inherited by nginx, h2load
    nginx = Nginx()
    sink = SpanSink(None)
    www = nginx.dir / "www"
    for name, size in (("0b", 0), ("1k", 1024), ("64k", 64 * 1024), ("1m", 1024 * 1024)):
        (www / f"{name}.bin").write_bytes(os.urandom(size))
    results = {"connections": [], "sizes": []}
    try:
        print(f"B4: {args.rate:g} req/s in total, {args.seconds:g} s per run (10,000 connections: at least 10 s),"
              " full agent watching nginx")
        print(f"{'connections':>11} {'response':>9} {'requests':>9} {'CPU-s/10k':>10} {'RSS MiB':>8}"
              f" {'spans/req':>10} {'ev/req':>7} {'lost':>5}")
        for clients in CONNECTIONS:
            seconds = args.seconds if clients < 10_000 else max(10.0, args.seconds)
            r = measure(nginx, sink, nginx.url, clients=clients, rate=args.rate, seconds=seconds)
            results["connections"].append(r)
            row("136 B", clients, r)
        for name in ("0b", "1k", "64k", "1m"):
            url = f"http://127.0.0.1:{nginx.port}/{name}.bin"
            rate = args.rate if name != "1m" else min(args.rate, 200.0)  # 1 MiB at 1k/s is 1 GiB/s of loopback
            r = measure(nginx, sink, url, clients=10, rate=rate, seconds=args.seconds)
            r["response"] = name
            results["sizes"].append(r)
            row(name, 10, r)
        first, last = results["connections"][0], results["connections"][-1]
        per_conn = (last["rss_mib"] - first["rss_mib"]) * 1024 * 1024 / (last["connections"] - first["connections"])
        results["rss_bytes_per_connection"] = per_conn
        print(f"memory per tracked connection (RSS, {last['connections']:,} vs {first['connections']} connection):"
              f" {per_conn / 1024:.2f} KiB (target <= 2 KiB)")
        print(f"span completeness at {last['connections']:,} connections: {100 * last['spans_per_request']:.2f} %"
              " (target >= 99.9 %)")
        save_results("bench_scaling", results)
    finally:
        sink.stop()
        nginx.stop()


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root: the agent loads BPF programs")
    with tempfile.TemporaryDirectory():
        main()
