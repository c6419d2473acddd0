"""The tcpflow tracer against the real kernel: one record per TCP connection.

Traffic comes from child processes (the test process is the agent, and the agent's
own flows are never reported); records are picked by the test's own ports.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from otel_ebpf.bpf.sockdata import object_path
from otel_ebpf.bpf.tcpflow import TcpFlowTracer
from otel_ebpf.records import FlowState, Role, TcpFlow
from otel_ebpf.testing.net import free_port
from otel_ebpf.testing.netns import (
    NetNamespace,
    blackhole,
    drop_random,
    netns_unavailable_reason,
)

PY = sys.executable

# Accepts `conns` connections one after the other; on each reads `expect` bytes, writes
# `reply` bytes, then (with "drain") reads until EOF or reset, and closes. Prints its port.
SERVER = r"""
import socket, sys
host, conns, expect, reply = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
drain = "drain" in sys.argv[5:]
sys.stdin.readline()  # the test may move us to a cgroup first: a socket belongs to its creator's cgroup
family = socket.AF_INET6 if ":" in host else socket.AF_INET
srv = socket.create_server((host, 0), family=family, backlog=512)
print(srv.getsockname()[1], flush=True)
for _ in range(conns):
    conn, _ = srv.accept()
    got = 0
    while got < expect and (data := conn.recv(1 << 20)):
        got += len(data)
    conn.sendall(b"s" * reply)
    try:
        while drain and conn.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    conn.close()
"""

# Sends `send` bytes, reads `expect` bytes, prints what it saw (TCP_INFO's tcpi_total_retrans
# is the u32 at offset 100 of struct tcp_info) and closes; with "hold", only after a stdin line.
# "mss=N" caps the segment size (loopback's 64 KiB MTU makes few, large segments).
CLIENT = r"""
import json, os, socket, struct, sys
host, port, send, expect = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.settimeout(60)
for opt in sys.argv[5:]:
    if opt.startswith("mss="):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, int(opt[4:]))
s.connect((host, port))
s.sendall(b"c" * send)
got = 0
while got < expect and (data := s.recv(1 << 20)):
    got += len(data)
info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
print(json.dumps({"pid": os.getpid(), "port": s.getsockname()[1], "got": got,
                  "total_retrans": struct.unpack_from("<I", info, 100)[0]}), flush=True)
if "hold" in sys.argv[5:]:
    sys.stdin.readline()
s.close()
"""

CONNECT = r"""
import errno, os, socket, sys
s = socket.socket()
try:
    s.connect((sys.argv[1], int(sys.argv[2])))  # no Python timeout: the kernel decides
    result = "CONNECTED"
except OSError as e:
    result = errno.errorcode.get(e.errno, str(e.errno))
print(os.getpid(), s.getsockname()[1], result, flush=True)
"""

# Writes 1000 bytes every 50 ms for about 1 s on one connection.
TRICKLE = r"""
import os, socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
for _ in range(20):
    s.sendall(b"t" * 1000)
    time.sleep(0.05)
print(os.getpid(), s.getsockname()[1], flush=True)
s.close()
"""

# `n` short connections from 127.0.0.2 .. 127.0.0.51 (no ephemeral port shortage).
MANY = r"""
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    s = socket.socket()
    s.bind((f"127.0.0.{2 + i % 50}", 0))
    s.connect(("127.0.0.1", port))
    s.sendall(b"x")
    s.recv(1)
    s.close()
"""

# Reads nothing: closes with the server's bytes unread, which makes the kernel send a RST.
ABORT = r"""
import os, select, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
select.select([s], [], [], 10)
print(os.getpid(), s.getsockname()[1], flush=True)
s.close()
"""

# Opens its connection and sends 5000 bytes, then waits for a stdin line, sends 7 x 1000 more, closes.
PHASED = r"""
import os, socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"a" * 5000)
print(os.getpid(), s.getsockname()[1], flush=True)
sys.stdin.readline()
for _ in range(7):
    s.sendall(b"b" * 1000)
    time.sleep(0.02)
