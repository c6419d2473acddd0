"""tcpflow records -> TcpFlow, checked against the compiled object (src/otel_ebpf/bpf/objects/tcpflow.bpf.o).

Records are packed with the offsets of ``Btf.struct_layout`` (``pack_struct``), so these tests
say "the decoder reads what the C struct holds", whatever the layout is.
"""

from __future__ import annotations

import errno
import itertools
import socket

import pytest

from otel_ebpf.bpf import tcpflow
from otel_ebpf.bpf.btf import BpfObjectInfo, BtfError
from otel_ebpf.bpf.clock import MonotonicClock
from otel_ebpf.bpf.sockdata import object_path
from otel_ebpf.bpf.tcpflow import (
    FlowEventType,
    FlowStat,
    FlowTracker,
    KernelFlowState,
    TcpFlowCodec,
    check_enums,
    failure_reason,
)
from otel_ebpf.records import FlowState, Role, TcpFlow

from ..stream.events_factory import pack_struct, raw_address
from .test_btf_codec import struct_offsets

OBJECT = object_path("tcpflow")
SOCK = 0xFFFF_8880_0000_2000
OFFSET_NS = 1_700_000_000_000_000_000  # the fake clock's monotonic -> wall offset


@pytest.fixture(scope="module")
def info() -> BpfObjectInfo:
    if not OBJECT.exists():
        pytest.fail(f"{OBJECT} is missing: run `make bpf`")
    return BpfObjectInfo.from_file(OBJECT)


@pytest.fixture
def codec(info) -> TcpFlowCodec:
    return TcpFlowCodec(info)


@pytest.fixture
def clock() -> MonotonicClock:
    clock = MonotonicClock()
    clock.offset_ns = OFFSET_NS
    return clock


@pytest.fixture
def tracker(clock) -> FlowTracker:
    return FlowTracker(clock=clock)


def flow_record(
    info: BpfObjectInfo,
    *,
    state: KernelFlowState = KernelFlowState.CLOSED,
    flow_id: int = SOCK,
    role: Role = Role.CLIENT,
    family: int = socket.AF_INET,
    local: tuple[str, int] = ("10.0.0.1", 50000),
    remote: tuple[str, int] = ("10.0.0.2", 443),
    comm: bytes = b"curl",
    **values: object,
) -> bytes:
    """A ``struct tcp_flow_event`` as the kernel writes it; ``values`` are its other members."""
    fields = {
        "type": FlowEventType.TCP_FLOW, "state": state, "flow_id": flow_id, "role": role, "comm": comm,
        "pid": 4242, "ts_start": 1_000, "ts": 5_000,
        "tuple.family": family, "tuple.saddr": raw_address(family, local[0]), "tuple.sport": local[1],
        "tuple.daddr": raw_address(family, remote[0]), "tuple.dport": remote[1],
    }
    fields.update(values)
    return bytes(pack_struct(info, "tcp_flow_event", fields))


def snapshot(info, *, sent: int, received: int = 0, retrans: int = 0, ts: int, **kw) -> bytes:
    return flow_record(info, state=KernelFlowState.ACTIVE, bytes_sent=sent, bytes_received=received,
                       total_retrans=retrans, ts=ts, **kw)


# ---------------------------------------------------------------------------------------------
# Python enums = C enums, decoder = BTF layout
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c_enum", sorted(tcpflow._ENUMS))
def test_each_python_enum_has_the_names_and_numbers_of_its_c_enum(info, c_enum):
    py_enum, prefix = tcpflow._ENUMS[c_enum]
    c_values = {name.removeprefix(prefix): value for name, value in info.btf.enum(c_enum).items()}
    c_values.pop("MAX", None)

    assert c_values == {member.name: member.value for member in py_enum}


def test_the_stat_enum_covers_every_per_cpu_counter(info):
    assert info.btf.enum("flow_stat_index")["STAT_MAX"] == len(FlowStat)


def test_the_kernel_flow_states_are_the_record_states_by_name():
    assert [s.name for s in KernelFlowState] == [s.name for s in FlowState]


