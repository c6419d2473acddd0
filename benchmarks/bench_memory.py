"""B5, memory: the agent's RSS at idle, under load, and per tracked connection.

    sudo .venv/bin/python benchmarks/bench_memory.py [--seconds 15] [--connections 5000] [--rps 0]
                                                     [--requests-per-connection 1]
                                                     [--exporter file|otlphttp|otlp] [--whole-host]
                                                     [--json out.json]

Results also go to ``$OTEL_EBPF_BENCH_RESULTS/bench_memory.json`` when set (``make bench``).

The agent runs as `otel-ebpf run` does (the embedded default configuration: http + tcpflow
receivers, stitching/redaction/routes, OTLP/JSON files in a temporary directory, the live summary
to /dev/null), as its own process, with `--port` set to the server's port unless `--whole-host`.
With `--exporter otlphttp` or `otlp` (gRPC), OTEL_EXPORTER_OTLP_ENDPOINT points it at a loopback
sink in another process that answers without decoding, so the OTLP exporters and their imports
are in the picture too.

Phases, RSS read from /proc/<agent>/status every 0.5 s (and every 0.1 s for each phase's highest):

1. idle: the agent ready, nothing on the server's port (median of the samples);
2. connections: 1, then ``--connections`` keep-alive connections to nginx, each having made
   ``--requests-per-connection`` requests (so both of its ends are tracked by the agent: two
   connection-table entries, "tracked sockets"); then they are closed;
   RSS per connection = ΔRSS / Δconnections (median RSS after each step settles);
   the target counts per tracked connection (socket end), as B4 does;
3. load, on a fresh agent (the heap the connections grew would count in its RSS otherwise):
   h2load (HTTP/1.1, 8 clients) for ``--seconds``, closed loop or ``--rps`` in total;
   steady RSS = median of the second half of the samples, peak = the highest sample and VmHWM;
4. after: RSS a few seconds after the load stopped (what is kept, not given back to the system).

RSS is split as the kernel counts it: anonymous memory (the Python heap, malloc arenas, thread
stacks) and file-backed pages, which include the BPF ring buffers mapped into the agent
(``anon_inode:bpf-map``: the kernel maps every page of a ring at mmap time, so they count in full
from the start; the reader maps the data area once, so a 16 MiB ring counts 16 MiB). The target
(performance issue) is a steady RSS of at most 80 MB (76.3 MiB) and at most 2 KiB per tracked
connection.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import NULL_OTLP_SINK, Nginx, save_results  # noqa: E402

from otel_ebpf.testing.net import free_port, wait_listening  # noqa: E402

PY = sys.executable
TARGET_MB = 80.0
TARGET_MIB = TARGET_MB * 1e6 / 2**20
TARGET_PER_CONN_KIB = 2.0

def _mib(kib: str) -> float:
    return int(kib) / 1024


def memory(pid: int) -> dict[str, float]:
    """RSS and its parts (MiB) for ``pid``, from /proc/<pid>/status and /proc/<pid>/smaps."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            out[key] = _mib(value.split()[0])
        elif key == "Threads":
            out["threads"] = int(value)
    return out


def bpf_map_rss(pid: int) -> float:
    """RSS (MiB) of the BPF maps mapped into ``pid`` (the ring buffers): counted in RssFile."""
    total, in_map = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            in_map = line.rstrip().endswith("anon_inode:bpf-map")
        elif in_map and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total / 1024


class Sampler:
    """Reads the agent's RSS every ``interval`` seconds on a thread; ``phase`` labels the samples."""

    def __init__(self, pid: int, interval: float = 0.5, phase: str = "") -> None:
        self.pid = pid
        self.interval = interval
        self.phase = phase
        self.samples: list[tuple[float, float, float]] = []  # (t, VmRSS, RssAnon)
        self.peaks: dict[str, float] = {}  # phase -> highest VmRSS sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            try:
                m = memory(self.pid)
            except OSError:
                return
            self.samples.append((time.monotonic() - t0, m["VmRSS"], m["RssAnon"]))
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), m["VmRSS"])
            self._stop.wait(self.interval)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def settled(pid: int, seconds: float) -> dict[str, float]:
    """Median VmRSS / RssAnon over ``seconds`` of samples."""
    with Sampler(pid) as s:
        time.sleep(seconds)
    return {"rss_mib": statistics.median(x[1] for x in s.samples),
            "anon_mib": statistics.median(x[2] for x in s.samples)}


