"""The tcpflow tracer: one TcpFlow record per TCP connection, from sock/tcp tracepoints.

Usage::

    tracer = TcpFlowTracer(flow_interval_s=15.0)
    tracer.start()                       # preflight, load, attach
    for flow in tracer.poll(timeout_ms=100):
        ...                              # otel_ebpf.records.TcpFlow: ACTIVE snapshots, then CLOSED or FAILED
    tracer.stats()                       # {"events": ..., "lost": ..., "decode_errors": ..., ...}
    tracer.close()                       # detach everything

No per-packet event reaches user space: the kernel keeps one entry per
connection (``bpf/tcpflow/tcpflow.bpf.c``) and sends a record when the
connection closes, plus an ACTIVE snapshot at most every ``flow_interval_s``
while it carries traffic. Counters in the records are totals; the
``interval_*`` deltas between two records of a flow are computed here
(:class:`FlowTracker`, bounded). The agent's own connections are not reported.

Programs whose tracepoint this kernel lacks (``sock/sock_send_length`` and
``sock/sock_recv_length`` appeared in Linux 6.3) are left out, as are optional
programs that fail to attach; :attr:`TcpFlowTracer.skipped` says which and why.
Without them flows still get their final record, but no snapshots and no pid
for server-side connections.

The numbers of the enums below mirror the C enums of ``bpf/tcpflow/tcpflow.h``;
:class:`TcpFlowCodec` checks them against the object's BTF and refuses to start
on a mismatch. Struct offsets are read from BTF, never typed here.
"""

from __future__ import annotations

import enum
import errno
import os
import socket
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from ..records import FlowState, Role, TcpFlow
from .btf import BpfObjectInfo
from .clock import MonotonicClock
from .events import check_enums as check_event_enums
from .events import format_address
from .libbpf import BpfError, BpfObject
from .preflight import TRACEFS, PreflightError, preflight
from .ringbuf import RingBufReader
from .sockdata import object_path

__all__ = [
    "DEFAULT_RING_BYTES",
    "MAX_FLOWS",
    "FlowEvent",
    "FlowEventType",
    "FlowStat",
    "FlowTracker",
    "KernelFlowState",
    "TcpFlowCodec",
    "TcpFlowTracer",
    "check_enums",
    "failure_reason",
]

MAX_FLOWS = 65536  # mirrors bpf/include/sizing.h: the kernel's flow table
DEFAULT_RING_BYTES = 4 * 1024 * 1024  # ~25k records of 168 bytes


class FlowEventType(enum.IntEnum):
    """``enum flow_event_type`` in tcpflow.h."""

    TCP_FLOW = 16


class KernelFlowState(enum.IntEnum):
    """``enum flow_state`` in tcpflow.h (``FLOW_*``); same names as :class:`otel_ebpf.records.FlowState`."""

    ACTIVE = 0
    CLOSED = 1
    FAILED = 2


class FlowStat(enum.IntEnum):
    """``enum flow_stat_index`` in tcpflow.h (per-CPU counters)."""

    EVENTS = 0
    LOST = 1
    FLOWS_FULL = 2
    FLOWS_OPENED = 3
    FLOWS_PARTIAL = 4
    SNAPSHOTS = 5
    SELF_SKIPPED = 6


_ENUMS = {
    "flow_event_type": (FlowEventType, "EVENT_"),
    "flow_state": (KernelFlowState, "FLOW_"),
    "flow_role": (Role, "ROLE_"),
    "flow_stat_index": (FlowStat, "STAT_"),
}


def check_enums(info: BpfObjectInfo) -> None:
    """Raise BtfError when a Python enum disagrees with the tcpflow object's C enum."""
    check_event_enums(info, _ENUMS)


@dataclass(slots=True)
class FlowEvent:
    """One ``struct tcp_flow_event`` as the kernel wrote it (CLOCK_MONOTONIC timestamps)."""

    state: KernelFlowState
    flow_id: int
    pid: int
    cgroup_id: int
    ts_start: int
    ts: int
    bytes_sent: int
    bytes_received: int
    base_bytes_sent: int
    base_bytes_received: int
    base_retrans: int
    segs_out: int
    segs_in: int
    total_retrans: int
    srtt_us: int
    min_rtt_us: int
    resets_sent: int
    resets_received: int
    sk_err: int
    role: Role
    partial: bool
    tcp_state: int
    family: int  # 4 or 6
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    comm: str


_FIELDS = [
    "type", "pid", "flow_id", "cgroup_id", "ts_start", "ts", "bytes_sent", "bytes_received", "base_bytes_sent",
    "base_bytes_received", "base_retrans", "segs_out", "segs_in", "total_retrans", "srtt_us", "min_rtt_us",
    "resets_sent", "resets_received", "sk_err", "state", "role", "partial", "tcp_state",
    "tuple.saddr", "tuple.daddr", "tuple.sport", "tuple.dport", "tuple.family", "comm",
]