s.close()
"""


class Server:
    """A SERVER child, optionally in its own cgroup v2 (created here, removed by stop())."""

    def __init__(self, host: str = "127.0.0.1", *, conns: int = 1, expect: int = 0, reply: int = 0,
                 drain: bool = False, cgroup: Path | None = None):
        args = [PY, "-c", SERVER, host, str(conns), str(expect), str(reply)] + (["drain"] if drain else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.cgroup = cgroup
        if cgroup is not None:
            cgroup.mkdir()
            (cgroup / "cgroup.procs").write_text(str(self.proc.pid))
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        self.port = int(self.proc.stdout.readline())

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float = 30) -> None:
        assert self.proc.wait(timeout) == 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.cgroup is not None and self.cgroup.exists():
            self.cgroup.rmdir()


@pytest.fixture
def start_tracer():
    started: list[TcpFlowTracer] = []
    if not object_path("tcpflow").exists():
        pytest.fail(f"{object_path('tcpflow')} is missing: run `make bpf`")

    def start(**kw) -> TcpFlowTracer:
        tracer = TcpFlowTracer(**kw)
        started.append(tracer)
        tracer.start()
        return tracer

    yield start
    for tracer in started:
        tracer.close()


@pytest.fixture
def servers():
    started: list[Server] = []

    def start(*args, **kw) -> Server:
        server = Server(*args, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def run(script: str, *args, **kw) -> str:
    return subprocess.run([PY, "-c", script, *map(str, args)], capture_output=True, text=True, check=True,
                          timeout=60, **kw).stdout


def collect(tracer: TcpFlowTracer, done: Callable[[list[TcpFlow]], bool], *, timeout: float = 10.0) -> list[TcpFlow]:
    """Records polled until ``done(records)`` holds (AssertionError after ``timeout``)."""
    flows: list[TcpFlow] = []
    deadline = time.monotonic() + timeout
    while not done(flows):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting; got {flows}")
        flows += tracer.poll(50)
    return flows


def on_port(port: int) -> Callable[[TcpFlow], bool]:
    return lambda f: port in (f.local_port, f.remote_port)


def finals(flows: list[TcpFlow], port: int) -> list[TcpFlow]:
    return [f for f in flows if on_port(port)(f) and f.state != FlowState.ACTIVE]


def cgroup2_root() -> Path | None:
    for line in Path("/proc/mounts").read_text().splitlines():
        _dev, mnt, fstype, *_ = line.split()
        if fstype == "cgroup2":
            return Path(mnt)
    return None


def test_a_transfer_of_known_size_gives_exact_byte_counts_on_both_ends(start_tracer, servers):
    tracer = start_tracer()
    assert set(tracer.attached) == {"inet_sock_set_state", "sock_send_length", "sock_recv_length",
                                    "tcp_retransmit_skb", "tcp_send_reset", "tcp_receive_reset"}
    assert tracer.skipped == {}
    root = cgroup2_root()
    cgroup = root / f"oe-tcpflow-{os.getpid()}" if root else None
    server = servers(conns=1, expect=1_000_000, reply=123_456, cgroup=cgroup)
    client = json.loads(run(CLIENT, "127.0.0.1", server.port, 1_000_000, 123_456))
    server.wait()

    flows = collect(tracer, lambda fs: len(finals(fs, server.port)) == 2)
    by_role = {f.role: f for f in finals(flows, server.port)}
    c, s = by_role[Role.CLIENT], by_role[Role.SERVER]
    assert (c.bytes_sent, c.bytes_received) == (1_000_000, 123_456)
    assert (s.bytes_sent, s.bytes_received) == (123_456, 1_000_000)
    assert c.state == s.state == FlowState.CLOSED and c.failure is None and s.failure is None
    assert (c.pid, c.comm) == (client["pid"], "python") and (s.pid, s.comm) == (server.pid, "python")
    assert (c.local_address, c.local_port, c.remote_address, c.remote_port) == \
        ("127.0.0.1", client["port"], "127.0.0.1", server.port)
    assert (s.local_port, s.remote_port, s.family) == (server.port, client["port"], 4)
    assert c.flow_id != s.flow_id and not c.partial and not s.partial
    for f in (c, s):
        assert f.srtt_us > 0 and f.min_rtt_us > 0 and f.segments_sent > 0 and f.segments_received > 0
        assert f.retransmits == f.resets_sent == f.resets_received == 0
        assert 0 < f.duration_ns < 30e9 and abs(f.end_ns - time.time_ns()) < 30e9  # wall clock
        assert (f.interval_bytes_sent, f.interval_bytes_received) == (f.bytes_sent, f.bytes_received)
    if cgroup is not None:  # the socket's cgroup, right even for the server end established in softirq
        assert s.cgroup_id == cgroup.stat().st_ino and c.cgroup_id != s.cgroup_id


def test_connect_to_a_closed_port_is_a_failed_flow_refused(start_tracer):
    tracer = start_tracer()
    port = free_port()
    pid, local_port, result = run(CONNECT, "127.0.0.1", port).split()
    assert result == "ECONNREFUSED"

    (flow,) = finals(collect(tracer, lambda fs: finals(fs, port)), port)
    assert (flow.state, flow.failure, flow.role) == (FlowState.FAILED, "refused", Role.CLIENT)
    assert (flow.pid, flow.comm) == (int(pid), "python")
    assert (flow.remote_address, flow.remote_port) == ("127.0.0.1", port)
    assert flow.local_port == int(local_port) and flow.local_port != 0
    assert flow.resets_received == 1 and flow.bytes_sent == flow.bytes_received == 0


@pytest.mark.skipif(netns_unavailable_reason() is not None, reason=str(netns_unavailable_reason()))
def test_blackholed_connect_in_a_namespace_is_a_failed_flow_timed_out(start_tracer):
    tracer = start_tracer()
    with NetNamespace() as ns, blackhole(ns, 9, syn_retries=1) as (addr, port):
        pid, _local, result = ns.python(CONNECT, addr, port, timeout=20).stdout.split()
    assert result == "ETIMEDOUT"

    flows = collect(tracer, lambda fs: any(f.remote_address == addr and f.state != FlowState.ACTIVE for f in fs))
    (flow,) = [f for f in flows if f.remote_address == addr]
    assert (flow.state, flow.failure, flow.role, flow.pid) == (FlowState.FAILED, "timed_out", Role.CLIENT, int(pid))
    assert flow.remote_port == port and flow.retransmits >= 1  # the SYN was retransmitted before giving up
    assert 2e9 < flow.duration_ns < 10e9


def test_retransmits_under_real_loss_match_the_kernels_tcp_info(start_tracer, servers):
    tracer = start_tracer()
    server = servers(conns=1, expect=2_000_000, reply=1, drain=True)
    client = subprocess.Popen([PY, "-c", CLIENT, "127.0.0.1", str(server.port), "2000000", "1", "hold", "mss=1400"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        with drop_random(server.port, 0.1) as drops:
            seen = json.loads(client.stdout.readline())  # read right before close, all data acknowledged
            dropped = drops.dropped()
        client.stdin.write("\n")
        client.stdin.close()
        assert client.wait(30) == 0
    finally:
        client.kill()
    server.wait()

    flows = collect(tracer, lambda fs: len(finals(fs, server.port)) == 2)
    (c,) = [f for f in finals(flows, server.port) if f.role == Role.CLIENT]
    assert dropped > 0 and seen["total_retrans"] > 0
    # Tolerance 2: a retransmission timer may still fire between TCP_INFO and close.
    assert abs(c.retransmits - seen["total_retrans"]) <= 2, (c.retransmits, seen)
    assert c.bytes_sent == 2_000_000 and c.bytes_received == 1


def test_an_ipv6_loopback_flow_has_family_6_and_its_addresses(start_tracer, servers):
    tracer = start_tracer()
    server = servers("::1", conns=1, expect=5000, reply=500)
    client = json.loads(run(CLIENT, "::1", server.port, 5000, 500))

    flows = collect(tracer, lambda fs: len(finals(fs, server.port)) == 2)
    by_role = {f.role: f for f in finals(flows, server.port)}
    c, s = by_role[Role.CLIENT], by_role[Role.SERVER]
    assert (c.family, c.local_address, c.local_port, c.remote_address, c.remote_port) == \
        (6, "::1", client["port"], "::1", server.port)
    assert (s.family, s.local_address, s.local_port, s.remote_address, s.remote_port) == \
        (6, "::1", server.port, "::1", client["port"])
    assert (c.bytes_sent, c.bytes_received, s.bytes_sent, s.bytes_received) == (5000, 500, 500, 5000)


def test_a_long_connection_sends_active_snapshots_whose_intervals_add_up(start_tracer, servers):
    tracer = start_tracer(flow_interval_s=0.2)
    server = servers(conns=1, expect=20_000)
    pid, port = map(int, run(TRICKLE, server.port).split())
    server.wait()

    flows = collect(tracer, lambda fs: len(finals(fs, server.port)) == 2)
    client = [f for f in flows if f.local_port == port]
    served = [f for f in flows if f.local_port == server.port and f.remote_port == port]
    for records, field in ((client, "bytes_sent"), (served, "bytes_received")):
        states = [f.state for f in records]
        assert states.count(FlowState.ACTIVE) >= 2 and states[-1] == FlowState.CLOSED, states
        assert FlowState.CLOSED not in states[:-1]
        assert getattr(records[-1], field) == 20_000
        assert sum(getattr(f, "interval_" + field) for f in records) == 20_000
        assert [getattr(f, field) for f in records] == sorted(getattr(f, field) for f in records)
        assert all(a.end_ns < b.end_ns for a, b in itertools.pairwise(records))
        assert len({(f.flow_id, f.start_ns) for f in records}) == 1
    assert all(f.pid == pid for f in client) and all(f.pid == server.pid for f in served)


def test_two_thousand_short_connections_cost_one_record_per_flow(start_tracer, servers):
    n = 2000
    tracer = start_tracer()
    server = servers(conns=n, expect=1, reply=1)
    before = tracer.stats()
    started = time.monotonic()
    run(MANY, server.port, n)
    server.wait()
    elapsed = time.monotonic() - started

    flows = collect(tracer, lambda fs: len(finals(fs, server.port)) >= 2 * n, timeout=20)
    after = tracer.stats()
    ours = finals(flows, server.port)
    assert len(ours) == 2 * n and {f.state for f in ours} == {FlowState.CLOSED}
    assert sum(f.role == Role.CLIENT for f in ours) == n and sum(f.role == Role.SERVER for f in ours) == n
    assert len({f.local_address for f in ours if f.role == Role.CLIENT}) == 50
    assert all(f.bytes_sent == f.bytes_received == 1 for f in ours)
    events = after["events"] - before["events"]
    # No per-packet records: one per flow, plus whatever else the machine did meanwhile.
    assert 2 * n <= events <= 2 * n * 1.1 + 50, events
    assert after["lost"] == 0 and after["decode_errors"] == 0 and after["flows_full"] == 0
    print(f"\n{n} connections in {elapsed:.2f} s: {events} kernel records for {2 * n} flows")


def test_an_abortive_close_counts_the_reset_on_both_ends(start_tracer, servers):
    tracer = start_tracer()
    server = servers(conns=1, reply=1000, drain=True)
    pid, port = map(int, run(ABORT, server.port).split())
    server.wait()

    flows = collect(tracer, lambda fs: len(finals(fs, server.port)) == 2)
    by_role = {f.role: f for f in finals(flows, server.port)}
    c, s = by_role[Role.CLIENT], by_role[Role.SERVER]
    assert (c.pid, c.local_port, c.state, c.resets_sent, c.resets_received) == (pid, port, FlowState.CLOSED, 1, 0)
    assert (s.state, s.resets_sent, s.resets_received) == (FlowState.CLOSED, 0, 1)
    assert s.bytes_sent == c.bytes_received == 1000


def test_a_connection_opened_before_the_tracer_is_reported_as_partial(start_tracer, servers):
    server = servers(conns=1, expect=12_000)
    client = subprocess.Popen([PY, "-c", PHASED, str(server.port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        pid, port = map(int, client.stdout.readline().split())
        time.sleep(0.1)  # the server has read the first 5000 bytes
        tracer = start_tracer()
        client.stdin.write("\n")
        client.stdin.close()
        assert client.wait(30) == 0
    finally:
        client.kill()
    server.wait()

    flows = collect(tracer, lambda fs: len(finals(fs, server.port)) == 2)
    c = next(f for f in finals(flows, server.port) if f.local_port == port)
    s = next(f for f in finals(flows, server.port) if f.local_port == server.port)
    assert c.partial and s.partial and c.role == s.role == Role.UNKNOWN
    assert (c.pid, s.pid) == (pid, server.pid)
    # Counters are the connection's totals. A client flow of unknown role also counts its SYN
    # as one byte sent (see read_counters in tcpflow.bpf.c).
    assert c.bytes_sent in (12_000, 12_001) and s.bytes_received == 12_000
    # Intervals start at first sight: the exit of the first sendmsg/recvmsg after the start,
    # whose own bytes may already be counted then; the six later writes always count.
    assert 6000 <= c.interval_bytes_sent <= 7000 and 6000 <= s.interval_bytes_received <= 7000


def test_the_agents_own_connections_are_not_reported(start_tracer, servers):
    tracer = start_tracer()
    server = servers(conns=1, expect=100, reply=100)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:  # from the agent itself
        sock.sendall(b"m" * 100)
        got = 0
        while got < 100:
            got += len(sock.recv(100))
    server.wait()

    flows = collect(tracer, lambda fs: finals(fs, server.port))
    time.sleep(0.2)
    flows += tracer.poll(50)
    assert [f.role for f in finals(flows, server.port)] == [Role.SERVER]
    assert all(f.pid != os.getpid() for f in flows)
    assert tracer.stats()["self_skipped"] >= 1
