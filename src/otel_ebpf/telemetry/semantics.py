"""HTTP semantic conventions: what an :class:`~otel_ebpf.records.Exchange` means as a span and a metric.

Usage::

    from otel_ebpf.telemetry import semantics

    semantics.span_name(ex)          # "GET /users/{id}" (route set) or "GET"; "HTTP" for unknown methods
    semantics.span_kind(ex)          # SpanKind.SERVER / CLIENT / INTERNAL
    semantics.span_attributes(ex)    # {"http.request.method": "GET", "url.path": "/users/42", ...}
    semantics.span_status(ex)        # Status(ERROR) for 5xx (servers), >= 400 (clients), no response
    semantics.metric_attributes(ex)  # low-cardinality subset for http.{server,client}.request.duration
    semantics.parent_context(ex)     # ParentContext(trace_id, span_id, sampled, trace_state) or None

    sem = semantics.describe(ex)     # all of the above in one pass (what the pipeline uses)

Pure functions, no I/O, no SDK state; names come from ``opentelemetry.semconv`` (schema 1.44.0).
Choices where semconv leaves room (all stable HTTP span conventions otherwise):

* **Methods**: known methods are RFC 9110's, PATCH and QUERY (as the pinned semconv lists them),
  or the comma-separated ``OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS`` (a full override, read at
  import; :func:`set_known_methods` changes it). Others are ``_OTHER`` with
  ``http.request.method_original`` and a span name of ``HTTP``.
* **Span name** is ``{method} {http.route}`` only when a configured route matched; a guessed
  ``url.template`` never names a span (it may be wrong, and names must stay low-cardinality).
* **server.address / server.port**: semconv's order. Server spans: ``Forwarded: host=``,
  ``X-Forwarded-Host``, the authority of an absolute-form target, the ``Host`` header; the local
  socket address is *not* used (semconv keeps that for ``network.local.address``/``port``,
  which server spans carry). Client spans: absolute-form target authority, ``Host``, then the
  connected socket's address. A host given without a port gets the scheme's default port
  (80/443), so client and server spans of one request agree.
* **client.address** (server spans): ``Forwarded: for=``, the first ``X-Forwarded-For`` entry,
  else the socket peer; ``client.port`` only when the address came from the socket (or from
  ``Forwarded`` with a port).
* **url.scheme**: ``X-Forwarded-Proto``/``Forwarded: proto=`` on servers when ``http``/``https``,
  the absolute-form scheme, else ``http`` (captured plaintext).
* **URL**: server spans get ``url.path`` and ``url.query`` (when the target had a ``?``); client
  spans get ``url.full`` (``scheme://host[:port]/path?query``, user information replaced by
  ``REDACTED:REDACTED``). Values are taken as they are: run the redaction processor first.
* **error.type**: the status code as a string when the status is an error (server ``>= 500``,
  client ``>= 400``, any code outside 100..599 on either side), ``response_missing`` when the
  connection ended or the exchange was given up before a response. Nothing else is reported.
* **Status**: ERROR in exactly the ``error.type`` cases, description only for
  ``response_missing``; UNSET otherwise. Role UNKNOWN gets kind INTERNAL and is otherwise
  treated like a server (attributes, status).
* Also: ``network.peer.address``/``port``, ``network.protocol.version`` (request line),
  ``user_agent.original``, ``http.request.body.size`` (always) / ``http.response.body.size``
  (with a response), ``url.template``, ``http.route``, ``thread.id`` (when the tid is known).
* **Metric attributes**: servers: method, ``url.scheme``, status code, ``http.route``,
  ``network.protocol.version``, ``error.type``; clients: method, ``server.address``/``port``,
  status code, ``url.scheme``, ``network.protocol.version``, ``error.type``.
* **Parent**: strict W3C trace-context level 1 parsing of ``traceparent`` (lowercase hex,
  version ``ff`` and all-zero ids invalid, version 00 exactly 55 characters, later versions
  may append ``-...``; more than one ``traceparent`` header is invalid). ``tracestate`` is kept
  when every member is valid (else it is dropped, the parent is kept).
"""

from __future__ import annotations

import os
import re
from importlib import metadata
from typing import Any, NamedTuple