def test_check_enums_refuses_an_object_whose_c_enum_was_renumbered(info, monkeypatch):
    real_enum = info.btf.enum

    def renumbered(name):
        values = real_enum(name)
        return {**values, "FLOW_FAILED": 7} if name == "flow_state" else values

    monkeypatch.setattr(info.btf, "enum", renumbered)

    with pytest.raises(BtfError, match="flow_state"):
        check_enums(info)
    with pytest.raises(BtfError):
        TcpFlowCodec(info)


def test_the_codec_reads_each_field_at_its_btf_offset_and_size(info, codec):
    layout = {m.name: m for m in info.btf.struct_layout("tcp_flow_event")}
    decoder = codec._flow

    assert struct_offsets(decoder.format) == [layout[f].offset for f in tcpflow._FIELDS]
    assert decoder.size == max(layout[f].offset + layout[f].size for f in tcpflow._FIELDS)
    assert decoder.size <= info.btf.struct_size("tcp_flow_event")


def test_the_record_has_no_implicit_padding(info):
    layout = sorted(info.btf.struct_layout("tcp_flow_event"), key=lambda m: m.offset)
    for a, b in itertools.pairwise(layout):
        assert a.offset + a.size == b.offset, (a, b)  # explicit _pad members only
    assert layout[-1].offset + layout[-1].size == info.btf.struct_size("tcp_flow_event")


def test_the_knobs_are_found_with_their_sizes(info):
    assert {name: info.rodata_symbols[name][1] for name in ("targ_self_tgid", "flow_interval_ns", "wakeup_bytes")} \
        == {"targ_self_tgid": 4, "flow_interval_ns": 8, "wakeup_bytes": 8}


# ---------------------------------------------------------------------------------------------
# Record -> TcpFlow
# ---------------------------------------------------------------------------------------------


def test_a_closed_record_becomes_a_tcp_flow_with_every_field(info, codec, tracker):
    rec = flow_record(
        info, pid=777, cgroup_id=4321, ts_start=2_000_000, ts=9_000_000, bytes_sent=1_000_000,
        bytes_received=123_456, segs_out=40, segs_in=30, total_retrans=3, srtt_us=250, min_rtt_us=20,
        resets_sent=1, resets_received=0, tcp_state=1, local=("192.168.1.20", 51234), remote=("10.1.2.3", 8080),
        comm=b"curl\0garbage",
    )

    flow = tracker.convert(codec.decode(rec))

    assert flow == TcpFlow(
        flow_id=SOCK, state=FlowState.CLOSED, family=4, local_address="192.168.1.20", local_port=51234,
        remote_address="10.1.2.3", remote_port=8080, role=Role.CLIENT, pid=777, comm="curl", cgroup_id=4321,
        start_ns=OFFSET_NS + 2_000_000, end_ns=OFFSET_NS + 9_000_000, bytes_sent=1_000_000,
        bytes_received=123_456, segments_sent=40, segments_received=30, retransmits=3, resets_sent=1,
        resets_received=0, srtt_us=250, min_rtt_us=20, failure=None, partial=False,
        interval_bytes_sent=1_000_000, interval_bytes_received=123_456, interval_retransmits=3,
    )
    assert flow.duration_ns == 7_000_000
    assert codec.decode_errors == 0 and len(tracker) == 0


def test_an_ipv6_record_has_family_6_and_its_addresses(info, codec, tracker):
    rec = flow_record(info, family=socket.AF_INET6, local=("2001:db8::1", 443), remote=("2001:db8::2", 60000),
                      role=Role.SERVER)

    flow = tracker.convert(codec.decode(rec))

    assert (flow.family, flow.local_address, flow.local_port, flow.remote_address, flow.remote_port, flow.role) \
        == (6, "2001:db8::1", 443, "2001:db8::2", 60000, Role.SERVER)