class TcpFlowCodec:
    """Decodes tcpflow ring-buffer records; the layout comes from the object's BTF."""

    def __init__(self, info: BpfObjectInfo):
        check_enums(info)
        self._flow = info.btf.decoder("tcp_flow_event", _FIELDS)
        self.decode_errors = 0

    def decode(self, rec: bytes) -> FlowEvent | None:
        try:
            if rec[0] == FlowEventType.TCP_FLOW:
                (_t, pid, flow_id, cgroup_id, ts_start, ts, sent, received, base_sent, base_received, base_retrans,
                 segs_out, segs_in, retrans, srtt, min_rtt, rst_sent, rst_received, sk_err, state, role, partial,
                 tcp_state, saddr, daddr, sport, dport, family, comm) = self._flow.unpack_from(rec, 0)
                return FlowEvent(
                    KernelFlowState(state), flow_id, pid, cgroup_id, ts_start, ts, sent, received, base_sent,
                    base_received, base_retrans, segs_out, segs_in, retrans, srtt, min_rtt, rst_sent, rst_received,
                    sk_err, Role(role), bool(partial), tcp_state, 4 if family == socket.AF_INET else 6,
                    format_address(family, saddr), sport, format_address(family, daddr), dport,
                    comm.split(b"\0", 1)[0].decode("utf-8", "replace"),
                )
        except (ValueError, IndexError, OSError, struct.error):
            pass
        self.decode_errors += 1
        return None


def failure_reason(sk_err: int, resets_received: int) -> str:
    """Why a connect failed, from the socket's error at close (see ``TcpFlow.failure``).

    A RST answering the SYN means refused whatever the error says. A connect that
    ended with no error on the socket reads ``aborted``: the application closed it
    before any answer (its own timeout), or connect() failed locally (e.g. no
    ephemeral port left), which the kernel returns to the caller without keeping it.
    """
    if resets_received or sk_err == errno.ECONNREFUSED:
        return "refused"
    if sk_err == errno.ETIMEDOUT:
        return "timed_out"
    if sk_err == errno.ECONNRESET:
        return "reset"
    if sk_err == 0:
        return "aborted"
    return f"error:{sk_err}"


class FlowTracker:
    """Turns kernel flow records into :class:`TcpFlow`: wall-clock times, failure reasons and
    ``interval_*`` deltas since the flow's previous record.

    Per-flow state (the totals last reported) is keyed by (flow id, start time), so a struct
    sock reused for a new connection starts afresh; it goes when the flow's CLOSED/FAILED
    record arrives, and the least recently updated entry is evicted past ``max_flows``
    (``evicted`` counts them; such a flow's next interval then counts from its first sight).
    Deltas never go negative: two snapshots taken at once on two CPUs may arrive out of order.
    Single-threaded, like the poll loop that calls it.
    """

    def __init__(self, *, clock: MonotonicClock | None = None, max_flows: int = MAX_FLOWS):
        if max_flows < 1:
            raise ValueError("max_flows must be >= 1")
        self._clock = clock or MonotonicClock()
        self._max = max_flows
        self._last: OrderedDict[tuple[int, int], tuple[int, int, int]] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._last)

    def convert(self, ev: FlowEvent) -> TcpFlow:
        key = (ev.flow_id, ev.ts_start)
        last = self._last.pop(key, None)
        if last is None:
            last = (ev.base_bytes_sent, ev.base_bytes_received, ev.base_retrans)
        now = (max(ev.bytes_sent, last[0]), max(ev.bytes_received, last[1]), max(ev.total_retrans, last[2]))
        if ev.state == KernelFlowState.ACTIVE:
            self._last[key] = now
            while len(self._last) > self._max:
                self._last.popitem(last=False)
                self.evicted += 1
        to_wall = self._clock.to_wall
        return TcpFlow(
            flow_id=ev.flow_id,
            state=FlowState[ev.state.name],
            family=ev.family,
            local_address=ev.local_address,
            local_port=ev.local_port,
            remote_address=ev.remote_address,
            remote_port=ev.remote_port,
            role=ev.role,
            pid=ev.pid,
            comm=ev.comm,
            cgroup_id=ev.cgroup_id,
            start_ns=to_wall(ev.ts_start),
            end_ns=to_wall(ev.ts),
            bytes_sent=ev.bytes_sent,
            bytes_received=ev.bytes_received,
            segments_sent=ev.segs_out,
            segments_received=ev.segs_in,
            retransmits=ev.total_retrans,
            resets_sent=ev.resets_sent,
            resets_received=ev.resets_received,
            srtt_us=ev.srtt_us,
            min_rtt_us=ev.min_rtt_us,
            failure=failure_reason(ev.sk_err, ev.resets_received) if ev.state == KernelFlowState.FAILED else None,
            partial=ev.partial,
            interval_bytes_sent=now[0] - last[0],
            interval_bytes_received=now[1] - last[1],
            interval_retransmits=now[2] - last[2],
        )