from opentelemetry.semconv._incubating.attributes.http_attributes import (
    HTTP_REQUEST_BODY_SIZE,
    HTTP_REQUEST_HEADER_TEMPLATE,
    HTTP_RESPONSE_BODY_SIZE,
    HTTP_RESPONSE_HEADER_TEMPLATE,
)
from opentelemetry.semconv._incubating.attributes.process_attributes import (
    PROCESS_EXECUTABLE_NAME,
    PROCESS_PID,
)
from opentelemetry.semconv._incubating.attributes.thread_attributes import THREAD_ID
from opentelemetry.semconv._incubating.attributes.url_attributes import URL_TEMPLATE
from opentelemetry.semconv.attributes.client_attributes import CLIENT_ADDRESS, CLIENT_PORT
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_REQUEST_METHOD_ORIGINAL,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
    HttpRequestMethodValues,
)
from opentelemetry.semconv.attributes.network_attributes import (
    NETWORK_LOCAL_ADDRESS,
    NETWORK_LOCAL_PORT,
    NETWORK_PEER_ADDRESS,
    NETWORK_PEER_PORT,
    NETWORK_PROTOCOL_VERSION,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import URL_FULL, URL_PATH, URL_QUERY, URL_SCHEME
from opentelemetry.semconv.attributes.user_agent_attributes import USER_AGENT_ORIGINAL
from opentelemetry.semconv.schemas import Schemas
from opentelemetry.trace import SpanKind, TraceState
from opentelemetry.trace.status import Status, StatusCode

from otel_ebpf.records import Exchange, Role

__all__ = [
    "ERROR_RESPONSE_MISSING",
    "KNOWN_METHODS_ENV",
    "OTEL_EBPF_SERVICE_NAME",
    "SCHEMA_URL",
    "SCOPE_NAME",
    "SCOPE_VERSION",
    "HttpSemantics",
    "ParentContext",
    "describe",
    "known_methods",
    "metric_attributes",
    "parent_context",
    "parse_traceparent",
    "parse_tracestate",
    "process_attributes",
    "set_known_methods",
    "span_attributes",
    "span_kind",
    "span_name",
    "span_status",
]

SCOPE_NAME = "otel_ebpf"
"""Instrumentation scope of everything the agent emits."""
try:
    SCOPE_VERSION = metadata.version("otel-ebpf")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    SCOPE_VERSION = "0.0.0"
SCHEMA_URL = Schemas.V1_44_0.value
"""Semantic-conventions schema the names here follow."""

ERROR_RESPONSE_MISSING = "response_missing"
"""``error.type`` when no response was seen (connection closed, exchange given up)."""

OTEL_EBPF_SERVICE_NAME = "otel_ebpf.service.name"
"""Span attribute naming the watched process's service when it cannot be the resource's
``service.name`` (library mode: the caller's single Resource describes the agent)."""

KNOWN_METHODS_ENV = "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS"
_DEFAULT_KNOWN_METHODS = frozenset(
    [m.value for m in HttpRequestMethodValues if m is not HttpRequestMethodValues.OTHER] + ["QUERY"]
)
_OTHER = HttpRequestMethodValues.OTHER.value


def _methods_from_env() -> frozenset[str]:
    raw = os.environ.get(KNOWN_METHODS_ENV)
    if raw is None or not raw.strip():
        return _DEFAULT_KNOWN_METHODS
    return frozenset(m.strip() for m in raw.split(",") if m.strip())


_known_methods = _methods_from_env()


def known_methods() -> frozenset[str]:
    return _known_methods


def set_known_methods(methods: frozenset[str] | set[str] | list[str] | None) -> None:
    """Replace the known-method list (None restores the default / environment list)."""
    global _known_methods
    _known_methods = _methods_from_env() if methods is None else frozenset(methods)


class ParentContext(NamedTuple):
    """A remote parent from W3C ``traceparent`` / ``tracestate``."""

    trace_id: int
    span_id: int
    sampled: bool
    trace_state: TraceState


class HttpSemantics:
    """Everything :func:`describe` derives from one exchange. Attributes are plain fields."""

    __slots__ = ("attributes", "error_type", "kind", "metric_attributes", "metrics", "name", "parent", "status")

    def __init__(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any],
        metric_attributes: dict[str, Any],
        status: Status,
        error_type: str | None,
        parent: ParentContext | None,
        metrics: tuple[str, ...] | None = None,
    ) -> None:
        self.metrics = metrics  # duration histograms to record into; None: the HTTP one of the role
        self.name = name
        self.kind = kind
        self.attributes = attributes
        self.metric_attributes = metric_attributes
        self.status = status
        self.error_type = error_type
        self.parent = parent

    def __repr__(self) -> str:
        return f"HttpSemantics(name={self.name!r}, kind={self.kind!r}, status={self.status.status_code.name})"


