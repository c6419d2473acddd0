"""B1, end to end: the agent's cost on real servers, as ratios measured in one run.

    sudo .venv/bin/python benchmarks/bench_e2e.py [--pairs 5] [--seconds 5] [--servers python nginx grpc]
                                                  [--json out.json]

Servers: a Python HTTP/1.1 keep-alive server (one write per response), nginx serving a small static
file (the worst case: tens of thousands of requests/s), and a grpcio server (unary calls, h2load
sending a gRPC-framed body). Load: h2load (`--h1` for HTTP/1.1) and, for HTTP/1, wrk; always under
`timeout`.

The agent watches the server process (a pid filter), so every request makes exactly one SERVER
span; it exports traces over OTLP/HTTP to a receiver in another process, which counts the spans it
decodes, and metrics to a file (where the lost-event counter is read).

Agent modes: off; kernel-only (the sockdata probes attached, the ring drained and discarded);
full (the agent with the default processors). Each mode's run is paired with an off run just
before it, pairs interleaved; the table gives the median of the per-pair ratios and their spread
(min..max). Placement: **pinned** (server, load generator: CPU 0; agent and span receiver: CPU 1),
`--pairs` pairs; then **unpinned**, one pair (everything shares both cores: CPU contention).

* closed loop (h2load at full speed, 8 clients; and wrk, 8 connections): throughput ratio mode/off;
* fixed rate at half of the off run's saturation (`--rps`): added p50/p99 latency, from h2load's
  per-request `--log-file`;
* agent cost (full mode): user+system CPU-seconds per 10k requests (/proc), its share of the
  machine's CPU during the closed-loop run, ring-buffer events per request, kernel BPF time per
  traced syscall (`bpftool prog` run-time statistics, `kernel.bpf_stats_enabled=1`), peak RSS;
* validity: a run with lost events, or (full mode) fewer spans than 99.9 % of the requests served,
  is marked invalid and not averaged in; lost events per million are printed for every run, and the
  JSON keeps the invalid runs' figures apart.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import Nginx, cpu_seconds, prog_ids, rss_mib, save_results, thread_cpu_seconds, wrk  # noqa: E402

from otel_ebpf.testing.net import free_port, wait_listening  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tests" / "kernel" / "apps"
PY = sys.executable
LOAD_CPU, AGENT_CPU = {0}, {1}

# Targets of the performance issue (docs/performance.md).
TARGETS = {
    ("python", "kernel-only"): "tput >= 0.98",
    ("python", "full"): "tput >= 0.95; +p99 <= 50 us and <= 5 %; <= 0.5 CPU-s/10k",
    ("nginx", "kernel-only"): "tput >= 0.98; report CPU share",
    ("nginx", "full"): "report ratio and CPU share; <= 0.5 CPU-s/10k",
    ("grpc", "kernel-only"): "tput >= 0.98",
    ("grpc", "full"): "tput >= 0.93; <= 0.8 CPU-s/10k",
}


def taskset(cpus: set[int] | None) -> list[str]:
    """Command prefix running a program on ``cpus`` (nothing when None)."""
    return ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []


class Server:
    def __init__(self, kind: str, cpus: set[int] | None = None) -> None:
        self.kind = kind
        self.cpus = cpus
        self.nginx = None
        self.proc = None
        self.body = None
        if kind == "nginx":
            self.nginx = Nginx(cpus=cpus)
            self.port = self.nginx.port
            self.url = self.nginx.url
            self.pid = self.nginx.proc.pid
        else:
            self.port = free_port()
            script = "threading_server.py" if kind == "python" else "grpc_app.py"
            args = [str(self.port)] if kind == "python" else ["serve", str(self.port)]
            self.proc = subprocess.Popen([*taskset(cpus), PY, str(APPS / script), *args], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            self.pid = self.proc.pid
            wait_listening(self.port)
            self.url = (f"http://127.0.0.1:{self.port}/ok" if kind == "python"
                        else f"http://127.0.0.1:{self.port}/demo.Echo/Unary")
            if kind == "grpc":
                self.body = Path(tempfile.mkdtemp()) / "msg.bin"
                message = b"hello"
                self.body.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)

    def load(self, *, seconds: float, clients: int = 8, rps: float | None = None, log: Path | None = None) -> dict:
        cmd = [*taskset(self.cpus), "timeout", str(int(seconds) + 30), "h2load", "-D", f"{seconds:g}", "-c",
               str(clients), "-t", "1"]
        if self.kind != "grpc":
            cmd.append("--h1")
        else:
            cmd += ["-d", str(self.body), "-H", "content-type: application/grpc", "-H", "te: trailers", "-m", "10"]
        if rps is not None:
            cmd += ["--rps", f"{max(1.0, rps / clients):.1f}"]
        if log is not None:
            cmd += ["--log-file", str(log)]
        out = subprocess.run([*cmd, self.url], capture_output=True, text=True).stdout
        m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
        rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
        result = {"succeeded": int(m.group(2)) if m else 0, "rps": float(rate.group(1)) if rate else 0.0}
        if log is not None and log.exists():
            durations = sorted(int(line.split()[2]) for line in log.read_text().splitlines() if line.strip())
            if durations:
                result["p50_us"] = durations[len(durations) // 2]
                result["p99_us"] = durations[min(len(durations) - 1, int(len(durations) * 0.99))]
        return result

    def wrk(self, *, seconds: float) -> dict:
        """Closed-loop wrk run (HTTP/1 servers only), pinned like h2load."""
        if self.kind == "grpc":
            return {}
        return wrk(self.url, seconds=max(1, int(seconds)), connections=8, prefix=taskset(self.cpus))

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


KERNEL_ONLY = """
import sys, signal
from otel_ebpf.bpf.sockdata import SockDataTracer
t = SockDataTracer(pids=[int(sys.argv[1])]); t.start()
print("otel-ebpf ready", file=sys.stderr, flush=True)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
while not stop:
    t.poll_raw(100)