class AgentProcess:
    def __init__(self, *, port: int | None, exporter: str, sink_ports: tuple[int, int] | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="otel-ebpf-b5-"))
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("OTEL_EXPORTER_OTLP"):
                del env[k]
        if exporter != "file":
            grpc_port, http_port = sink_ports
            env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc" if exporter == "otlp" else "http/protobuf"
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = (f"http://127.0.0.1:{grpc_port}" if exporter == "otlp"
                                                  else f"http://127.0.0.1:{http_port}")
        argv = [PY, "-m", "otel_ebpf.cli", "--log-level", "warning", "run"]
        if port is not None:
            argv += ["--port", str(port)]
        self.proc = subprocess.Popen(argv, cwd=self.dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        for line in self.proc.stderr:
            if "otel-ebpf ready" in line:
                break
        else:
            raise RuntimeError("the agent did not start")
        self._errors: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self) -> None:
        for line in self.proc.stderr:
            self._errors.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> dict[str, int]:
        """Stops the agent; returns its last lost-event and dropped counters."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        counters = {"ringbuf_lost": 0, "pipeline_dropped": 0, "export_dropped_spans": 0}
        names = {"otel_ebpf.ringbuf.lost": "ringbuf_lost", "otel_ebpf.pipeline.dropped": "pipeline_dropped",
                 "otel_ebpf.export.dropped_spans": "export_dropped_spans"}
        metrics = self.dir / "otel-ebpf-data" / "metrics.jsonl"
        if metrics.exists():
            for line in metrics.read_text().splitlines():
                for metric, key in names.items():
                    for m in re.finditer(rf'"name":\s*"{re.escape(metric)}".*?"asInt":\s*"?(\d+)', line):
                        counters[key] = max(counters[key], int(m.group(1)))
        return counters


def open_connections(port: int, n: int, into: list[socket.socket], requests: int = 1) -> None:
    """``n`` more keep-alive connections to nginx, each after ``requests`` complete exchanges."""
    request = b"GET /index.html HTTP/1.1\r\nHost: bench\r\n\r\n"
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        for _ in range(requests):
            s.sendall(request)
            got = b""
            while b"\r\n\r\n" not in got or len(got) < got.index(b"\r\n\r\n") + 4 + _content_length(got):
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("nginx closed a keep-alive connection")
                got += chunk
        into.append(s)


def _content_length(head: bytes) -> int:
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    return int(m.group(1)) if m else 0


def h2load(url: str, *, seconds: float, clients: int, rps: float) -> dict:
    cmd = ["timeout", str(int(seconds) + 30), "h2load", "--h1", "-D", f"{seconds:g}", "-c", str(clients), "-t", "1"]
    if rps:
        cmd += ["--rps", f"{max(1.0, rps / clients):.1f}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True).stdout
    m = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    return {"succeeded": int(m.group(2)) if m else 0, "rps": float(rate.group(1)) if rate else 0.0}


def run(args) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 2 * args.connections + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # nginx inherits it
    nginx = Nginx()
    sink = None
    sink_ports = None
    agent = None
    whole = None
    conns: list[socket.socket] = []
    result: dict = {"exporter": args.exporter, "whole_host": args.whole_host, "seconds": args.seconds,
                    "connections": args.connections, "rps": args.rps or "closed loop",
                    "target_steady_rss_mib": round(TARGET_MIB, 1), "target_per_connection_kib": TARGET_PER_CONN_KIB}
    try:
        if args.exporter != "file":
            sink_ports = (free_port(), free_port())
            sink = subprocess.Popen([PY, "-c", NULL_OTLP_SINK, *map(str, sink_ports)], stdout=subprocess.PIPE, text=True)
            assert sink.stdout.readline().strip() == "ready"
            wait_listening(sink_ports[1])
        agent = AgentProcess(port=None if args.whole_host else nginx.port, exporter=args.exporter,
                             sink_ports=sink_ports)
        pid = agent.pid
        whole = Sampler(pid, interval=0.1, phase="idle").start()  # the highest RSS of each phase
        time.sleep(args.settle)
        idle = settled(pid, 2.0)
        result["idle"] = {**idle, **memory(pid), "bpf_maps_mib": bpf_map_rss(pid)}

        # connections: 1, then N in total, each with both ends in the agent's connection table
        whole.phase = "connections"
        open_connections(nginx.port, 1, conns, args.requests_per_connection)
        time.sleep(args.settle)
        one = settled(pid, 2.0)
        open_connections(nginx.port, args.connections - 1, conns, args.requests_per_connection)
        time.sleep(args.settle)
        many = settled(pid, 2.0)
        delta = args.connections - 1
        per_conn = {
            "rss_1_mib": one["rss_mib"], f"rss_{args.connections}_mib": many["rss_mib"],
            "kib_per_connection": (many["rss_mib"] - one["rss_mib"]) * 1024 / delta,
            "anon_kib_per_connection": (many["anon_mib"] - one["anon_mib"]) * 1024 / delta,
        }
        per_conn["kib_per_tracked_socket"] = per_conn["kib_per_connection"] / 2
        result["per_connection"] = per_conn
        for s in conns:
            s.close()
        conns.clear()
        # A fresh agent for the load: the heap the connections phase grew (and that the allocator
        # keeps) would otherwise count in the steady RSS.
        whole.stop()
        peaks = dict(whole.peaks)
        result["counters_connections_phase"] = agent.stop()
        agent = AgentProcess(port=None if args.whole_host else nginx.port, exporter=args.exporter,
                             sink_ports=sink_ports)
        pid = agent.pid
        whole = Sampler(pid, interval=0.1, phase="idle (load agent)").start()
        time.sleep(args.settle)

        # load
        whole.phase = "load"
        with Sampler(pid) as sampler:
            load = h2load(nginx.url, seconds=args.seconds, clients=args.clients, rps=args.rps)
        during = [s for s in sampler.samples if s[0] <= args.seconds]
        second_half = during[len(during) // 2:] or sampler.samples
        mem = memory(pid)
        result["load"] = {
            **load,
            "steady_rss_mib": statistics.median(s[1] for s in second_half),
            "steady_anon_mib": statistics.median(s[2] for s in second_half),
            "peak_rss_mib": max(s[1] for s in sampler.samples),
            "vm_hwm_mib": mem["VmHWM"],
            "threads": mem["threads"],
            "bpf_maps_mib": bpf_map_rss(pid),
            "samples": [(round(t, 1), round(r, 1)) for t, r, _ in sampler.samples],
        }
        whole.phase = "after"
        time.sleep(args.settle)
        result["after"] = {**settled(pid, 2.0), **memory(pid)}
        whole.stop()
        result["peak_rss_by_phase_mib"] = {**peaks, **whole.peaks}
    finally:
        if whole is not None:
            whole.stop()
        for s in conns:
            s.close()
        if agent is not None:
            result["counters"] = agent.stop()
        if sink is not None:
            sink.terminate()
            sink.wait(10)
        nginx.stop()
    return result


def report(r: dict) -> None:
    idle, load, pc, after = r["idle"], r["load"], r["per_connection"], r["after"]
    ok = "met" if load["steady_rss_mib"] <= TARGET_MIB else "gap"
    print(f"B5: agent memory ({r['exporter']} exporter, {'whole host' if r['whole_host'] else 'nginx port'}); "
          f"target steady RSS <= {TARGET_MB:.0f} MB ({TARGET_MIB:.1f} MiB), <= {TARGET_PER_CONN_KIB:g} KiB per tracked connection")
    print(f"  idle RSS     {idle['rss_mib']:6.1f} MiB  (anon {idle['RssAnon']:.1f}, file {idle['RssFile']:.1f}, "
          f"of which BPF ring mappings {idle['bpf_maps_mib']:.1f}; {idle['threads']} threads)")
    print(f"  steady RSS   {load['steady_rss_mib']:6.1f} MiB  (anon {load['steady_anon_mib']:.1f})  [{ok}]  "
          f"under h2load at {load['rps']:,.0f} req/s for {r['seconds']:g} s")
    print(f"  peak RSS     {load['peak_rss_mib']:6.1f} MiB  (VmHWM {load['vm_hwm_mib']:.1f})")
    print(f"  after load   {after['rss_mib']:6.1f} MiB  (anon {after['anon_mib']:.1f})")
    print("  highest sample per phase (every 0.1 s): "
          + ", ".join(f"{phase} {mib:.1f}" for phase, mib in r["peak_rss_by_phase_mib"].items()) + " MiB")
    # The target counts tracked connections as the agent does: one connection-table entry per socket
    # end (B4's figure, nginx's ends only, is the same quantity).
    print(f"  per tracked connection (socket end): {pc['kib_per_tracked_socket']:.2f} KiB RSS "
          f"[{'met' if pc['kib_per_tracked_socket'] <= TARGET_PER_CONN_KIB else 'gap'}]; "
          f"{pc['kib_per_connection']:.2f} KiB ({pc['anon_kib_per_connection']:.2f} KiB anon) per client "
          f"connection with both ends tracked; 1 vs {r['connections']:,} keep-alive connections")
    c = r.get("counters", {})
    print(f"  lost ring-buffer events {c.get('ringbuf_lost', 0)}, pipeline drops {c.get('pipeline_dropped', 0)}, "
          f"export drops {c.get('export_dropped_spans', 0)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15.0, help="load duration")
    ap.add_argument("--connections", type=int, default=5000)
    ap.add_argument("--requests-per-connection", type=int, default=1,
                    help="exchanges on each connection before it idles (more: longer per-connection history)")
    ap.add_argument("--clients", type=int, default=8, help="h2load connections during the load phase")
    ap.add_argument("--rps", type=float, default=0.0, help="total request rate (0: closed loop)")
    ap.add_argument("--exporter", choices=["file", "otlphttp", "otlp"], default="file")
    ap.add_argument("--whole-host", action="store_true", help="no --port filter (the agent sees every process)")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait after each step")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    if args.connections < 2:
        ap.error("--connections must be at least 2")
    result = run(args)
    report(result)
    save_results("bench_memory", result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root: the agent loads BPF programs")
    main()
