"""Connection table: decoded kernel events in, HTTP/1 exchanges out (captured traffic from tests/fixtures/http1)."""

from __future__ import annotations

import pytest

from otel_ebpf.bpf.clock import MonotonicClock
from otel_ebpf.protocols.http1 import Http1Stats
from otel_ebpf.records import Direction, Role
from otel_ebpf.stream.conntable import ConnectionTable, ListeningPorts

from .events_factory import FakeSocket, fixture_chunks, write_proc_net_tcp

OFFSET = 1_700_000_000_000_000_000  # wall clock minus CLOCK_MONOTONIC, fixed for the tests
MS = 1_000_000
S = 1_000_000_000

# curl -> http.server: the first request and its response, each one chunk as captured.
CURL = fixture_chunks("curl")
REQUEST_1, RESPONSE_1 = CURL[0][1], CURL[1][1]  # GET /items/1, 200 with a 38-byte body
REQUEST_2, RESPONSE_2_HEAD, RESPONSE_2_BODY = CURL[2][1], CURL[3][1], CURL[4][1]  # GET /items/2, head + body apart


def fixed_clock() -> MonotonicClock:
    clock = MonotonicClock()
    clock.offset_ns = OFFSET
    return clock


@pytest.fixture
def no_listeners(tmp_path) -> ListeningPorts:
    return ListeningPorts(proc_root=str(write_proc_net_tcp(tmp_path / "proc")))


@pytest.fixture
def table(no_listeners) -> ConnectionTable:
    return ConnectionTable(clock=fixed_clock(), stats=Http1Stats(), listening=no_listeners)


def targets(exchanges) -> list[str]:
    return [ex.request.target for ex in exchanges]


# ---------------------------------------------------------------------------------------------
# A connection from open to close
# ---------------------------------------------------------------------------------------------


def test_a_server_connection_from_open_to_close_gives_one_exchange_with_wall_clock_times(table):
    sock = FakeSocket(pid=100, tid=105, role=Role.SERVER)

    assert table.handle(sock.open(ts=1_000)) == []
    assert table.handle(sock.read(REQUEST_1, ts_enter=2_000, ts_exit=2_100)) == []
    [ex] = table.handle(sock.write(RESPONSE_1, ts_enter=3_000, ts_exit=3_200))
    assert table.handle(sock.close(ts=4_000)) == []

    assert ex.role == Role.SERVER
    assert ex.connection.pid == 100 and ex.connection.fd == sock.fd and ex.connection.sock_id == sock.sock_id
    assert (ex.connection.local_address, ex.connection.local_port) == sock.local
    assert (ex.connection.remote_address, ex.connection.remote_port) == sock.remote
    assert (ex.request.method, ex.request.target, ex.response.status) == ("GET", "/items/1", 200)
    assert ex.response.body_size == 38
    # ingress: the request is there when read() returns, so the exchange starts at its exit
    assert ex.start_ns == OFFSET + 2_100
    assert ex.end_ns == OFFSET + 3_200
    assert ex.tid == 105
    assert len(table) == 0
    assert table.stats.as_dict() == {
        "events": 4, "data_events": 2, "connections_opened": 1, "connections_closed": 1, "evicted": 0,
        "expired": 0, "skipped_dead": 0, "exchanges": 1,
    }


def test_a_client_exchange_starts_when_the_request_write_is_entered(table):
    sock = FakeSocket(role=Role.CLIENT, local=("10.0.0.2", 50000), remote=("10.0.0.1", 8080), comm="curl")

    table.handle(sock.open(ts=1_000))
    table.handle(sock.write(REQUEST_1, ts_enter=2_000, ts_exit=2_100))
    [ex] = table.handle(sock.read(RESPONSE_1, ts_enter=2_500, ts_exit=3_200))

    assert ex.role == Role.CLIENT
    assert ex.start_ns == OFFSET + 2_000
    assert ex.end_ns == OFFSET + 3_200


def test_a_request_left_unanswered_is_reported_at_close_without_a_response(table):
    sock = FakeSocket()
    table.handle(sock.open(ts=1_000))
    table.handle(sock.read(REQUEST_1, ts_enter=2_000, ts_exit=2_100))

    [ex] = table.handle(sock.close(ts=9_000))

    assert ex.response is None
    assert ex.request.target == "/items/1"
    assert ex.end_ns == OFFSET + 9_000
    assert table.stats.exchanges == 1


