"""Mesh test app on Python's ThreadingHTTPServer (one thread per connection, HTTP/1.1 keep-alive).

    python3 threaded_app.py --port P [--upstream http://127.0.0.1:Q] [--propagate none|forward]
                            [--sleep-ms N] [--record FILE]

Routes:
  GET /a/<n>  sleeps --sleep-ms, calls GET <upstream>/b/<n> from the same thread over one keep-alive
              connection per inbound connection, and answers 200 with B's body (502 if that failed).
              --propagate none sends no trace headers at all; --propagate forward copies the inbound
              traceparent, tracestate, x-b3-*, b3 and x-request-id headers verbatim.
  GET /b/<n>  sleeps --sleep-ms and answers 200 with a small body.

Each response goes out in one write, so keep-alive does not stall on Nagle + delayed ACK. With
--record, one JSON line per request (pid, native thread id, peer address, path, inbound headers in
wire order and case, headers added to the upstream request, status) is appended before the response
is written.
"""

import argparse
import http.client
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from mesh_headers import FORWARDED  # the apps run as scripts from this folder

args = None
record_lock = threading.Lock()


def record(entry):
    if args.record:
        line = json.dumps(entry) + "\n"
        with record_lock, open(args.record, "a") as f:
            f.write(line)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = None  # http.client.HTTPConnection, one per inbound connection

    def log_message(self, *_):
        pass

    def finish(self):
        if self.upstream is not None:
            self.upstream.close()
        super().finish()

    def _send(self, status, body):
        head = (
            f"HTTP/1.1 {status} {self.responses[status][0]}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.wfile.write(head.encode() + body)

    def _call_upstream(self, path, headers):
        for attempt in (1, 2):  # a pooled connection the peer closed meanwhile gets one retry
            if self.upstream is None:
                url = urlsplit(args.upstream)
                self.upstream = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
            try:
                self.upstream.request("GET", path, headers=headers)
                response = self.upstream.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                self.upstream.close()
                self.upstream = None
                if attempt == 2:
                    raise

    def do_GET(self):
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        if len(parts) != 2 or parts[0] not in ("a", "b"):
            self._send(404, b"no such route\n")
            return
        route, n = parts
        if args.sleep_ms:
            time.sleep(args.sleep_ms / 1000)
        sent = None
        if route == "b":
            status, body = 200, f"b{n} from {os.getpid()}\n".encode()
        elif not args.upstream:
            status, body = 500, b"no --upstream\n"
        else:
            sent = {}
            if args.propagate == "forward":
                sent = {k: v for k, v in self.headers.items() if k.lower() in FORWARDED}
            elif args.propagate == "sdk":
                sent = _sdk_client_headers(dict(self.headers.items()))
            try:
                upstream_status, body = self._call_upstream(f"/b/{n}", sent)
                status = 200 if upstream_status == 200 else 502
            except (http.client.HTTPException, OSError) as error:
                status, body = 502, f"upstream failed: {error}\n".encode()
        record(
            {
                "pid": os.getpid(),
                "tid": threading.get_native_id(),
                "peer": "{}:{}".format(*self.client_address),
                "path": self.path,
                "headers": list(self.headers.items()),
                "upstream_headers": sent,
                "status": status,
            }
        )
        self._send(status, body)


_TRACER = None


def _sdk_client_headers(inbound: dict[str, str]) -> dict[str, str]:
    """--propagate sdk: the app is instrumented with the OpenTelemetry SDK. It continues the inbound
    W3C context, starts its own CLIENT span and injects that span's context (a new span id)."""
    global _TRACER
    from opentelemetry.propagators.textmap import DefaultGetter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if _TRACER is None:
        _TRACER = TracerProvider().get_tracer("threaded_app")
    propagator = TraceContextTextMapPropagator()
    lowered = {k.lower(): v for k, v in inbound.items()}
    parent = propagator.extract(lowered, getter=DefaultGetter())
    out: dict[str, str] = {}
    with _TRACER.start_as_current_span("GET /b", context=parent, kind=SpanKind.CLIENT):
        propagator.inject(out)
    return out


def main():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", default="", help="base URL that /a/<n> calls /b/<n> on")
    parser.add_argument("--propagate", choices=("none", "forward", "sdk"), default="none")
    parser.add_argument("--sleep-ms", type=float, default=0)
    parser.add_argument("--record", default="", help="append one JSON line per request to this file")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
