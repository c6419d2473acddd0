"""Shared pieces of the benchmarks: an nginx on loopback, process CPU/RSS readings, load generators."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from otel_ebpf.testing.net import free_port, wait_listening

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Nginx:
    """nginx on 127.0.0.1 serving a small static page (one worker, access log off)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="otel-ebpf-bench-"))
        self.port = free_port()
        (self.dir / "www").mkdir()
        (self.dir / "www" / "index.html").write_text("hello from nginx\n" * 8)
        conf = self.dir / "nginx.conf"
        conf.write_text(f"""
daemon off; master_process off; worker_processes 1; pid {self.dir}/nginx.pid; error_log {self.dir}/error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; sendfile on; keepalive_requests 1000000;
  client_body_temp_path {self.dir}/b; proxy_temp_path {self.dir}/p; fastcgi_temp_path {self.dir}/f;
  uwsgi_temp_path {self.dir}/u; scgi_temp_path {self.dir}/s;
  server {{ listen 127.0.0.1:{self.port}; root {self.dir}/www; }} }}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(self.dir)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_listening(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/index.html"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int, key: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def wrk(url: str, *, seconds: int, connections: int = 8, threads: int = 1) -> dict[str, float]:
    """Closed-loop HTTP/1.1 load; returns requests, rps and p99 latency (ms)."""
    out = subprocess.run(["timeout", str(seconds + 30), "wrk", "--latency", "-t", str(threads), "-c",
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
