"""A real Zipkin v2 collector endpoint for tests: what a Zipkin tracer (Envoy's, say) sent, decoded.

Usage::

    from otel_ebpf.testing import ZipkinReceiver

    with ZipkinReceiver() as receiver:
        ...  # point the tracer at receiver.endpoint + "/api/v2/spans" (HTTP_JSON)
        (span,) = receiver.wait_for_spans(1, where=lambda s: s.kind == "SERVER")
        assert span.tags["http.status_code"] == "200"

The receiver listens on a loopback port picked by the kernel and accepts
``POST /api/v2/spans`` with a Zipkin v2 JSON list of spans (``Content-Type:
application/json``, or none), plain or with ``Content-Encoding: gzip``, sized by
``Content-Length`` or chunked (Envoy's Zipkin tracer sends chunked bodies). It answers
``202 Accepted`` as Zipkin does; a malformed body gets ``400`` and is not kept,
another path ``404``, another media type ``415``.

Spans are kept in arrival order, until :meth:`ZipkinReceiver.clear`, as frozen
:class:`ZipkinSpan` records. Ids stay exactly as sent: a trace id may be 16 or
32 hex digits (Zipkin tracers send 64-bit ids unless told to use 128-bit ones).

``start()`` returns once the server listens; ``stop()`` is safe twice and before
``start()``. All methods are thread-safe.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any, Self

from otel_ebpf.testing._http import BadRequest as _BadRequest
from otel_ebpf.testing._http import ReceiverHandler, decompress, serve, shut_down

__all__ = ["ZipkinReceiver", "ZipkinSpan"]

SPANS_PATH = "/api/v2/spans"

_MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest body accepted, compressed or not; far above what a tracer batches (Envoy sends a few KiB)."""


@dataclass(frozen=True)
class ZipkinSpan:
    """One Zipkin v2 span. Absent optional fields are ``""``, ``0`` or empty."""

    trace_id: str  # hex as sent: 16 or 32 digits
    id: str  # 16 hex digits
    parent_id: str  # 16 hex digits, or "" for a root span
    name: str
    kind: str  # "SERVER", "CLIENT", "PRODUCER", "CONSUMER" or ""
    timestamp_us: int  # epoch microseconds
    duration_us: int
    local_service: str  # localEndpoint.serviceName
    tags: dict[str, str]
    shared: bool = False  # a server span sharing its id with the client span (B3 "shared span context")
    remote_service: str = ""  # remoteEndpoint.serviceName
    annotations: list[dict[str, Any]] = field(default_factory=list)  # timestamp, value
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # the span's JSON object


def _span(obj: Any) -> ZipkinSpan:
    if not isinstance(obj, dict):
        raise _BadRequest(HTTPStatus.BAD_REQUEST, f"a span must be a JSON object, got {type(obj).__name__}")
    for key in ("traceId", "id"):
        if not isinstance(obj.get(key), str) or not obj[key]:
            raise _BadRequest(HTTPStatus.BAD_REQUEST, f"span without {key}: {obj!r:.200}")
    local = obj.get("localEndpoint") or {}
    remote = obj.get("remoteEndpoint") or {}
    try:
        return ZipkinSpan(
            trace_id=obj["traceId"],
            id=obj["id"],
            parent_id=obj.get("parentId") or "",
            name=obj.get("name") or "",
            kind=obj.get("kind") or "",
            timestamp_us=int(obj.get("timestamp") or 0),
            duration_us=int(obj.get("duration") or 0),
            local_service=local.get("serviceName") or "",
            tags={str(k): str(v) for k, v in (obj.get("tags") or {}).items()},
            shared=bool(obj.get("shared", False)),
            remote_service=remote.get("serviceName") or "",
            annotations=list(obj.get("annotations") or []),
            raw=obj,
        )
    except (TypeError, ValueError, AttributeError) as error:
        raise _BadRequest(HTTPStatus.BAD_REQUEST, f"bad span {obj!r:.200}: {error}") from None


def _decode(body: bytes, encoding: str) -> list[ZipkinSpan]:
    body = decompress(body, encoding, _MAX_BODY_BYTES, deflate=False)
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise _BadRequest(HTTPStatus.BAD_REQUEST, f"not JSON: {error}") from None
    if not isinstance(document, list):
        raise _BadRequest(HTTPStatus.BAD_REQUEST, "a Zipkin v2 body is a JSON list of spans")
    return [_span(obj) for obj in document]


