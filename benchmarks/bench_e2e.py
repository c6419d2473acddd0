"""B1, end to end: the agent's cost on real servers, as ratios measured in one run.

    sudo .venv/bin/python benchmarks/bench_e2e.py [--pairs 5] [--seconds 5] [--servers python nginx grpc]
                                                  [--json out.json]

Servers: a Python HTTP/1.1 keep-alive server (one write per response), nginx serving a small static
file (the worst case: tens of thousands of requests/s), and a grpcio server (unary calls, h2load
sending a gRPC-framed body). Load: h2load (`--h1` for HTTP/1.1), always under `timeout`.

Agent modes: off; kernel-only (the sockdata probes attached, the ring drained and discarded);
full (the agent with the default processors and a file exporter). Each mode's run is paired with an
off run just before it, pairs interleaved; the table gives the median of the per-pair ratios and
their spread (min..max):

* closed loop (h2load at full speed, 8 clients): throughput ratio mode/off;
* fixed rate at half of the off run's saturation (`--rps`): added p50/p99 latency, from h2load's
  per-request `--log-file`;
* agent cost (full mode): user+system CPU-seconds per 10k requests (/proc), kernel BPF time per
  traced syscall (`bpftool prog` run-time statistics, `kernel.bpf_stats_enabled=1`), peak RSS, and
  lost ring-buffer events. A run with lost events is marked invalid and not averaged in.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import Nginx, cpu_seconds, rss_mib  # noqa: E402

from otel_ebpf.testing.net import free_port, wait_listening  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "tests" / "kernel" / "apps"
PY = sys.executable


class Server:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.nginx = None
        self.proc = None
        self.body = None
        if kind == "nginx":
            self.nginx = Nginx()
            self.port = self.nginx.port
            self.url = self.nginx.url
        else:
            self.port = free_port()
            script = "threading_server.py" if kind == "python" else "grpc_app.py"
            args = [str(self.port)] if kind == "python" else ["serve", str(self.port)]
            self.proc = subprocess.Popen([PY, str(APPS / script), *args], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            wait_listening(self.port)
            self.url = (f"http://127.0.0.1:{self.port}/ok" if kind == "python"
                        else f"http://127.0.0.1:{self.port}/demo.Echo/Unary")
            if kind == "grpc":
                self.body = Path(tempfile.mkdtemp()) / "msg.bin"
                message = b"hello"
                self.body.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)

    def load(self, *, seconds: float, clients: int = 8, rps: float | None = None, log: Path | None = None) -> dict:
        cmd = ["timeout", str(int(seconds) + 30), "h2load", "-D", f"{seconds:g}", "-c", str(clients), "-t", "1"]
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

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


KERNEL_ONLY = """
import sys, signal
from otel_ebpf.bpf.sockdata import SockDataTracer
t = SockDataTracer(ports=[int(sys.argv[1])]); t.start()
print("otel-ebpf ready", file=sys.stderr, flush=True)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
while not stop:
    t.poll_raw(100)
print(t.stats().get("lost", 0))
t.close()
"""


class Agent:
    """The agent in one mode, as its own process (its CPU and RSS read from /proc)."""

    def __init__(self, mode: str, port: int) -> None:
        self.mode = mode
        self.dir = Path(tempfile.mkdtemp(prefix="otel-ebpf-b1-"))
        if mode == "kernel-only":
            argv = [PY, "-c", KERNEL_ONLY, str(port)]
        else:
            cfg = self.dir / "agent.yaml"
            cfg.write_text(f"""
receivers: {{http: {{ports: [{port}]}}}}
processors: {{stitching: {{}}, redaction: {{}}, routes: {{}}}}
exporters: {{file: {{directory: {self.dir}}}}}
service:
  metrics_interval: 1s
  pipelines:
    traces: {{receivers: [http], processors: [stitching, redaction, routes], exporters: [file]}}
    metrics: {{receivers: [http], processors: [stitching, redaction, routes], exporters: [file]}}
""")
            argv = [PY, "-m", "otel_ebpf.cli", "--log-level", "warning", "run", "--config", str(cfg), "--no-summary"]
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
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

    def stop(self) -> int:
        """Stops the agent; returns the ring-buffer events it lost."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=120)
        if self.mode == "kernel-only":
            return int((out or "0").strip().splitlines()[-1] or 0)
        lost = 0
        metrics = self.dir / "metrics.jsonl"
        if metrics.exists():
            for line in metrics.read_text().splitlines():
                for m in re.finditer(r'"name":\s*"otel_ebpf\.ringbuf\.lost".*?"asInt":\s*"?(\d+)', line):
                    lost = max(lost, int(m.group(1)))
        return lost


