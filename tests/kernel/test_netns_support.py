"""The network-namespace test support (otel_ebpf.testing.netns) against the real kernel."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from otel_ebpf.testing.netns import (
    ETC_NETNS,
    DnsAnswer,
    DnsServer,
    IptablesChain,
    NetNamespace,
    TcpInfo,
    blackhole,
    cleanup_stale,
    connect_pair,
    drop_random,
    parse_ss,
    tcp_info,
)

PY = sys.executable

ECHO_SERVER = r"""
import socket, sys
srv = socket.socket()
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen()
conn, _ = srv.accept()
while data := conn.recv(65536):
    conn.sendall(data)
"""

ECHO_CLIENT = r"""
import socket, sys
n = int(sys.argv[3])
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
s.sendall(b"e" * n)
got = 0
while got < n and (data := s.recv(65536)):
    got += len(data)
host, port = s.getsockname()
print(host, port, got, flush=True)
sys.stdin.readline()  # keep the connection open until the test has looked at it
"""

CONNECT = r"""
import errno, socket, sys, time
start = time.monotonic()
try:
    socket.socket().connect((sys.argv[1], int(sys.argv[2])))  # no Python timeout: the kernel decides
    print("CONNECTED", 0)
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno), round(time.monotonic() - start, 2))
"""

RESOLVE = r"""
import json, socket, sys
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = sorted({ai[4][0] for ai in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)})
    except socket.gaierror as e:
        out[name] = ["gaierror", e.errno]