_STATUS_UNSET = Status(StatusCode.UNSET)
_STATUS_ERROR = Status(StatusCode.ERROR)
_STATUS_NO_RESPONSE = Status(StatusCode.ERROR, "no response seen")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_WANTED_HEADERS = frozenset(
    (
        "host",
        "user-agent",
        "traceparent",
        "tracestate",
        "forwarded",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-for",
    )
)
_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL)
_TS_KEY_RE = re.compile(r"[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13}")
_TS_VALUE_RE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
_TS_MAX_MEMBERS = 32
_USERINFO_RE = re.compile(r"^[^@/?#]*@")
_EMPTY_TRACE_STATE = TraceState()


# ---------------------------------------------------------------------------------------------
# trace context


def parse_traceparent(values: list[str] | tuple[str, ...]) -> tuple[int, int, int] | None:
    """(trace_id, span_id, flags) from the ``traceparent`` header value(s), or None if invalid."""
    if len(values) != 1:
        return None
    value = values[0].strip(" \t")
    if len(value) < 55 or len(value) > 512:
        return None
    m = _TRACEPARENT_RE.fullmatch(value)
    if m is None:
        return None
    version, trace_hex, span_hex, flags_hex, rest = m.groups()
    if version == "ff":
        return None
    if version == "00" and rest is not None:
        return None
    trace_id = int(trace_hex, 16)
    span_id = int(span_hex, 16)
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id, int(flags_hex, 16)


def parse_tracestate(values: list[str] | tuple[str, ...]) -> TraceState:
    """A TraceState from ``tracestate`` header value(s); empty when absent or any member is invalid."""
    if not values:
        return _EMPTY_TRACE_STATE
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for header in values:
        for member in header.split(","):
            member = member.strip(" \t")
            if not member:
                continue
            key, eq, val = member.partition("=")
            if not eq or key in seen or _TS_KEY_RE.fullmatch(key) is None or _TS_VALUE_RE.fullmatch(val) is None:
                return _EMPTY_TRACE_STATE
            seen.add(key)
            pairs.append((key, val))
            if len(pairs) > _TS_MAX_MEMBERS:
                return _EMPTY_TRACE_STATE
    return TraceState(pairs) if pairs else _EMPTY_TRACE_STATE


def _parent(traceparents: list[str] | None, tracestates: list[str] | None) -> ParentContext | None:
    if not traceparents:
        return None
    parsed = parse_traceparent(traceparents)
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    return ParentContext(trace_id, span_id, bool(flags & 0x01), parse_tracestate(tracestates or ()))


# ---------------------------------------------------------------------------------------------
# header helpers


def _split_host_port(value: str) -> tuple[str | None, int | None]:
    """Host (lower-case, IPv6 without brackets) and port from a Host-like ``host[:port]``."""
    value = value.strip(" \t")
    if not value:
        return None, None
    port_text = ""
    if value[0] == "[":
        end = value.find("]")
        if end < 0:
            return None, None
        host = value[1:end]
        tail = value[end + 1 :]
        if tail:
            if tail[0] != ":":
                return None, None
            port_text = tail[1:]
    else:
        colons = value.count(":")
        if colons == 1:
            host, _, port_text = value.partition(":")
        else:
            host = value  # no port, or a bare IPv6 address
    if not host:
        return None, None
    port = None
    if port_text:
        if not port_text.isdigit() or len(port_text) > 5:
            return host.lower(), None
        port = int(port_text)
        if not 0 < port < 65536:
            port = None
    return host.lower(), port


