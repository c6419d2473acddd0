"""IR records: what receivers emit and processors transform.

Usage::

    from otel_ebpf.records import Exchange, Connection
    def consume(exchange: Exchange) -> None:
        print(exchange.request.method, exchange.request.target, exchange.response.status)

Records are immutable dataclasses with slots; processors return new ones
(``dataclasses.replace``). Every timestamp in a record is wall-clock
nanoseconds since the Unix epoch: receivers convert the kernel's
CLOCK_MONOTONIC stamps once, in :mod:`otel_ebpf.bpf.clock`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

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


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request and its response on one connection.

    ``start_ns`` is when the first request byte was seen, ``end_ns`` when the last
    response byte was seen (or the connection closed / the exchange was given up).
    ``response`` is None when the connection ended before any response.
    """

    protocol: str  # "http1"
    connection: Connection
    request: HttpRequest
    response: HttpResponse | None
    start_ns: int
    end_ns: int
    tid: int = 0  # thread that handled the request (server: read it; client: wrote it)
    warnings: tuple[str, ...] = field(default=())  # parse warnings, e.g. "response body truncated"
    route: str | None = None  # from configured route patterns only (processors.routes)
    url_template: str | None = None  # low-cardinality template guessed from the path

    @property
    def role(self) -> Role:
        return self.connection.role
