"""HTTP server plumbing shared by the test receivers (otlp_receiver, zipkin_receiver): request
bodies read by Content-Length or chunked, gzip/deflate decoding with a size bound, open keep-alive
connections tracked so ``stop`` can close them, and the serving thread's start and stop."""

from __future__ import annotations

import gzip
import io
import socket
import threading
import zlib
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class BadRequest(Exception):
    """A request refused with ``status``; the message is the reply's text."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class ReceiverHandler(BaseHTTPRequestHandler):
    """A keep-alive handler that registers its connection while open and reads bounded bodies.

    Subclasses set ``max_body_bytes`` and implement ``_connection_registry``."""

    max_body_bytes: int

    def _connection_registry(self) -> tuple[threading.Condition, set[socket.socket]]:
        """The lock guarding the receiver's set of open connections, and that set."""
        raise NotImplementedError

    def setup(self) -> None:
        super().setup()
        lock, connections = self._connection_registry()
        with lock:
            connections.add(self.connection)

    def finish(self) -> None:
        lock, connections = self._connection_registry()
        with lock:
            connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():  # what Envoy's Zipkin tracer sends
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            raise BadRequest(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if length > self.max_body_bytes:
            self.close_connection = True
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {length} bytes")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        parts, total = [], 0
        while True:
            size_line = self.rfile.readline(1024)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise BadRequest(HTTPStatus.BAD_REQUEST, "bad chunk size") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers, then the blank line
                    pass
                return b"".join(parts)
            total += size
            if total > self.max_body_bytes:
                self.close_connection = True
                raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"chunked body over {self.max_body_bytes} bytes")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)  # CRLF after the chunk


def decompress(body: bytes, encoding: str, max_bytes: int, *, deflate: bool) -> bytes:
    """``body`` decoded per its Content-Encoding ("", "identity", "gzip", and "deflate" if
    ``deflate``); a decoded body over ``max_bytes`` is refused (413), a broken one 400, another
    encoding 415. Without ``deflate``, a ``zlib.error`` from a corrupt gzip stream propagates
    (the Zipkin receiver's behaviour)."""
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error) if deflate else (OSError, EOFError)
    try:
        if encoding == "gzip":
            return _bounded(gzip.GzipFile(fileobj=io.BytesIO(body)).read(max_bytes + 1), max_bytes)
        if deflate and encoding == "deflate":
            inflater = zlib.decompressobj()
            return _bounded(inflater.decompress(body, max_bytes + 1), max_bytes)
    except errors as error:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"bad {encoding} body: {error}") from None
    if encoding not in ("identity", ""):
        raise BadRequest(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"unsupported Content-Encoding {encoding!r}")
    return body


def _bounded(data: bytes, max_bytes: int) -> bytes:
    if len(data) > max_bytes:
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"decompressed body over {max_bytes} bytes")
    return data


def serve(host: str, handler: type[BaseHTTPRequestHandler], thread_name: str, *,
          port: int = 0) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """A ThreadingHTTPServer on ``host:port`` (0: picked by the kernel), served by a started daemon thread."""
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=thread_name,
                              daemon=True)
    thread.start()
    return server, thread


def shut_down(server: ThreadingHTTPServer, thread: threading.Thread | None,
              connections: Callable[[], Iterable[socket.socket]]) -> None:
    """Stops ``server``, then shuts down the connections ``connections()`` gives (open keep-alive
    ones, whose handler threads would otherwise wait for a next request), closes it and joins ``thread``."""
    server.shutdown()
    for connection in connections():
        try:
            connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    server.server_close()
    if thread is not None:
        thread.join()