def _unquote_forwarded(value: str) -> str:
    value = value.strip(" \t")
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1].replace('\\"', '"')
    return value


def _parse_forwarded(value: str) -> dict[str, str]:
    """Pairs of the first (client-most) element of a ``Forwarded`` header (RFC 7239)."""
    first = value.split(",", 1)[0]
    pairs = {}
    for pair in first.split(";"):
        key, eq, val = pair.partition("=")
        if eq:
            pairs[key.strip(" \t").lower()] = _unquote_forwarded(val)
    return pairs


def _format_address(address: str, port: int | None) -> str:
    host = f"[{address}]" if ":" in address else address
    return host if port is None else f"{host}:{port}"


# ---------------------------------------------------------------------------------------------
# the one-pass description


# Headers kept as span attributes (semconv http.request.header.<name> / http.response.header.<name>,
# string arrays): the mesh's request id and Envoy's own timing, so a trace can be audited.
CAPTURED_REQUEST_HEADERS = frozenset({"x-request-id", "x-envoy-attempt-count"})
CAPTURED_RESPONSE_HEADERS = frozenset({"x-envoy-upstream-service-time"})


TCP_RETRANSMITS = "otel_ebpf.tcp.retransmits"  # segments retransmitted during the exchange
TCP_RTT = "otel_ebpf.tcp.rtt"  # the connection's smoothed RTT at the exchange's end, seconds


def describe(exchange: Exchange) -> HttpSemantics:
    """Span and metric facts of one exchange (HTTP semantic conventions; RPC ones for gRPC)."""
    if exchange.protocol == "grpc":
        from otel_ebpf.telemetry.rpc import describe_rpc

        return describe_rpc(exchange, describe_http(exchange))
    return describe_http(exchange)