s = t.stats()
print(s.get("lost", 0), s.get("ring_records", 0))
t.close()
"""

# The span receiver: OTLP/HTTP on loopback, decoding every request and counting its spans
# (GET /count). It stands for the Collector, in its own process.
SINK = """
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
count = [0]
lock = threading.Lock()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def _reply(self, body=b""):
        self.send_response(200); self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_POST(self):
        req = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
        n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        with lock:
            count[0] += n
        self._reply()
    def do_GET(self):
        self._reply(str(count[0]).encode())
httpd = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
print("ready", flush=True)
httpd.serve_forever()
"""


class SpanSink:
    def __init__(self, cpus: set[int] | None) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([*taskset(cpus), PY, "-c", SINK, str(self.port)], stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        wait_listening(self.port)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self) -> int:
        with urllib.request.urlopen(f"{self.endpoint}/count", timeout=30) as r:
            return int(r.read())

    def wait_settled(self, quiet_s: float = 1.5, limit_s: float = 120.0) -> None:
        """Returns once no span has arrived for ``quiet_s`` (or after ``limit_s``)."""
        deadline = time.monotonic() + limit_s
        last, since = self.count(), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
            time.sleep(0.25)
            now = self.count()
            if now != last:
                last, since = now, time.monotonic()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Agent:
    """The agent in one mode, as its own process (its CPU and RSS read from /proc)."""

    def __init__(self, mode: str, pid: int, sink: SpanSink, cpus: set[int] | None) -> None:
        self.mode = mode
        self.dir = Path(tempfile.mkdtemp(prefix="otel-ebpf-b1-"))
        if mode == "kernel-only":
            argv = [PY, "-c", KERNEL_ONLY, str(pid)]
        else:
            cfg = self.dir / "agent.yaml"
            cfg.write_text(f"""
receivers: {{http: {{pids: [{pid}]}}}}
processors: {{stitching: {{}}, redaction: {{}}, routes: {{}}}}
exporters:
  otlphttp: {{endpoint: "{sink.endpoint}"}}
  file: {{directory: {self.dir}}}
service:
  metrics_interval: 1s
  pipelines:
    traces: {{receivers: [http], processors: [stitching, redaction, routes], exporters: [otlphttp]}}
    metrics: {{receivers: [http], processors: [stitching, redaction, routes], exporters: [file]}}
""")
            argv = [PY, "-m", "otel_ebpf.cli", "--log-level", "warning", "run", "--config", str(cfg), "--no-summary"]
        self.proc = subprocess.Popen([*taskset(cpus), *argv], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        for line in self.proc.stderr:
            if "otel-ebpf ready" in line:
                break
        else:
            raise RuntimeError(f"agent ({mode}) did not start")
        self.cpu0 = cpu_seconds(self.proc.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid) - self.cpu0

    def rss(self) -> float:
        return rss_mib(self.proc.pid)

    def stop(self) -> tuple[int, int]:
        """Stops the agent; returns (ring-buffer events lost, events read)."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=120)
        if self.mode == "kernel-only":
            lost, events = (out or "0 0").strip().splitlines()[-1].split()
            return int(lost), int(events)
        found = {"lost": 0, "events": 0}
        metrics = self.dir / "metrics.jsonl"
        if metrics.exists():
            for line in metrics.read_text().splitlines():
                for key, name in (("lost", "otel_ebpf.ringbuf.lost"), ("events", "otel_ebpf.ringbuf.events")):
                    for m in re.finditer(rf'"name":\s*"{re.escape(name)}".*?"asInt":\s*"?(\d+)', line):
                        found[key] = max(found[key], int(m.group(1)))
        return found["lost"], found["events"]


