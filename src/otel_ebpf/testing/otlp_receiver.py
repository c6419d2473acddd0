"""A real OTLP receiver (gRPC and HTTP) for tests: what the exporters sent, decoded.

Usage::

    from otel_ebpf.testing import OtlpReceiver
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    with OtlpReceiver() as receiver:
        exporter = OTLPSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True)
        ...  # run the code under test
        (span,) = receiver.wait_for_spans(1, where=lambda s: s.name == "GET /users/{id}")
        assert span.attributes["http.response.status_code"] == 200

One receiver listens on two loopback ports picked by the kernel:

* gRPC (``grpc_endpoint``): the TraceService, MetricsService and LogsService.
* HTTP (``http_endpoint``): ``POST /v1/traces``, ``/v1/metrics``, ``/v1/logs`` with
  ``application/x-protobuf`` or ``application/json`` (OTLP/JSON, hex ids), plain or
  with ``Content-Encoding: gzip`` / ``deflate``. The reply uses the request's content type.

Every accepted request is decoded and kept, in arrival order, until
:meth:`OtlpReceiver.clear`. Accessors flatten them into plain frozen records:
:meth:`~OtlpReceiver.spans` (:class:`ReceivedSpan`), :meth:`~OtlpReceiver.metrics`
(:class:`ReceivedMetric`), :meth:`~OtlpReceiver.logs` (:class:`ReceivedLog`); the
raw protobuf requests stay reachable through :meth:`~OtlpReceiver.requests`.

To test exporter-down behaviour, make it refuse requests: ``fail_with=`` a
``grpc.StatusCode`` (HTTP gets the matching status, ``UNAVAILABLE`` -> 503) or an
HTTP status (gRPC gets the matching code), for ``fail_times`` requests or until
:meth:`~OtlpReceiver.set_failure` is called again. Refused requests are not
kept, only counted (``rejected_requests``). ``retry_after_s`` adds a
``Retry-After`` header / ``RetryInfo`` trailer, which the SDK exporters honour,
so a retry test need not wait out their exponential backoff.

Note the two SpanKind numberings: ``ReceivedSpan.kind`` is the protobuf value
(SERVER = 2, CLIENT = 3), not the API's ``SpanKind`` (SERVER = 1, CLIENT = 2);
compare with :data:`SPAN_KIND_SERVER` / :data:`SPAN_KIND_CLIENT` or ``kind_name``.

``start()`` returns once both servers listen; ``stop()`` is safe twice and before
``start()``. All methods are thread-safe.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from otel_ebpf.telemetry.jsonfile import decode_otlp_json, encode_otlp_json
from otel_ebpf.testing._http import BadRequest as _BadRequest
from otel_ebpf.testing._http import ReceiverHandler, decompress, serve, shut_down

__all__ = [
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "OtlpReceiver",
    "ReceivedLog",
    "ReceivedMetric",
    "ReceivedRequest",
    "ReceivedSpan",
]

SPAN_KIND_INTERNAL = PbSpan.SpanKind.SPAN_KIND_INTERNAL  # 1
SPAN_KIND_SERVER = PbSpan.SpanKind.SPAN_KIND_SERVER  # 2
SPAN_KIND_CLIENT = PbSpan.SpanKind.SPAN_KIND_CLIENT  # 3

_MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest HTTP body accepted, compressed or not: the SDK exporters' own default request limit."""

_GRPC_WORKERS = 4

# The OTLP spec's HTTP <-> gRPC correspondence for the codes tests use; anything else is 500 / INTERNAL.
_GRPC_TO_HTTP = {
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.TOO_MANY_REQUESTS,
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.UNAUTHENTICATED: HTTPStatus.UNAUTHORIZED,
    grpc.StatusCode.PERMISSION_DENIED: HTTPStatus.FORBIDDEN,
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
    grpc.StatusCode.UNIMPLEMENTED: HTTPStatus.NOT_IMPLEMENTED,
}
_HTTP_TO_GRPC = {int(status): code for code, status in _GRPC_TO_HTTP.items()}
_HTTP_TO_GRPC[HTTPStatus.BAD_GATEWAY] = grpc.StatusCode.UNAVAILABLE

