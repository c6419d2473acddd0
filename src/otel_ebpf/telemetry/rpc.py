"""gRPC exchanges as RPC spans and metrics (OpenTelemetry RPC semantic conventions, release candidate).

Usage::

    sem = describe(exchange)          # semantics.describe dispatches here for protocol "grpc"
    sem.name, sem.attributes, sem.status, sem.metrics

- span name ``{rpc.method}`` (fully qualified, ``helloworld.Greeter/SayHello``); a path that is not
  ``/<service>/<method>``, or a call the server answered UNIMPLEMENTED, gets ``rpc.method = _OTHER``
  (with ``rpc.method_original``) and the span name ``grpc``;
- ``rpc.system.name = grpc``, ``rpc.response.status_code`` = the status name (``OK``, ``NOT_FOUND``)
  from ``grpc-status`` in the trailers or a Trailers-Only response; without it, from the HTTP status
  (gRPC's HTTP-to-status mapping), ``CANCELLED`` for a stream reset with CANCEL, else ``UNKNOWN``;
- status ERROR: on clients for every non-OK status; on servers only for UNKNOWN, DEADLINE_EXCEEDED,
  UNIMPLEMENTED, INTERNAL, UNAVAILABLE and DATA_LOSS;
- metrics ``rpc.server.call.duration`` / ``rpc.client.call.duration`` (seconds);
- with ``OTEL_SEMCONV_STABILITY_OPT_IN`` containing ``rpc/dup``, also the older experimental
  ``rpc.system``, ``rpc.service``, numeric ``rpc.grpc.status_code`` and the ``rpc.server.duration`` /
  ``rpc.client.duration`` histograms in milliseconds. (``rpc.method`` keeps the new, fully qualified
  value: the two conventions use the same key.)
- message counts and sizes under the project prefix: ``otel_ebpf.rpc.request.size`` /
  ``otel_ebpf.rpc.response.size`` (bytes of DATA, gRPC framing included) and
  ``otel_ebpf.rpc.request.messages`` / ``otel_ebpf.rpc.response.messages`` (gRPC messages seen).
"""

from __future__ import annotations

import os
import re
from typing import Any

from opentelemetry.semconv._incubating.attributes.rpc_attributes import (
    RPC_GRPC_STATUS_CODE,
    RPC_METHOD,
    RPC_METHOD_ORIGINAL,
    RPC_RESPONSE_STATUS_CODE,
    RPC_SERVICE,
    RPC_SYSTEM,
    RPC_SYSTEM_NAME,
)
from opentelemetry.semconv._incubating.metrics.rpc_metrics import (
    RPC_CLIENT_CALL_DURATION,
    RPC_CLIENT_DURATION,
    RPC_SERVER_CALL_DURATION,
    RPC_SERVER_DURATION,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_ebpf.records import Exchange, Role

__all__ = ["describe_rpc", "GRPC_STATUS_NAMES", "grpc_status", "rpc_dup_enabled"]

GRPC_STATUS_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)
_SERVER_ERRORS = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})
# gRPC's mapping of HTTP statuses for responses that carry no grpc-status (doc/http-grpc-status-mapping.md)
_HTTP_TO_GRPC = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
_PATH = re.compile(r"/([^/?#]+)/([^/?#]+)")
_RPC_ATTRIBUTES_ON_METRICS = (RPC_SYSTEM_NAME, RPC_METHOD, RPC_RESPONSE_STATUS_CODE, SERVER_ADDRESS, SERVER_PORT,
                              ERROR_TYPE)


def rpc_dup_enabled(environ=os.environ) -> bool:
    return "rpc/dup" in {v.strip() for v in environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "").split(",")}


_DUP = rpc_dup_enabled()


def grpc_status(exchange: Exchange) -> int:
    """The call's gRPC status code, by the rules in the module docstring."""
    response = exchange.response
    if response is not None:
        for fields in (response.trailers, response.headers):
            for name, value in fields:
                if name == "grpc-status":
                    try:
                        code = int(value.strip())
                    except ValueError:
                        return 2
                    return code if 0 <= code < len(GRPC_STATUS_NAMES) else 2
        if response.status != 200 and response.status in _HTTP_TO_GRPC:
            return _HTTP_TO_GRPC[response.status]
    if any("CANCEL" in w for w in exchange.warnings):
        return 1
    return 2


def describe_rpc(exchange: Exchange, http):
    """RPC semantics for a gRPC exchange; ``http`` is its HTTP description (addresses are reused)."""
    is_server = exchange.connection.role == Role.SERVER
    path = exchange.request.target
    m = _PATH.fullmatch(path)
    code = grpc_status(exchange)
    status_name = GRPC_STATUS_NAMES[code]
    attrs: dict[str, Any] = {RPC_SYSTEM_NAME: "grpc"}
    if m and not (is_server and status_name == "UNIMPLEMENTED"):
        method = f"{m.group(1)}/{m.group(2)}"
        attrs[RPC_METHOD] = method
        name = method
    else:
        attrs[RPC_METHOD] = "_OTHER"
        if path:
            attrs[RPC_METHOD_ORIGINAL] = path.lstrip("/")
        name = "grpc"
    attrs[RPC_RESPONSE_STATUS_CODE] = status_name
    for key in (SERVER_ADDRESS, SERVER_PORT, "network.peer.address", "network.peer.port", "client.address",
                "client.port", "network.local.address", "network.local.port", "network.protocol.version",
                "user_agent.original", "thread.id", "otel_ebpf.tcp.retransmits", "otel_ebpf.tcp.rtt"):
        if key in http.attributes:
            attrs[key] = http.attributes[key]
    for key, value in http.attributes.items():
        if key.startswith(("http.request.header.", "http.response.header.")):
            attrs[key] = value
    attrs["otel_ebpf.rpc.request.size"] = exchange.request.body_size
    if exchange.response is not None:
        attrs["otel_ebpf.rpc.response.size"] = exchange.response.body_size
    sent, received = exchange.rpc_messages
    if sent or received:  # length-prefixed gRPC messages seen in DATA frames (streaming calls have many)
        attrs["otel_ebpf.rpc.request.messages"] = sent
        attrs["otel_ebpf.rpc.response.messages"] = received
    error = status_name != "OK" and (not is_server or status_name in _SERVER_ERRORS)
    if error:
        attrs[ERROR_TYPE] = status_name
    if _DUP:
        attrs[RPC_SYSTEM] = "grpc"
        if m:
            attrs[RPC_SERVICE] = m.group(1)
        attrs[RPC_GRPC_STATUS_CODE] = code
    status = Status(StatusCode.ERROR, status_name) if error else Status(StatusCode.UNSET)
    mattrs = {k: attrs[k] for k in _RPC_ATTRIBUTES_ON_METRICS if k in attrs}
    if _DUP:
        mattrs.update({k: attrs[k] for k in (RPC_SYSTEM, RPC_SERVICE, RPC_GRPC_STATUS_CODE) if k in attrs})
    if is_server:
        kind, metrics = SpanKind.SERVER, (RPC_SERVER_CALL_DURATION,) + ((RPC_SERVER_DURATION,) if _DUP else ())
    elif exchange.connection.role == Role.CLIENT:
        kind, metrics = SpanKind.CLIENT, (RPC_CLIENT_CALL_DURATION,) + ((RPC_CLIENT_DURATION,) if _DUP else ())
    else:
        kind, metrics = SpanKind.INTERNAL, ()
    return type(http)(name, kind, attrs, mattrs, status, status_name if error else None, http.parent, metrics)
