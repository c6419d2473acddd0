"""Builders of RequestStart / Exchange pairs for one connection, as the HTTP receiver emits them.

Usage::

    app = Flow(pid=100, tid=101, role=Role.SERVER, local=("10.0.0.1", 8080), remote=("10.0.0.2", 40000))
    start = app.start("GET", "/users/1", headers=(("traceparent", TP),), ts=T0)
    stitcher.request_started(start)
    stitcher.consume(app.done(start, 200, T0 + 5_000))
"""

from __future__ import annotations

import itertools

from otel_ebpf.records import Connection, Exchange, Headers, HttpRequest, HttpResponse, RequestStart, Role

from ...factories import T0

_exchange_ids = itertools.count(1)  # fresh ids across every flow: the receiver's ids are unique per agent
_sock_ids = itertools.count(0xFFFF_8880_0000_0000, 0x100)  # kernel-looking struct sock addresses


class Flow:
    """One TCP connection seen from one process (``pid``); requests default to thread ``tid``."""

    def __init__(self, pid: int, tid: int, role: Role, *, local: tuple[str, int], remote: tuple[str, int],
                 fd: int = 7):
        self.tid = tid
        self.connection = Connection(
            pid=pid,
            fd=fd,
            sock_id=next(_sock_ids),
            family=6 if ":" in local[0] else 4,
            local_address=local[0],
            local_port=local[1],
            remote_address=remote[0],
            remote_port=remote[1],
            role=role,
        )

    def start(self, method: str = "GET", target: str = "/", headers: Headers = (), ts: int = T0, *,
              tid: int | None = None) -> RequestStart:
        """A request head on this connection, with a fresh exchange id."""
        return RequestStart(
            exchange_id=next(_exchange_ids),
            connection=self.connection,
            request=HttpRequest(method=method, target=target, version="1.1", headers=tuple(headers)),
            start_ns=ts,
            tid=self.tid if tid is None else tid,
        )

    def done(self, start: RequestStart, status: int = 200, end_ts: int | None = None) -> Exchange:
        """The Exchange completing ``start`` (same exchange id, thread and request)."""
        return Exchange(
            protocol="http1",
            connection=start.connection,
            request=start.request,
            response=HttpResponse(status=status, reason="OK" if status < 400 else "Error", version="1.1"),
            start_ns=start.start_ns,
            end_ns=start.start_ns + 1_000_000 if end_ts is None else end_ts,
            tid=start.tid,
            exchange_id=start.exchange_id,
        )