_SIGNALS = {
    # signal: (HTTP path, request class, response class)
    "traces": ("/v1/traces", trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse),
    "metrics": (
        "/v1/metrics",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "logs": ("/v1/logs", logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse),
}
_PATH_TO_SIGNAL = {path: signal for signal, (path, _, _) in _SIGNALS.items()}

_T = TypeVar("_T")


# ---------------------------------------------------------------------------
# Received records


@dataclass(frozen=True)
class ReceivedRequest:
    """One accepted export request, undecoded beyond protobuf."""

    signal: str  # "traces", "metrics", "logs"
    transport: str  # "grpc", "http"
    encoding: str  # "protobuf", "json"
    headers: dict[str, str]  # HTTP headers or gRPC metadata, names lower-case
    message: Message  # Export{Trace,Metrics,Logs}ServiceRequest


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    kind: int  # protobuf Span.SpanKind value: SERVER = 2, CLIENT = 3
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # 16 hex digits, or "" for a root span
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    transport: str
    scope_version: str = ""
    trace_state: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)  # name, time_ns, attributes
    links: list[dict[str, Any]] = field(default_factory=list)  # trace_id, span_id, attributes
    raw: PbSpan | None = field(default=None, repr=False, compare=False)

    @property
    def kind_name(self) -> str:
        """``"SERVER"``, ``"CLIENT"``, ``"INTERNAL"``, ``"PRODUCER"``, ``"CONSUMER"`` or ``"UNSPECIFIED"``."""
        return PbSpan.SpanKind.Name(self.kind).removeprefix("SPAN_KIND_")

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(frozen=True)
class ReceivedMetric:
    """One metric of one request.

    ``kind`` is ``"gauge"``, ``"sum"``, ``"histogram"``, ``"exponential_histogram"``
    or ``"summary"``. Every data point dict has ``attributes``, ``start_ns``,
    ``time_ns``; then by kind: gauge ``value``; sum ``value``, ``is_monotonic``;
    histogram ``count``, ``sum``, ``bucket_counts``, ``explicit_bounds``, ``min``,
    ``max`` (None when absent); exponential_histogram ``count``, ``sum``, ``scale``,
    ``zero_count``, ``positive``/``negative`` (``{"offset", "bucket_counts"}``),
    ``min``, ``max``; summary ``count``, ``sum``, ``quantiles`` (list of (q, value)).
    ``temporality`` is the protobuf AggregationTemporality (1 delta, 2 cumulative,
    0 for gauges and summaries).
    """

    name: str
    unit: str
    description: str
    resource: dict[str, Any]
    scope: str
    kind: str
    data_points: list[dict[str, Any]]
    transport: str
    temporality: int = 0
    is_monotonic: bool | None = None  # sums only


