"""Protocol detection per connection: HTTP/1.x or HTTP/2, from the first bytes seen.

Usage::

    session = DetectingSession(connection, http1_stats=s1, http2_stats=s2, midstream=False)
    session.on_request = stitcher.request_started
    exchanges = session.on_data(direction, data, ts_first, ts_last, missing=0, tid=tid)

The first chunk that carries bytes decides: the HTTP/2 connection preface (h2c prior knowledge,
and what a TLS-less gRPC channel sends) selects HTTP/2, and so does a plausible run of HTTP/2
frame headers (a server's SETTINGS seen before the client's preface, or a connection picked up
midstream); anything else goes to the HTTP/1 parser, which drops non-HTTP connections itself
(counted). The chosen session then gets every chunk.

``Upgrade: h2c`` is followed: when an HTTP/1.1 request asking for h2c is answered with 101, an
HTTP/2 session takes over from the bytes right after the 101 head, the upgrade request becomes its
stream 1 (same exchange id: one exchange, whose response is the HTTP/2 one), and the 101 itself is
not reported as an exchange of its own. Other upgrades (WebSocket, CONNECT tunnels) still end the
HTTP/1 session after reporting the 101.
"""

from __future__ import annotations

from collections.abc import Callable

from ..protocols.http1 import Http1Session, Http1Stats
from ..records import Connection, Direction, Exchange, RequestStart

__all__ = ["DetectingSession"]

try:  # HTTP/2 support is optional at import time (the parser module may be absent in a slim build)
    from ..protocols.http2 import PREFACE, Http2Session, Http2Stats, looks_like_http2
except ImportError:  # pragma: no cover
    PREFACE, Http2Session, Http2Stats, looks_like_http2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", None, None, None


def _asks_h2c(value: str | None) -> bool:
    return value is not None and any(p.strip().lower() == "h2c" for p in value.split(","))


class DetectingSession:
    __slots__ = ("_conn", "_http1_stats", "_http2_stats", "_inner", "_midstream", "on_request")

    def __init__(self, connection: Connection, *, http1_stats: Http1Stats, http2_stats=None,
                 midstream: bool = False):
        self._conn = connection
        self._http1_stats = http1_stats
        self._http2_stats = http2_stats
        self._midstream = midstream
        self._inner = None
        self.on_request: Callable[[RequestStart], None] | None = None

    @property
    def dead(self) -> bool:
        return self._inner is not None and self._inner.dead

    @property
    def connection(self) -> Connection:
        return self._inner.connection if self._inner is not None else self._conn

    @property
    def protocol(self) -> str:
        if self._inner is None:
            return "unknown"
        return "http2" if Http2Session is not None and isinstance(self._inner, Http2Session) else "http1"

    def _choose(self, data: bytes) -> None:
        # looks_like_http2 also accepts a server's SETTINGS that reached us before the client's preface
        h2 = Http2Session is not None and self._http2_stats is not None and looks_like_http2(data)
        if h2:
            self._inner = Http2Session(self._conn, stats=self._http2_stats, midstream=self._midstream)
        else:
            self._inner = Http1Session(self._conn, stats=self._http1_stats, midstream=self._midstream)
        self._inner.on_request = self.on_request

    def on_data(self, direction: Direction, data: bytes, ts_first: int, ts_last: int, *, missing: int = 0,
                tid: int = 0) -> list[Exchange]:
        if self._inner is None:
            if not data:
                return []  # nothing to decide on yet (e.g. sendfile bytes): wait for real bytes
            self._choose(data)
        inner = self._inner
        out = inner.on_data(direction, data, ts_first, ts_last, missing=missing, tid=tid)
        if out and inner.dead and self._http2_stats is not None and type(inner) is Http1Session:
            self._follow_h2c(inner, direction, out, ts_first, ts_last, tid)
        return out

    def _follow_h2c(self, http1: Http1Session, direction: Direction, out: list[Exchange], ts_first: int,
                    ts_last: int, tid: int) -> None:
        """Hand an h2c upgrade over to an HTTP/2 session (see the module docstring); edits ``out``."""
        rest = http1.after_switch(direction)
        if rest is None:
            return
        for i, ex in enumerate(out):
            response = ex.response
            if (response is not None and response.status == 101 and _asks_h2c(ex.request.header("upgrade"))
                    and _asks_h2c(response.header("upgrade"))):
                break
        else:
            return
        del out[i]
        h2 = Http2Session(http1.connection, stats=self._http2_stats, upgraded=True)
        h2.on_request = self.on_request
        h2.adopt_upgrade_request(ex.request, ex.start_ns, ex.tid, ex.exchange_id)
        self._inner = h2
        data, missing = rest
        if data or missing:
            out += h2.on_data(direction, data, ts_first, ts_last, missing=missing, tid=tid)

    def on_close(self, ts: int) -> list[Exchange]:
        return self._inner.on_close(ts) if self._inner is not None else []
