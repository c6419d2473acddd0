"""Loopback helpers for tests and benchmarks.

Usage::

    port = free_port()
    start_my_server(port)
    wait_listening(port)
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import threading
import time
from collections.abc import Iterator

__all__ = ["free_port", "wait_listening"]


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _port_candidates() -> Iterator[int]:
    """Ports below the ephemeral range, from a per-process random start, each once per lap."""
    low, _ = _ephemeral_range()
    first, last = 10000, max(10001, low - 1)
    if last - first < 1000:  # an unusual ephemeral range: fall back to ports the kernel picks
        while True:
            yield 0
    span = last - first + 1
    start = random.Random(os.getpid() ^ time.monotonic_ns()).randrange(span)
    for i in itertools.count():
        yield first + (start + i) % span


_candidates = _port_candidates()
_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago.

    Picked below the kernel's ephemeral range (``ip_local_port_range``), so no outgoing connection
    can take it as its local port before the server binds it, and never the same port twice in one
    process (until the range is exhausted), so two servers started together cannot be handed one port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with _lock:
        for _ in range(5000):
            candidate = next(_candidates)
            with socket.socket(family) as s:
                try:
                    s.bind((host, candidate))
                except OSError:
                    continue
                return s.getsockname()[1]
    raise OSError(f"no free TCP port found on {host}")


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
