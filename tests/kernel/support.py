"""Helpers of the kernel end-to-end tests: servers, clients and an in-process capture."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from otel_ebpf.bpf.libbpf import libbpf_available
from otel_ebpf.bpf.preflight import has_bpf_privileges
from otel_ebpf.bpf.sockdata import object_path
from otel_ebpf.receivers.http import HttpReceiver, HttpReceiverConfig
from otel_ebpf.records import Role
from otel_ebpf.testing import ExchangeSink
from otel_ebpf.testing.net import free_port, wait_listening

APPS = Path(__file__).parent / "apps"
PY = sys.executable


def kernel_unavailable_reason() -> str | None:
    if not has_bpf_privileges():
        return "needs root (CAP_BPF + CAP_PERFMON)"
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return "kernel has no BTF"
    if not libbpf_available():
        return "libbpf.so.1 missing"
    if not object_path().exists():
        return f"BPF object {object_path()} not built (make bpf)"
    return None


class Server:
    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc = proc
        self.port = port

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_python_server(script: str) -> Server:
    port = free_port()
    proc = subprocess.Popen([PY, str(APPS / script), str(port)], stdout=subprocess.DEVNULL)
    wait_listening(port)
    return Server(proc, port)


def start_nginx(tmp_path: Path) -> Server:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is not installed (make setup installs nginx-light)")
    port = free_port()
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("hello from nginx\n" * 4)
    (root / "big.bin").write_bytes(b"b" * 200_000)
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 100000;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /status500 {{ return 500; }}
    }}
}}
""")
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp_path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_listening(port)
    return Server(proc, port)


def run_client(*args: str, timeout: float = 60.0) -> None:
    subprocess.run([PY, str(APPS / "clients.py"), *args], check=True, timeout=timeout)


class Capture:
    """An in-process HttpReceiver filtered to given ports, collecting exchanges."""

    def __init__(self, ports: list[int], **config):
        self.sink = ExchangeSink()
        config.setdefault("poll_interval_ms", 20)
        self.receiver = HttpReceiver(HttpReceiverConfig(ports=ports, **config), self.sink)
        self.receiver.start()

    def stop(self) -> None:
        self.receiver.shutdown()




def server_side(server):
    return lambda e: e.connection.pid == server.pid and e.connection.role == Role.SERVER


def client_side(server):
    return lambda e: (e.connection.pid != server.pid and e.connection.role == Role.CLIENT
                      and e.connection.remote_port == server.port)


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)