def bpf_stats() -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the loaded sockdata programs."""
    try:
        progs = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True).stdout)
    except (OSError, ValueError):
        return 0, 0
    names = ("sys_enter_", "sys_exit_", "inet_sock_set_state")
    ns = cnt = 0
    for p in progs:
        if str(p.get("name", "")).startswith(names) and "run_time_ns" in p:
            ns += p["run_time_ns"]
            cnt += p.get("run_cnt", 0)
    return ns, cnt


def spread(values: list[float], fmt: str = ".3f") -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}..{max(values):{fmt}})"


def bench_server(kind: str, pairs: int, seconds: float) -> dict:
    server = Server(kind)
    results: dict = {"server": kind}
    try:
        server.load(seconds=1)  # warm-up
        saturation = server.load(seconds=seconds)["rps"]
        half = saturation / 2
        results["off_saturation_rps"] = saturation
        for mode in ("kernel-only", "full"):
            tput, p50_add, p99_add, cpu10k, bpf_ns, rss, invalid = [], [], [], [], [], [], 0
            for _ in range(pairs):
                off_closed = server.load(seconds=seconds)
                with tempfile.TemporaryDirectory() as tmp:
                    off_fixed = server.load(seconds=seconds, rps=half, log=Path(tmp) / "off.log")
                agent = Agent(mode, server.port)
                try:
                    time.sleep(0.5)
                    stats0 = bpf_stats()
                    cpu0 = agent.cpu()
                    on_closed = server.load(seconds=seconds)
                    time.sleep(1.0)
                    cpu = agent.cpu() - cpu0
                    stats1 = bpf_stats()
                    with tempfile.TemporaryDirectory() as tmp:
                        on_fixed = server.load(seconds=seconds, rps=half, log=Path(tmp) / "on.log")
                    rss.append(agent.rss())
                finally:
                    lost = agent.stop()
                if lost:
                    invalid += 1
                    continue
                if off_closed["rps"]:
                    tput.append(on_closed["rps"] / off_closed["rps"])
                if "p50_us" in off_fixed and "p50_us" in on_fixed:
                    p50_add.append(on_fixed["p50_us"] - off_fixed["p50_us"])
                    p99_add.append(on_fixed["p99_us"] - off_fixed["p99_us"])
                if on_closed["succeeded"]:
                    cpu10k.append(cpu / on_closed["succeeded"] * 10_000)
                runs = stats1[1] - stats0[1]
                if runs > 0:
                    bpf_ns.append((stats1[0] - stats0[0]) / runs)
            results[mode] = {
                "throughput_ratio": tput, "added_p50_us": p50_add, "added_p99_us": p99_add,
                "agent_cpu_s_per_10k": cpu10k, "bpf_ns_per_call": bpf_ns, "rss_mib": rss, "invalid_runs": invalid,
            }
    finally:
        server.stop()
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--servers", nargs="+", default=["python", "nginx", "grpc"])
    ap.add_argument("--json")
    args = ap.parse_args()
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=False)
    all_results = []
    print(f"B1: {args.pairs} interleaved off/on pairs per mode, {args.seconds:g} s per run; "
          "median (min..max) of the per-pair figures")
    print(f"{'server':<7} {'mode':<12} {'tput on/off':<22} {'added p50 µs':<22} {'added p99 µs':<24}"
          f" {'CPU-s/10k req':<22} {'BPF ns/call':<10} {'RSS MiB':<8} invalid")
    for kind in args.servers:
        r = bench_server(kind, args.pairs, args.seconds)
        all_results.append(r)
        for mode in ("kernel-only", "full"):
            m = r[mode]
            bpf = f"{statistics.median(m['bpf_ns_per_call']):.0f}" if m["bpf_ns_per_call"] else "-"
            rss = f"{max(m['rss_mib']):.0f}" if m["rss_mib"] else "-"
            cpu = spread(m["agent_cpu_s_per_10k"]) if mode == "full" else "-"
            print(f"{kind:<7} {mode:<12} {spread(m['throughput_ratio']):<22} {spread(m['added_p50_us'], '.0f'):<22}"
                  f" {spread(m['added_p99_us'], '.0f'):<24} {cpu:<22} {bpf:<10} {rss:<8} {m['invalid_runs']}",
                  flush=True)
        print(f"{kind:<7} (off saturation {r['off_saturation_rps']:,.0f} req/s; fixed-rate runs at half of it)")
    if args.json:
        Path(args.json).write_text(json.dumps(all_results, indent=1))


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root: the agent loads BPF programs")
    main()