def test_an_ipv4_peer_of_a_dual_stack_socket_reads_as_ipv4(info, codec):
    rec = flow_record(info, family=socket.AF_INET6, local=("::ffff:127.0.0.1", 80), remote=("::ffff:127.0.0.2", 5))

    event = codec.decode(rec)

    assert (event.family, event.local_address, event.remote_address) == (6, "127.0.0.1", "127.0.0.2")


@pytest.mark.parametrize(
    ("sk_err", "resets_received", "failure"),
    [
        (errno.ECONNREFUSED, 1, "refused"),
        (errno.ECONNREFUSED, 0, "refused"),
        (0, 1, "refused"),  # a RST answering the SYN, whatever the error says
        (errno.ETIMEDOUT, 0, "timed_out"),
        (errno.ECONNRESET, 0, "reset"),
        (errno.EHOSTUNREACH, 0, f"error:{errno.EHOSTUNREACH}"),
        (0, 0, "aborted"),  # the application closed the socket before any answer
    ],
)
def test_a_failed_connect_is_named_from_the_socket_error(info, codec, tracker, sk_err, resets_received, failure):
    rec = flow_record(info, state=KernelFlowState.FAILED, sk_err=sk_err, resets_received=resets_received)

    flow = tracker.convert(codec.decode(rec))

    assert (flow.state, flow.failure) == (FlowState.FAILED, failure)
    assert failure_reason(sk_err, resets_received) == failure


def test_a_closed_flow_has_no_failure_even_with_an_error(info, codec, tracker):
    flow = tracker.convert(codec.decode(flow_record(info, sk_err=errno.ECONNRESET, resets_received=1)))

    assert (flow.state, flow.failure, flow.resets_received) == (FlowState.CLOSED, None, 1)


# ---------------------------------------------------------------------------------------------
# Interval deltas and the bounded per-flow state
# ---------------------------------------------------------------------------------------------


def test_snapshots_carry_the_change_since_the_previous_record_and_add_up_to_the_totals(info, codec, tracker):
    records = [
        snapshot(info, sent=1000, received=10, ts=2_000),
        snapshot(info, sent=1000, received=10, ts=3_000),  # idle interval
        snapshot(info, sent=5000, received=30, retrans=2, ts=4_000),
        flow_record(info, bytes_sent=6000, bytes_received=35, total_retrans=3, ts=5_000),
    ]

    flows = [tracker.convert(codec.decode(r)) for r in records]

    assert [f.state for f in flows] == [FlowState.ACTIVE] * 3 + [FlowState.CLOSED]
    assert [(f.interval_bytes_sent, f.interval_bytes_received, f.interval_retransmits) for f in flows] == [
        (1000, 10, 0), (0, 0, 0), (4000, 20, 2), (1000, 5, 1)]
    assert sum(f.interval_bytes_sent for f in flows) == flows[-1].bytes_sent
    assert len(tracker) == 0  # forgotten at close


def test_a_failed_flow_also_forgets_its_state(info, codec, tracker):
    tracker.convert(codec.decode(snapshot(info, sent=0, ts=2_000)))
    assert len(tracker) == 1

    tracker.convert(codec.decode(flow_record(info, state=KernelFlowState.FAILED, sk_err=errno.ETIMEDOUT)))

    assert len(tracker) == 0


def test_the_first_interval_of_a_partial_flow_counts_from_first_sight(info, codec, tracker):
    base = {"partial": 1, "role": Role.UNKNOWN, "base_bytes_sent": 50_000, "base_bytes_received": 7_000,
            "base_retrans": 4}

    first = tracker.convert(codec.decode(snapshot(info, sent=50_500, received=7_000, retrans=5, ts=2_000, **base)))
    last = tracker.convert(codec.decode(flow_record(info, bytes_sent=51_000, bytes_received=7_100, total_retrans=5,
                                                    **base)))

    assert first.partial and first.role == Role.UNKNOWN and first.bytes_sent == 50_500
    assert (first.interval_bytes_sent, first.interval_bytes_received, first.interval_retransmits) == (500, 0, 1)
    assert (last.interval_bytes_sent, last.interval_bytes_received, last.interval_retransmits) == (500, 100, 0)