def describe_http(exchange: Exchange) -> HttpSemantics:
    """Name, kind, attributes, metric attributes, status and parent of one exchange."""
    request = exchange.request
    response = exchange.response
    conn = exchange.connection
    role = conn.role

    host_h = ua = xfh = xfp = xff = fwd = None
    traceparents: list[str] | None = None
    tracestates: list[str] | None = None
    wanted = _WANTED_HEADERS
    for key, value in request.headers:
        if key in wanted:
            if key == "host":
                if host_h is None:
                    host_h = value
            elif key == "user-agent":
                if ua is None:
                    ua = value
            elif key == "traceparent":
                if traceparents is None:
                    traceparents = [value]
                else:
                    traceparents.append(value)
            elif key == "tracestate":
                if tracestates is None:
                    tracestates = [value]
                else:
                    tracestates.append(value)
            elif key == "x-forwarded-host":
                if xfh is None:
                    xfh = value
            elif key == "x-forwarded-proto":
                if xfp is None:
                    xfp = value
            elif key == "x-forwarded-for":
                if xff is None:
                    xff = value
            elif fwd is None:
                fwd = value

    # method
    method = request.method
    if method in _known_methods:
        name_method = method
        original = None
    else:
        name_method = "HTTP"
        original = method
        method = _OTHER

    # request-target
    target = request.target
    target_scheme = None
    authority = target_hostport = None
    path: str | None
    query: str | None = None
    if target[:1] == "/":
        path, sep, rest = target.partition("?")
        if sep:
            query = rest.partition("#")[0]
        elif "#" in path:
            path = path.partition("#")[0]
    elif target == "*":
        path = "*"
    else:
        lowered = target[:8].lower()
        if lowered.startswith("http://") or lowered.startswith("https://"):
            target_scheme = "https" if lowered[4] == "s" else "http"
            rest = target[len(target_scheme) + 3 :]
            cut = len(rest)
            for sep_char in "/?#":
                i = rest.find(sep_char)
                if 0 <= i < cut:
                    cut = i
            authority = rest[:cut]
            tail = rest[cut:]
            path, sep, rest = tail.partition("?")
            if sep:
                query = rest.partition("#")[0]
            elif "#" in path:
                path = path.partition("#")[0]
            if not path:
                path = "/"
            if "@" in authority:
                authority = _USERINFO_RE.sub("REDACTED:REDACTED@", authority, count=1)
                target_hostport = authority.rpartition("@")[2]
            else:
                target_hostport = authority
        else:
            path = None  # authority-form (CONNECT) or unparseable

    is_client = role == Role.CLIENT
    fwd_pairs = _parse_forwarded(fwd) if (fwd is not None and not is_client) else None

    # scheme
    scheme = target_scheme or "http"
    if not is_client:
        proto = None
        if fwd_pairs is not None:
            proto = fwd_pairs.get("proto")
        if proto is None and xfp is not None:
            proto = xfp.split(",", 1)[0]
        if proto is not None:
            proto = proto.strip(" \t").lower()
            if proto == "http" or proto == "https":
                scheme = proto

    # server.address / server.port
    server_host = server_port = None
    hostport = None
    if not is_client:
        if fwd_pairs is not None and fwd_pairs.get("host"):
            hostport = fwd_pairs["host"]
        elif xfh is not None:
            hostport = xfh.split(",", 1)[0]
    if hostport is None:
        hostport = target_hostport if target_hostport is not None else host_h
    if hostport is not None:
        server_host, server_port = _split_host_port(hostport)
        if server_host is not None and server_port is None:
            server_port = _DEFAULT_PORTS.get(scheme)
    if is_client and server_host is None and conn.remote_address:
        server_host, server_port = conn.remote_address, conn.remote_port or None

    # status and error.type
    error_type = None
    status = _STATUS_UNSET
    code = None
    if response is None:
        error_type = ERROR_RESPONSE_MISSING
        status = _STATUS_NO_RESPONSE
    else:
        code = response.status
        if code < 100 or code > 599 or code >= (400 if is_client else 500):
            error_type = str(code)
            status = _STATUS_ERROR

    version = request.version or None
    route = exchange.route

    # span attributes
    attrs: dict[str, Any] = {HTTP_REQUEST_METHOD: method}
    if original is not None:
        attrs[HTTP_REQUEST_METHOD_ORIGINAL] = original
    if is_client:
        if server_host is not None:
            attrs[SERVER_ADDRESS] = server_host
            if server_port is not None:
                attrs[SERVER_PORT] = server_port
        if path is not None:
            host_text = host_h.strip(" \t") if host_h is not None else ""
            if target_scheme is not None:
                full = f"{target_scheme}://{authority}{path}"
            elif host_text:
                full = f"{scheme}://{host_text}{path}"
            elif conn.remote_address:
                full = f"{scheme}://{_format_address(conn.remote_address, conn.remote_port or None)}{path}"
            else:
                full = None
            if full is not None:
                if query is not None:
                    full = f"{full}?{query}"
                attrs[URL_FULL] = full
        attrs[URL_SCHEME] = scheme
    else:
        if path is not None:
            attrs[URL_PATH] = path
        if query is not None:
            attrs[URL_QUERY] = query
        attrs[URL_SCHEME] = scheme
        if server_host is not None:
            attrs[SERVER_ADDRESS] = server_host
            if server_port is not None:
                attrs[SERVER_PORT] = server_port
        client_addr = client_port = None
        if fwd_pairs is not None and "for" in fwd_pairs:
            f_host, f_port = _split_host_port(fwd_pairs["for"])
            if f_host and f_host != "unknown" and not f_host.startswith("_"):
                client_addr, client_port = f_host, f_port
        if client_addr is None and xff is not None:
            first = xff.split(",", 1)[0].strip(" \t")
            if first:
                client_addr = first
        if client_addr is None and conn.remote_address:
            client_addr, client_port = conn.remote_address, conn.remote_port or None
        if client_addr is not None:
            attrs[CLIENT_ADDRESS] = client_addr
            if client_port is not None:
                attrs[CLIENT_PORT] = client_port
        if conn.local_address:
            attrs[NETWORK_LOCAL_ADDRESS] = conn.local_address
            if conn.local_port:
                attrs[NETWORK_LOCAL_PORT] = conn.local_port
    if conn.remote_address:
        attrs[NETWORK_PEER_ADDRESS] = conn.remote_address
        if conn.remote_port:
            attrs[NETWORK_PEER_PORT] = conn.remote_port
    if version is not None:
        attrs[NETWORK_PROTOCOL_VERSION] = version
    if code is not None:
        attrs[HTTP_RESPONSE_STATUS_CODE] = code
    if ua is not None:
        attrs[USER_AGENT_ORIGINAL] = ua
    attrs[HTTP_REQUEST_BODY_SIZE] = request.body_size
    if response is not None:
        attrs[HTTP_RESPONSE_BODY_SIZE] = response.body_size
    if exchange.url_template is not None:
        attrs[URL_TEMPLATE] = exchange.url_template
    if route is not None:
        attrs[HTTP_ROUTE] = route
    if error_type is not None:
        attrs[ERROR_TYPE] = error_type
    if exchange.tid > 0:
        attrs[THREAD_ID] = exchange.tid
    tcp = exchange.tcp
    if tcp is not None:  # the network under the exchange (docs/telemetry.md)
        attrs[TCP_RETRANSMITS] = tcp.retransmits
        if tcp.srtt_us:
            attrs[TCP_RTT] = tcp.srtt_us / 1e6
    # Mesh facts worth auditing a trace by (never secrets: these names are fixed).
    for name, value in request.headers:
        if name in CAPTURED_REQUEST_HEADERS:
            attrs.setdefault(f"{HTTP_REQUEST_HEADER_TEMPLATE}.{name}", []).append(value)
    if response is not None:
        for name, value in response.headers:
            if name in CAPTURED_RESPONSE_HEADERS:
                attrs.setdefault(f"{HTTP_RESPONSE_HEADER_TEMPLATE}.{name}", []).append(value)

    # metric attributes (semconv order; sorted keys are not needed by consumers)
    mattrs: dict[str, Any] = {HTTP_REQUEST_METHOD: method}
    if code is not None:
        mattrs[HTTP_RESPONSE_STATUS_CODE] = code
    if is_client:
        if server_host is not None:
            mattrs[SERVER_ADDRESS] = server_host
            if server_port is not None:
                mattrs[SERVER_PORT] = server_port
    elif route is not None:
        mattrs[HTTP_ROUTE] = route
    mattrs[URL_SCHEME] = scheme
    if version is not None:
        mattrs[NETWORK_PROTOCOL_VERSION] = version
    if error_type is not None:
        mattrs[ERROR_TYPE] = error_type

    if role == Role.SERVER:
        kind = SpanKind.SERVER
    elif is_client:
        kind = SpanKind.CLIENT
    else:
        kind = SpanKind.INTERNAL

    name = f"{name_method} {route}" if route is not None else name_method
    return HttpSemantics(name, kind, attrs, mattrs, status, error_type, _parent(traceparents, tracestates))


