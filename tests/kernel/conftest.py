"""Kernel end-to-end fixtures: real probes, real servers and clients on loopback.

A kernel test skips when the host cannot load BPF, except under CI=true, where it
fails instead: green CI means the kernel path really ran.
"""

from __future__ import annotations

import os

import pytest

from .support import Capture, kernel_unavailable_reason, start_nginx, start_python_server


@pytest.fixture(autouse=True)
def require_kernel():
    reason = kernel_unavailable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"kernel test cannot run under CI: {reason}")
        pytest.skip(reason)


@pytest.fixture
def threading_server():
    server = start_python_server("threading_server.py")
    yield server
    server.stop()


@pytest.fixture
def aiohttp_server():
    server = start_python_server("aiohttp_server.py")
    yield server
    server.stop()


@pytest.fixture
def nginx_server(tmp_path):
    server = start_nginx(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def capture():
    started: list[Capture] = []

    def start(*ports: int, **config) -> Capture:
        c = Capture(list(ports), **config)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()