print(json.dumps(out))
"""


def netns_list() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def iptables_rules(tool: str = "iptables", ns: NetNamespace | None = None) -> str:
    cmd = [tool, "-w", "-S"]
    return ns.run(cmd).stdout if ns else subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_pair_of_namespaces_carries_tcp_and_tcp_info_sees_it():
    n = 1_000_000
    with NetNamespace() as a, NetNamespace() as b:
        assert a.name.startswith(f"oe-{os.getpid()}-") and a.name != b.name
        assert {a.name, b.name} <= set(netns_list())
        addr_a, addr_b = connect_pair(a, b)
        assert addr_a.startswith("10.231.") and addr_b.startswith("10.231.")

        b.popen([PY, "-c", ECHO_SERVER, addr_b, "7000"])
        b.wait_listening(7000, host=addr_b)
        client = a.popen([PY, "-c", ECHO_CLIENT, addr_b, "7000", str(n)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        host, port, echoed = client.stdout.readline().split()
        port = int(port)
        assert host == addr_a and int(echoed) == n

        server_side = tcp_info((addr_b, 7000), (addr_a, port), netns=b)
        assert server_side.state == "ESTAB"
        assert server_side.bytes_received >= n
        assert server_side.bytes_sent >= n  # the echo went back (its last ACK may still be in flight)
        client_side = tcp_info((addr_a, port), (addr_b, 7000), netns=a)
        assert client_side.bytes_sent >= n and client_side.bytes_received >= n
        assert client_side.rtt_ms is not None and client_side.minrtt_ms is not None
        assert client_side.segs_out > 0 and client_side.segs_in > 0
        with pytest.raises(LookupError):  # the host's namespace does not see it
            tcp_info((addr_b, 7000), (addr_a, port))

        client.stdin.write("\n")
        client.stdin.flush()
        assert client.wait(10) == 0


def test_drop_random_on_lo_makes_tcp_retransmit():
    n = 2_000_000
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn, _ = srv.accept()
    received = 0
    all_in = threading.Event()

    def read():
        nonlocal received
        while received < n and (data := conn.recv(1 << 20)):
            received += len(data)
        all_in.set()

    reader = threading.Thread(target=read, daemon=True)
    writer = threading.Thread(target=client.sendall, args=(b"d" * n,), daemon=True)
    ends = client.getsockname(), client.getpeername()
    try:
        with drop_random(port, 0.2) as drops:
            assert f"-N {drops.name}" in iptables_rules()
            reader.start()
            writer.start()
            deadline = time.monotonic() + 15
            info = tcp_info(*ends)
            while info.retrans == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
                info = tcp_info(*ends)  # read while the connection is open and lossy
            dropped = drops.dropped()
        assert drops.name not in iptables_rules()
        writer.join(20)
        assert all_in.wait(20)
        assert info.state == "ESTAB"
        assert info.retrans > 0, info.raw
        assert dropped > 0
        assert received == n
        # The receiver has every byte; the sender learns it with the last ACK, which may still be
        # in flight (or be retransmitted: the rule was lossy until just now).
        deadline = time.monotonic() + 10
        final = tcp_info(*ends)
        while final.bytes_acked < n and time.monotonic() < deadline:
            time.sleep(0.02)
            final = tcp_info(*ends)
        assert final.retrans >= info.retrans and final.bytes_acked >= n, final.raw
    finally:
        for s in (client, conn, srv):
            s.close()


def test_blackhole_connect_times_out_fast():
    with NetNamespace() as ns:
        default_retries = ns.sysctl("net.ipv4.tcp_syn_retries")
        host_retries = Path("/proc/sys/net/ipv4/tcp_syn_retries").read_text().strip()
        with blackhole(ns, 9) as (addr, port):
            assert ns.sysctl("net.ipv4.tcp_syn_retries") == "1"
            start = time.monotonic()
            code, elapsed = ns.python(CONNECT, addr, port, timeout=20).stdout.split()
            assert code == "ETIMEDOUT"
            assert 2.0 < float(elapsed) < 8.0 and time.monotonic() - start < 9.0
            code, elapsed = ns.python(CONNECT, addr, port + 1).stdout.split()
            assert code == "ECONNREFUSED" and float(elapsed) < 1.0  # only that port is a black hole
        assert ns.sysctl("net.ipv4.tcp_syn_retries") == default_retries
        assert Path("/proc/sys/net/ipv4/tcp_syn_retries").read_text().strip() == host_retries
        assert addr not in ns.run(["ip", "addr"]).stdout
        assert "oe-bh-" not in iptables_rules(ns=ns)


def test_dns_server_answers_names_and_nxdomain():
    host_resolv = Path("/etc/resolv.conf").read_text()
    records = {"found.test": ["10.231.255.1", "fd00:231::1"], "v4only.test": "10.231.255.2"}
    with NetNamespace() as ns, DnsServer(ns, records=records) as dns:
        assert ns.run(["cat", "/etc/resolv.conf"]).stdout.startswith("nameserver 127.0.0.1\n")
        assert Path("/etc/resolv.conf").read_text() == host_resolv

        resolved = json.loads(ns.python(RESOLVE, "found.test", "v4only.test", "nothere.test", "nothere.example").stdout)
        assert resolved["found.test"] == ["10.231.255.1", "fd00:231::1"]
        assert resolved["v4only.test"] == ["10.231.255.2"]
        assert resolved["nothere.test"] == ["gaierror", socket.EAI_NONAME]
        assert resolved["nothere.example"] == ["gaierror", socket.EAI_NONAME]

        assert dns.query("found.test") == DnsAnswer("NOERROR", ["10.231.255.1"])
        assert dns.query("found.test", "AAAA") == DnsAnswer("NOERROR", ["fd00:231::1"])
        assert dns.query("v4only.test", "AAAA") == DnsAnswer("NOERROR", [])
        assert dns.query("nothere.test") == DnsAnswer("NXDOMAIN", [])
        assert dns.query("sub.found.test").rcode == "NXDOMAIN"  # host records are exact names
        assert "query[A] nothere.test from 127.0.0.1" in dns.log_text()
        etc = ns.etc_dir
    assert not etc.exists()
    assert dns.proc is None


def test_dns_server_without_nxdomain_domains_refuses():
    """dnsmasq with --no-resolv and no --local answers REFUSED, which glibc reports as EAI_AGAIN."""
    with NetNamespace() as ns, DnsServer(ns, records={"found.test": "10.231.255.1"}, nxdomain=()) as dns:
        assert dns.query("nothere.test").rcode == "REFUSED"
        resolved = json.loads(ns.python(RESOLVE, "nothere.test").stdout)
        assert resolved["nothere.test"] == ["gaierror", socket.EAI_AGAIN]


def test_everything_is_cleaned_up_when_the_body_raises():
    port = 47_123
    with (pytest.raises(RuntimeError, match="boom"), NetNamespace() as ns, DnsServer(ns) as dns,
          drop_random(port, 0.5) as host_drops, drop_random(port, 0.5, netns=ns, ipv6=True) as ns_drops,
          blackhole(ns, 9)):
        sleeper = ns.popen(["sleep", "300"])
        dnsmasq_pid = dns.proc.pid
        assert ns.name in netns_list()
        assert (ns.etc_dir / "resolv.conf").exists()
        assert f"-N {host_drops.name}" in iptables_rules()
        assert f"-N {ns_drops.name}" in iptables_rules(ns=ns)
        assert "--probability 0.5" in iptables_rules("ip6tables", ns=ns)
        assert {sleeper.pid, dnsmasq_pid} <= set(ns.pids())
        raise RuntimeError("boom")
    assert ns.name not in netns_list()
    assert not Path(f"/run/netns/{ns.name}").exists()
    assert not (ETC_NETNS / ns.name).exists()
    assert host_drops.name not in iptables_rules()
    assert sleeper.poll() is not None
    assert not Path(f"/proc/{dnsmasq_pid}").exists()  # killed and reaped


def test_cleanup_stale_removes_leftovers_of_dead_runs_only():
    gone = dead_pid()
    stale = NetNamespace(name=f"oe-{gone}-1").__enter__()  # as if its run was killed
    stale.etc_dir.mkdir(parents=True)
    (stale.etc_dir / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    chain = IptablesChain(f"oe-drop-{gone}-1").create(
        [["-p", "tcp", "--dport", "47124", "-j", "DROP"]], hooks=[["INPUT", "-i", "lo"]])
    try:
        with NetNamespace() as live:
            removed = cleanup_stale()
            # A parallel run's cleanup_stale may have got there first, so check what is left.
            assert stale.name not in netns_list() and live.name in netns_list()
            assert not any(f"-{os.getpid()}-" in name for name in removed)
        assert stale.name not in netns_list()
        assert not stale.etc_dir.exists()
        assert chain.name not in iptables_rules()
    finally:
        stale.close()
        chain.remove()


def test_parse_ss_handles_ipv4_ipv6_and_mapped_forms():
    text = (
        "ESTAB 0      0               127.0.0.1:51514          127.0.0.1:33095\n"
        "\t cubic wscale:10,10 rto:204 rtt:0.015/0.008 mss:35328 cwnd:11 bytes_sent:1000 bytes_retrans:300"
        " bytes_acked:1001 segs_out:3 segs_in:2 data_segs_out:1 bbr:(bw:1bps,mrtt:0.006) retrans:1/7"
        " rcv_rtt:1 minrtt:0.006 snd_wnd:70656\n"
        "ESTAB 34464  0                   [::1]:60615              [::1]:38270 bbr rto:204 rtt:0.023/0.011"
        " bytes_received:100000 segs_out:2 segs_in:5 data_segs_in:3 minrtt:0.023\n"
        "SYN-SENT 0 1 [::ffff:127.0.0.1]%lo:49367 [::ffff:127.0.0.1]:38382\n"
        "\t cubic rto:1000 backoff:1 retrans:1/1 lost:1 unacked:1\n"
    )
    v4, v6, mapped = parse_ss(text)
    assert v4.local == ("127.0.0.1", 51514) and v4.remote == ("127.0.0.1", 33095)
    assert (v4.retrans, v4.retrans_current, v4.bytes_retrans) == (7, 1, 300)
    assert (v4.bytes_sent, v4.bytes_acked, v4.bytes_received) == (1000, 1001, 0)
    assert (v4.segs_out, v4.segs_in, v4.data_segs_out, v4.cwnd) == (3, 2, 1, 11)
    assert (v4.rtt_ms, v4.rttvar_ms, v4.minrtt_ms, v4.rto_ms) == (0.015, 0.008, 0.006, 204.0)
    assert v6 == TcpInfo(state="ESTAB", local=("::1", 60615), remote=("::1", 38270), recv_q=34464,
                         bytes_received=100000, segs_out=2, segs_in=5, data_segs_in=3, rto_ms=204.0,
                         rtt_ms=0.023, rttvar_ms=0.011, minrtt_ms=0.023, raw=v6.raw)
    assert mapped.state == "SYN-SENT" and mapped.local == ("127.0.0.1", 49367)
    assert (mapped.retrans, mapped.lost, mapped.unacked, mapped.rtt_ms) == (1, 1, 1, None)
