"""Shared pieces of the benchmarks: an nginx on loopback, process CPU/RSS readings, load generators."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from otel_ebpf.records import Connection, Direction, Role
from otel_ebpf.testing.net import free_port, wait_listening

CLK_TCK = os.sysconf("SC_CLK_TCK")
RESULTS_DIR_ENV = "OTEL_EBPF_BENCH_RESULTS"


def save_results(name: str, data) -> Path | None:
    """Writes ``data`` as ``<dir>/<name>.json`` when ``$OTEL_EBPF_BENCH_RESULTS`` names a directory
    (``make bench`` sets it); returns the path written."""
    directory = os.environ.get(RESULTS_DIR_ENV)
    if not directory:
        return None
    path = Path(directory) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str))
    return path


class Nginx:
    """nginx on 127.0.0.1 serving a small static page (one worker, access log off)."""

    def __init__(self, cpus: set[int] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="otel-ebpf-bench-"))
        self.port = free_port()
        (self.dir / "www").mkdir()
        (self.dir / "www" / "index.html").write_text("hello from nginx\n" * 8)
        conf = self.dir / "nginx.conf"
        conf.write_text(f"""
daemon off; master_process off; worker_processes 1; worker_rlimit_nofile 32768; pid {self.dir}/nginx.pid; error_log {self.dir}/error.log;
events {{ worker_connections 16384; }}
http {{ access_log off; sendfile on; keepalive_requests 1000000;
  client_body_temp_path {self.dir}/b; proxy_temp_path {self.dir}/p; fastcgi_temp_path {self.dir}/f;
  uwsgi_temp_path {self.dir}/u; scgi_temp_path {self.dir}/s;
  server {{ listen 127.0.0.1:{self.port}; root {self.dir}/www; }} }}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        pin = ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []
        self.proc = subprocess.Popen([*pin, nginx, "-c", str(conf), "-p", str(self.dir)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_listening(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/index.html"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def _stat_cpu_seconds(stat: Path) -> float:
    """User + system CPU-seconds from a /proc/.../stat file (of a process or of one thread)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """User + system CPU-seconds of process ``pid`` by thread name (the agent names its threads:
    oebpf-http, oebpf-pipeline, oebpf-export, ...; the main thread is the executable's name)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            seconds = _stat_cpu_seconds(task / "stat")
        except OSError:  # the thread ended meanwhile
            continue
        out[name] = out.get(name, 0.0) + seconds
    return out


def prog_ids(pid: int) -> set[int]:
    """prog_id of every BPF program fd process ``pid`` holds (/proc/PID/fdinfo)."""
    ids = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return ids
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-prog":
                continue
            for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
                if line.startswith("prog_id:"):
                    ids.add(int(line.split()[1]))
        except OSError:
            continue
    return ids


# An OTLP receiver on loopback (gRPC and HTTP, traces, metrics and logs) that answers without
# decoding: `python -c NULL_OTLP_SINK GRPC_PORT HTTP_PORT`, prints "ready". It stands for a Collector.
NULL_OTLP_SINK = """
import sys, grpc, threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
grpc_port, http_port = int(sys.argv[1]), int(sys.argv[2])
def export(request, context):
    return b""  # an empty Export*ServiceResponse
handlers = [grpc.method_handlers_generic_handler(f"opentelemetry.proto.collector.{s}.v1.{n}Service", {
    "Export": grpc.unary_unary_rpc_method_handler(export, request_deserializer=None, response_serializer=None)})
    for s, n in (("trace", "Trace"), ("metrics", "Metrics"), ("logs", "Logs"))]
server = grpc.server(futures.ThreadPoolExecutor(4), options=[("grpc.max_receive_message_length", 64 << 20)])
server.add_generic_rpc_handlers(handlers)
server.add_insecure_port(f"127.0.0.1:{grpc_port}")
server.start()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200); self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0"); self.end_headers()
httpd = ThreadingHTTPServer(("127.0.0.1", http_port), H)
threading.Thread(target=httpd.serve_forever, daemon=True).start()
print("ready", flush=True)
server.wait_for_termination()
"""


def rss_mib(pid: int, key: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def wrk(url: str, *, seconds: int, connections: int = 8, threads: int = 1,
        prefix: list[str] | None = None) -> dict[str, float]:
    """Closed-loop HTTP/1.1 load; returns requests, rps and p99 latency (ms). ``prefix``: e.g. taskset."""
    out = subprocess.run([*(prefix or []), "timeout", str(seconds + 30), "wrk", "--latency", "-t", str(threads), "-c",
                          str(connections), "-d", f"{seconds}s", url], capture_output=True, text=True,
                         check=True).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    return {"requests": reqs, "rps": rps, "p99_ms": p99}


def h2load_h1(url: str, *, requests: int, clients: int, rps_per_client: int) -> dict[str, float]:
    out = subprocess.run(["timeout", "300", "h2load", "--h1", "-n", str(requests), "-c", str(clients), "--rps",
                          str(rps_per_client), url], capture_output=True, text=True, check=True).stdout
    ok = int(re.search(r"(\d+) succeeded", out).group(1))
    return {"succeeded": ok}


# ---------------------------------------------------------------------------------------------
# Parser benchmarks (bench_http1_parser.py, bench_http2_parser.py)
# ---------------------------------------------------------------------------------------------

FIXTURES_ROOT = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
BENCH_CONN = Connection(1, 3, 0, 4, "127.0.0.1", 8080, "127.0.0.1", 50000, Role.SERVER)
SIDE = {"c": Direction.INGRESS, "s": Direction.EGRESS}


def fixture_units(directory: Path, name: str) -> list[tuple[Direction, bytes]]:
    """A recorded fixture (tests/fixtures/http*) as (direction, bytes) read/write units, server view."""
    meta = json.loads((directory / f"{name}.json").read_text())
    streams = {"c": (directory / f"{name}.request.bin").read_bytes(),
               "s": (directory / f"{name}.response.bin").read_bytes()}
    offsets = {"c": 0, "s": 0}
    units: list[tuple[Direction, bytes]] = []
    for side, size in meta["chunks"]:
        units.append((SIDE[side], streams[side][offsets[side]:offsets[side] + size]))
        offsets[side] += size
    return units


def bench_sessions(label: str, units: list[tuple[Direction, bytes]], seconds: float, new_session: Callable,
                   stats, *, width: int, trials: int = 5) -> float:
    """Exchanges per second of sessions made by ``new_session()`` (counting into ``stats``) fed
    ``units``: best of ``trials`` runs of ``seconds / trials`` each (the best is the least disturbed)."""
    rates = []
    for _ in range(trials):
        exchanges = 0
        start = time.perf_counter()
        deadline = start + seconds / trials
        while time.perf_counter() < deadline:
            for _ in range(10):
                session = new_session()
                ts = 0
                for direction, data in units:
                    ts += 1000
                    exchanges += len(session.on_data(direction, data, ts, ts + 10, tid=7))
                exchanges += len(session.on_close(ts + 1))
        rates.append(exchanges / (time.perf_counter() - start))
    rates.sort()
    print(f"{label:<{width}} {rates[-1]:>10,.0f} exchanges/s  (median of {trials}: {rates[trials // 2]:,.0f})")
    assert stats.parse_errors == 0 and stats.exchanges > 0, stats
    return rates[-1]


def print_interpreter_scale() -> None:
    start = time.perf_counter()
    for _ in range(10_000_000):
        pass
    print(f"(interpreter scale: 10M-iteration empty loop takes {time.perf_counter() - start:.3f} s)")


class Nghttpd:
    """nghttpd (h2c, prior knowledge) on 127.0.0.1 serving a small page."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="otel-ebpf-h2-"))
        (self.dir / "index.html").write_text("hello over h2\n" * 8)
        self.port = free_port()
        self.proc = subprocess.Popen([shutil.which("nghttpd") or "/usr/sbin/nghttpd", "--no-tls", "-d", str(self.dir),
                                      str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/index.html"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def h2load_h2(url: str, *, requests: int, clients: int, rps_per_client: int) -> dict[str, float]:
    out = subprocess.run(["timeout", "300", "h2load", "-n", str(requests), "-c", str(clients), "-m", "10",
                          "--rps", str(rps_per_client), url], capture_output=True, text=True, check=True).stdout
    return {"succeeded": int(re.search(r"(\d+) succeeded", out).group(1))}
