"""IR records: what receivers emit and processors transform.

Usage::

    from otel_ebpf.records import Exchange, Connection
    def consume(exchange: Exchange) -> None:
        print(exchange.request.method, exchange.request.target, exchange.response.status)

Records are immutable dataclasses with slots; processors return new ones
(``dataclasses.replace``), except for an exchange's annotation fields (``route``,
``url_template``, ``trace``), which the stages between the receiver and the span builder set in
place with :func:`annotate`: each exchange has one owner on that path, and a copy per stage
cost more than the rest of the stage. Every timestamp in a record is wall-clock
nanoseconds since the Unix epoch: receivers convert the kernel's
CLOCK_MONOTONIC stamps once, in :mod:`otel_ebpf.bpf.clock`.
"""

from __future__ import annotations

import enum
from dataclasses import MISSING, dataclass, field, fields

_set_field = object.__setattr__


def fast_init(cls):
    """Give a frozen slots dataclass an ``__init__`` that stores each field through its slot
    descriptor. The generated one calls ``object.__setattr__`` per field, to get past the frozen
    ``__setattr__``: 1.3 µs for 8 fields, against 0.4 µs here, and an exchange makes several
    records. Same signature, defaults and immutability afterwards. Apply above ``@dataclass``."""
    params, body, names = [], [], {}
    for f in fields(cls):
        if not f.init or f.default_factory is not MISSING or f.kw_only:
            raise TypeError(f"fast_init: {cls.__name__}.{f.name} needs the generated __init__")
        names[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is MISSING:
            params.append(f.name)
        else:
            names[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(self, {f.name})")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"fast_init: {cls.__name__} has a __post_init__")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body or ["    pass"]) + "\n"
    exec(source, names)  # noqa: S102 -- code built from the class's own field names, as dataclasses does
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init
    return cls
ANNOTATIONS = frozenset(("route", "url_template", "trace"))


def annotate(exchange: "Exchange", **fields) -> "Exchange":
    """Sets annotation fields (``route``, ``url_template``, ``trace``) of ``exchange`` in place and
    returns it. Only the stage that owns the exchange (it was handed over to it) may call this."""
    for name, value in fields.items():
        if name not in ANNOTATIONS:
            raise TypeError(f"{name!r} is not an annotation field of Exchange")
        _set_field(exchange, name, value)
    return exchange


Headers = tuple[tuple[str, str], ...]
"""Header lines in wire order, names lower-cased, values as sent (latin-1 decoded)."""


class Role(enum.IntEnum):
    """Which end of a TCP connection the watched process is. Same numbers as ``ROLE_*`` in sockdata.h."""

    UNKNOWN = 0
    CLIENT = 1
    SERVER = 2


class Direction(enum.IntEnum):
    """Data direction seen from the watched process. Same numbers as ``DIR_*`` in sockdata.h."""

    EGRESS = 0  # the process wrote (write, send*, writev)
    INGRESS = 1  # the process read (read, recv*, readv)


@fast_init
@dataclass(frozen=True, slots=True)
class Connection:
    """One TCP connection as seen by one process (the Flow key)."""

    pid: int
    fd: int
    sock_id: int  # kernel address of the struct sock: identity while it lives
    family: int  # 4 or 6
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    role: Role = Role.UNKNOWN


@fast_init
@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    target: str  # request-target as sent: origin-form path?query, or absolute-form
    version: str  # "1.0", "1.1"
    headers: Headers = ()
    body_size: int = 0  # bytes of body seen on the wire (Content-Length or de-chunked size)
    trailers: Headers = ()

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@fast_init
@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    reason: str
    version: str
    headers: Headers = ()
    body_size: int = 0
    trailers: Headers = ()

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class ParentSource(enum.StrEnum):
    """How a span's parent (or the absence of one) was chosen; exported as ``otel_ebpf.parent.source``."""

    TRACEPARENT = "traceparent"  # W3C header on the captured request
    B3 = "b3"  # single b3 header
    B3_MULTI = "x-b3"  # x-b3-traceid / x-b3-spanid / x-b3-sampled
    JAEGER = "uber-trace-id"
    GRPC_TRACE_BIN = "grpc-trace-bin"
    THREAD = "thread"  # outbound call on the thread serving an inbound request
    FORWARDED = "forwarded"  # outbound call carrying the inbound request's context verbatim
    REQUEST_ID = "request-id"  # outbound call carrying the inbound request's x-request-id
    PROCESS = "process"  # outbound call while the process served exactly one inbound request
    CONNECTION = "connection"  # server end of a connection whose client end we saw
    ROOT = "root"  # nothing to join: a new trace


@fast_init
@dataclass(frozen=True, slots=True)
class SpanLink:
    trace_id: int
    span_id: int
    reason: str  # e.g. "envoy-egress", "envoy-restart", "ambiguous-parent"


@fast_init
@dataclass(frozen=True, slots=True)
class TraceIdentity:
    """The trace position chosen for an exchange's span by the stitching processor."""

    trace_id: int
    span_id: int
    parent_span_id: int | None  # None: a root span
    parent_source: ParentSource
    sampled: bool = True
    remote_parent: bool = False  # the parent is another process's span (from headers)
    trace_state: str = ""
    links: tuple[SpanLink, ...] = ()


@fast_init
@dataclass(frozen=True, slots=True)
class RequestStart:
    """A request head has been seen: its exchange is in flight (emitted before the Exchange).

    ``request`` holds the head only (``body_size`` 0). ``exchange_id`` matches the
    ``Exchange`` that completes it.
    """

    exchange_id: int
    connection: Connection
    request: HttpRequest
    start_ns: int
    tid: int


@fast_init
@dataclass(frozen=True, slots=True)
class TcpHealth:
    """The TCP connection's health over one exchange, from the kernel's tcp_sock at each syscall."""

    retransmits: int  # segments this process retransmitted between the exchange's first and last syscall
    srtt_us: int  # smoothed RTT at the exchange's last syscall (0: no sample)


@fast_init
@dataclass(frozen=True, slots=True)
class Exchange:
    """One request and its response on one connection.

    ``start_ns`` is when the first request byte was seen, ``end_ns`` when the last
    response byte was seen (or the connection closed / the exchange was given up).
    ``response`` is None when the connection ended before any response.
    """

    protocol: str  # "http1", "http2", "grpc"
    connection: Connection
    request: HttpRequest
    response: HttpResponse | None
    start_ns: int
    end_ns: int
    tid: int = 0  # thread that handled the request (server: read it; client: wrote it)
    warnings: tuple[str, ...] = field(default=())  # parse warnings, e.g. "response body truncated"
    route: str | None = None  # from configured route patterns only (processors.routes)
    url_template: str | None = None  # low-cardinality template guessed from the path
    exchange_id: int = field(default=0, compare=False)  # = RequestStart.exchange_id (0: none emitted)
    trace: TraceIdentity | None = None  # set by the stitching processor; None: from headers only
    rpc_messages: tuple[int, int] = (0, 0)  # gRPC length-prefixed messages seen (request, response)
    tcp: TcpHealth | None = None  # the connection's retransmits and RTT over the exchange (TCP only)

    @property
    def role(self) -> Role:
        return self.connection.role


class FlowState(enum.Enum):
    """Where a TCP flow record stands (``TcpFlow.state``)."""

    ACTIVE = "active"  # an interval snapshot of a connection still open
    CLOSED = "closed"  # the connection reached ESTABLISHED and has now closed
    FAILED = "failed"  # a connect that never reached ESTABLISHED (see ``TcpFlow.failure``)


@fast_init
@dataclass(frozen=True, slots=True)
class TcpFlow:
    """One TCP connection seen by the kernel: a summary at close, or a snapshot every flow
    interval while it lives. Counters are totals since the connection opened (or since the agent
    first saw it: ``partial``); ``interval_*`` fields cover what changed since the previous record
    of the same flow. Timestamps are wall-clock ns, like every record."""

    flow_id: int  # stable for the connection's life: kernel address of its struct sock
    state: FlowState
    family: int  # 4 or 6
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    role: Role  # CLIENT: this host connected; SERVER: it accepted; UNKNOWN: open before the agent
    pid: int  # 0 when unknown (e.g. a server connection nobody read or wrote yet)
    comm: str
    cgroup_id: int
    start_ns: int  # connect / establishment (or first sight)
    end_ns: int  # close, failure, or snapshot time
    bytes_sent: int  # acknowledged by the peer (tcp_sock.bytes_acked)
    bytes_received: int
    segments_sent: int
    segments_received: int
    retransmits: int  # retransmitted segments (tcp_sock.total_retrans)
    resets_sent: int
    resets_received: int
    srtt_us: int  # smoothed RTT, microseconds (0: no sample)
    min_rtt_us: int
    failure: str | None = None  # FAILED: "refused", "timed_out", "reset", "aborted" (closed with no error) or "error:<errno>"
    partial: bool = False  # opened before the agent started: counters include earlier traffic
    interval_bytes_sent: int = 0
    interval_bytes_received: int = 0
    interval_retransmits: int = 0

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns
