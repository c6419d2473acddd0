"""The sockdata exit path's caches: per-socket entries keyed by struct file, filter and far-end
verdicts kept per socket, and the per-thread call slots (no entry program for reads by default)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time

import pytest

from otel_ebpf.bpf.events import Direction, SockDataEvent
from otel_ebpf.bpf.sockdata import SockDataTracer

from .support import free_port

PY = sys.executable

# A line-driven peer in its own process: an echo server thread on PORT and a client that, for each
# command on stdin, does what it says and prints one line back.
#   reconnect TAG  -> new connection, sends TAG, reads the echo, closes; prints its local port
#   redirect TAG   -> the same, but the socket is closed by dup2()-ing /dev/null over its fd (no
#                     close() of the socket for the kernel to see)
#   send TAG       -> on the one persistent connection: sends TAG, reads the echo; prints "ok"
PEER = textwrap.dedent("""
    import os, socket, sys, threading
    port = int(sys.argv[1])
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port)); ls.listen(64)
    def serve(c):
        while True:
            d = c.recv(4096)
            if not d:
                break
            c.sendall(d)
        c.close()
    def accept():
        while True:
            c, _ = ls.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=accept, daemon=True).start()
    persistent = None
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, tag = line.split()
        if cmd in ("reconnect", "redirect"):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(tag.encode()); s.recv(4096)
            print(s.getsockname()[1], flush=True)
            if cmd == "redirect":
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, s.fileno())
                os.close(null)
            s.close()
        else:
            if persistent is None:
                persistent = socket.create_connection(("127.0.0.1", port))
            persistent.sendall(tag.encode()); persistent.recv(4096)
            print("ok", flush=True)
""")


class Peer:
    def __init__(self, port: int):
        self.proc = subprocess.Popen([PY, "-c", PEER, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def do(self, cmd: str, tag: str) -> str:
        self.proc.stdin.write(f"{cmd} {tag}\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def drain(tracer: SockDataTracer, port: int, seconds: float = 0.5) -> list[SockDataEvent]:
    out: list[SockDataEvent] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out += [e for e in tracer.poll(50) if isinstance(e, SockDataEvent) and port in (e.local_port, e.remote_port)]
    return out


@pytest.fixture
def traced_peer():
    """A Peer on a free port and a tracer capturing that port: (peer, tracer, port)."""
    port = free_port()
    peer = Peer(port)
    tracer = SockDataTracer(ports=[port])
    tracer.start()
    try:
        yield peer, tracer, port
    finally:
        tracer.close()
        peer.stop()


@pytest.mark.parametrize("how", ["reconnect", "redirect"])
def test_a_new_socket_on_a_reused_fd_and_struct_file_is_reported_with_its_own_tuple(how, traced_peer):
    """Each connection reuses the fd number of the one closed before it, closed by close() (which
    drops the socket's cache entry) or behind the probes' back (dup2 over it: the entry stays, and
    a struct file reused at the same address is told apart by its inode number): every event
    carries its own connection's tuple."""
    peer, tracer, port = traced_peer
    local_ports = {f"tag{i:02d}": int(peer.do(how, f"tag{i:02d}")) for i in range(30)}
    events = drain(tracer, port)
    sent = {e.data.decode(): e for e in events if e.direction == Direction.EGRESS and e.remote_port == port}
    assert sent.keys() == local_ports.keys()
    assert {tag: e.local_port for tag, e in sent.items()} == local_ports
    assert len({e.fd for e in sent.values()}) < 30  # the fds were indeed reused
    assert tracer.stats()["decode_errors"] == 0


def test_a_port_filter_change_applies_to_a_connection_the_kernel_has_already_cached(traced_peer):
    peer, tracer, port = traced_peer
    assert peer.do("send", "first") == "ok"
    assert any(e.data == b"first" for e in drain(tracer, port))
    tracer.set_ports([free_port()])  # no longer ours
    assert peer.do("send", "hidden") == "ok"
    assert not drain(tracer, port)
    tracer.set_ports([port])
    assert peer.do("send", "again") == "ok"
    assert [e.data for e in drain(tracer, port)].count(b"again") == 4  # both ends, both ways


def test_reads_carry_their_exit_time_and_writes_their_entry_time_by_default(traced_peer):
    peer, tracer, port = traced_peer
    assert peer.do("send", "timing") == "ok"
    events = drain(tracer, port)
    reads = [e for e in events if e.direction == Direction.INGRESS]
    writes = [e for e in events if e.direction == Direction.EGRESS]
    assert len(reads) == len(writes) == 2
    assert all(e.ts_enter == e.ts_exit for e in reads)
    assert all(0 < e.ts_enter <= e.ts_exit for e in writes)


def test_read_entry_times_when_asked_for():
    """With read_entry_times, a read that waits 300 ms for its data reports the whole wait."""
    port = free_port()
    server = subprocess.Popen([PY, "-c", textwrap.dedent(f"""
        import socket, sys, time
        ls = socket.socket(); ls.bind(("127.0.0.1", {port})); ls.listen(1)
        print("listening", flush=True)
        c, _ = ls.accept()
        sys.stdin.readline()
        time.sleep(0.3)
        c.sendall(b"late")
        c.recv(10)
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    tracer = SockDataTracer(ports=[port], read_entry_times=True)
    tracer.start()
    reader = None
    try:
        assert server.stdout.readline().strip() == "listening"
        reader = subprocess.Popen([PY, "-c", textwrap.dedent(f"""
            import socket
            s = socket.create_connection(("127.0.0.1", {port}))
            print("connected", flush=True)
            s.recv(100)
            """)], stdout=subprocess.PIPE, text=True)
        assert reader.stdout.readline().strip() == "connected"
        time.sleep(0.05)  # the reader is blocked in recv()
        server.stdin.write("go\n")
        server.stdin.flush()
        reader.wait(10)
        read = [e for e in drain(tracer, port) if e.direction == Direction.INGRESS and e.data == b"late"]
        assert len(read) == 1
        assert read[0].ts_exit - read[0].ts_enter >= 250_000_000
    finally:
        tracer.close()
        for proc in (reader, server):
            if proc is not None:
                proc.kill()
                proc.wait()


def test_the_far_end_of_a_connection_is_dropped_once_the_agent_uses_it():
    """The agent's socket was connected before the tracer started: its peer's first write (seen
    before the agent did anything) is traced and its verdict cached; once the agent writes on the
    connection, that verdict is redone and the peer's calls are no longer traced."""
    port = free_port()
    peer = subprocess.Popen([PY, "-c", textwrap.dedent(f"""
        import socket, sys
        ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", {port})); ls.listen(1)
        print("listening", flush=True)
        c, _ = ls.accept()
        sys.stdin.readline()
        c.sendall(b"hello-agent")
        while True:
            d = c.recv(100)
            if not d:
                break
            c.sendall(d)
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert peer.stdout.readline().strip() == "listening"
    agent_sock = socket.create_connection(("127.0.0.1", port))
    tracer = SockDataTracer(ports=[port])  # this process is the agent: never traced itself
    tracer.start()
    try:
        peer.stdin.write("go\n")
        peer.stdin.flush()
        # the peer's write, before the agent did anything on the connection (read it after)
        assert [e.data for e in drain(tracer, port)] == [b"hello-agent"]
        assert agent_sock.recv(100) == b"hello-agent"
        for i in range(3):
            agent_sock.sendall(f"echo{i}".encode())
            agent_sock.recv(100)
        assert drain(tracer, port) == []
        assert tracer.stats()["self_skipped"] > 0
    finally:
        tracer.close()
        agent_sock.close()
        peer.kill()
        peer.wait()
