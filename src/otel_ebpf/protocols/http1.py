"""HTTP/1.x: a sans-I/O parser for one direction and the exchange assembler for one connection.

Usage::

    from otel_ebpf.protocols.http1 import Http1Session, Http1Stats
    from otel_ebpf.records import Direction

    stats = Http1Stats()                          # one per receiver, shared by its sessions
    session = Http1Session(connection, stats=stats)
    for exchange in session.on_data(Direction.INGRESS, data, ts_first, ts_last, missing=0, tid=tid):
        consume(exchange)
    ...
    for exchange in session.on_close(ts):         # close-delimited bodies end, unanswered requests flush
        consume(exchange)
    if session.dead: ...                          # not HTTP/1 (or upgraded): stop feeding it

One level down, :class:`Http1Parser` turns the bytes of one direction into
events (:class:`RequestHead`, :class:`ResponseHead`, :class:`MessageEnd`,
:class:`ParseError`, :class:`Resync`, :class:`Skipped`, :class:`ProtocolSwitch`),
in the manner of h11: bytes and timestamps in, events out, no clocks, no sockets,
and "need more data" is simply an empty list.

What the input looks like
-------------------------
Every read/write-family syscall on a TCP socket becomes one chunk: ``data``, the
first ``max_capture_bytes`` of its payload, and ``missing``, how many more bytes
the syscall moved that were not captured. Chunks of one direction arrive in order.
``ts_first``/``ts_last`` are the times of the chunk's first and last byte.

Design
------
* **Timing.** An exchange starts at ``ts_first`` of the chunk holding the first
  request byte and ends at ``ts_last`` of the chunk holding the last response byte;
  ``tid`` is the tid of the chunk holding the first request byte.
* **Uncaptured bytes.** Where the framing says how long the unseen part is (a
  Content-Length body, the data of one chunk of a chunked body, a close-delimited
  body) the missing bytes are just counted into ``body_size``. Where they may hold
  framing (a head not yet complete, chunk-size lines, trailers, or the start of
  the next message), the parser *resyncs*: the interrupted message ends at once,
  flagged truncated, with a warning such as ``"response body truncated"`` (a head
  cut short is still reported from what was captured of its start line, so the
  request/response count stays right), and the parser discards chunks until one
  *begins* with a complete start line of its direction (or, if the capture cut
  that chunk, with bytes that all fit the start-line grammar). Heads inside a
  discarded chunk are not looked for: on a non-pipelined connection every message
  starts a new read/write, and searching bodies would find false heads. The price:
  pipelined messages lost in a gap are not counted, so their answers become
  orphans (dropped, never paired with the wrong request).
* **Pairing** is FIFO. A final response claims the oldest request still waiting
  when its head is parsed and completes the exchange at its end. 1xx interim
  responses are skipped; ``101 Switching Protocols`` and a 2xx answer to CONNECT
  are paired, then the session stops (:attr:`Http1Session.dead`, not counted as
  non-HTTP). A response with no request waiting is an orphan: counted, dropped.
* **Pending overflow.** At most ``max_pending`` requests wait for responses. One
  more evicts the oldest, reported at once as ``Exchange(response=None)`` with the
  warning ``"response not seen: too many requests pending"`` and counted in
  ``dropped_pending``. The session remembers how many evicted requests are still
  owed a response and discards that many responses first, so a late response can
  never be paired with a later request. If more than :data:`MAX_UNANSWERED`
  evicted requests are owed, the response direction is evidently not visible
  (e.g. sent with sendfile): the session stops pairing and reports each request
  as it completes, with ``response=None``.
* **Not HTTP/1.** Bytes that cannot start a request/status line where a message
  must start, before any message was parsed, make the session dead
  (``parse_errors`` and ``non_http_connections`` counted once). After messages were
  parsed, the same is a framing error: counted in ``parse_errors`` and resynced.
* **Midstream.** ``midstream=True`` (attached to a connection already open): both
  directions start out discarding chunks until one begins with a start line;
  responses before the first request are orphans. Without a request head in
  :data:`MIDSTREAM_MAX_SKIP_CHUNKS` chunks or :data:`MIDSTREAM_MAX_SKIP_BYTES`
  bytes, the session gives up (dead, counted as non-HTTP).
* **Role.** With ``Role.UNKNOWN`` the first parsed head decides: a request head
  in INGRESS (or a response head in EGRESS) means SERVER, the other way CLIENT.
  Exchanges carry the connection with the inferred role.
* **Bounded.** Heads in progress (``max_head_bytes``), chunk-size lines, trailers,
  the pending queue and the count of owed responses all have limits (the
  ``MAX_*`` constants below, each with its reason). Nothing raises: a bug would be
  contained as a fatal :class:`ParseError` ("internal error ...").
* **Leniency.** This is a passive observer of traffic that a real peer accepted:
  bare-LF line ends, obs-folded lines, empty reason phrases and malformed header
  lines are tolerated (the last with a warning). Only what decides framing is
  strict: start lines, Content-Length, Transfer-Encoding, chunk-size lines.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from otel_ebpf.protocols.common import SmallQueue, exchange_ids
from otel_ebpf.records import (
    Connection,
    Direction,
    Exchange,
    Headers,
    HttpRequest,
    HttpResponse,
    RequestStart,
    Role,
)

__all__ = [
    "MAX_CHUNK_LINE_BYTES",
    "MAX_HEAD_BYTES",
    "MAX_PENDING",
    "MAX_UNANSWERED",
    "MIDSTREAM_MAX_SKIP_BYTES",
    "MIDSTREAM_MAX_SKIP_CHUNKS",
    "Http1Parser",
    "Http1Session",
    "Http1Stats",
    "MessageEnd",
    "MessageKind",
    "ParseError",
    "ProtocolSwitch",
    "RequestHead",
    "ResponseHead",
    "Resync",
    "Skipped",
]

# ---------------------------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------------------------

MAX_HEAD_BYTES = 16384
"""Largest message head (start line + header lines) buffered while incomplete. Servers
refuse far less (nginx 8 KiB per line by default, Apache 8 KiB per field, Node 16 KiB in
all), so a longer head is garbage or an attack; the bound also caps memory per direction."""

MAX_CHUNK_LINE_BYTES = 4096
"""Longest chunk-size line (hex size plus chunk extensions). Extensions are almost never
sent; a line this long means we are not looking at chunk framing."""

MAX_PENDING = 64
"""Requests waiting for a response on one connection. Real clients pipeline a handful at
most; more means the responses are not visible to us, and the queue must stay bounded."""

MAX_UNANSWERED = 1024
"""Evicted requests still owed a response. Beyond this the response direction is taken as
invisible (sendfile, splice, io_uring...) and the session stops pairing, so that the count
of owed responses stays bounded and no late response is ever paired with a later request."""

# When attached midstream: chunks and bytes (of the request direction, or of both while the
# role is unknown) skipped before a request head is found. On a live HTTP/1 connection a request
# starts a read/write within a few calls; a stream carrying this much without one is not
# something we can follow.
MIDSTREAM_MAX_SKIP_CHUNKS = 32
MIDSTREAM_MAX_SKIP_BYTES = 65536

_METHOD_MAX = 32  # longest accepted method token; registered ones are <= 17 ("UPDATEREDIRECTREF")
_PREFIX_CHECK = 64  # bytes of an incomplete start line checked against the start-line grammar

# ---------------------------------------------------------------------------------------------
# Grammar
# ---------------------------------------------------------------------------------------------

_TOKEN = r"[-!#$%&'*+.^_`|~0-9A-Za-z]"
_TARGET = r"[^\x00-\x20\x7f]+"
_REQUEST_LINE_SRC = r"(%s{1,%d}) (%s) HTTP/1\.([01])" % (_TOKEN, _METHOD_MAX, _TARGET)
_STATUS_LINE_SRC = r"HTTP/1\.([01]) ([0-9]{3})(?: ([^\r\n]*))?"


def _nested_prefix(parts: list[str]) -> str:
    """A regex matching every prefix of the concatenation of ``parts`` (each part atomic)."""
    out = ""
    for part in reversed(parts):
        out = "(?:%s%s)?" % (part, out) if out else "(?:%s)?" % part
    return out


_HTTP_VERSION_PARTS = ["H", "T", "T", "P", "/", "1", r"\.", "[01]", r"\r"]

# Full start lines (str: used on decoded heads).
_REQUEST_LINE = re.compile(_REQUEST_LINE_SRC)
_STATUS_LINE = re.compile(_STATUS_LINE_SRC)
# Full start lines (bytes, a trailing CR allowed: used to sniff raw chunks).
_REQUEST_LINE_B = re.compile((_REQUEST_LINE_SRC + r"\r?").encode())
_STATUS_LINE_B = re.compile((_STATUS_LINE_SRC + r"\r?").encode())
# Every prefix of a start line (bytes): decides "could still become a head" early, so a TLS
# ClientHello or a binary protocol is recognised from its first bytes, not after 16 KiB.
_REQUEST_PREFIX_B = re.compile(
    (r"%s{1,%d}(?: (?:%s%s)?)?" % (_TOKEN, _METHOD_MAX, _TARGET, _nested_prefix([" "] + _HTTP_VERSION_PARTS))).encode()
)
_STATUS_PREFIX_B = re.compile(
    _nested_prefix(_HTTP_VERSION_PARTS[:8] + [" ", "[0-9]", "[0-9]", "[0-9]", r"(?: [^\r\n]*)?\r?"]).encode()
)
# Start lines cut short by capture truncation: what can still be read of them.
_REQUEST_PARTIAL = re.compile(r"(%s{1,%d})(?: (%s)?)?" % (_TOKEN, _METHOD_MAX, _TARGET))
_STATUS_PARTIAL = re.compile(r"HTTP/1\.([01]) ([0-9]{3})(?: ([^\r\n]*))?")
# Shortcuts of the start-line grammar for what nearly all traffic looks like.
_VERSIONS = {"HTTP/1.1": "1.1", "HTTP/1.0": "1.0"}
_STATUS_PREFIXES = frozenset({"HTTP/1.1 ", "HTTP/1.0 "})
_COMMON_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE"})
_CHUNK_SIZE_LINE = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?")


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


class MessageKind(enum.StrEnum):
    """What one direction of a connection carries."""

    REQUEST = "request"
    RESPONSE = "response"


_REQUEST = MessageKind.REQUEST  # module constants: enum attribute lookups are slow on the hot path
_RESPONSE = MessageKind.RESPONSE


@dataclass(slots=True)
class RequestHead:
    """A request head was parsed. ``ts``/``tid``: the chunk holding its first byte."""

    method: str
    target: str
    version: str
    headers: Headers
    ts: int
    tid: int = 0
    truncated: bool = False  # head cut short by capture truncation or a size limit
    warning: str | None = None


@dataclass(slots=True)
class ResponseHead:
    """A response head was parsed. Interim (1xx except 101) heads have no :class:`MessageEnd`."""

    status: int
    reason: str
    version: str
    headers: Headers
    ts: int
    tid: int = 0
    truncated: bool = False
    warning: str | None = None

    @property
    def interim(self) -> bool:
        return 100 <= self.status < 200 and self.status != 101


@dataclass(slots=True)
class MessageEnd:
    """The message whose head came last ended. ``ts``: ``ts_last`` of the chunk holding its last
    byte (or the last chunk seen, when it was cut short). ``truncated``: ended early, see ``warning``."""

    body_size: int
    ts: int
    trailers: Headers = ()
    truncated: bool = False
    warning: str | None = None


@dataclass(slots=True)
class ParseError:
    """Bytes that break HTTP/1 framing. ``fatal``: nothing was ever parsed on this stream, so it is
    taken as not HTTP/1 and the parser stops; otherwise a :class:`Resync` follows."""

    reason: str
    ts: int
    fatal: bool


@dataclass(slots=True)
class Resync:
    """Framing was lost (uncaptured bytes or a framing error); chunks are discarded until one begins
    with a start line. A message that was in progress has just ended with ``truncated=True``."""

    reason: str
    ts: int


@dataclass(slots=True)
class Skipped:
    """``nbytes`` (captured and uncaptured) were discarded while looking for a start line."""

    nbytes: int
    ts: int


@dataclass(slots=True)
class ProtocolSwitch:
    """101 Switching Protocols or a 2xx answer to CONNECT: what follows is not HTTP/1."""

    ts: int


Event = RequestHead | ResponseHead | MessageEnd | ParseError | Resync | Skipped | ProtocolSwitch

# ---------------------------------------------------------------------------------------------
# Parser of one direction
# ---------------------------------------------------------------------------------------------

# States. Transitions (all in Http1Parser):
#
#   state         on                                        next
#   _HEAD         complete head, body by Content-Length     _BODY
#   _HEAD         complete head, chunked                    _CHUNK_SIZE
#   _HEAD         complete response head, no length         _UNTIL_CLOSE
#   _HEAD         complete head, no body / 1xx interim      _HEAD
#   _HEAD         101, or 2xx answering CONNECT             _SWITCHED
#   _BODY         last body byte                            _HEAD
#   _CHUNK_SIZE   size line > 0 / = 0                       _CHUNK_DATA / _TRAILERS
#   _CHUNK_DATA   last byte of the chunk                    _CHUNK_CRLF
#   _CHUNK_CRLF   empty line                                _CHUNK_SIZE
#   _TRAILERS     empty line                                _HEAD
#   _UNTIL_CLOSE  close()                                   _DEAD
#   any           framing error after a message was parsed  _HUNT
#   any           uncaptured bytes that may hold framing    _HUNT
#   _HUNT         a chunk begins with a whole start line    _HEAD (tentative: failure -> _HUNT)
#                 (or is all start-line prefix, cut by the capture limit)
#   _HEAD         not a start line, nothing parsed yet      _DEAD
#   any           close()                                   _DEAD
_HEAD = 0
_BODY = 1
_CHUNK_SIZE = 2
_CHUNK_DATA = 3
_CHUNK_CRLF = 4
_TRAILERS = 5
_UNTIL_CLOSE = 6
_HUNT = 7
_SWITCHED = 8  # states from here on ignore all input
_DEAD = 9

_CRLF_BYTES = b"\r\n"


class Http1Parser:
    """Sans-I/O parser of the HTTP/1.x messages of one direction of one connection.

    ``kind`` is what the direction carries, or None when unknown: then the first head decides
    (and the owner may set ``kind`` later, e.g. once the other direction decided).
    ``request_methods`` (response parsers): methods of the requests whose responses have not begun,
    oldest first, appended by the owner; the parser pops one per final response head to know
    whether that response can have a body (HEAD, CONNECT). Absent or empty: assumed GET.
    ``established`` is set once this stream (or, set by the owner, the other direction) parsed a
    head; before that, bytes that cannot start a message are fatal (not HTTP/1).

    Never raises for any input.
    """

    __slots__ = (
        "kind",
        "established",
        "body_size",
        "_state",
        "_methods",
        "_max_head",
        "_buf",
        "_line",
        "_line_ok",
        "_remaining",
        "_head_ts",
        "_head_tid",
        "_last_ts",
        "_tentative",
        "_in_message",
        "_trailers",
        "_trailer_bytes",
        "after_switch",
    )

    def __init__(
        self,
        kind: MessageKind | None,
        *,
        midstream: bool = False,
        max_head_bytes: int = MAX_HEAD_BYTES,
        request_methods: SmallQueue | None = None,
    ) -> None:
        self.kind = kind
        self.established = False
        self.body_size = 0  # body bytes of the message in progress so far
        self._state = _HUNT if midstream else _HEAD
        self._methods: SmallQueue = request_methods if request_methods is not None else SmallQueue()
        self._max_head = max_head_bytes
        self._buf: bytes | bytearray = b""  # incomplete head (a bytearray once one is buffered)
        self._line = b""  # incomplete chunk-size / trailer line
        self._line_ok = False  # the start line in _buf was checked complete and valid
        self._remaining = 0  # bytes left of the Content-Length body or of the current chunk
        self._head_ts = 0
        self._head_tid = 0
        self._last_ts: int | None = None
        self._tentative = False  # head found while hunting: if it fails to parse, keep hunting
        self._in_message = False  # a head was emitted and its MessageEnd not yet
        self._trailers: list[tuple[str, str]] | tuple = ()  # a list while reading trailers
        self._trailer_bytes = 0
        # After a protocol switch: the rest of the chunk that carried the switching head, as
        # (captured bytes, uncaptured bytes after them), for whoever parses the new protocol.
        self.after_switch: tuple[bytes, int] | None = None

    # -- public -------------------------------------------------------------------------------

    def receive_data(self, data: bytes, ts_first: int, ts_last: int, missing: int = 0, *, tid: int = 0) -> list[Event]:
        """Feed one chunk: ``data`` as captured, then ``missing`` bytes that were not captured.
        Heads that start in this chunk carry ``ts_first`` and ``tid``; messages that end in it,
        ``ts_last``."""
        state = self._state
        if state >= _SWITCHED:
            return []
        self._last_ts = ts_last
        events: list[Event] = []
        try:
            n = len(data)
            pos = 0
            skipped = 0
            if state == _HUNT:
                if not self._begins_with_head(data, missing > 0):
                    if n or missing:
                        events.append(Skipped(n + missing, ts_last))
                    return events
                self._state = _HEAD
                self._tentative = True
            while pos < n:
                state = self._state
                if state == _HEAD:
                    # Fast path: a whole CRLF head at pos, nothing buffered.
                    if not self._buf:
                        c = data[pos]
                        if c != 13 and c != 10:
                            e = data.find(b"\r\n\r\n", pos)
                            if e >= 0 and e - pos <= self._max_head:
                                self._head_ts = ts_first
                                self._head_tid = tid
                                if self._parse_head(data[pos:e], events, False):
                                    if self._state != _HUNT:  # else: a tentative head failed, skip the rest
                                        pos = e + 4
                                    continue
                    pos = self._read_head(data, pos, ts_first, tid, events)
                elif state == _BODY or state == _CHUNK_DATA:
                    rem = self._remaining
                    avail = n - pos
                    if avail < rem:
                        self._remaining = rem - avail
                        self.body_size += avail
                        pos = n
                    else:
                        pos += rem
                        self._remaining = 0
                        if state == _BODY:  # the message is complete (_finish, inline)
                            events.append(MessageEnd(self.body_size + rem, ts_last))
                            self.body_size = 0
                            self._in_message = False
                            self._state = _HEAD
                        else:
                            self.body_size += rem
                            self._state = _CHUNK_CRLF
                elif state == _UNTIL_CLOSE:
                    self.body_size += n - pos
                    pos = n
                elif state <= _TRAILERS:  # _CHUNK_SIZE, _CHUNK_CRLF, _TRAILERS: line by line
                    nl = data.find(b"\n", pos)
                    if nl < 0:
                        self._line += data[pos:]
                        pos = n
                        if len(self._line) > MAX_CHUNK_LINE_BYTES:
                            self._fail("chunk framing line too long", events)
                        continue
                    line = data[pos:nl]
                    if self._line:
                        line = self._line + line
                        self._line = b""
                    pos = nl + 1
                    self._on_line(line, ts_last, events)
                else:  # _HUNT (framing lost inside this chunk), _SWITCHED, _DEAD: the rest is not parsed
                    if state == _HUNT:
                        skipped = n - pos
                    break
            if self._state == _SWITCHED:
                self.after_switch = (data[pos:], missing)
                missing = 0
            if missing:
                skipped += self._on_missing(missing, events)
            if skipped:
                events.append(Skipped(skipped, ts_last))
        except Exception as exc:  # noqa: BLE001 -- a bug; contained so that no input can break the caller
            self._state = _DEAD
            events.append(ParseError(f"internal error: {exc!r}", ts_last, True))
        return events

    def close(self, ts: int) -> list[Event]:
        """The stream ended: a close-delimited body is complete, any other message in progress is
        cut short (truncated). An incomplete head is dropped: it was never a message."""
        events: list[Event] = []
        state = self._state
        self._state = _DEAD
        if not self._in_message or state >= _SWITCHED:
            return events
        last = self._last_ts if self._last_ts is not None else ts
        if state == _UNTIL_CLOSE:
            events.append(MessageEnd(self.body_size, last))
        else:
            trailers = tuple(self._trailers) if state == _TRAILERS else ()
            events.append(MessageEnd(self.body_size, last, trailers, True, f"{self._kind_name()} incomplete at close"))
        self._in_message = False
        return events

    @property
    def state_name(self) -> str:
        """For debugging and tests."""
        return _STATE_NAMES[self._state]

    # -- chunk loop ---------------------------------------------------------------------------

    # -- heads ----------------------------------------------------------------------------------

    def _read_head(self, data: bytes, pos: int, ts: int, tid: int, events: list[Event]) -> int:
        n = len(data)
        buf = self._buf
        if not buf:
            c = data[pos]
            if c == 13 or c == 10:  # empty lines before a start line are allowed (RFC 9112 2.2)
                while pos < n and data[pos] in _CRLF_BYTES:
                    pos += 1
                if pos == n:
                    return n
            self._head_ts = ts
            self._head_tid = tid
            # Fast path: the whole head is in this chunk.
            e = data.find(b"\n\r\n", pos)
            j = data.find(b"\n\n", pos, e if e >= 0 else n)
            if j >= 0:
                stop, after = j, j + 2
            elif e >= 0:
                stop, after = (e - 1 if data[e - 1] == 13 else e), e + 3
            else:
                stop = -1
            if stop >= 0 and stop - pos <= self._max_head:
                self._parse_head(data[pos:stop], events)
                if self._state == _HUNT:  # a tentative head failed: the rest of the chunk is skipped
                    return pos
                return after
            search = 0
        else:
            search = len(buf) - 2 if len(buf) > 2 else 0
        # Slow path: accumulate until the empty line.
        if type(buf) is not bytearray:  # a connection's first split head: its buffer is made now
            buf = self._buf = bytearray()
        old = len(buf)
        buf += data[pos:]
        e = buf.find(b"\n\r\n", search)
        j = buf.find(b"\n\n", search, e if e >= 0 else len(buf))
        if j >= 0:
            stop, after = j, j + 2
        elif e >= 0:
            stop, after = (e - 1 if buf[e - 1] == 13 else e), e + 3
        else:
            stop = -1
        if not self._line_ok and not self._check_start_line(events):
            return n
        if stop > self._max_head or (stop < 0 and len(buf) > self._max_head):
            self._head_too_large(events)
            return n
        if stop < 0:
            return n
        content = bytes(buf[:stop])
        buf.clear()
        self._line_ok = False
        self._parse_head(content, events)
        if self._state == _HUNT:
            return n
        return pos + (after - old)

    def _check_start_line(self, events: list[Event]) -> bool:
        """Checks the (possibly incomplete) start line in the head buffer; False if it failed."""
        buf = self._buf
        nl = buf.find(b"\n")
        if nl >= 0:
            ok = self._start_line_ok(bytes(buf[:nl]), True)
            self._line_ok = ok
        else:
            ok = self._start_line_ok(bytes(buf[:_PREFIX_CHECK]), False)
        if not ok:
            self._fail("not an HTTP/1 start line", events, partial_head=False)
        return ok

    def _start_line_ok(self, line: bytes, complete: bool) -> bool:
        kind = self.kind
        if complete:
            return bool(
                (kind is not _RESPONSE and _REQUEST_LINE_B.fullmatch(line))
                or (kind is not _REQUEST and _STATUS_LINE_B.fullmatch(line))
            )
        return bool(
            (kind is not _RESPONSE and _REQUEST_PREFIX_B.fullmatch(line))
            or (kind is not _REQUEST and _STATUS_PREFIX_B.fullmatch(line))
        )

    def _begins_with_head(self, data: bytes, cut: bool) -> bool:
        """Whether a chunk seen while hunting begins with a start line of this direction. The line
        must be complete, as a client or server writes it in one call, unless the chunk was ``cut``
        by the capture limit: then all that was captured of it must fit the start-line grammar."""
        n = len(data)
        i = 0
        while i < n and data[i] in _CRLF_BYTES:
            i += 1
        if i == n:
            return False
        nl = data.find(b"\n", i, i + self._max_head)
        if nl >= 0:
            return self._start_line_ok(data[i:nl], True)
        return cut and self._start_line_ok(data[i : i + _PREFIX_CHECK], False)

    def _parse_head(self, content: bytes, events: list[Event], bare_lf_ok: bool = True) -> bool:
        """Parses a complete head (without its final empty line) and sets up the body state.
        Returns False, having done nothing, if ``content`` has bare-LF line ends and not
        ``bare_lf_ok`` (it was cut at the first CRLFCRLF, but an earlier LFLF may end the head).
        The hot path: one function, no per-byte work."""
        text = content.decode("latin-1")
        lines = text.split("\r\n")
        if text.count("\n") != len(lines) - 1:  # bare LF line ends somewhere
            if not bare_lf_ok:
                return False
            lines = [line.removesuffix("\r") for line in text.split("\n")]
        kind = self.kind
        first = lines[0]
        # Start line: str operations for the common shapes, the grammar's regex for the rest.
        if kind is not _RESPONSE and (parts := first.split(" ")) and len(parts) == 3 \
                and parts[2] in _VERSIONS and parts[0] in _COMMON_METHODS and parts[1].isprintable():
            kind = _REQUEST
            start = (parts[0], parts[1], _VERSIONS[parts[2]])
        elif kind is not _REQUEST and first[:9] in _STATUS_PREFIXES and (code := first[9:12]).isdigit() \
                and len(code) == 3 and code.isascii() and (len(first) == 12 or first[12] == " "):
            kind = _RESPONSE
            start = (_VERSIONS[first[:8]], int(code), first[13:])
        elif kind is not _RESPONSE and (m := _REQUEST_LINE.fullmatch(first)) is not None:
            kind = _REQUEST
            start = (m.group(1), m.group(2), "1.1" if m.group(3) == "1" else "1.0")
        elif kind is not _REQUEST and (m := _STATUS_LINE.fullmatch(first)) is not None:
            kind = _RESPONSE
            start = ("1.1" if m.group(1) == "1" else "1.0", int(m.group(2)), m.group(3) or "")
        else:
            self._fail("not an HTTP/1 start line", events)
            return True
        # Header fields (inline: the hot path). Folded, colon-less or oddly started lines take
        # the slow path, which handles them and warns.
        parts = [line.partition(":") for line in lines[1:]]
        fields = [(name.lower(), value.strip(" \t")) for name, sep, value in parts if sep]
        if len(fields) != len(parts) or "\n " in text or "\n\t" in text:
            headers, cl, te, warning = _parse_fields_slow(lines)
        else:
            headers = tuple(fields)
            cl = te = warning = None
            low = text.lower()
            if "content-length" in low or "transfer-encoding" in low:
                for name, value in fields:
                    if name == "content-length":
                        cl = value if cl is None else cl + "," + value
                    elif name == "transfer-encoding":
                        te = value if te is None else te + "," + value
        if self.kind is not kind or self._tentative or not self.established:
            self.kind = kind
            self.established = True
            self._tentative = False
        ts = self._last_ts
        if kind is _REQUEST:
            method, target, version = start
            events.append(RequestHead(method, target, version, headers, self._head_ts, self._head_tid, False,
                                      warning and "request " + warning))
            no_body = False
        else:
            version, status, reason = start
            events.append(ResponseHead(status, reason, version, headers, self._head_ts, self._head_tid, False,
                                       warning and "response " + warning))
            if 100 <= status < 200 and status != 101:  # interim: no body, no MessageEnd, not paired
                self._state = _HEAD
                return True
            method = self._methods.popleft() if self._methods else None
            if status == 101 or (method == "CONNECT" and 200 <= status < 300):
                events.append(MessageEnd(0, ts))
                events.append(ProtocolSwitch(ts))
                self._state = _SWITCHED
                return True
            no_body = method == "HEAD" or status == 204 or status == 304 or status < 100
        # The body. self.body_size is 0 here (reset at every message end and resync).
        if no_body:
            pass
        elif te is not None:
            self._in_message = True
            if te.rsplit(",", 1)[-1].strip(" \t").lower() == "chunked":
                self._state = _CHUNK_SIZE
            elif kind is _REQUEST:  # RFC 9112 6.3: a request with unknown framing is an error
                self._fail("request transfer-encoding is not chunked", events)
            else:  # RFC 9112 6.3: a response with other codings ends at close
                self._state = _UNTIL_CLOSE
            return True
        elif cl is not None:
            length = int(cl) if cl.isdigit() and cl.isascii() and len(cl) <= 18 else _content_length(cl)
            if length:
                self._in_message = True
                self._remaining = length
                self._state = _BODY
                return True
            if length is None:
                self._in_message = True
                self._fail("invalid content-length", events)
                return True
        elif kind is _RESPONSE:
            self._in_message = True
            self._state = _UNTIL_CLOSE
            return True
        events.append(MessageEnd(0, ts))
        return True

    def _head_too_large(self, events: list[Event]) -> None:
        if self._line_ok:  # a valid start line: HTTP, with an oversized head; keep the count right
            self.established = True
        self._fail("head larger than %d bytes" % self._max_head, events)

    def _partial_head(self, warning: str, events: list[Event]) -> None:
        """Reports a head cut short (capture truncation, size limit) from what was seen of it."""
        text = bytes(self._buf).decode("latin-1")
        parts = text.split("\n")
        last = parts.pop()  # the incomplete line, possibly ""
        lines = []
        for line in parts:
            line = line.removesuffix("\r")
            if not line:  # the head did end (it was too large): what follows is not head
                break
            lines.append(line)
        kind = self.kind
        ts = self._last_ts
        ev: RequestHead | ResponseHead | None = None
        if lines:
            m = _REQUEST_LINE.fullmatch(lines[0]) if kind is not _RESPONSE else None
            if m is not None:
                ev = RequestHead(m.group(1), m.group(2), "1.1" if m.group(3) == "1" else "1.0",
                                 _parse_fields_slow(lines)[0], self._head_ts, self._head_tid, True)
            elif kind is not _REQUEST:
                m = _STATUS_LINE.fullmatch(lines[0])
                if m is not None:
                    ev = ResponseHead(int(m.group(2)), m.group(3) or "", "1.1" if m.group(1) == "1" else "1.0",
                                      _parse_fields_slow(lines)[0], self._head_ts, self._head_tid, True)
        else:  # the start line itself was cut: a huge target, or a tiny capture limit
            if kind is not _RESPONSE:
                m = _REQUEST_PARTIAL.match(last)
                if m is not None and (kind is _REQUEST or m.group(2) is not None):
                    ev = RequestHead(m.group(1), m.group(2) or "", "", (), self._head_ts, self._head_tid, True)
            if ev is None and kind is not _REQUEST:
                m = _STATUS_PARTIAL.match(last)
                if m is not None:
                    ev = ResponseHead(int(m.group(2)), m.group(3) or "", "1.1" if m.group(1) == "1" else "1.0", (),
                                      self._head_ts, self._head_tid, True)
                elif kind is _RESPONSE and _STATUS_PREFIX_B.fullmatch(last[:_PREFIX_CHECK].encode("latin-1")):
                    # Not even the status code was captured; reported (status 0) to keep the count.
                    ev = ResponseHead(0, "", "", (), self._head_ts, self._head_tid, True)
        if ev is None:
            return
        if type(ev) is ResponseHead:
            if ev.interim:
                return
            if self._methods:
                self._methods.popleft()
            self.kind = _RESPONSE
        else:
            self.kind = _REQUEST
        events.append(ev)
        events.append(MessageEnd(0, ts, (), True, warning))

    # -- chunked framing ------------------------------------------------------------------------

    def _on_line(self, line: bytes, ts: int, events: list[Event]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        state = self._state
        if state == _CHUNK_SIZE:
            m = _CHUNK_SIZE_LINE.fullmatch(line)
            if m is None:
                self._fail("bad chunk-size line", events)
                return
            size = int(m.group(1), 16)
            if size:
                self._remaining = size
                self._state = _CHUNK_DATA
            else:
                self._trailers = []
                self._trailer_bytes = 0
                self._state = _TRAILERS
        elif state == _CHUNK_CRLF:
            if line:
                self._fail("no CRLF after chunk data", events)
            else:
                self._state = _CHUNK_SIZE
        elif not line:  # _TRAILERS: the empty line ends the message
            trailers = tuple(self._trailers)
            self._trailers = ()
            self._finish(ts, events, trailers)
        else:
            self._trailer_bytes += len(line)
            if self._trailer_bytes > self._max_head:
                self._fail("trailers larger than %d bytes" % self._max_head, events)
                return
            text = line.decode("latin-1")
            name, sep, value = text.partition(":")
            if sep and name and name[0] not in " \t":
                self._trailers.append((name.lower(), value.strip(" \t")))
            elif text[0] in " \t" and self._trailers:
                key, prev = self._trailers[-1]
                self._trailers[-1] = (key, (prev + " " + text.strip(" \t")).strip(" "))

    # -- endings, errors, truncation ----------------------------------------------------------------

    def _finish(self, ts: int, events: list[Event], trailers: Headers = ()) -> None:
        events.append(MessageEnd(self.body_size, ts, trailers))
        self._in_message = False
        self.body_size = 0
        self._state = _HEAD

    def _kind_name(self) -> str:
        return self.kind.value if self.kind is not None else "message"

    def _fail(self, reason: str, events: list[Event], partial_head: bool = True) -> None:
        """Bytes that break framing. ``partial_head``: a buffered head may still be reported from
        its start line (not when the start line itself is what failed)."""
        ts = self._last_ts
        if self._tentative:  # the chunk only looked like a head: keep hunting
            self._back_to_hunt(events)
            return
        if not self.established:
            events.append(ParseError(reason, ts, True))
            self._state = _DEAD
            self._buf = b""
            self._line = b""
            return
        events.append(ParseError(reason, ts, False))
        self._lose_framing(reason, f"{self._kind_name()} framing error: {reason}", events, partial_head)

    def _lose_framing(self, reason: str, warning: str | None, events: list[Event], partial_head: bool = True) -> None:
        """Ends the message in progress (truncated) and starts hunting for the next head."""
        if self._tentative:
            # A head found while hunting, cut short by uncaptured bytes: its chunk began with a
            # complete start line or was all start-line prefix (see _begins_with_head); take it as
            # real, so that its answer does not pair with the next request.
            self._tentative = False
            self.established = True
        ts = self._last_ts
        if self._in_message:
            trailers = tuple(self._trailers) if self._state == _TRAILERS else ()
            events.append(MessageEnd(self.body_size, ts, trailers, True, warning))
            self._in_message = False
        elif self._buf and partial_head:
            self._partial_head(warning or f"{self._kind_name()} head truncated", events)
        events.append(Resync(reason, ts))
        self._reset_to(_HUNT)

    def _back_to_hunt(self, events: list[Event]) -> None:
        if self._buf:
            events.append(Skipped(len(self._buf), self._last_ts))
        self._reset_to(_HUNT)

    def _reset_to(self, state: int) -> None:
        self._state = state
        self._tentative = False
        self._in_message = False
        self._buf = b""
        self._line = b""
        self._line_ok = False
        self._remaining = 0
        self.body_size = 0
        self._trailers = ()

    def _on_missing(self, missing: int, events: list[Event]) -> int:
        """``missing`` bytes followed the captured ones. Returns how many of them were skipped."""
        state = self._state
        if state == _BODY or state == _CHUNK_DATA:
            rem = self._remaining
            if missing < rem or (missing == rem and state == _CHUNK_DATA):
                self._remaining = rem - missing
                self.body_size += missing
                if self._remaining == 0:
                    self._state = _CHUNK_CRLF
                return 0
            self.body_size += rem
            self._remaining = 0
            if state == _BODY:
                self._finish(self._last_ts, events)
                if missing == rem:
                    return 0
                self._lose_framing("uncaptured bytes after the end of a message", None, events)
            else:
                self._lose_framing("uncaptured bytes past the end of a chunk", f"{self._kind_name()} body truncated",
                                   events)
            return missing - rem
        if state == _UNTIL_CLOSE:
            self.body_size += missing
            return 0
        if state == _HUNT:
            return missing
        if state >= _SWITCHED:
            return 0
        if state == _HEAD:
            if not self._buf:  # the start of the next message is unseen
                self._lose_framing("uncaptured bytes at a message boundary", None, events)
            else:
                self._lose_framing("uncaptured bytes inside a head", f"{self._kind_name()} head truncated", events)
        else:  # chunk-size line, CRLF after chunk data, trailers
            self._lose_framing("uncaptured bytes inside chunk framing", f"{self._kind_name()} body truncated", events)
        return missing


_STATE_NAMES = {
    _HEAD: "head", _BODY: "body", _CHUNK_SIZE: "chunk-size", _CHUNK_DATA: "chunk-data", _CHUNK_CRLF: "chunk-crlf",
    _TRAILERS: "trailers", _UNTIL_CLOSE: "until-close", _HUNT: "hunt", _SWITCHED: "switched", _DEAD: "dead",
}


def _parse_fields_slow(lines: list[str]) -> tuple[Headers, str | None, str | None, str | None]:
    """Header lines (``lines[1:]``) -> (headers, content-length, transfer-encoding, warning), for
    heads with folded or colon-less lines. Repeated Content-Length / Transfer-Encoding values are
    joined with commas."""
    headers: list[tuple[str, str]] = []
    cl = te = warning = None
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep and name and name[0] not in " \t":
            name = name.lower()
            value = value.strip(" \t")
            headers.append((name, value))
            if name == "content-length":
                cl = value if cl is None else cl + "," + value
            elif name == "transfer-encoding":
                te = value if te is None else te + "," + value
        elif line and line[0] in " \t" and headers:  # obs-fold: continues the previous value
            key, prev = headers[-1]
            headers[-1] = (key, (prev + " " + line.strip(" \t")).strip(" "))
        else:
            warning = "head has malformed header lines"
    return tuple(headers), cl, te, warning


def _content_length(value: str) -> int | None:
    """The Content-Length value, or None if invalid. ``"5, 5"`` (repeated header) is 5."""
    if value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    parts = {part.strip(" \t") for part in value.split(",")}
    if len(parts) == 1:
        part = parts.pop()
        if part.isascii() and part.isdigit() and len(part) <= 18:
            return int(part)
    return None


# ---------------------------------------------------------------------------------------------
# Session: one connection, both directions, exchanges out
# ---------------------------------------------------------------------------------------------


class Http1Stats:
    """Counters shared by all sessions of one receiver. Plain ints, mutated in place."""

    __slots__ = (
        "messages",  # heads parsed, both directions (1xx included)
        "exchanges",  # Exchange records produced (response=None ones included)
        "parse_errors",  # framing errors (ParseError events)
        "non_http_connections",  # sessions judged not HTTP/1 (dead), each counted once
        "truncated_messages",  # messages ended early (uncaptured bytes, framing error, close)
        "resyncs",  # times framing was lost and a direction hunted for the next head
        "orphan_responses",  # responses with no request to pair with, dropped
        "dropped_pending",  # requests evicted unanswered from a full pending queue
        "skipped_bytes",  # bytes discarded while hunting for a head (midstream, resync)
    )

    def __init__(self) -> None:
        self.messages = 0
        self.exchanges = 0
        self.parse_errors = 0
        self.non_http_connections = 0
        self.truncated_messages = 0
        self.resyncs = 0
        self.orphan_responses = 0
        self.dropped_pending = 0
        self.skipped_bytes = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return "Http1Stats(%s)" % ", ".join(f"{k}={v}" for k, v in self.as_dict().items())


class _Pending:
    """A request seen on the connection, until its exchange is reported."""

    __slots__ = ("head", "request", "started", "warnings", "reported", "id")

    def __init__(self, head: RequestHead) -> None:
        self.id = next(_exchange_ids)
        self.head = head
        self.request: HttpRequest | None = None  # set at the request's MessageEnd
        self.started: HttpRequest | None = None  # the RequestStart's, reused when no body came
        self.warnings: list[str] | None = [head.warning] if head.warning else None
        self.reported = False


# Exchange ids are unique in the process, across protocols (RequestStart.exchange_id == Exchange.exchange_id).
_exchange_ids = exchange_ids

_EVICTED = "response not seen: too many requests pending"
_NO_RESPONSES = "response not seen: responses on this connection are not visible"
_EARLY_RESPONSE = "response ended before the request"


class Http1Session:
    """Turns the chunks of both directions of one TCP connection into :class:`Exchange` records.

    Not thread-safe: one connection's chunks must be fed from one thread, in order per direction.
    No method raises; :attr:`dead` tells the caller to stop feeding (not HTTP/1, upgraded to
    another protocol, or given up midstream).
    """

    __slots__ = (
        "_conn",
        "_stats",
        "_parsers",
        "_req_dir",
        "_pending",
        "_methods",
        "_current",
        "_in_flight",
        "_resp_head",
        "_owed",
        "_requests_only",
        "_max_pending",
        "_established",
        "_dead",
        "_closed",
        "_hunting",
        "_hunt_chunks",
        "_hunt_bytes",
        "on_request",
    )

    def __init__(
        self,
        connection: Connection,
        *,
        stats: Http1Stats,
        midstream: bool = False,
        max_pending: int = MAX_PENDING,
        max_head_bytes: int = MAX_HEAD_BYTES,
    ) -> None:
        self._conn = connection
        self._stats = stats
        self._methods = SmallQueue()  # of str
        if connection.role == Role.SERVER:
            self._req_dir: int | None = Direction.INGRESS
        elif connection.role == Role.CLIENT:
            self._req_dir = Direction.EGRESS
        else:
            self._req_dir = None
        kinds: list[MessageKind | None] = [None, None]
        if self._req_dir is not None:
            kinds[self._req_dir] = _REQUEST
            kinds[1 - self._req_dir] = _RESPONSE
        self._parsers = tuple(
            Http1Parser(kind, midstream=midstream, max_head_bytes=max_head_bytes, request_methods=self._methods)
            for kind in kinds
        )  # indexed by Direction
        self._pending = SmallQueue()  # of _Pending: requests whose response has not begun
        self._current: _Pending | None = None  # request whose body is being received
        self._in_flight: _Pending | None = None  # request whose response is being received
        self._resp_head: ResponseHead | None = None
        self._owed = 0  # responses owed to evicted requests: discarded when they come
        self._requests_only = False
        self._max_pending = max(1, max_pending)
        self._established = False
        self._dead = False
        self._closed = False
        self._hunting = midstream  # no request head found yet after a midstream attach
        self._hunt_chunks = 0
        self._hunt_bytes = 0
        # Called with a RequestStart for every request head, before its exchange completes
        # (the stitching processor needs inbound requests while they are in flight).
        self.on_request: Callable[[RequestStart], None] | None = None

    @property
    def dead(self) -> bool:
        """True once the connection was judged not HTTP/1, switched protocols, or was given up."""
        return self._dead

    def after_switch(self, direction: Direction) -> tuple[bytes, int] | None:
        """After a 101 (or CONNECT) seen in ``direction``: the bytes of that chunk past the head,
        as (captured, uncaptured after them); None when ``direction`` did not switch."""
        return self._parsers[direction].after_switch

    @property
    def connection(self) -> Connection:
        """The connection, with ``role`` filled in once inferred."""
        return self._conn

    def on_data(
        self, direction: Direction, data: bytes, ts_first: int, ts_last: int, *, missing: int = 0, tid: int = 0
    ) -> list[Exchange]:
        """Feeds one chunk of ``direction``; returns the exchanges it completed."""
        if self._dead or self._closed:
            return []
        try:
            events = self._parsers[direction].receive_data(data, ts_first, ts_last, missing, tid=tid)
            if not events:
                return []
            return self._handle(direction, events)
        except Exception:  # noqa: BLE001 -- a bug; contained (the parser already contains its own)
            self._stats.parse_errors += 1
            self._dead = True
            return []

    def on_close(self, ts: int) -> list[Exchange]:
        """The connection closed: completes close-delimited bodies and reports requests without a
        response as ``Exchange(response=None)`` ending at ``ts``. Later calls return []."""
        if self._closed:
            return []
        self._closed = True
        if self._dead:
            return []
        out: list[Exchange] = []
        try:
            order = (self._req_dir, 1 - self._req_dir) if self._req_dir is not None else (0, 1)
            for direction in order:
                events = self._parsers[direction].close(ts)
                if events:
                    out += self._handle(direction, events)
            self._flush(ts, None, out)
        except Exception:  # noqa: BLE001 -- a bug; contained
            self._stats.parse_errors += 1
        return out

    # -- event handling ------------------------------------------------------------------------

    def _handle(self, direction: int, events: list[Event]) -> list[Exchange]:
        # The four common events are handled inline: this runs for every message.
        out: list[Exchange] = []
        stats = self._stats
        for ev in events:
            t = type(ev)
            if t is MessageEnd:
                if direction == self._req_dir:
                    p = self._current
                    if p is not None:  # the request is complete
                        self._current = None
                        if ev.truncated or ev.warning:
                            self._note_end(p, ev)
                        if p.started is not None and not ev.body_size and not ev.trailers:
                            p.request = p.started  # equal to what would be built here
                        else:
                            h = p.head
                            p.request = HttpRequest(h.method, h.target, h.version, h.headers, ev.body_size,
                                                    ev.trailers)
                        if self._requests_only and not p.reported:
                            p.reported = True
                            stats.exchanges += 1
                            out.append(self._unanswered(p, ev.ts, _NO_RESPONSES))
                else:
                    head = self._resp_head
                    p = self._in_flight
                    if (head is not None and p is not None and not p.reported and p.request is not None
                            and not p.warnings and not head.warning and not ev.warning and not ev.truncated):
                        # the common case of _response_end, inline
                        self._resp_head = self._in_flight = None
                        p.reported = True
                        stats.exchanges += 1
                        h = p.head
                        out.append(Exchange(
                            "http1", self._conn, p.request,
                            HttpResponse(head.status, head.reason, head.version, head.headers, ev.body_size,
                                         ev.trailers),
                            h.ts, ev.ts, h.tid, (), exchange_id=p.id))
                    else:
                        self._response_end(ev, out)
            elif t is RequestHead:
                stats.messages += 1
                if not self._established:
                    if self._req_dir is None:
                        self._set_role(direction)
                    self._establish()
                self._hunting = False
                p = self._current = _Pending(ev)
                if self.on_request is not None:
                    p.started = HttpRequest(ev.method, ev.target, ev.version, ev.headers)
                    self.on_request(RequestStart(p.id, self._conn, p.started, ev.ts, ev.tid))
                if not self._requests_only:
                    if len(self._pending) >= self._max_pending:
                        self._evict(ev.ts, out)
                    if not self._requests_only:
                        self._pending.append(p)
                        self._methods.append(ev.method)
            elif t is ResponseHead:
                stats.messages += 1
                if not self._established:
                    if self._req_dir is None:
                        self._set_role(1 - direction)
                    self._establish()
                status = ev.status
                if 100 <= status < 200 and status != 101:  # interim: never paired
                    continue
                # The final response claims the oldest waiting request (a response owed to an
                # evicted request claims nothing).
                if self._owed:
                    self._owed -= 1
                    self._in_flight = None
                elif self._pending:
                    self._in_flight = self._pending.popleft()
                else:
                    self._in_flight = None
                self._resp_head = ev
            elif t is Skipped:
                stats.skipped_bytes += ev.nbytes
                if self._hunting and (self._req_dir is None or direction == self._req_dir):
                    self._hunt_chunks += 1
                    self._hunt_bytes += ev.nbytes
                    if self._hunt_chunks > MIDSTREAM_MAX_SKIP_CHUNKS or self._hunt_bytes > MIDSTREAM_MAX_SKIP_BYTES:
                        stats.non_http_connections += 1
                        self._dead = True
                        break
            elif t is Resync:
                stats.resyncs += 1
            elif t is ParseError:
                stats.parse_errors += 1
                if ev.fatal:
                    stats.non_http_connections += 1
                    self._dead = True
                    break
            elif t is ProtocolSwitch:
                self._dead = True  # upgraded: no longer HTTP/1, but it was
                self._flush(ev.ts, "protocol switched before a response", out)
                break
        return out

    def _note_end(self, p: _Pending, ev: MessageEnd) -> None:
        if ev.truncated:
            self._stats.truncated_messages += 1
        if ev.warning:
            if p.warnings is None:
                p.warnings = [ev.warning]
            else:
                p.warnings.append(ev.warning)

    def _response_end(self, ev: MessageEnd, out: list[Exchange]) -> None:
        head = self._resp_head
        p = self._in_flight
        self._resp_head = None
        self._in_flight = None
        if ev.truncated:
            self._stats.truncated_messages += 1
        if head is None:
            return
        if p is None or p.reported:
            self._stats.orphan_responses += 1
            return
        p.reported = True
        request = p.request
        warnings = p.warnings
        if request is None:  # the response ended while the request body was still coming
            h = p.head
            request = HttpRequest(h.method, h.target, h.version, h.headers, self._parsers[self._req_dir].body_size)
            warnings = (warnings or []) + [_EARLY_RESPONSE]
        if warnings or head.warning or ev.warning:
            w = list(warnings or ())
            if head.warning:
                w.append(head.warning)
            if ev.warning:
                w.append(ev.warning)
            wt = tuple(w)
        else:
            wt = ()
        response = HttpResponse(head.status, head.reason, head.version, head.headers, ev.body_size, ev.trailers)
        self._stats.exchanges += 1
        out.append(Exchange("http1", self._conn, request, response, p.head.ts, ev.ts, p.head.tid, wt,
                            exchange_id=p.id))

    # -- helpers ---------------------------------------------------------------------------------

    def _set_role(self, req_dir: int) -> None:
        self._req_dir = Direction(req_dir)
        role = Role.SERVER if req_dir == Direction.INGRESS else Role.CLIENT
        self._conn = replace(self._conn, role=role)
        self._parsers[req_dir].kind = _REQUEST
        self._parsers[1 - req_dir].kind = _RESPONSE

    def _establish(self) -> None:
        self._established = True
        for parser in self._parsers:
            parser.established = True

    def _unanswered(self, p: _Pending, end_ts: int, warning: str | None) -> Exchange:
        h = p.head
        request = p.request
        if request is None:
            request = HttpRequest(h.method, h.target, h.version, h.headers)
        w = list(p.warnings or ())
        if warning:
            w.append(warning)
        return Exchange("http1", self._conn, request, None, h.ts, end_ts, h.tid, tuple(w), exchange_id=p.id)

    def _evict(self, ts: int, out: list[Exchange]) -> None:
        stats = self._stats
        p = self._pending.popleft()
        self._owed += 1
        stats.dropped_pending += 1
        if not p.reported:
            p.reported = True
            stats.exchanges += 1
            out.append(self._unanswered(p, ts, _EVICTED))
        if self._owed > MAX_UNANSWERED:  # responses are evidently not visible: stop pairing
            self._requests_only = True
            self._owed = 0
            self._methods.clear()
            while self._pending:
                p = self._pending.popleft()
                stats.dropped_pending += 1
                if not p.reported:
                    p.reported = True
                    stats.exchanges += 1
                    out.append(self._unanswered(p, ts, _NO_RESPONSES))

    def _flush(self, ts: int, warning: str | None, out: list[Exchange]) -> None:
        """Reports every request still waiting as unanswered."""
        stats = self._stats
        for p in (self._in_flight, *self._pending, self._current):
            if p is not None and not p.reported:
                p.reported = True
                stats.exchanges += 1
                out.append(self._unanswered(p, ts, warning))
        self._pending.clear()
        self._in_flight = None
        self._current = None