class ZipkinReceiver:
    """A Zipkin v2 HTTP collector on loopback that keeps what it receives. A context manager."""

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        self._host = host
        self._lock = threading.Condition()
        self._spans: list[ZipkinSpan] = []
        self._requests = 0
        self._state = "new"  # new -> started -> stopped
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle ----------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        """Bind and start serving; returns self. A receiver starts once."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"ZipkinReceiver already {self._state}")
            self._state = "started"

        class Handler(_Handler):
            receiver = self

        self._server, self._thread = serve(self._host, Handler, "zipkin-http")
        return self

    def stop(self) -> None:
        """Stop serving and close open (keep-alive) connections; kept spans stay readable. Safe twice."""
        with self._lock:
            if self._state == "stopped":
                return
            self._state = "stopped"
            self._lock.notify_all()
            connections = list(self._connections)
        if self._server is None:
            return
        shut_down(self._server, self._thread, lambda: connections)

    # -- address ------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """``http://HOST:PORT``; spans go to ``endpoint + "/api/v2/spans"``."""
        if self._server is None:
            raise RuntimeError("ZipkinReceiver is not started")
        return f"http://{self._host}:{self._server.server_address[1]}"

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("ZipkinReceiver is not started")
        return self._server.server_address[1]

    # -- accessors ----------------------------------------------------------

    def spans(self) -> list[ZipkinSpan]:
        with self._lock:
            return list(self._spans)

    @property
    def request_count(self) -> int:
        """Accepted POSTs (malformed ones are not counted)."""
        with self._lock:
            return self._requests

    def clear(self) -> None:
        """Forget every span received so far."""
        with self._lock:
            self._spans.clear()
            self._requests = 0

    def wait_for_spans(
        self,
        n: int = 1,
        *,
        timeout: float = 5.0,
        where: Callable[[ZipkinSpan], bool] | None = None,
    ) -> list[ZipkinSpan]:
        """Wait for at least ``n`` spans (matching ``where``) and return all matching ones.

        Raises ``TimeoutError`` naming what did arrive.
        """
        matching: list[ZipkinSpan] = []

        def ready() -> bool:
            nonlocal matching
            matching = [s for s in self._spans if where is None or where(s)]
            return len(matching) >= n

        with self._lock:
            if self._lock.wait_for(ready, timeout=timeout):
                return matching
            seen = ", ".join(f"{s.local_service}:{s.kind}:{s.name}" for s in self._spans[:20]) or "nothing"
            total = len(self._spans)
        raise TimeoutError(
            f"ZipkinReceiver: {n} matching span(s) not received within {timeout}s "
            f"({len(matching)} matched); received {total}: {seen}"
        )

    def _store(self, spans: list[ZipkinSpan]) -> None:
        with self._lock:
            self._spans.extend(spans)
            self._requests += 1
            self._lock.notify_all()


class _Handler(ReceiverHandler):
    receiver: ZipkinReceiver
    protocol_version = "HTTP/1.1"  # Envoy's collector cluster keeps its connection alive
    server_version = "otel-ebpf-ZipkinReceiver"
    max_body_bytes = _MAX_BODY_BYTES

    def _connection_registry(self) -> tuple[threading.Condition, set[socket.socket]]:
        return self.receiver._lock, self.receiver._connections

    def do_POST(self) -> None:
        try:
            body = self._read_body()  # always drained, so keep-alive stays in step
            if self.path.split("?", 1)[0] != SPANS_PATH:
                raise _BadRequest(HTTPStatus.NOT_FOUND, f"no Zipkin endpoint at {self.path}")
            content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            if content_type not in ("", "application/json"):
                raise _BadRequest(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"unsupported Content-Type {content_type!r}")
            encoding = (self.headers.get("Content-Encoding") or "").strip().lower()
            self.receiver._store(_decode(body, encoding))
            self._reply(HTTPStatus.ACCEPTED, b"")
        except _BadRequest as error:
            self._reply(error.status, str(error).encode("utf-8"))

    def _reply(self, status: HTTPStatus, payload: bytes) -> None:
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\n"
            f"Server: {self.server_version}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(payload)}\r\n"
        )
        if self.close_connection:
            head += "Connection: close\r\n"
        self.wfile.write(head.encode("ascii") + b"\r\n" + payload)  # one write: no Nagle stall on keep-alive