def test_a_socket_reused_by_a_new_connection_starts_its_intervals_afresh(info, codec, tracker):
    tracker.convert(codec.decode(snapshot(info, sent=9000, ts=2_000, ts_start=1_000)))

    reused = tracker.convert(codec.decode(snapshot(info, sent=300, ts=9_000, ts_start=8_000)))

    assert reused.interval_bytes_sent == 300  # not 300 - 9000
    assert len(tracker) == 2  # the old connection's state waits for its lost close, or eviction


def test_snapshots_arriving_out_of_order_never_give_negative_deltas(info, codec, tracker):
    a = tracker.convert(codec.decode(snapshot(info, sent=2000, retrans=3, ts=3_000)))
    b = tracker.convert(codec.decode(snapshot(info, sent=1500, retrans=2, ts=2_999)))  # taken at once on another CPU
    c = tracker.convert(codec.decode(flow_record(info, bytes_sent=2500, total_retrans=3)))

    assert [f.interval_bytes_sent for f in (a, b, c)] == [2000, 0, 500]
    assert [f.interval_retransmits for f in (a, b, c)] == [3, 0, 0]


def test_the_per_flow_state_is_bounded_and_evicts_the_least_recently_updated(info, codec, clock):
    tracker = FlowTracker(clock=clock, max_flows=2)
    for i, flow_id in enumerate((SOCK, SOCK + 0x100, SOCK + 0x200)):
        tracker.convert(codec.decode(snapshot(info, sent=100, ts=2_000 + i, flow_id=flow_id)))
    tracker.convert(codec.decode(snapshot(info, sent=100, ts=3_000, flow_id=SOCK + 0x100)))  # touched again

    assert (len(tracker), tracker.evicted) == (2, 1)
    # The evicted flow counts again from its first sight (here: from zero) at its next record.
    again = tracker.convert(codec.decode(snapshot(info, sent=150, ts=4_000, flow_id=SOCK)))
    assert again.interval_bytes_sent == 150
    assert tracker.evicted == 2  # SOCK + 0x200 went to make room


def test_a_tracker_needs_room_for_one_flow(clock):
    with pytest.raises(ValueError):
        FlowTracker(clock=clock, max_flows=0)


# ---------------------------------------------------------------------------------------------
# Bad records
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mangle",
    [
        lambda rec: rec[:40],  # truncated
        lambda rec: b"\x01" + rec[1:],  # another tracer's type tag
        lambda rec: b"",
    ],
    ids=["truncated", "unknown-type", "empty"],
)
def test_a_malformed_record_is_counted_and_skipped(info, codec, mangle):
    assert codec.decode(mangle(flow_record(info))) is None
    assert codec.decode_errors == 1


def test_an_unknown_state_or_role_is_a_decode_error(info, codec):
    assert codec.decode(flow_record(info, state=9)) is None
    assert codec.decode(flow_record(info, role=7)) is None
    assert codec.decode_errors == 2


# ---------------------------------------------------------------------------------------------
# Tracer options
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kw", "match"), [({"flow_interval_s": 0}, "flow_interval_s"),
                                           ({"ring_bytes": 5000}, "ring_bytes")])
def test_the_tracer_refuses_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        tcpflow.TcpFlowTracer(**kw)


def test_closing_a_tracer_that_never_started_is_harmless():
    tracer = tcpflow.TcpFlowTracer()
    tracer.close()
    tracer.close()
    assert tracer.poll(0) == [] and tracer.stats() == {}


def test_an_attach_error_names_the_optional_program_to_leave_out():
    assert tcpflow._optional_program_in("cannot attach sock_send_length (tracepoint/sock/sock_send_length): x", {}) \
        == "sock_send_length"
    assert tcpflow._optional_program_in("cannot attach inet_sock_set_state (tracepoint/sock/x): x", {}) is None
    assert tcpflow._optional_program_in("cannot attach tcp_send_reset (x)", {"tcp_send_reset": "gone"}) is None