def test_a_close_of_a_connection_the_table_never_saw_is_ignored(table):
    assert table.handle(FakeSocket().close(ts=1_000)) == []
    assert table.stats.connections_closed == 0


# ---------------------------------------------------------------------------------------------
# fd reuse
# ---------------------------------------------------------------------------------------------


def test_an_open_of_a_reused_fd_with_another_socket_starts_a_new_connection(table):
    old = FakeSocket(fd=7, sock_id=0x1000)
    new = FakeSocket(fd=7, sock_id=0x2000, remote=("10.0.0.3", 40000))
    table.handle(old.open(ts=1_000))
    table.handle(old.read(REQUEST_1, ts_enter=2_000, ts_exit=2_100))

    [unanswered] = table.handle(new.open(ts=5_000))

    assert unanswered.connection.sock_id == 0x1000 and unanswered.response is None
    [conn] = table.connections()
    assert conn.sock_id == 0x2000 and conn.remote_address == "10.0.0.3"
    table.handle(new.read(REQUEST_2, ts_enter=6_000, ts_exit=6_100))
    table.handle(new.write(RESPONSE_2_HEAD, ts_enter=7_000, ts_exit=7_100))
    [ex] = table.handle(new.write(RESPONSE_2_BODY, ts_enter=7_200, ts_exit=7_300))
    assert ex.connection.sock_id == 0x2000 and ex.request.target == "/items/2"


def test_data_on_a_reused_fd_with_another_socket_starts_a_new_connection(table):
    old = FakeSocket(fd=7, sock_id=0x1000)
    new = FakeSocket(fd=7, sock_id=0x2000)
    table.handle(old.open(ts=1_000))
    table.handle(old.read(REQUEST_1, ts_enter=2_000, ts_exit=2_100))

    [unanswered] = table.handle(new.read(REQUEST_2, ts_enter=6_000, ts_exit=6_100))

    assert unanswered.connection.sock_id == 0x1000 and unanswered.response is None
    assert [c.sock_id for c in table.connections()] == [0x2000]
    table.handle(new.write(RESPONSE_2_HEAD, ts_enter=7_000, ts_exit=7_100))
    [ex] = table.handle(new.write(RESPONSE_2_BODY, ts_enter=7_200, ts_exit=7_300))
    assert ex.connection.sock_id == 0x2000 and ex.request.target == "/items/2"


def test_every_exchange_handle_returns_is_counted_in_stats_exchanges(table):
    old = FakeSocket(fd=7, sock_id=0x1000)
    new = FakeSocket(fd=7, sock_id=0x2000)
    returned = []
    for event in (old.open(ts=1_000), old.read(REQUEST_1, ts_enter=2_000, ts_exit=2_100),
                  new.read(REQUEST_2, ts_enter=6_000, ts_exit=6_100)):
        returned += table.handle(event)

    assert len(returned) == 1
    assert table.stats.exchanges == len(returned)


def test_a_close_of_the_old_socket_after_fd_reuse_leaves_the_new_connection_alone(table):
    old = FakeSocket(fd=7, sock_id=0x1000)
    new = FakeSocket(fd=7, sock_id=0x2000)
    table.handle(old.open(ts=1_000))
    table.handle(new.open(ts=2_000))

    assert table.handle(old.close(ts=3_000)) == []
    assert [c.sock_id for c in table.connections()] == [0x2000]


def test_the_same_fd_number_in_two_processes_is_two_connections(table):
    a = FakeSocket(pid=100, fd=7, sock_id=0x1000)
    b = FakeSocket(pid=200, fd=7, sock_id=0x2000)
    table.handle(a.open(ts=1_000))
    table.handle(b.open(ts=1_000))

    assert sorted(c.pid for c in table.connections()) == [100, 200]


# ---------------------------------------------------------------------------------------------
# Midstream
# ---------------------------------------------------------------------------------------------


def test_a_connection_first_seen_through_data_is_parsed_from_its_next_request_head(table):
    sock = FakeSocket(role=Role.SERVER)
    exchanges = []
    # Attached while the first exchange was in flight: the tail of request 1, then its response.
    exchanges += table.handle(sock.read(REQUEST_1[10:], ts_enter=1_000, ts_exit=1_100))
    exchanges += table.handle(sock.write(RESPONSE_1, ts_enter=2_000, ts_exit=2_100))
    exchanges += table.handle(sock.read(REQUEST_2, ts_enter=3_000, ts_exit=3_100))
    exchanges += table.handle(sock.write(RESPONSE_2_HEAD, ts_enter=4_000, ts_exit=4_100))
    exchanges += table.handle(sock.write(RESPONSE_2_BODY, ts_enter=4_200, ts_exit=4_300))

    assert targets(exchanges) == ["/items/2"]
    assert exchanges[0].start_ns == OFFSET + 3_100 and exchanges[0].end_ns == OFFSET + 4_300
    assert table.stats.connections_opened == 0
    assert len(table) == 1


