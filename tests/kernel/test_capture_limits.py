"""Kernel capture at its limits: truncated payloads, a full ring buffer, filters, IPv6."""

from __future__ import annotations

import subprocess
import sys
import time

from otel_ebpf.bpf.events import SockDataEvent
from otel_ebpf.bpf.sockdata import SockDataTracer

from .support import Server, client_side, free_port, run_client, server_side, wait_listening


def test_bodies_larger_than_the_capture_are_skipped_by_length_and_the_next_request_still_parses(
        threading_server, capture):
    cap = capture(threading_server.port, max_capture_bytes=1024)
    run_client("big_posts", str(threading_server.port), "5", "100000")
    served = cap.sink.wait_for(6, where=server_side(threading_server))
    posts = [e for e in served if e.request.method == "POST"]
    assert [e.request.target for e in posts] == [f"/echo?i={i}" for i in range(5)]
    assert all(e.request.body_size == 100_000 and e.response.status == 201 for e in posts)
    assert served[-1].request.target == "/ok?after=posts" and served[-1].response.status == 200
    assert cap.receiver.stats()["kernel.truncated"] >= 5


def test_a_full_ring_buffer_loses_events_but_counts_them_and_capture_goes_on(threading_server):
    tracer = SockDataTracer(ring_bytes=8192, ports=[threading_server.port])
    tracer.start()
    try:
        run_client("concurrent", str(threading_server.port), "4", "50")  # nobody reads the ring meanwhile
        stats = tracer.stats()
        assert stats["lost"] > 0
        assert stats["lost_with_room"] < stats["lost"]  # nobody reads: most were refused for lack of room
        while tracer.poll_raw(0):
            pass
        run_client("keepalive", str(threading_server.port), "1", "/ok?after=loss")
        seen = []
        deadline = time.monotonic() + 10
        while not any(b"/ok?after=loss" in e.data for e in seen) and time.monotonic() < deadline:
            seen += [e for e in tracer.poll(100) if isinstance(e, SockDataEvent)]
        assert any(e.data.startswith(b"GET /ok?after=loss ") for e in seen)
        assert tracer.stats()["decode_errors"] == 0
    finally:
        tracer.close()


def test_pid_filter_keeps_only_the_given_process(threading_server, capture):
    cap = capture(pids=[threading_server.pid])
    run_client("keepalive", str(threading_server.port), "3", "/ok?pid=1")
    served = cap.sink.wait_for(3, where=server_side(threading_server))
    assert len(served) == 3
    time.sleep(0.5)
    assert not cap.sink.matching(client_side(threading_server))
    assert {e.connection.pid for e in cap.sink.exchanges} == {threading_server.pid}


def test_ipv6_loopback_connections_are_captured_with_their_addresses(capture):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "::1", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, host="::1")
        cap = capture(port)
        subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://[::1]:{port}/"], check=True, timeout=30)
        server = Server(proc, port)
        served = cap.sink.wait_for(1, where=server_side(server))
        conn = served[0].connection
        assert conn.family == 6 and conn.local_address == "::1" and conn.remote_address == "::1"
        assert served[0].response.status == 200
    finally:
        proc.terminate()
        proc.wait(5)


def test_records_that_wrap_the_end_of_a_small_ring_read_back_byte_for_byte():
    # A 16 KiB ring wraps every few records; the reader maps its data area once and joins the two
    # parts of a record that straddles the end. Payloads of varied sizes, each distinct.
    import socket  # noqa: PLC0415

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    tracer = SockDataTracer(ring_bytes=16384, ports=[port], self_tgid=0)  # this process is the traffic
    tracer.start()
    client = socket.create_connection(("127.0.0.1", port))
    server, _ = listener.accept()
    sent = [bytes([65 + i % 26]) * (97 + (i * 389) % 1800) + b"#%d" % i for i in range(300)]
    received = []
    try:
        for payload in sent:
            client.sendall(payload)
            got = 0
            while got < len(payload):
                got += len(server.recv(65536))
            received += [e for e in tracer.poll(0) if isinstance(e, SockDataEvent) and e.direction.name == "EGRESS"]
        deadline = time.monotonic() + 5
        while len(received) < len(sent) and time.monotonic() < deadline:
            received += [e for e in tracer.poll(50) if isinstance(e, SockDataEvent) and e.direction.name == "EGRESS"]
        stats = tracer.stats()
    finally:
        tracer.close()
        client.close()
        server.close()
        listener.close()
    assert stats["lost"] == 0 and stats["decode_errors"] == 0
    assert [e.data for e in received] == sent
    assert stats["ring_records"] * 600 > 3 * 16384  # the ring wrapped several times
