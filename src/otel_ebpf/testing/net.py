"""Loopback helpers for tests and benchmarks.

Usage::

    port = free_port()
    start_my_server(port)
    wait_listening(port)
"""

from __future__ import annotations

import socket
import time

__all__ = ["free_port", "wait_listening"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(port: int, *, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    """Return once something accepts connections on ``host:port``; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port}")