def test_a_connection_first_seen_through_data_starting_with_a_request_head_loses_nothing(table):
    sock = FakeSocket(role=Role.SERVER)
    table.handle(sock.read(REQUEST_1, ts_enter=1_000, ts_exit=1_100))

    [ex] = table.handle(sock.write(RESPONSE_1, ts_enter=2_000, ts_exit=2_100))

    assert ex.request.target == "/items/1"


# ---------------------------------------------------------------------------------------------
# Role when the kernel could not tell
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def listening(tmp_path) -> ListeningPorts:
    root = write_proc_net_tcp(tmp_path / "proc", listening=[8080], listening6=[9090], established=[(8080, 50000)])
    return ListeningPorts(proc_root=str(root))


def first_connection_role(listening, sock: FakeSocket) -> Role:
    table = ConnectionTable(clock=fixed_clock(), stats=Http1Stats(), listening=listening)
    table.handle(sock.open(ts=1_000))
    [conn] = table.connections()
    return conn.role


def test_an_unknown_role_on_a_local_listening_port_is_server(listening):
    sock = FakeSocket(role=Role.UNKNOWN, local=("10.0.0.1", 8080), remote=("10.0.0.2", 50000))
    assert first_connection_role(listening, sock) == Role.SERVER


def test_an_unknown_role_on_a_port_listening_on_ipv6_is_server(listening):
    sock = FakeSocket(role=Role.UNKNOWN, local=("fd00::1", 9090), remote=("fd00::2", 50000))
    assert first_connection_role(listening, sock) == Role.SERVER


def test_an_unknown_role_towards_a_local_listening_port_over_loopback_is_client(listening):
    sock = FakeSocket(role=Role.UNKNOWN, local=("127.0.0.1", 50000), remote=("127.0.0.1", 8080))
    assert first_connection_role(listening, sock) == Role.CLIENT


def test_an_unknown_role_towards_a_listening_port_number_on_another_host_stays_unknown(listening):
    sock = FakeSocket(role=Role.UNKNOWN, local=("10.0.0.2", 50000), remote=("10.0.0.9", 8080))
    assert first_connection_role(listening, sock) == Role.UNKNOWN


def test_a_role_reported_by_the_kernel_wins_over_listening_ports(listening):
    sock = FakeSocket(role=Role.CLIENT, local=("10.0.0.1", 8080), remote=("10.0.0.2", 50000))
    assert first_connection_role(listening, sock) == Role.CLIENT


def test_an_established_connection_does_not_make_its_local_port_a_listening_one(listening):
    assert listening.is_listening(8080)
    assert listening.is_listening(9090)
    assert not listening.is_listening(50000)


def test_a_port_that_starts_listening_is_seen_after_the_refresh_interval(tmp_path):
    root = write_proc_net_tcp(tmp_path / "proc")
    ports = ListeningPorts(proc_root=str(root), min_refresh_s=0.0)
    assert not ports.is_listening(8080)

    write_proc_net_tcp(root, listening=[8080])

    assert ports.is_listening(8080)


def test_missing_proc_net_files_mean_no_listening_ports(tmp_path):
    assert not ListeningPorts(proc_root=str(tmp_path / "nowhere")).is_listening(8080)


@pytest.mark.parametrize(
    ("request_direction", "role"),
    [(Direction.INGRESS, Role.SERVER), (Direction.EGRESS, Role.CLIENT)],
    ids=["request-read-is-server", "request-written-is-client"],
)
def test_an_unknown_role_with_no_listening_port_comes_from_the_first_request_direction(
    table, request_direction, role
):
    sock = FakeSocket(role=Role.UNKNOWN)
    response_direction = Direction(1 - request_direction)
    table.handle(sock.open(ts=1_000))
    table.handle(sock.data(request_direction, REQUEST_1, ts_enter=2_000, ts_exit=2_100))

    [ex] = table.handle(sock.data(response_direction, RESPONSE_1, ts_enter=3_000, ts_exit=3_200))

    assert ex.role == role
    assert [c.role for c in table.connections()] == [role]


# ---------------------------------------------------------------------------------------------
# Bounds: eviction, expiry, shutdown
# ---------------------------------------------------------------------------------------------


