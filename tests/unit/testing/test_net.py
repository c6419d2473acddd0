"""free_port: ports a test server can bind without racing outgoing connections or its siblings."""

from __future__ import annotations

import socket

from otel_ebpf.testing import free_port
from otel_ebpf.testing.net import _ephemeral_range


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    low, _ = _ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 < p < low for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))


def test_a_port_in_use_is_skipped():
    taken = []
    try:
        for _ in range(50):
            s = socket.socket()
            s.bind(("127.0.0.1", free_port()))
            taken.append(s)
        in_use = {s.getsockname()[1] for s in taken}
        assert free_port() not in in_use
    finally:
        for s in taken:
            s.close()