# ---------------------------------------------------------------------------------------------
# single-purpose views (each runs describe(); use describe() when you need several)


def span_name(exchange: Exchange) -> str:
    method = exchange.request.method
    name_method = method if method in _known_methods else "HTTP"
    return f"{name_method} {exchange.route}" if exchange.route is not None else name_method


def span_kind(exchange: Exchange) -> SpanKind:
    role = exchange.connection.role
    if role == Role.SERVER:
        return SpanKind.SERVER
    if role == Role.CLIENT:
        return SpanKind.CLIENT
    return SpanKind.INTERNAL


def span_attributes(exchange: Exchange) -> dict[str, Any]:
    return describe(exchange).attributes


def span_status(exchange: Exchange) -> Status:
    return describe(exchange).status


def metric_attributes(exchange: Exchange) -> dict[str, Any]:
    return describe(exchange).metric_attributes


def parent_context(exchange: Exchange) -> ParentContext | None:
    traceparents = [v for k, v in exchange.request.headers if k == "traceparent"]
    if not traceparents:
        return None
    tracestates = [v for k, v in exchange.request.headers if k == "tracestate"]
    return _parent(traceparents, tracestates)


def process_attributes(info: Any) -> dict[str, Any]:
    """Span attributes naming the watched process, for when the Resource cannot (library mode):
    ``process.pid``, ``process.executable.name`` and ``otel_ebpf.service.name``.
    ``info`` is a :class:`otel_ebpf.processinfo.ProcessInfo`."""
    return {
        PROCESS_PID: info.pid,
        PROCESS_EXECUTABLE_NAME: info.executable_name,
        OTEL_EBPF_SERVICE_NAME: info.service_name,
    }