def test_past_max_connections_the_least_recently_active_connection_is_evicted_and_counted(no_listeners):
    table = ConnectionTable(clock=fixed_clock(), stats=Http1Stats(), max_connections=2, listening=no_listeners)
    one, two, three = FakeSocket(fd=1, sock_id=1), FakeSocket(fd=2, sock_id=2), FakeSocket(fd=3, sock_id=3)
    table.handle(one.open(ts=1_000))
    table.handle(two.open(ts=2_000))
    table.handle(two.read(REQUEST_2, ts_enter=3_000, ts_exit=3_100))
    table.handle(one.read(REQUEST_1, ts_enter=4_000, ts_exit=4_100))  # one is now the most recent

    [evicted] = table.handle(three.open(ts=5_000))

    assert table.stats.evicted == 1
    assert len(table) == 2
    assert sorted(c.fd for c in table.connections()) == [1, 3]
    assert evicted.connection.fd == 2 and evicted.response is None and evicted.request.target == "/items/2"
    assert evicted.end_ns == OFFSET + 3_100  # the evicted connection's last activity


def test_expire_drops_connections_idle_past_the_timeout_and_reports_their_pending_requests(no_listeners):
    table = ConnectionTable(clock=fixed_clock(), stats=Http1Stats(), idle_timeout_s=10, listening=no_listeners)
    idle, busy = FakeSocket(fd=1, sock_id=1), FakeSocket(fd=2, sock_id=2)
    table.handle(idle.open(ts=1 * S))
    table.handle(idle.read(REQUEST_1, ts_enter=2 * S, ts_exit=2 * S + MS))
    table.handle(busy.open(ts=5 * S))

    [ex] = table.expire(now_mono_ns=13 * S)

    assert ex.connection.fd == 1 and ex.response is None
    assert ex.end_ns == OFFSET + 2 * S + MS
    assert [c.fd for c in table.connections()] == [2]
    assert table.stats.expired == 1
    assert table.expire(now_mono_ns=13 * S) == []


def test_expire_keeps_a_connection_whose_last_activity_is_recent_though_it_opened_long_ago(no_listeners):
    table = ConnectionTable(clock=fixed_clock(), stats=Http1Stats(), idle_timeout_s=10, listening=no_listeners)
    old, young = FakeSocket(fd=1, sock_id=1), FakeSocket(fd=2, sock_id=2)
    table.handle(old.open(ts=1 * S))
    table.handle(young.open(ts=2 * S))
    table.handle(old.read(REQUEST_1, ts_enter=9 * S, ts_exit=9 * S))

    table.expire(now_mono_ns=15 * S)

    assert [c.fd for c in table.connections()] == [1]
    assert table.stats.expired == 1


def test_close_all_flushes_every_connection(table):
    a, b = FakeSocket(fd=1, sock_id=1), FakeSocket(fd=2, sock_id=2)
    table.handle(a.open(ts=1_000))
    table.handle(a.read(REQUEST_1, ts_enter=2_000, ts_exit=2_100))
    table.handle(b.open(ts=1_000))
    table.handle(b.read(REQUEST_2, ts_enter=3_000, ts_exit=3_100))

    exchanges = table.close_all()

    assert sorted(targets(exchanges)) == ["/items/1", "/items/2"]
    assert all(ex.response is None for ex in exchanges)
    assert len(table) == 0
    assert table.close_all() == []


def test_close_all_ends_a_response_delimited_by_the_connection_close(table):
    [(_, request), *responses] = fixture_chunks("http10_close")
    sock = FakeSocket()
    table.handle(sock.open(ts=1_000))
    table.handle(sock.read(request, ts_enter=2_000, ts_exit=2_100))
    for _, chunk in responses:
        assert table.handle(sock.write(chunk, ts_enter=3_000, ts_exit=3_100)) == []

    [ex] = table.close_all()

    assert ex.response is not None and ex.response.status == 200
    assert ex.response.body_size == sum(len(c) for _, c in responses) - responses[0][1].index(b"\r\n\r\n") - 4


# ---------------------------------------------------------------------------------------------
# Not HTTP/1
# ---------------------------------------------------------------------------------------------