@dataclass(frozen=True)
class ReceivedLog:
    body: Any
    severity_number: int
    severity_text: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    time_ns: int
    observed_time_ns: int
    trace_id: str  # hex, or ""
    span_id: str  # hex, or ""
    transport: str
    event_name: str = ""


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(pairs: Sequence[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _flatten_spans(request: ReceivedRequest) -> list[ReceivedSpan]:
    out = []
    for resource_spans in request.message.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            for span in scope_spans.spans:
                out.append(
                    ReceivedSpan(
                        name=span.name,
                        kind=span.kind,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=_attributes(span.attributes),
                        resource=resource,
                        scope=scope.name,
                        status_code=span.status.code,
                        status_message=span.status.message,
                        transport=request.transport,
                        scope_version=scope.version,
                        trace_state=span.trace_state,
                        events=[
                            {"name": e.name, "time_ns": e.time_unix_nano, "attributes": _attributes(e.attributes)}
                            for e in span.events
                        ],
                        links=[
                            {
                                "trace_id": link.trace_id.hex(),
                                "span_id": link.span_id.hex(),
                                "attributes": _attributes(link.attributes),
                            }
                            for link in span.links
                        ],
                        raw=span,
                    )
                )
    return out


def _number(point: Any) -> int | float | None:
    kind = point.WhichOneof("value")
    return None if kind is None else getattr(point, kind)


def _optional(point: Any, name: str) -> Any:
    return getattr(point, name) if point.HasField(name) else None


def _data_point(kind: str, point: Any, *, is_monotonic: bool | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "attributes": _attributes(point.attributes),
        "start_ns": point.start_time_unix_nano,
        "time_ns": point.time_unix_nano,
    }
    if kind == "gauge":
        out["value"] = _number(point)
    elif kind == "sum":
        out["value"] = _number(point)
        out["is_monotonic"] = is_monotonic
    elif kind == "histogram":
        out.update(
            count=point.count,
            sum=_optional(point, "sum"),
            bucket_counts=list(point.bucket_counts),
            explicit_bounds=list(point.explicit_bounds),
            min=_optional(point, "min"),
            max=_optional(point, "max"),
        )
    elif kind == "exponential_histogram":
        out.update(
            count=point.count,
            sum=_optional(point, "sum"),
            scale=point.scale,
            zero_count=point.zero_count,
            positive={"offset": point.positive.offset, "bucket_counts": list(point.positive.bucket_counts)},
            negative={"offset": point.negative.offset, "bucket_counts": list(point.negative.bucket_counts)},
            min=_optional(point, "min"),
            max=_optional(point, "max"),
        )
    elif kind == "summary":
        out.update(
            count=point.count,
            sum=point.sum,
            quantiles=[(q.quantile, q.value) for q in point.quantile_values],
        )
    return out


def _flatten_metrics(request: ReceivedRequest) -> list[ReceivedMetric]:
    out = []
    for resource_metrics in request.message.resource_metrics:
        resource = _attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                data = getattr(metric, kind)
                is_monotonic = data.is_monotonic if kind == "sum" else None
                out.append(
                    ReceivedMetric(
                        name=metric.name,
                        unit=metric.unit,
                        description=metric.description,
                        resource=resource,
                        scope=scope_metrics.scope.name,
                        kind=kind,
                        data_points=[_data_point(kind, p, is_monotonic=is_monotonic) for p in data.data_points],
                        transport=request.transport,
                        temporality=getattr(data, "aggregation_temporality", 0),
                        is_monotonic=is_monotonic,
                    )
                )
    return out


def _flatten_logs(request: ReceivedRequest) -> list[ReceivedLog]:
    out = []
    for resource_logs in request.message.resource_logs:
        resource = _attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                out.append(
                    ReceivedLog(
                        body=_value(record.body),
                        severity_number=record.severity_number,
                        severity_text=record.severity_text,
                        attributes=_attributes(record.attributes),
                        resource=resource,
                        scope=scope_logs.scope.name,
                        time_ns=record.time_unix_nano,
                        observed_time_ns=record.observed_time_unix_nano,
                        trace_id=record.trace_id.hex(),
                        span_id=record.span_id.hex(),
                        transport=request.transport,
                        event_name=record.event_name,
                    )
                )
    return out


_FLATTEN: dict[str, Callable[[ReceivedRequest], list[Any]]] = {
    "traces": _flatten_spans,
    "metrics": _flatten_metrics,
    "logs": _flatten_logs,
}


# ---------------------------------------------------------------------------
# The receiver


class _Refusal:
    """The configured failure: a gRPC code and its HTTP status, for a number of requests or forever."""

    def __init__(self, fail_with: grpc.StatusCode | int, times: int | None, retry_after_s: float | None) -> None:
        if isinstance(fail_with, grpc.StatusCode):
            self.grpc_code = fail_with
            self.http_status = int(_GRPC_TO_HTTP.get(fail_with, HTTPStatus.INTERNAL_SERVER_ERROR))
        else:
            self.http_status = int(fail_with)
            self.grpc_code = _HTTP_TO_GRPC.get(self.http_status, grpc.StatusCode.INTERNAL)
        self.remaining = times
        self.retry_after_s = retry_after_s


class OtlpReceiver:
    """OTLP/gRPC and OTLP/HTTP endpoints on loopback that keep what they receive. A context manager."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        fail_with: grpc.StatusCode | int | None = None,
        fail_times: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self._host = host
        self._lock = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self._items: dict[str, list[Any]] = {signal: [] for signal in _SIGNALS}
        self._refusal: _Refusal | None = None
        self._rejected = 0
        self._state = "new"  # new -> started -> stopped
        self._grpc_server: grpc.Server | None = None
        self._grpc_port = 0
        self._http_server: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._http_connections: set[socket.socket] = set()
        self.set_failure(fail_with, times=fail_times, retry_after_s=retry_after_s)

    # -- lifecycle ----------------------------------------------------------

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> OtlpReceiver:
        """Bind both servers and start serving; returns self. A receiver starts once."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"OtlpReceiver already {self._state}")
            self._state = "started"
        try:
            self._start_grpc()
            self._start_http()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both servers and close open connections; kept data stays readable. Safe twice."""
        with self._lock:
            if self._state == "stopped":
                return
            self._state = "stopped"
            self._lock.notify_all()
        if self._http_server is not None:
            shut_down(self._http_server, self._http_thread, self._open_http_connections)
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait()

    def _start_grpc(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=_GRPC_WORKERS, thread_name_prefix="otlp-grpc"))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceServicer(self), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsServicer(self), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsServicer(self), server)
        self._grpc_port = server.add_insecure_port(f"{self._host}:0")
        if self._grpc_port == 0:
            raise RuntimeError(f"could not bind a gRPC port on {self._host}")
        self._grpc_server = server
        server.start()

    def _start_http(self) -> None:
        receiver = self

        class Handler(_HttpHandler):
            pass

        Handler.receiver = receiver
        self._http_server, self._http_thread = serve(self._host, Handler, "otlp-http")

    def _open_http_connections(self) -> list[socket.socket]:
        with self._lock:
            return list(self._http_connections)

    # -- addresses ----------------------------------------------------------

    @property
    def grpc_endpoint(self) -> str:
        """``http://HOST:PORT``, for the gRPC exporters' ``endpoint`` (with ``insecure=True``)."""
        if not self._grpc_port:
            raise RuntimeError("OtlpReceiver is not started")
        return f"http://{self._host}:{self._grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """``http://HOST:PORT``; the signal paths are ``/v1/traces``, ``/v1/metrics``, ``/v1/logs``."""
        if self._http_server is None:
            raise RuntimeError("OtlpReceiver is not started")
        return f"http://{self._host}:{self._http_server.server_address[1]}"

    def http_url(self, signal: str) -> str:
        """Full URL for ``signal`` ("traces", "metrics", "logs"), as the SDK HTTP exporters' ``endpoint`` wants."""
        return self.http_endpoint + _SIGNALS[signal][0]

    # -- failure injection --------------------------------------------------

    def set_failure(
        self,
        fail_with: grpc.StatusCode | int | None,
        *,
        times: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        """Refuse the next ``times`` requests (all, if None) with ``fail_with``; ``None`` accepts again."""
        with self._lock:
            self._refusal = None if fail_with is None else _Refusal(fail_with, times, retry_after_s)

    @property
    def rejected_requests(self) -> int:
        """Requests refused because of ``fail_with`` (not malformed ones)."""
        with self._lock:
            return self._rejected

    def _take_refusal(self) -> _Refusal | None:
        with self._lock:
            refusal = self._refusal
            if refusal is None:
                return None
            if refusal.remaining is not None:
                refusal.remaining -= 1
                if refusal.remaining <= 0:
                    self._refusal = None
            self._rejected += 1
            return refusal

    # -- storage and accessors ----------------------------------------------

    def _store(self, request: ReceivedRequest) -> None:
        items = _FLATTEN[request.signal](request)
        with self._lock:
            self._requests.append(request)
            self._items[request.signal].extend(items)
            self._lock.notify_all()

    def requests(self, signal: str | None = None) -> list[ReceivedRequest]:
        """Accepted requests in arrival order, all or those of ``signal``."""
        with self._lock:
            return [r for r in self._requests if signal is None or r.signal == signal]

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._items["traces"])

    def metrics(self) -> list[ReceivedMetric]:
        with self._lock:
            return list(self._items["metrics"])

    def logs(self) -> list[ReceivedLog]:
        with self._lock:
            return list(self._items["logs"])

    def clear(self) -> None:
        """Forget everything received so far (and the count of rejected requests)."""
        with self._lock:
            self._requests.clear()
            for items in self._items.values():
                items.clear()
            self._rejected = 0

    def wait_for(
        self,
        predicate: Callable[[list[Any]], _T],
        *,
        timeout: float = 5.0,
        signal: str = "traces",
    ) -> _T:
        """Wait until ``predicate(items)`` is truthy and return its value.

        ``items`` is what :meth:`spans` (or :meth:`metrics` / :meth:`logs`, per
        ``signal``) would return; the predicate is re-evaluated on every new
        request. Raises ``TimeoutError`` naming what did arrive.
        """
        if signal not in _SIGNALS:
            raise ValueError(f"signal must be one of {sorted(_SIGNALS)}, got {signal!r}")
        result: Any = None

        def ready() -> bool:
            nonlocal result
            result = predicate(list(self._items[signal]))
            return bool(result)

        with self._lock:
            self._lock.wait_for(ready, timeout=timeout)
            if result:
                return result
            seen = self._describe(signal)
        raise TimeoutError(f"OtlpReceiver: condition on {signal} not met within {timeout}s; received {seen}")

    def wait_for_spans(
        self,
        n: int = 1,
        *,
        timeout: float = 5.0,
        where: Callable[[ReceivedSpan], bool] | None = None,
    ) -> list[ReceivedSpan]:
        """Wait for at least ``n`` spans (matching ``where``) and return all matching ones."""
        return self.wait_for(lambda spans: _at_least(n, spans, where), timeout=timeout, signal="traces")

    def wait_for_metrics(
        self,
        n: int = 1,
        *,
        timeout: float = 5.0,
        where: Callable[[ReceivedMetric], bool] | None = None,
    ) -> list[ReceivedMetric]:
        """Wait for at least ``n`` metrics (matching ``where``) and return all matching ones."""
        return self.wait_for(lambda metrics: _at_least(n, metrics, where), timeout=timeout, signal="metrics")

    def wait_for_logs(
        self,
        n: int = 1,
        *,
        timeout: float = 5.0,
        where: Callable[[ReceivedLog], bool] | None = None,
    ) -> list[ReceivedLog]:
        """Wait for at least ``n`` log records (matching ``where``) and return all matching ones."""
        return self.wait_for(lambda logs: _at_least(n, logs, where), timeout=timeout, signal="logs")

    def _describe(self, signal: str) -> str:
        items = self._items[signal]
        if not items:
            return f"nothing ({self._rejected} requests rejected)"
        names = [item.name if signal != "logs" else repr(item.body) for item in items[:20]]
        more = f" and {len(items) - 20} more" if len(items) > 20 else ""
        return f"{len(items)}: {', '.join(names)}{more}"

    # -- request handling shared by both transports ---------------------------

    def _accept(self, signal: str, transport: str, encoding: str, headers: dict[str, str], message: Message) -> None:
        self._store(ReceivedRequest(signal, transport, encoding, headers, message))


def _at_least(n: int, items: list[_T], where: Callable[[_T], bool] | None) -> list[_T]:
    matching = items if where is None else [item for item in items if where(item)]
    return matching if len(matching) >= n else []


# ---------------------------------------------------------------------------
# gRPC


class _Servicer:
    signal = ""

    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Message, context: grpc.ServicerContext) -> Message:  # noqa: N802 - gRPC name
        refusal = self._receiver._take_refusal()
        if refusal is not None:
            if refusal.retry_after_s is not None:
                info = error_details_pb2.RetryInfo(retry_delay=_duration(refusal.retry_after_s))
                context.set_trailing_metadata((("google.rpc.retryinfo-bin", info.SerializeToString()),))
            context.abort(refusal.grpc_code, "refused by OtlpReceiver(fail_with=...)")
        headers = {key.lower(): value for key, value in context.invocation_metadata() if isinstance(value, str)}
        self._receiver._accept(self.signal, "grpc", "protobuf", headers, request)
        return _SIGNALS[self.signal][2]()


def _duration(seconds: float) -> Duration:
    whole = int(seconds)
    return Duration(seconds=whole, nanos=int(round((seconds - whole) * 1e9)))


class _TraceServicer(_Servicer, trace_service_pb2_grpc.TraceServiceServicer):
    signal = "traces"


class _MetricsServicer(_Servicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    signal = "metrics"


class _LogsServicer(_Servicer, logs_service_pb2_grpc.LogsServiceServicer):
    signal = "logs"


# ---------------------------------------------------------------------------
# HTTP


class _HttpHandler(ReceiverHandler):
    """OTLP/HTTP: POST a signal path; protobuf or JSON; identity, gzip or deflate."""

    receiver: OtlpReceiver
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK exporters' sessions expect
    server_version = "otel-ebpf-OtlpReceiver"
    max_body_bytes = _MAX_BODY_BYTES

    def _connection_registry(self) -> tuple[threading.Condition, set[socket.socket]]:
        return self.receiver._lock, self.receiver._http_connections

    def do_POST(self) -> None:  # noqa: N802 - http.server name
        json_reply = False
        try:
            body = self._read_body()  # always drained, so keep-alive stays in step
            signal = _PATH_TO_SIGNAL.get(self.path.split("?", 1)[0])
            if signal is None:
                raise _BadRequest(HTTPStatus.NOT_FOUND, f"no OTLP signal at {self.path}")
            content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            if content_type == "application/json":
                json_reply = True
            elif content_type != "application/x-protobuf":
                raise _BadRequest(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"unsupported Content-Type {content_type!r}")
            refusal = self.receiver._take_refusal()
            if refusal is not None:
                extra = {}
                if refusal.retry_after_s is not None:
                    extra["Retry-After"] = f"{refusal.retry_after_s:g}"
                self._reply_status(
                    refusal.http_status, refusal.grpc_code, "refused by OtlpReceiver(fail_with=...)", json_reply, extra
                )
                return
            message = _decode(signal, self._decompress(body), json_reply)
            headers = {key.lower(): value for key, value in self.headers.items()}
            self.receiver._accept(signal, "http", "json" if json_reply else "protobuf", headers, message)
            response = _SIGNALS[signal][2]()
            self._reply(HTTPStatus.OK, response, json_reply)
        except _BadRequest as error:
            self._reply_status(error.status, _HTTP_TO_GRPC.get(error.status), str(error), json_reply)

    def _decompress(self, body: bytes) -> bytes:
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        return decompress(body, encoding, _MAX_BODY_BYTES, deflate=True)

    def _reply_status(
        self,
        status: int,
        code: grpc.StatusCode | None,
        message: str,
        json_reply: bool,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        numeric = (code or grpc.StatusCode.UNKNOWN).value[0]
        self._reply(status, status_pb2.Status(code=numeric, message=message), json_reply, extra_headers)

    def _reply(
        self, status: int, message: Message, json_reply: bool, extra_headers: dict[str, str] | None = None
    ) -> None:
        if json_reply:
            payload, content_type = encode_otlp_json(message).encode("utf-8"), "application/json"
        else:
            payload, content_type = message.SerializeToString(), "application/x-protobuf"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (extra_headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)


def _decode(signal: str, body: bytes, is_json: bool) -> Message:
    message = _SIGNALS[signal][1]()
    try:
        if is_json:
            decode_otlp_json(body, message)
        else:
            message.ParseFromString(body)
    except Exception as error:  # DecodeError, json_format.ParseError, ValueError, UnicodeDecodeError...
        raise _BadRequest(HTTPStatus.BAD_REQUEST, f"cannot decode {signal} request: {error}") from None
    return message