@dataclass(frozen=True, slots=True)
class _Program:
    event: str  # tracefs category/name
    required: bool


# Every program of tcpflow.bpf.c and the tracepoint it needs.
_PROGRAMS = {
    "inet_sock_set_state": _Program("sock/inet_sock_set_state", True),
    "sock_send_length": _Program("sock/sock_send_length", False),
    "sock_recv_length": _Program("sock/sock_recv_length", False),
    "tcp_retransmit_skb": _Program("tcp/tcp_retransmit_skb", False),
    "tcp_send_reset": _Program("tcp/tcp_send_reset", False),
    "tcp_receive_reset": _Program("tcp/tcp_receive_reset", False),
}


class TcpFlowTracer:
    """Loads tcpflow.bpf.o and yields :class:`TcpFlow` records.

    ``start()`` raises PreflightError/BpfError when the host cannot run it; ``close()`` is
    safe twice and before ``start()``. ``poll()`` is meant for one thread.
    """

    def __init__(
        self,
        *,
        flow_interval_s: float = 15.0,
        ring_bytes: int = DEFAULT_RING_BYTES,
        self_tgid: int | None = None,
        path: Path | None = None,
        max_tracked_flows: int = MAX_FLOWS,
    ):
        if not flow_interval_s > 0:
            raise ValueError("flow_interval_s must be > 0")
        if ring_bytes & (ring_bytes - 1) or ring_bytes < 4096:
            raise ValueError("ring_bytes must be a power of two >= 4096")
        self.flow_interval_s = flow_interval_s
        self.ring_bytes = ring_bytes
        self._self_tgid = os.getpid() if self_tgid is None else self_tgid
        self._path = path or object_path("tcpflow")
        self._max_tracked = max_tracked_flows
        self._obj: BpfObject | None = None
        self._reader: RingBufReader | None = None
        self._codec: TcpFlowCodec | None = None
        self._tracker: FlowTracker | None = None
        self._clock: MonotonicClock | None = None
        self.attached: list[str] = []
        self.skipped: dict[str, str] = {}  # program -> why it is not attached

    def start(self) -> None:
        preflight()
        info = BpfObjectInfo.from_file(self._path)
        self._codec = TcpFlowCodec(info)
        self._clock = MonotonicClock()
        self._tracker = FlowTracker(clock=self._clock, max_flows=self._max_tracked)
        skipped: dict[str, str] = {}
        for name, prog in _PROGRAMS.items():
            if not (TRACEFS / "events" / prog.event).is_dir():
                if prog.required:
                    raise PreflightError(f"this kernel has no tracepoint {prog.event}, which tcpflow needs")
                skipped[name] = f"tracepoint {prog.event} missing"
        while True:
            obj = BpfObject.open(
                self._path,
                rodata={
                    "targ_self_tgid": self._self_tgid,
                    "flow_interval_ns": int(self.flow_interval_s * 1e9),
                    "wakeup_bytes": max(4096, self.ring_bytes // 16),
                },
                max_entries={"events": self.ring_bytes},
                disabled_programs=tuple(skipped),
            )
            try:
                obj.load()
                self.attached = obj.attach_all()
                self._reader = RingBufReader(obj.map_fd("events"), self.ring_bytes)
            except BpfError as e:
                obj.close()
                failed = _optional_program_in(str(e), skipped)
                if failed is None:
                    raise
                skipped[failed] = str(e)  # and load again without it
                continue
            except BaseException:
                obj.close()
                raise
            self._obj = obj
            self.skipped = skipped
            return

    def poll(self, timeout_ms: int = 100) -> list[TcpFlow]:
        reader, codec, tracker = self._reader, self._codec, self._tracker
        if reader is None or codec is None or tracker is None:
            return []
        assert self._clock is not None
        self._clock.maybe_refresh()
        out = []
        decode, convert = codec.decode, tracker.convert
        for rec in reader.poll(timeout_ms):
            ev = decode(rec)
            if ev is not None:
                out.append(convert(ev))
        return out

    def stats(self) -> dict[str, int]:
        """Kernel counters summed over CPUs, plus user-space ones (decode errors, records read,
        per-flow interval state evicted)."""
        out: dict[str, int] = {}
        if self._obj is not None:
            values = self._obj.percpu_u64_sums("stats", len(FlowStat))
            out = {s.name.lower(): values[s.value] for s in FlowStat}
        if self._codec is not None:
            out["decode_errors"] = self._codec.decode_errors
        if self._reader is not None:
            out["ring_records"] = self._reader.records
        if self._tracker is not None:
            out["interval_state_evicted"] = self._tracker.evicted
        return out

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None


def _optional_program_in(message: str, skipped: dict[str, str]) -> str | None:
    """The optional program a BpfObject attach error names (``cannot attach NAME (SEC)``), if any."""
    for name, prog in _PROGRAMS.items():
        if not prog.required and name not in skipped and message.startswith(f"cannot attach {name} ("):
            return name
    return None