def test_a_connection_that_is_not_http_is_marked_dead_and_its_later_events_are_skipped(table):
    hello, rest = (chunk for _, chunk in fixture_chunks("tls_client_hello"))
    sock = FakeSocket()
    table.handle(sock.open(ts=1_000))

    assert table.handle(sock.read(hello, ts_enter=2_000, ts_exit=2_100)) == []
    assert table.http1_stats.non_http_connections == 1
    assert table.stats.skipped_dead == 0
    assert table.handle(sock.read(rest, ts_enter=3_000, ts_exit=3_100)) == []
    assert table.handle(sock.write(b"\x15\x03\x03", ts_enter=4_000, ts_exit=4_100)) == []

    assert table.stats.skipped_dead == 2
    assert table.http1_stats.non_http_connections == 1
    assert table.handle(sock.close(ts=5_000)) == []
    assert table.stats.connections_closed == 1


# ---------------------------------------------------------------------------------------------
# New-process callback
# ---------------------------------------------------------------------------------------------


def test_on_new_process_is_called_with_pid_and_comm_for_each_new_connection(table):
    calls = []
    table.on_new_process = lambda pid, comm: calls.append((pid, comm))
    opened = FakeSocket(pid=100, fd=1, sock_id=1, comm="curl")
    midstream = FakeSocket(pid=200, fd=2, sock_id=2)

    table.handle(opened.open(ts=1_000))
    table.handle(opened.write(REQUEST_1, ts_enter=2_000, ts_exit=2_100))  # known connection: no call
    table.handle(midstream.read(REQUEST_2, ts_enter=3_000, ts_exit=3_100))  # data carry no comm

    assert calls == [(100, "curl"), (200, "")]


def test_a_failing_on_new_process_callback_does_not_stop_the_connection(table):
    def broken(pid, comm):
        raise RuntimeError("no /proc")

    table.on_new_process = broken
    sock = FakeSocket()
    table.handle(sock.open(ts=1_000))
    table.handle(sock.read(REQUEST_1, ts_enter=2_000, ts_exit=2_100))

    [ex] = table.handle(sock.write(RESPONSE_1, ts_enter=3_000, ts_exit=3_200))

    assert ex.request.target == "/items/1"


def _with_tcp(event, retrans: int, srtt: int):
    event.total_retrans, event.srtt_us = retrans, srtt
    return event


def test_each_exchange_gets_the_retransmits_during_it_and_the_latest_rtt(table):
    sock = FakeSocket()
    table.handle(sock.open(ts=1 * MS))
    # Exchange 1: 3 segments were retransmitted before it (on the handshake), 2 during it.
    assert table.handle(_with_tcp(sock.read(REQUEST_1, ts_enter=2 * MS, ts_exit=2 * MS + 10), 3, 120)) == []
    [first] = table.handle(_with_tcp(sock.write(RESPONSE_1, ts_enter=3 * MS, ts_exit=3 * MS + 10), 5, 250))
    # Exchange 2: none during it, many syscalls in between (a long idle keep-alive stretch).
    for i in range(40):
        table.handle(_with_tcp(sock.read(b"", ts_enter=(4 + i) * MS, ts_exit=(4 + i) * MS + 5, length=0), 5, 300))
    table.handle(_with_tcp(sock.read(REQUEST_2, ts_enter=50 * MS, ts_exit=50 * MS + 10), 5, 300))
    table.handle(_with_tcp(sock.write(RESPONSE_2_HEAD, ts_enter=51 * MS, ts_exit=51 * MS + 10), 5, 300))
    [second] = table.handle(_with_tcp(sock.write(RESPONSE_2_BODY, ts_enter=52 * MS, ts_exit=52 * MS + 10), 5, 310))
    assert first.tcp.retransmits == 2 and first.tcp.srtt_us == 250
    assert second.tcp.retransmits == 0 and second.tcp.srtt_us == 310


def test_tcp_health_per_connection_is_kept_as_changes_only(table):
    sock = FakeSocket()
    table.handle(sock.open(ts=1 * MS))
    for i in range(100):  # a busy connection whose retransmit count never changes
        table.handle(_with_tcp(sock.read(b"", ts_enter=(2 + i) * MS, ts_exit=(2 + i) * MS + 5, length=0), 7, 200))
    [entry] = table._conns.values()
    # No list at all while the count stays where it was first seen, not 100 samples
    assert entry.health is None and entry.retrans == 7 and entry.first_seen == OFFSET + 2 * MS + 5
    table.handle(_with_tcp(sock.read(b"", ts_enter=200 * MS, ts_exit=200 * MS + 5, length=0), 9, 200))
    assert entry.health == [(OFFSET + 2 * MS + 5, 7), (OFFSET + 200 * MS + 5, 9)]  # the first, then the change