def bpf_stats(pid: int | None = None) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the sockdata programs of the agent process ``pid`` (of every
    loaded program with sockdata's names when None: other tracers' programs then count too)."""
    try:
        progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                                          check=False).stdout)
    except (OSError, ValueError):
        return 0, 0
    ids = prog_ids(pid) if pid is not None else None
    names = ("sys_enter_", "sys_exit_", "inet_sock_set_state")
    ns = cnt = 0
    for p in progs:
        if ids is not None and p.get("id") not in ids:
            continue
        if str(p.get("name", "")).startswith(names) and "run_time_ns" in p:
            ns += p["run_time_ns"]
            cnt += p.get("run_cnt", 0)
    return ns, cnt


def bench_server(kind: str, pairs: int, seconds: float, *, pinned: bool) -> dict:
    load_cpus, agent_cpus = (LOAD_CPU, AGENT_CPU) if pinned else (None, None)
    server = Server(kind, load_cpus)
    sink = SpanSink(agent_cpus)
    ncpu = os.cpu_count() or 1
    results: dict = {"server": kind, "placement": "pinned" if pinned else "unpinned"}
    try:
        server.load(seconds=1)  # warm-up
        saturation = server.load(seconds=seconds)["rps"]
        half = saturation / 2
        results["off_saturation_rps"] = saturation
        for mode in ("kernel-only", "full"):
            m = {k: [] for k in ("throughput_ratio", "wrk_ratio", "added_p50_us", "added_p99_us", "added_p99_pct",
                                 "agent_cpu_s_per_10k", "agent_cpu_share", "events_per_request", "bpf_ns_per_call",
                                 "rss_mib", "completeness")}
            m["invalid_runs"] = 0
            m["lost_per_million"] = []  # every run, valid or not: why runs were invalid
            m["invalid"] = []  # the figures of the invalid runs, for the record (not in the medians)
            for _ in range(pairs):
                off_closed = server.load(seconds=seconds)
                off_wrk = server.wrk(seconds=seconds)
                with tempfile.TemporaryDirectory() as tmp:
                    off_fixed = server.load(seconds=seconds, rps=half, log=Path(tmp) / "off.log")
                spans0 = sink.count()
                agent = Agent(mode, server.pid, sink, agent_cpus)
                try:
                    time.sleep(0.5)
                    stats0 = bpf_stats(agent.proc.pid)
                    cpu0 = agent.cpu()
                    threads0 = thread_cpu_seconds(agent.proc.pid)
                    on_closed = server.load(seconds=seconds)
                    time.sleep(1.0)
                    cpu = agent.cpu() - cpu0
                    threads1 = thread_cpu_seconds(agent.proc.pid)
                    stats1 = bpf_stats(agent.proc.pid)
                    on_wrk = server.wrk(seconds=seconds)
                    with tempfile.TemporaryDirectory() as tmp:
                        on_fixed = server.load(seconds=seconds, rps=half, log=Path(tmp) / "on.log")
                    m["rss_mib"].append(agent.rss())
                    if mode == "full":
                        sink.wait_settled()  # let a backlog drain: completeness counts losses, not lag
                finally:
                    lost, events = agent.stop()
                served = on_closed["succeeded"] + on_wrk.get("requests", 0) + on_fixed["succeeded"]
                m["lost_per_million"].append(1e6 * lost / max(1, lost + events))
                complete = None
                if mode == "full":
                    time.sleep(0.5)
                    complete = (sink.count() - spans0) / served if served else 0.0
                    m["completeness"].append(complete)
                if lost or (complete is not None and complete < 0.999):
                    m["invalid_runs"] += 1
                    m["invalid"].append({
                        "lost": lost, "events": events, "completeness": complete,
                        "throughput_ratio": on_closed["rps"] / off_closed["rps"] if off_closed["rps"] else None,
                        "agent_cpu_s_per_10k": cpu / on_closed["succeeded"] * 10_000 if on_closed["succeeded"] else None,
                        "agent_cpu_share": cpu / ((seconds + 1.0) * ncpu)})
                    continue
                if off_closed["rps"]:
                    m["throughput_ratio"].append(on_closed["rps"] / off_closed["rps"])
                if off_wrk.get("rps"):
                    m["wrk_ratio"].append(on_wrk["rps"] / off_wrk["rps"])
                if "p50_us" in off_fixed and "p50_us" in on_fixed:
                    m["added_p50_us"].append(on_fixed["p50_us"] - off_fixed["p50_us"])
                    m["added_p99_us"].append(on_fixed["p99_us"] - off_fixed["p99_us"])
                    m["added_p99_pct"].append(100.0 * (on_fixed["p99_us"] / off_fixed["p99_us"] - 1))
                if on_closed["succeeded"]:
                    m["agent_cpu_s_per_10k"].append(cpu / on_closed["succeeded"] * 10_000)
                    m.setdefault("thread_cpu_s_per_10k", []).append({
                        name: (c - threads0.get(name, 0.0)) / on_closed["succeeded"] * 10_000
                        for name, c in threads1.items() if c - threads0.get(name, 0.0) > 0})
                    m["agent_cpu_share"].append(cpu / ((seconds + 1.0) * ncpu))
                if served:
                    m["events_per_request"].append(events / served)
                runs = stats1[1] - stats0[1]
                if runs > 0:
                    m["bpf_ns_per_call"].append((stats1[0] - stats0[0]) / runs)
            results[mode] = m
    finally:
        sink.stop()
        server.stop()
    return results


def spread(values: list[float], fmt: str = ".3f") -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}..{max(values):{fmt}})"


def print_row(r: dict, mode: str) -> None:
    m = r[mode]
    bpf = f"{statistics.median(m['bpf_ns_per_call']):.0f}" if m["bpf_ns_per_call"] else "-"
    rss = f"{max(m['rss_mib']):.0f}" if m["rss_mib"] else "-"
    full = mode == "full"
    print(f"{r['server']:<7} {r['placement']:<9} {mode:<12} {spread(m['throughput_ratio']):<19}"
          f" {spread(m['wrk_ratio']):<19} {spread(m['added_p50_us'], '.0f'):<17}"
          f" {spread(m['added_p99_us'], '.0f'):<19} {spread(m['added_p99_pct'], '.1f'):<17}"
          f" {spread(m['agent_cpu_s_per_10k'], '.2f') if full else '-':<17}"
          f" {spread([100 * x for x in m['agent_cpu_share']], '.0f'):<13}"
          f" {spread(m['events_per_request'], '.2f'):<8} {bpf:<7} {rss:<5}"
          f" {spread([100 * x for x in m['completeness']], '.2f') if full else '-':<9} {m['invalid_runs']:<3}"
          f" {spread(m['lost_per_million'], '.1f'):<16}"
          f" {TARGETS.get((r['server'], mode), '')}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--servers", nargs="+", default=["python", "nginx", "grpc"])
    ap.add_argument("--no-unpinned", action="store_true", help="skip the unpinned pair")
    ap.add_argument("--json")
    args = ap.parse_args()
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=False)
    all_results = []
    print(f"B1: one SERVER span per request; pinned: {args.pairs} interleaved off/on pairs per mode (server and "
          f"load on CPU 0, agent and span receiver on CPU 1), then one unpinned pair; {args.seconds:g} s per run;"
          " median (min..max) of the per-pair figures")
    print(f"{'server':<7} {'placement':<9} {'mode':<12} {'h2load on/off':<19} {'wrk on/off':<19} {'+p50 µs':<17}"
          f" {'+p99 µs':<19} {'+p99 %':<17} {'CPU-s/10k req':<17} {'CPU share %':<13} {'ev/req':<8}"
          f" {'BPF ns':<7} {'RSS':<5} {'spans %':<9} {'inv':<3} {'lost/M events':<16} target")
    for kind in args.servers:
        placements = [(True, args.pairs)] + ([] if args.no_unpinned else [(False, 1)])
        for pinned, pairs in placements:
            r = bench_server(kind, pairs, args.seconds, pinned=pinned)
            all_results.append(r)
            for mode in ("kernel-only", "full"):
                print_row(r, mode)
            print(f"{kind:<7} {r['placement']:<9} (off saturation {r['off_saturation_rps']:,.0f} req/s; "
                  "fixed-rate runs at half of it)", flush=True)
            by_thread = r["full"].get("thread_cpu_s_per_10k") or []
            if by_thread:
                names = sorted({n for run in by_thread for n in run}, key=lambda n: -statistics.median(
                    [run.get(n, 0.0) for run in by_thread]))
                print(f"{kind:<7} {r['placement']:<9} full agent, CPU-s per 10k requests by thread (median): "
                      + ", ".join(f"{n} {statistics.median([run.get(n, 0.0) for run in by_thread]):.2f}"
                                  for n in names), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(all_results, indent=1))
    save_results("bench_e2e", all_results)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root: the agent loads BPF programs")
    main()
