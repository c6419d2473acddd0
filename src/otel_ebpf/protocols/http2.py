"""HTTP/2 (RFC 9113) and gRPC, passively: the frames of one connection turned into exchanges.

Usage::

    from otel_ebpf.protocols.http2 import Http2Session, Http2Stats, looks_like_http2
    from otel_ebpf.records import Direction

    stats = Http2Stats()                          # one per receiver, shared by its sessions
    session = Http2Session(connection, stats=stats, midstream=False)
    session.on_request = stitcher.request_started # optional: RequestStart at each request head
    for exchange in session.on_data(Direction.INGRESS, data, ts_first, ts_last, missing=0, tid=tid):
        consume(exchange)
    ...
    for exchange in session.on_close(ts):         # open streams are reported as they stand
        consume(exchange)
    if session.dead: ...                          # not HTTP/2 (or given up): stop feeding it

    looks_like_http2(first_chunk)                 # the preface, or a run of plausible frame headers

The API is that of :class:`otel_ebpf.protocols.http1.Http1Session`; the input is the same: one
chunk per read/write syscall, ``data`` the captured prefix and ``missing`` the bytes the syscall
moved past it, in order per direction.

Layers
------
* **Frames** (:class:`_FrameReader`, one per direction): the client connection preface, then
  9-byte frame headers and payloads, across any chunking. DATA payloads are streamed (never
  buffered: only their size and gRPC message prefixes matter), padding stripped; other frames
  are buffered up to the peer's SETTINGS_MAX_FRAME_SIZE (and at most ``max_header_list``), so a
  partial frame never holds more than that plus 9 bytes. Bytes past the limit are skipped by
  length: the frame's content is then incomplete, its framing still exact.
* **Header blocks**: HEADERS / PUSH_PROMISE + CONTINUATION fragments are joined (at most
  ``max_header_list`` encoded bytes) and decoded by the direction's
  :class:`~otel_ebpf.protocols.hpack_passive.PassiveHpackDecoder` -- see that module for how the
  dynamic table is mirrored, why a value is never wrong after a midstream attach or a capture
  gap, and how the table recovers.
* **Streams**: a request HEADERS block opens a stream (client-initiated, odd id above every id
  seen); PUSH_PROMISE opens a pushed one. DATA adds to the body sizes (and counts gRPC
  length-prefixed messages), the response HEADERS (1xx skipped), trailers and END_STREAM complete
  it, RST_STREAM and GOAWAY end it early.

Exchanges
---------
``Exchange(protocol="grpc" | "http2", request=HttpRequest(method=:method, target=:path,
version="2", headers=...), response=HttpResponse(status=:status, reason="", version="2",
headers, body_size=DATA bytes, trailers), start_ns, end_ns, tid, warnings, exchange_id,
rpc_messages)``:

* request headers: ``host`` first (from ``:authority``, when no ``host`` field was sent), then
  ``:scheme`` (and any other request pseudo-header but ``:method``/``:path``/``:authority``,
  e.g. ``:protocol``), then the regular fields in order. A CONNECT's target is ``:authority``.
* ``protocol`` is ``"grpc"`` when the request's (or else the response's) content-type starts with
  ``application/grpc``, or a ``grpc-*`` field is seen (a midstream attach may hide the content-type); ``rpc_messages`` then counts the gRPC messages whose 5-byte prefix was
  seen in each direction (a prefix lost in uncaptured bytes stops that direction's count: the
  number is what was seen, never an estimate).
* A gRPC *Trailers-Only* response (one HEADERS with END_STREAM carrying ``grpc-status``) has
  ``grpc-status``, ``grpc-message`` and ``grpc-status-details-bin`` in ``trailers``, the rest in
  ``headers``.
* ``start_ns``/``tid``: the chunk holding the first byte of the request HEADERS frame;
  ``end_ns``: ``ts_last`` of the chunk holding the end of the frame that ended the response
  (END_STREAM) or of the RST_STREAM / GOAWAY that ended the stream; at close, the close time.
* A reset before the response ended gives the response as seen so far (or None) and the warning
  ``"stream reset: CANCEL"`` (the error code's name). A stream above the last-stream-id of a
  GOAWAY from its peer gives ``"stream refused: GOAWAY <code>"``.
* Unknown header fields (references to HPACK dynamic-table entries not seen, see below) are
  reported as warnings: ``"hpack: unknown :path"`` for each missing pseudo-header of the
  message, ``"hpack: 2 unknown header fields"`` for the rest. An unknown ``:path`` gives target
  ``""``, an unknown ``:method`` method ``""``, an unknown ``:status`` status 0. A header block cut
  by the capture limit gives the fields of its captured part and ``"request headers truncated"``
  (or response / trailers).

Capture limits and lost framing
-------------------------------
Uncaptured bytes inside a DATA payload are counted into the body and skipped by length: the
frame layer stays in sync (gRPC message counting too, unless a message prefix was unseen). Inside a HEADERS/CONTINUATION/PUSH_PROMISE payload, the framing is
kept too, but the block's content is lost: the fields of its captured part are decoded, and
the HPACK table of that direction becomes partly unknown (the lost part may have inserted
entries). Uncaptured bytes that reach past a frame's end hide the next frame header: framing is
*lost* (counted in ``resyncs``), the HPACK table becomes partly unknown, the open streams are
flagged (``"response frames lost"``), and the direction *hunts*: each later chunk (a syscall
boundary, where writers usually start frames) is checked for a chain of plausible frame headers
(known type, defined flags only, reserved bit clear, stream 0 exactly for connection frames,
odd stream ids, the type's fixed lengths, length within the frame size limit); a chain that
ends exactly at the chunk's end, or of 2+ frames, is accepted at the chunk's start; inside a
chunk only a chain of 3+ (or 2+ ending exactly) is. Skipped bytes are counted. A direction
hunting for more than :data:`RESYNC_MAX_SKIP_CHUNKS` chunks gives the session up. This is what
happens when one write of many frames (a gRPC server's 200 KB response in 16 KB DATA frames)
is cut by the capture limit: the rest of that write is skipped, the streams it ended are
reported at close (``"response incomplete at close"``), and body sizes fall short.

Midstream
---------
``midstream=True`` (attached to an open connection): both directions start hunting; the HPACK
tables start partly unknown and fill as blocks are seen. The role, if unknown, comes from the
first decoded block with ``:method`` (request side) or ``:status`` (response side). Responses
of streams opened before the attach are orphans (counted, dropped); a request block opens a
stream only if it carries a request pseudo-header. How much is known depends on the peer's
encoder: one that keeps inserting (nghttp2 for custom fields, the ``hpack`` library for all)
refills the table and the fields come back; gRPC C-core inserts ``:path``, ``:authority``,
``content-type``... on first use and refers to them ever after, so on such a channel they stay
unknown (target ``""``) while per-call literals (``x-request-id``, ``grpc-timeout`` values) are
known, and gRPC is still recognised from ``grpc-*`` fields. If neither direction finds frames within
:data:`MIDSTREAM_MAX_SKIP_CHUNKS` chunks or :data:`MIDSTREAM_MAX_SKIP_BYTES` bytes, the session
is dead (counted as non-HTTP/2). A client preface met while hunting means the connection is in
fact new: the tables are then fully known.

Not HTTP/2
----------
Without ``midstream``, the client direction must start with the preface and each direction's
first frame must be SETTINGS; otherwise the session is dead (``non_http2_connections``). With an
unknown role, a direction whose first byte is ``P`` is the client's. Later malformed frames
(a connection-level frame on a stream, a wrong fixed length...) are counted in ``parse_errors``
and treated as lost framing. Nothing raises: a bug is contained as ``parse_errors`` + dead.

h2c upgrade
-----------
``upgraded=True``: the connection switched from HTTP/1.1 (``Upgrade: h2c`` answered with 101).
The client still sends the preface; stream 1 is the upgraded request, handed over with
:meth:`Http2Session.adopt_upgrade_request` (its ``HTTP2-Settings`` header is applied); its
response comes as HEADERS on stream 1.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from dataclasses import replace

from otel_ebpf.protocols.common import exchange_ids
from otel_ebpf.protocols.hpack_passive import DecodedBlock, PassiveHpackDecoder
from otel_ebpf.records import (
    Connection,
    Direction,
    Exchange,
    HttpRequest,
    HttpResponse,
    RequestStart,
    Role,
)

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_HEADER_LIST",
    "MAX_STREAMS",
    "MIDSTREAM_MAX_SKIP_BYTES",
    "MIDSTREAM_MAX_SKIP_CHUNKS",
    "PREFACE",
    "RESYNC_MAX_SKIP_CHUNKS",
    "Http2Session",
    "Http2Stats",
    "looks_like_http2",
]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# ---------------------------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------------------------

DEFAULT_MAX_FRAME_SIZE = 16384
"""SETTINGS_MAX_FRAME_SIZE's initial value (RFC 9113 6.5.2). Non-DATA payloads are buffered up to
the receiver's announced value (at most ``max_header_list``): a partial frame holds at most
that + 9 bytes. Also the largest frame a hunting direction accepts before SETTINGS are known."""

MAX_FRAME_SIZE = (1 << 24) - 1
"""The largest frame length the 24-bit field can say."""

MAX_STREAMS = 1024
"""Streams tracked at once per connection. Servers allow 100 (nghttp2, Envoy by default) to a few
hundred concurrent streams; beyond 1024 streams are almost surely ones whose end we missed. One
more evicts the oldest, reported with ``"stream dropped: too many concurrent streams"``."""

MAX_HEADER_LIST = 65536
"""Largest header list reported (RFC 9113 6.5.2 accounting: name + value + 32 per field) and
largest encoded header block buffered. nghttp2 and Envoy refuse 64 KiB of headers by default;
past it fields are dropped (the block is still decoded for the table), and an encoded block
larger than this is not buffered at all (the table then becomes partly unknown)."""

MIDSTREAM_MAX_SKIP_CHUNKS = 64
MIDSTREAM_MAX_SKIP_BYTES = 1 << 20
"""Midstream attach: chunks / bytes (both directions) skipped before any frame boundary is found.
A live HTTP/2 connection starts a frame at a write boundary within a few writes; a stream that
shows none in this much is not HTTP/2 (or not followable), and the session is dropped."""

RESYNC_MAX_SKIP_CHUNKS = 1024
"""Chunks one direction may skip while hunting for frames again after losing them. Hunting scans
each chunk (bounded by :data:`_HUNT_SCAN_BYTES`); a direction that never resyncs is given up
rather than scanned forever."""

_HUNT_SCAN_BYTES = 4096
"""Bytes of a chunk searched for a frame-header chain while hunting (a default capture's worth)."""

_MAX_SETTINGS = 64
"""SETTINGS entries read from one frame (RFC 9113 defines 6; a few extensions add some)."""

# ---------------------------------------------------------------------------------------------
# Wire constants
# ---------------------------------------------------------------------------------------------

_DATA = 0x0
_HEADERS = 0x1
_PRIORITY = 0x2
_RST_STREAM = 0x3
_SETTINGS = 0x4
_PUSH_PROMISE = 0x5
_PING = 0x6
_GOAWAY = 0x7
_WINDOW_UPDATE = 0x8
_CONTINUATION = 0x9

_END_STREAM = 0x1  # DATA, HEADERS
_ACK = 0x1  # SETTINGS, PING
_END_HEADERS = 0x4  # HEADERS, PUSH_PROMISE, CONTINUATION
_PADDED = 0x8  # DATA, HEADERS, PUSH_PROMISE
_PRIORITY_FLAG = 0x20  # HEADERS

# Flags each known type defines (a hunting direction accepts no others).
_DEFINED_FLAGS = (0x09, 0x2D, 0x00, 0x00, 0x01, 0x0C, 0x01, 0x00, 0x00, 0x04)
# Types that live on stream 0 only / on a stream only (WINDOW_UPDATE: either).
_CONNECTION_TYPES = frozenset({_SETTINGS, _PING, _GOAWAY})
_STREAM_TYPES = frozenset({_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _PUSH_PROMISE, _CONTINUATION})
_ZERO_STREAM_OK = frozenset({_SETTINGS, _PING, _GOAWAY, _WINDOW_UPDATE})

_SETTINGS_HEADER_TABLE_SIZE = 0x1
_SETTINGS_MAX_FRAME_SIZE = 0x5

ERROR_CODES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED", 0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM",
    0x8: "CANCEL", 0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR", 0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY", 0xD: "HTTP_1_1_REQUIRED",
}

_HDR = struct.Struct(">BHBBL")  # length (8 + 16 bits), type, flags, R + stream id

_GRPC_TRAILER_NAMES = frozenset({"grpc-status", "grpc-message", "grpc-status-details-bin"})


def _error_name(code: int) -> str:
    return ERROR_CODES.get(code) or "0x%x" % code


# ---------------------------------------------------------------------------------------------
# Frame-header plausibility (hunting, looks_like_http2)
# ---------------------------------------------------------------------------------------------


def _plausible(t: int, f: int, sid_raw: int, length: int, max_len: int) -> bool:
    """Whether a frame header could start real traffic: strict, for finding frames in unknown bytes."""
    if t > _CONTINUATION or f & ~_DEFINED_FLAGS[t] or sid_raw & 0x80000000 or length > max_len:
        return False
    if t in _CONNECTION_TYPES:
        if sid_raw:
            return False
        if t == _SETTINGS:
            return length == 0 if f & _ACK else length % 6 == 0
        return length == 8 if t == _PING else length >= 8
    if t == _WINDOW_UPDATE:
        return length == 4 and (sid_raw == 0 or sid_raw & 1 == 1)
    if not sid_raw & 1:  # stream frames: client-initiated (odd) streams only; pushes are not hunted for
        return False
    if t == _RST_STREAM:
        return length == 4
    if t == _PRIORITY:
        return length == 5
    if t == _PUSH_PROMISE:
        return length >= 4
    if t == _HEADERS:
        return length >= 1 + (1 if f & _PADDED else 0) + (5 if f & _PRIORITY_FLAG else 0)
    return True


def _chain(data: bytes, pos: int, total: int, max_len: int) -> tuple[int, bool, bool]:
    """Follows frame headers from ``pos``: (plausible headers seen, the chain ended exactly at
    ``total``, an implausible header was met)."""
    n = len(data)
    frames = 0
    while pos + 9 <= n:
        hi, lo, t, f, sid = _HDR.unpack_from(data, pos)
        length = (hi << 16) | lo
        if not _plausible(t, f, sid, length, max_len):
            return frames, False, True
        frames += 1
        pos += 9 + length
        if pos >= total:
            return frames, pos == total, False
    return frames, False, False


def _sync_offset(data: bytes, total: int, max_len: int) -> int:
    """Where frames start in a chunk of unknown framing (``total``: captured + uncaptured bytes),
    or -1. At the chunk's start (a syscall boundary) a chain ending exactly at the chunk's end or
    of 2+ headers is enough; inside it, 3+ headers or 2+ ending exactly are needed."""
    frames, exact, bad = _chain(data, 0, total, max_len)
    if not bad and frames and (exact or frames >= 2):
        return 0
    end = min(len(data), _HUNT_SCAN_BYTES) - 9
    for pos in range(1, end + 1):
        # Cheap pre-filter: a known type, the reserved bit clear, and an odd stream id unless the type
        # is a connection frame (or WINDOW_UPDATE): runs of zeros or text rarely pass.
        t = data[pos + 3]
        if t > _CONTINUATION or data[pos + 5] & 0x80 or not (data[pos + 8] & 1 or t in _ZERO_STREAM_OK):
            continue
        frames, exact, bad = _chain(data, pos, total, max_len)
        if not bad and (frames >= 3 or (exact and frames >= 2)):
            return pos
    return -1


def looks_like_http2(data: bytes, *, missing: int = 0) -> bool:
    """Whether a connection's first chunk (seen midstream) looks like HTTP/2: the client preface (or
    a prefix of it), or plausible frame headers from its first byte that end exactly at the
    chunk's end (``missing``: uncaptured bytes after ``data``) or chain two or more."""
    if len(data) >= 3 and PREFACE.startswith(data[:len(PREFACE)]):
        return True
    frames, exact, bad = _chain(data, 0, len(data) + missing, MAX_FRAME_SIZE if missing else DEFAULT_MAX_FRAME_SIZE)
    return not bad and frames > 0 and (exact or frames >= 2)


# ---------------------------------------------------------------------------------------------
# Frame layer: one direction
# ---------------------------------------------------------------------------------------------

# Events (tuples, kind first: the hot path builds one per frame).
EV_FRAME = 0  # (EV_FRAME, type, flags, stream, payload, length, ts, tid, lost): a non-DATA frame
#               payload: what was kept of it; lost: some of it was not captured (else a payload
#               shorter than length was over the buffering limit)
EV_DATA = 1  # (EV_DATA, stream, flags, content, uncaptured, end): DATA content bytes (padding
#              stripped) and uncaptured content bytes; end: the frame ended (one per frame)
EV_PREFACE = 2  # (EV_PREFACE, client): a connection preface: the client's magic (True) or a
#                 server's first SETTINGS (False)
EV_LOST = 3  # (EV_LOST, reason): framing lost; the direction hunts
EV_SYNC = 4  # (EV_SYNC, preface): frames found while hunting (preface: at a client preface)
EV_SKIPPED = 5  # (EV_SKIPPED, nbytes): bytes discarded (hunting, or the rest of a chunk after an error)
EV_ERROR = 6  # (EV_ERROR, reason, fatal): malformed; fatal: not HTTP/2 (the reader stops), else EV_LOST follows

# States. Transitions (all in _FrameReader):
#
#   state      on                                              next
#   _START     first byte "P"                                  _PREFACE
#   _START     other first byte                                _FIRST (server side)
#   _PREFACE   24 bytes of client magic                        _FIRST
#   _FIRST     a SETTINGS frame header (not ACK, stream 0)     _HEADER
#   _HEADER    frame header, payload in later chunks           _PAYLOAD / _DATA_PAYLOAD
#   _PAYLOAD   last payload byte                               _HEADER
#   _DATA_...  last payload byte                               _HEADER
#   _HUNT      chunk starts with (or holds) a frame chain       _HEADER
#   _HUNT      chunk starts with the client magic               _PREFACE
#   any        uncaptured bytes past a frame's end             _HUNT
#   _HEADER    malformed frame header                          _HUNT
#   _START.._FIRST  bytes that are not the preface             _DEAD
_START = 0
_PREFACE = 1
_FIRST = 2
_HEADER = 3
_PAYLOAD = 4
_DATA_PAYLOAD = 5
_HUNT = 6
_DEAD = 7


class _FrameReader:
    """Sans-I/O HTTP/2 frame layer of one direction. ``feed`` returns events; never raises on
    input (the owner contains bugs). ``limit``: payload bytes of a non-DATA frame kept."""

    __slots__ = ("state", "limit", "max_frame", "is_client", "hunt_chunks", "_cap", "_buf", "_pmatch", "_type",
                 "_flags", "_sid", "_length", "_left", "_keep", "_lost", "_ts", "_tid", "_pad_pending",
                 "_content_left", "_pad_left")

    def __init__(self, *, midstream: bool, cap: int) -> None:
        self.state = _HUNT if midstream else _START
        self._cap = cap  # the most the limit may grow to (max_header_list)
        self.max_frame = DEFAULT_MAX_FRAME_SIZE  # SETTINGS_MAX_FRAME_SIZE of the receiver
        self.limit = min(DEFAULT_MAX_FRAME_SIZE, cap)
        self.is_client: bool | None = None  # this direction sent the client preface
        self.hunt_chunks = 0  # chunks skipped in the current hunt
        self._buf = bytearray()  # partial frame header, or the kept payload of a non-DATA frame
        self._pmatch = 0  # preface bytes matched
        self._type = self._flags = self._sid = self._length = self._left = self._keep = 0
        self._lost = False
        self._ts = self._tid = 0
        self._pad_pending = False
        self._content_left = self._pad_left = 0

    def set_max_frame(self, size: int) -> None:
        """The receiver announced SETTINGS_MAX_FRAME_SIZE ``size``."""
        size = max(DEFAULT_MAX_FRAME_SIZE, min(size, MAX_FRAME_SIZE))
        self.max_frame = max(self.max_frame, size)  # until acknowledged, either may be in force
        self.limit = min(self.max_frame, self._cap)

    # -- chunks -----------------------------------------------------------------------------------

    def feed(self, data: bytes, missing: int, ts: int, tid: int) -> list:
        """One chunk: ``data`` as captured, then ``missing`` uncaptured bytes. ``ts``/``tid``: of the
        chunk's first byte (they stamp frames that start in it)."""
        out: list = []
        state = self.state
        pos = 0
        if state >= _HUNT:
            if state == _DEAD:
                return out
            pos = self._hunt(data, missing, out)
            if pos < 0:
                return out
        n = len(data)
        buf = self._buf
        while pos < n:
            state = self.state
            if state == _HEADER:
                if not buf and n - pos >= 9:
                    hi, lo, t, f, sid = _HDR.unpack_from(data, pos)
                    length = (hi << 16) | lo
                    sid &= 0x7FFFFFFF
                    start = pos + 9
                    end = start + length
                    if end <= n:
                        # The common case: a whole frame in this chunk.
                        if t == _DATA and sid:
                            if f & _PADDED:
                                if not length or data[start] >= length:
                                    pos = self._bad("padding exceeds the DATA payload", pos, n, out)
                                    continue
                                out.append((EV_DATA, sid, f, data[start + 1:end - data[start]], 0, True))
                            else:
                                out.append((EV_DATA, sid, f, data[start:end], 0, True))
                            pos = end
                            continue
                        reason = None if t == _HEADERS and sid or t > _CONTINUATION else _malformed(t, f, sid, length)
                        if reason is None:
                            if length <= self.limit:
                                out.append((EV_FRAME, t, f, sid, data[start:end], length, ts, tid, False))
                            else:
                                out.append((EV_FRAME, t, f, sid, data[start:start + self.limit], length, ts, tid,
                                            False))
                            pos = end
                            continue
                        pos = self._bad(reason, pos, n, out)
                        continue
                    pos = self._start(t, f, sid, length, ts, tid, start, n, out)
                    continue
                # The header is split across chunks.
                if not buf:
                    self._ts = ts
                    self._tid = tid
                take = 9 - len(buf)
                buf += data[pos:pos + take]
                pos += take
                if len(buf) < 9:
                    break
                hi, lo, t, f, sid = _HDR.unpack(buf)
                buf.clear()
                pos = self._start(t, f, sid & 0x7FFFFFFF, (hi << 16) | lo, self._ts, self._tid, pos, n, out)
            elif state == _DATA_PAYLOAD:
                if self._pad_pending:
                    pad = data[pos]
                    pos += 1
                    self._pad_pending = False
                    self._left -= 1
                    if pad > self._left:
                        pos = self._bad("padding exceeds the DATA payload", pos, n, out)
                        continue
                    self._content_left = self._left - pad
                    self._pad_left = pad
                    if not self._left:
                        out.append((EV_DATA, self._sid, self._flags, b"", 0, True))
                        self.state = _HEADER
                    continue
                avail = n - pos
                content = self._content_left
                if content:
                    k = content if content <= avail else avail
                    self._content_left = content - k
                    self._left -= k
                    end = not self._left
                    out.append((EV_DATA, self._sid, self._flags, data[pos:pos + k], 0, end))
                    pos += k
                    if end:
                        self.state = _HEADER
                    continue
                k = self._pad_left if self._pad_left <= avail else avail
                self._pad_left -= k
                self._left -= k
                pos += k
                if not self._left:
                    out.append((EV_DATA, self._sid, self._flags, b"", 0, True))
                    self.state = _HEADER
            elif state == _PAYLOAD:
                k = self._left if self._left <= n - pos else n - pos
                room = self._keep - len(buf)
                if room > 0:
                    buf += data[pos:pos + (k if k <= room else room)]
                pos += k
                self._left -= k
                if not self._left:
                    self._emit_frame(out)
            elif state < _HEADER:
                pos = self._prologue(data, pos, ts, tid, out)
            else:  # _HUNT after an error in this chunk, or _DEAD: the rest is not parsed
                break
        if missing:
            self._on_missing(missing, out)
        return out

    def _start(self, t: int, f: int, sid: int, length: int, ts: int, tid: int, pos: int, n: int, out: list) -> int:
        """A frame header was read (its payload starts at ``pos``). Returns the position to go on from."""
        if t <= _CONTINUATION:
            reason = _malformed(t, f, sid, length)
            if reason is not None:
                return self._bad(reason, pos, n, out)
        self._type = t
        self._flags = f
        self._sid = sid
        self._length = length
        self._left = length
        if t == _DATA:
            if not length:
                if f & _PADDED:
                    return self._bad("padding exceeds the DATA payload", pos, n, out)
                out.append((EV_DATA, sid, f, b"", 0, True))
                return pos
            self.state = _DATA_PAYLOAD
            self._pad_pending = bool(f & _PADDED)
            self._content_left = 0 if self._pad_pending else length
            self._pad_left = 0
            return pos
        if not length:
            out.append((EV_FRAME, t, f, sid, b"", 0, ts, tid, False))
            return pos
        self.state = _PAYLOAD
        self._keep = length if length <= self.limit else self.limit
        self._lost = False
        self._ts = ts
        self._tid = tid
        return pos

    def _emit_frame(self, out: list) -> None:
        buf = self._buf
        out.append((EV_FRAME, self._type, self._flags, self._sid, bytes(buf), self._length, self._ts, self._tid,
                    self._lost))
        buf.clear()
        self.state = _HEADER

    def _bad(self, reason: str, pos: int, n: int, out: list) -> int:
        """A malformed frame (header at or payload from ``pos``): framing is taken as lost; the
        rest of the chunk is skipped. Returns ``n``, ending the caller's loop."""
        out.append((EV_ERROR, reason, False))
        self._lose(reason, out)
        if n > pos:
            out.append((EV_SKIPPED, n - pos))
        return n

    def _lose(self, reason: str, out: list) -> None:
        out.append((EV_LOST, reason))
        self._buf.clear()
        self.state = _HUNT
        self.hunt_chunks = 0

    # -- start of the connection ------------------------------------------------------------------

    def _prologue(self, data: bytes, pos: int, ts: int, tid: int, out: list) -> int:
        state = self.state
        n = len(data)
        if state == _START:
            if data[pos] == PREFACE[0]:
                self.state = _PREFACE
                self.is_client = True
            else:
                self.state = _FIRST
                self.is_client = False
            return pos
        if state == _PREFACE:
            m = self._pmatch
            k = min(len(PREFACE) - m, n - pos)
            if data[pos:pos + k] != PREFACE[m:m + k]:
                return self._fatal("not the HTTP/2 connection preface", out)
            m += k
            self._pmatch = m
            if m == len(PREFACE):
                self.state = _FIRST
                out.append((EV_PREFACE, True))
            return pos + k
        # _FIRST: the first frame must be SETTINGS (RFC 9113 3.4). Checked without consuming it.
        buf = self._buf
        head = bytes(buf) + data[pos:pos + 9 - len(buf)]
        if len(head) < 9:
            if not buf:
                self._ts = ts
                self._tid = tid
            buf += data[pos:]
            return n
        hi, lo, t, f, sid = _HDR.unpack(head)
        length = (hi << 16) | lo
        if t != _SETTINGS or f & _ACK or sid or length % 6:
            return self._fatal("the first frame is not SETTINGS", out)
        self.state = _HEADER  # the header (in buf and/or data) is read again by the frame loop
        if not self.is_client:
            out.append((EV_PREFACE, False))
        return pos

    def _fatal(self, reason: str, out: list) -> int:
        out.append((EV_ERROR, reason, True))
        self.state = _DEAD
        self._buf.clear()
        return 1 << 62

    # -- uncaptured bytes -------------------------------------------------------------------------

    def _on_missing(self, m: int, out: list) -> None:
        state = self.state
        if state == _DATA_PAYLOAD:
            if self._pad_pending:  # the pad length is unseen: the rest all counts as content
                self._pad_pending = False
                self._content_left = self._left
                self._pad_left = 0
            k = m if m <= self._left else self._left
            content = k if k <= self._content_left else self._content_left
            self._content_left -= content
            self._pad_left -= k - content
            self._left -= k
            m -= k
            end = not self._left
            out.append((EV_DATA, self._sid, self._flags, b"", content, end))
            if not end:
                return
            self.state = _HEADER
        elif state == _PAYLOAD:
            k = m if m <= self._left else self._left
            self._left -= k
            self._lost = True
            m -= k
            if self._left:
                return
            self._emit_frame(out)
        elif state == _HUNT:
            out.append((EV_SKIPPED, m))
            return
        elif state == _DEAD:
            return
        if m:  # the bytes reach past a frame boundary: the next frame header is unseen
            partial = len(self._buf) if self.state in (_HEADER, _FIRST) else 0
            self._lose("uncaptured bytes across a frame boundary", out)
            out.append((EV_SKIPPED, m + partial))

    # -- hunting ----------------------------------------------------------------------------------

    def _hunt(self, data: bytes, missing: int, out: list) -> int:
        """A chunk while framing is unknown: the offset where frames start in it, or -1 (all skipped)."""
        n = len(data)
        if n >= 4 and PREFACE.startswith(data[:len(PREFACE)]):
            self.state = _PREFACE
            self.is_client = True
            self._pmatch = 0
            self.hunt_chunks = 0
            out.append((EV_SYNC, True))
            return 0
        max_len = max(self.max_frame, DEFAULT_MAX_FRAME_SIZE)
        pos = _sync_offset(data, n + missing, max_len) if n >= 9 else -1
        if pos < 0:
            self.hunt_chunks += 1
            if n or missing:
                out.append((EV_SKIPPED, n + missing))
            return -1
        self.state = _HEADER
        self.hunt_chunks = 0
        out.append((EV_SYNC, False))
        if pos:
            out.append((EV_SKIPPED, pos))
        return pos


def _malformed(t: int, f: int, sid: int, length: int) -> str | None:
    """Why a known frame type's header breaks RFC 9113 (a connection error there: seeing one means
    we, or the peer, lost framing), or None."""
    if t in _STREAM_TYPES:
        if not sid:
            return "stream frame on stream 0"
        if t == _RST_STREAM and length != 4:
            return "RST_STREAM length is not 4"
        if t == _PRIORITY and length != 5:
            return "PRIORITY length is not 5"
        return None
    if t in _CONNECTION_TYPES:
        if sid:
            return "connection frame on a stream"
        if t == _SETTINGS:
            if length % 6 or (f & _ACK and length):
                return "SETTINGS length"
        elif t == _PING:
            if length != 8:
                return "PING length is not 8"
        elif length < 8:
            return "GOAWAY shorter than 8 bytes"
        return None
    if t == _WINDOW_UPDATE and length != 4:
        return "WINDOW_UPDATE length is not 4"
    return None


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------


class _GrpcCounter:
    """Counts gRPC length-prefixed messages (1 flag byte + 4 length bytes, then the message) in the
    DATA content of one direction of one stream."""

    __slots__ = ("count", "_need", "_prefix", "lost")

    def __init__(self) -> None:
        self.count = 0
        self._need = 0  # message bytes still to come
        self._prefix = b""  # partial prefix
        self.lost = False  # a prefix fell in uncaptured bytes: counting stopped

    def feed(self, content: bytes, uncaptured: int) -> None:
        if self.lost:
            return
        n = len(content)
        i = 0
        need = self._need
        while i < n:
            if need:
                k = n - i
                if need <= k:
                    i += need
                    need = 0
                else:
                    need -= k
                    break
                continue
            prefix = self._prefix
            if not prefix and n - i >= 5:
                need = int.from_bytes(content[i + 1:i + 5])
                i += 5
                self.count += 1
                continue
            take = 5 - len(prefix)
            prefix += content[i:i + take]
            i += take
            if len(prefix) == 5:
                need = int.from_bytes(prefix[1:5])
                self.count += 1
                prefix = b""
            self._prefix = prefix
        self._need = need
        if uncaptured:
            if uncaptured <= need:
                self._need = need - uncaptured
            else:
                self.lost = True


class _Stream:
    __slots__ = ("sid", "eid", "head", "ts", "tid", "req_ended", "req_body", "req_trailers", "grpc", "status",
                 "resp_headers", "resp_body", "resp_trailers", "warnings", "pushed", "req_msgs", "resp_msgs")

    def __init__(self, sid: int, eid: int, head: HttpRequest, ts: int, tid: int, grpc: bool, count: bool) -> None:
        self.sid = sid
        self.eid = eid
        self.head = head  # the request head (body_size 0)
        self.ts = ts
        self.tid = tid
        self.req_ended = False
        self.req_body = 0
        self.req_trailers: tuple = ()
        self.grpc = grpc
        self.status: int | None = None  # final response status once its HEADERS were seen
        self.resp_headers: tuple = ()
        self.resp_body = 0
        self.resp_trailers: tuple = ()
        self.warnings: list[str] | None = None
        self.pushed = False
        # gRPC message counters: for gRPC streams, and for those that may turn out to be (no known
        # content-type yet); reported for gRPC streams only.
        self.req_msgs: _GrpcCounter | None = _GrpcCounter() if count else None
        self.resp_msgs: _GrpcCounter | None = _GrpcCounter() if count else None

    def warn(self, warning: str) -> None:
        if self.warnings is None:
            self.warnings = [warning]
        elif warning not in self.warnings:
            self.warnings.append(warning)


class _Block:
    """A header block being assembled from HEADERS/PUSH_PROMISE + CONTINUATION frames."""

    __slots__ = ("sid", "flags", "ts", "tid", "parts", "size", "cut", "over", "promised")

    def __init__(self, sid: int, flags: int, ts: int, tid: int, fragment: bytes, cut: bool, promised: int) -> None:
        self.sid = sid
        self.flags = flags
        self.ts = ts
        self.tid = tid
        self.parts = [fragment]
        self.size = len(fragment)
        self.cut = cut  # the last kept fragment was not fully captured: nothing can follow it
        self.over = False  # larger than max_header_list: not kept
        self.promised = promised


# ---------------------------------------------------------------------------------------------
# Session: one connection, both directions, exchanges out
# ---------------------------------------------------------------------------------------------


class Http2Stats:
    """Counters shared by all sessions of one receiver. Plain ints, mutated in place."""

    __slots__ = (
        "frames",  # frames read, both directions
        "streams",  # streams opened (requests and pushes)
        "exchanges",  # Exchange records produced
        "parse_errors",  # malformed frames / header blocks, protocol violations (never raised)
        "hpack_unknown_refs",  # header fields that referenced dynamic-table entries not seen
        "skipped_bytes",  # bytes discarded while hunting for frames (midstream, after a gap)
        "resets",  # RST_STREAM frames
        "goaways",  # GOAWAY frames
        "dropped_streams",  # streams evicted from a full stream table
        "non_http2_connections",  # sessions judged not HTTP/2 (dead), each counted once
        "truncated_frames",  # frames whose payload was partly uncaptured
        "resyncs",  # times a direction lost framing and hunted for frames
        "orphan_responses",  # response header blocks on streams whose request was not seen
        "oversized_header_blocks",  # header blocks / lists over max_header_list
        "hpack_gaps",  # times a direction's HPACK table became partly unknown
        "hpack_recoveries",  # times it became fully known again
        "internal_errors",  # bugs contained (the session is then dead); never expected
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return "Http2Stats(%s)" % ", ".join(f"{k}={v}" for k, v in self.as_dict().items())


_DROPPED = "stream dropped: too many concurrent streams"


class Http2Session:
    """Turns the chunks of both directions of one HTTP/2 connection into :class:`Exchange` records.

    Not thread-safe: one connection's chunks must be fed from one thread, in order per direction.
    No method raises; :attr:`dead` tells the caller to stop feeding.
    """

    __slots__ = ("_conn", "_stats", "_req_dir", "_readers", "_decoders", "_blocks", "_streams", "_last_client_sid",
                 "_max_streams", "_max_list", "_midstream", "_synced", "_hunt_chunks", "_hunt_bytes", "_fresh",
                 "_decoded_any", "_dead", "_closed", "on_request")

    def __init__(
        self,
        connection: Connection,
        *,
        stats: Http2Stats,
        midstream: bool = False,
        upgraded: bool = False,
        max_streams: int = MAX_STREAMS,
        max_header_list: int = MAX_HEADER_LIST,
    ) -> None:
        self._conn = connection
        self._stats = stats
        if connection.role == Role.SERVER:
            self._req_dir: int | None = Direction.INGRESS
        elif connection.role == Role.CLIENT:
            self._req_dir = Direction.EGRESS
        else:
            self._req_dir = None
        self._max_streams = max(1, max_streams)
        self._max_list = max(256, max_header_list)
        self._readers = (_FrameReader(midstream=midstream, cap=self._max_list),
                         _FrameReader(midstream=midstream, cap=self._max_list))  # indexed by Direction
        self._decoders = (PassiveHpackDecoder(midstream=midstream), PassiveHpackDecoder(midstream=midstream))
        self._blocks: list[_Block | None] = [None, None]
        self._streams: dict[int, _Stream] = {}  # open streams, oldest first
        self._last_client_sid = 0  # highest client-initiated stream id seen
        self._midstream = midstream
        self._synced = not midstream  # some direction has found frames
        self._hunt_chunks = 0
        self._hunt_bytes = 0
        self._fresh = [midstream, midstream]  # frames found, no header block start seen since
        self._decoded_any = False
        self._dead = False
        self._closed = False
        # Called with a RequestStart for every request HEADERS block (not for pushes), before its
        # exchange completes (the stitching processor needs inbound requests while they are in flight).
        self.on_request: Callable[[RequestStart], None] | None = None
        # ``upgraded`` changes nothing in how the bytes are read (the client still sends the preface,
        # the server's first frame is still SETTINGS); stream 1 comes via adopt_upgrade_request.
        del upgraded

    @property
    def dead(self) -> bool:
        """True once the connection was judged not HTTP/2, or given up."""
        return self._dead

    @property
    def connection(self) -> Connection:
        """The connection, with ``role`` filled in once inferred."""
        return self._conn

    def adopt_upgrade_request(self, request: HttpRequest, ts: int, tid: int, exchange_id: int) -> None:
        """h2c upgrade: ``request`` (the HTTP/1.1 request that carried ``Upgrade: h2c``, its
        RequestStart already emitted as ``exchange_id``) is stream 1, its response to come on
        stream 1. Its ``HTTP2-Settings`` are the client's initial settings."""
        if self._dead or self._closed:
            return
        try:
            content_type = request.header("content-type")
            grpc = content_type is not None and content_type.startswith("application/grpc")
            stream = _Stream(1, exchange_id, request, ts, tid, grpc, grpc or content_type is None)
            stream.req_ended = True
            stream.req_body = request.body_size
            self._streams[1] = stream
            self._last_client_sid = max(self._last_client_sid, 1)
            self._stats.streams += 1
            encoded = request.header("http2-settings")
            if encoded and self._req_dir is not None:
                encoded = encoded.strip()
                raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
                self._apply_settings(self._req_dir, raw)
        except Exception:  # noqa: BLE001 -- a bad HTTP2-Settings value; counted, never raised
            self._stats.parse_errors += 1

    def on_data(
        self, direction: Direction, data: bytes, ts_first: int, ts_last: int, *, missing: int = 0, tid: int = 0
    ) -> list[Exchange]:
        """Feeds one chunk of ``direction``; returns the exchanges it completed."""
        if self._dead or self._closed:
            return []
        try:
            reader = self._readers[direction]
            events = reader.feed(data, missing, ts_first, tid)
            if not events:
                return []
            out: list[Exchange] = []
            self._handle(direction, events, ts_last, out)
            if reader.state == _HUNT and reader.hunt_chunks > RESYNC_MAX_SKIP_CHUNKS:
                self._stats.parse_errors += 1
                self._dead = True  # frames never found again: given up
            return out
        except Exception:  # noqa: BLE001 -- a bug; contained
            self._stats.internal_errors += 1
            self._dead = True
            return []

    def on_close(self, ts: int) -> list[Exchange]:
        """The connection closed: every open stream with a request is reported as it stands
        (response None, or partial with ``"response incomplete at close"``), ending at ``ts``."""
        if self._closed:
            return []
        self._closed = True
        if self._dead:
            return []
        out: list[Exchange] = []
        try:
            for stream in list(self._streams.values()):
                self._report(stream, ts, "response incomplete at close" if stream.status is not None else None, out)
            self._streams.clear()
        except Exception:  # noqa: BLE001 -- a bug; contained
            self._stats.internal_errors += 1
        return out

    # -- events ----------------------------------------------------------------------------------

    def _handle(self, direction: int, events: list, ts: int, out: list[Exchange]) -> None:
        stats = self._stats
        for ev in events:
            kind = ev[0]
            if kind == EV_DATA:
                _, sid, flags, content, uncaptured, end = ev
                if end:
                    stats.frames += 1
                if uncaptured:
                    stats.truncated_frames += 1
                stream = self._streams.get(sid)
                if stream is None:
                    continue
                size = len(content) + uncaptured
                if direction == self._req_dir and not stream.pushed:
                    stream.req_body += size
                    if stream.req_msgs is not None:
                        stream.req_msgs.feed(content, uncaptured)
                    if end and flags & _END_STREAM:
                        stream.req_ended = True
                else:
                    stream.resp_body += size
                    if stream.resp_msgs is not None:
                        stream.resp_msgs.feed(content, uncaptured)
                    if end and flags & _END_STREAM:
                        del self._streams[sid]
                        self._report(stream, ts, None, out)
            elif kind == EV_FRAME:
                stats.frames += 1
                _, t, flags, sid, payload, length, fts, tid, lost = ev
                if lost:
                    stats.truncated_frames += 1
                if self._blocks[direction] is not None and t != _CONTINUATION:
                    self._interrupted_block(direction)
                if t == _HEADERS:
                    self._on_headers(direction, flags, sid, payload, length, fts, tid, lost, ts, out)
                elif t == _CONTINUATION:
                    self._on_continuation(direction, flags, sid, payload, length, lost, ts, out)
                elif t == _SETTINGS:
                    if not flags & _ACK:
                        self._apply_settings(direction, payload)
                elif t == _RST_STREAM:
                    self._on_reset(sid, payload, ts, out)
                elif t == _GOAWAY:
                    self._on_goaway(direction, payload, ts, out)
                elif t == _PUSH_PROMISE:
                    self._on_headers(direction, flags, sid, payload, length, fts, tid, lost, ts, out, push=True)
                # PING, WINDOW_UPDATE, PRIORITY and unknown types (ignored, RFC 9113 4.1) carry nothing for us
            elif kind == EV_SKIPPED:
                stats.skipped_bytes += ev[1]
                if not self._synced:
                    self._hunt_chunks += 1
                    self._hunt_bytes += ev[1]
                    if self._hunt_chunks > MIDSTREAM_MAX_SKIP_CHUNKS or self._hunt_bytes > MIDSTREAM_MAX_SKIP_BYTES:
                        stats.non_http2_connections += 1
                        self._dead = True
                        return
            elif kind == EV_PREFACE:
                if not self._on_preface(direction, ev[1]):
                    return
            elif kind == EV_SYNC:
                self._synced = True
                self._fresh[direction] = True
                if ev[1] and not self._decoded_any:  # a client preface: the connection starts here
                    for decoder in self._decoders:
                        if not decoder.complete:
                            decoder.reset()
                    self._fresh = [False, False]
            elif kind == EV_LOST:
                stats.resyncs += 1
                self._blocks[direction] = None
                self._lose_table(direction)
                side = "request" if direction == self._req_dir else "response"
                for stream in self._streams.values():
                    if side == "response" or not stream.req_ended:
                        stream.warn(f"{side} frames lost")
            elif kind == EV_ERROR:
                stats.parse_errors += 1
                if ev[2]:
                    stats.non_http2_connections += 1
                    self._dead = True
                    return

    def _on_preface(self, direction: int, client: bool) -> bool:
        req_dir = direction if client else 1 - direction
        if self._req_dir is None:
            self._set_role(req_dir)
        elif self._req_dir != req_dir:  # the bytes contradict the role: not the HTTP/2 we expect
            self._stats.non_http2_connections += 1
            self._dead = True
            return False
        return True

    def _set_role(self, req_dir: int) -> None:
        self._req_dir = Direction(req_dir)
        role = Role.SERVER if req_dir == Direction.INGRESS else Role.CLIENT
        self._conn = replace(self._conn, role=role)

    def _lose_table(self, direction: int) -> None:
        decoder = self._decoders[direction]
        if decoder.complete:
            self._stats.hpack_gaps += 1
        decoder.lose()

    def _apply_settings(self, direction: int, payload: bytes) -> None:
        """SETTINGS sent in ``direction`` bound what the other direction may send."""
        other = 1 - direction
        for i in range(0, min(len(payload) - len(payload) % 6, 6 * _MAX_SETTINGS), 6):
            ident = int.from_bytes(payload[i:i + 2])
            value = int.from_bytes(payload[i + 2:i + 6])
            if ident == _SETTINGS_HEADER_TABLE_SIZE:
                self._decoders[other].set_limit(value)
            elif ident == _SETTINGS_MAX_FRAME_SIZE:
                self._readers[other].set_max_frame(value)

    # -- header blocks ---------------------------------------------------------------------------

    def _on_headers(self, direction: int, flags: int, sid: int, payload: bytes, length: int, fts: int, tid: int,
                    lost: bool, ts: int, out: list[Exchange], push: bool = False) -> None:
        """A HEADERS (or PUSH_PROMISE) frame: its block fragment, after padding and priority fields.
        ``payload`` may be shorter than ``length``: ``lost`` (uncaptured) or over the buffering limit."""
        self._fresh[direction] = False
        start = 0
        pad = 0
        if flags & _PADDED:
            if not payload:
                self._unreadable_block(direction, lost)
                return
            pad = payload[0]
            start = 1
        if not push and flags & _PRIORITY_FLAG:
            start += 5
        promised = 0
        if push:
            if len(payload) < start + 4:
                self._unreadable_block(direction, lost)
                return
            promised = int.from_bytes(payload[start:start + 4]) & 0x7FFFFFFF
            start += 4
        end = length - pad
        if end < start:
            self._malformed_block(direction)
            return
        cut = end > len(payload)  # the fragment itself is incomplete (not just its padding)
        over = cut and not lost  # incomplete because over the buffering limit: not decoded at all
        fragment = payload[start:end] if not cut else payload[start:]
        if flags & _END_HEADERS:
            self._on_block(direction, sid, flags, fragment, cut, over, fts, tid, promised, ts, out)
        else:
            block = _Block(sid, flags, fts, tid, fragment, cut, promised)
            if over:
                block.over = True
                block.parts = []
            self._blocks[direction] = block

    def _on_continuation(self, direction: int, flags: int, sid: int, payload: bytes, length: int, lost: bool,
                         ts: int, out: list[Exchange]) -> None:
        block = self._blocks[direction]
        if block is None or block.sid != sid:
            # A fragment whose block start was not seen: right after finding frames midway that
            # is expected; otherwise a protocol error. Either way its insertions are unknown.
            if block is not None:
                self._interrupted_block(direction)
            elif not self._fresh[direction]:
                self._stats.parse_errors += 1
            self._lose_table(direction)
            return
        if not block.over and not block.cut:  # after a cut, later fragments cannot be aligned: not kept
            block.size += len(payload)
            if block.size > self._max_list or (len(payload) < length and not lost):
                block.over = True
                block.parts = []
            else:
                block.parts.append(payload)
                if len(payload) < length:
                    block.cut = True
        if flags & _END_HEADERS:
            self._blocks[direction] = None
            self._on_block(direction, sid, block.flags, b"".join(block.parts), block.cut, block.over, block.ts,
                           block.tid, block.promised, ts, out)

    def _unreadable_block(self, direction: int, lost: bool) -> None:
        """A header block frame too short to read (malformed, or cut by the capture limit)."""
        if not lost:
            self._stats.parse_errors += 1
        self._lose_table(direction)

    def _interrupted_block(self, direction: int) -> None:
        """A frame other than CONTINUATION came in the middle of a header block (protocol error)."""
        self._blocks[direction] = None
        self._stats.parse_errors += 1
        self._lose_table(direction)

    def _malformed_block(self, direction: int) -> None:
        self._stats.parse_errors += 1
        self._lose_table(direction)

    def _on_block(self, direction: int, sid: int, flags: int, block: bytes, cut: bool, over: bool, fts: int,
                  tid: int, promised: int, ts: int, out: list[Exchange]) -> None:
        """A whole header block of ``direction`` on stream ``sid``: decoded, then given to its stream."""
        stats = self._stats
        decoder = self._decoders[direction]
        was_complete = decoder.complete
        recoveries = decoder.recoveries
        self._decoded_any = True
        if over:
            stats.oversized_header_blocks += 1
            decoder.lose()
            decoded = DecodedBlock([], 0, None, True, True)
        else:
            decoded = decoder.decode(block, max_list=self._max_list, cut=cut)
            if decoded.error is not None:
                stats.parse_errors += 1
            if decoded.oversized:
                stats.oversized_header_blocks += 1
            stats.hpack_unknown_refs += decoded.unknown
        if was_complete and not decoder.complete:
            stats.hpack_gaps += 1
        stats.hpack_recoveries += decoder.recoveries - recoveries
        req_dir = self._req_dir
        if req_dir is None:  # midstream, role unknown: the block's pseudo-headers tell
            names = {name for name, _ in decoded.fields if name is not None and name[:1] == ":"}
            if ":method" in names or promised:
                req_dir = direction if not promised else 1 - direction
            elif ":status" in names:
                req_dir = 1 - direction
            else:
                return
            self._set_role(req_dir)
        if promised:
            if direction == req_dir:  # only servers push
                stats.parse_errors += 1
                return
            self._open(promised, decoded, cut, over, 0, fts, tid, out, pushed=True)
            return
        stream = self._streams.get(sid)
        if direction == req_dir:
            if stream is not None:  # request trailers
                stream.req_trailers = self._known(decoded, stream, "request trailers", cut, over)
                if flags & _END_STREAM:
                    stream.req_ended = True
            elif sid & 1 and sid > self._last_client_sid:
                self._open(sid, decoded, cut, over, flags, fts, tid, out)
            elif not sid & 1:
                stats.parse_errors += 1  # clients open odd streams only
            # else: a stream already finished, dropped, or opened before a midstream attach
            return
        if stream is None:
            stats.orphan_responses += 1
            return
        self._on_response_block(stream, flags, decoded, cut, over, ts, out)

    def _known(self, decoded: DecodedBlock, stream: _Stream, what: str, cut: bool, over: bool) -> tuple:
        """The known fields of a trailers block (pseudo-headers dropped); unknowns become a warning."""
        fields = tuple((name, value) for name, value in decoded.fields
                       if name is not None and value is not None and name[:1] != ":")
        if decoded.unknown:
            stream.warn(_unknown_warning(decoded.unknown, what.removesuffix("s")))
        if over:
            stream.warn(f"{what} larger than {self._max_list} bytes")
        elif cut:
            stream.warn(f"{what} truncated")
        elif decoded.error is not None:
            stream.warn(f"{what}: {decoded.error}")
        elif decoded.oversized:
            stream.warn(f"{what} larger than {self._max_list} bytes")
        return fields

    def _open(self, sid: int, decoded: DecodedBlock, cut: bool, over: bool, flags: int, fts: int, tid: int,
              out: list[Exchange], pushed: bool = False) -> None:
        """A request head (or a pushed one): opens stream ``sid``."""
        method = path = authority = scheme = None
        extra = None
        regular = []
        host = False
        for name, value in decoded.fields:
            if name is None or value is None:
                continue
            if name[:1] == ":":
                if name == ":method":
                    method = value
                elif name == ":path":
                    path = value
                elif name == ":authority":
                    authority = value
                elif name == ":scheme":
                    scheme = value
                else:
                    extra = [*(extra or ()), (name, value)]
            else:
                if name == "host":
                    host = True
                regular.append((name, value))
        if method is None and path is None and authority is None and scheme is None:
            # No request pseudo-header. After a midstream attach this may be the trailers of a stream
            # opened before it: only what is surely a request opens a stream. Otherwise a malformed
            # request, or one whose fields were lost: it is tracked (its response must not be orphaned).
            if self._midstream:
                return
            if not (decoded.unknown or cut or over or decoded.error):
                self._stats.parse_errors += 1
        head_fields: list[tuple[str, str]] = []
        if authority is not None and not host:
            head_fields.append(("host", authority))
        if scheme is not None:
            head_fields.append((":scheme", scheme))
        if extra:
            head_fields += extra
        headers = tuple(head_fields + regular) if head_fields else tuple(regular)
        if method == "CONNECT" and path is None:
            target = authority or ""
        else:
            target = path or ""
        head = HttpRequest(method or "", target, "2", headers)
        grpc = False
        content_type = None
        for name, value in regular:
            if name == "content-type":
                content_type = value
                grpc = value.startswith("application/grpc")
                break
            if name[:5] == "grpc-":
                grpc = True
        streams = self._streams
        if len(streams) >= self._max_streams:
            oldest = next(iter(streams.values()))
            del streams[oldest.sid]
            self._stats.dropped_streams += 1
            self._report(oldest, fts, _DROPPED, out)
        stream = _Stream(sid, next(exchange_ids), head, fts, tid, grpc, grpc or content_type is None)
        streams[sid] = stream
        self._stats.streams += 1
        if pushed:
            stream.pushed = True
            stream.req_ended = True
        else:
            self._last_client_sid = sid
            if flags & _END_STREAM:
                stream.req_ended = True
        unknown = decoded.unknown
        if unknown:
            missing = [name for name, value in ((":method", method), (":scheme", scheme), (":path", path),
                                                (":authority", authority)) if value is None]
            if method == "CONNECT":
                missing = [name for name in missing if name not in (":scheme", ":path")]
            for name in missing[:unknown]:
                stream.warn("hpack: unknown " + name)
            if unknown > len(missing):
                stream.warn(_unknown_warning(unknown - len(missing), "request header"))
        if over:
            stream.warn(f"request headers larger than {self._max_list} bytes")
        elif cut:
            stream.warn("request headers truncated")
        elif decoded.error is not None:
            stream.warn("request headers: " + decoded.error)
        elif decoded.oversized:
            stream.warn(f"request headers larger than {self._max_list} bytes")
        if self.on_request is not None and not pushed:
            self.on_request(RequestStart(stream.eid, self._conn, head, fts, tid))

    def _on_response_block(self, stream: _Stream, flags: int, decoded: DecodedBlock, cut: bool, over: bool, ts: int,
                           out: list[Exchange]) -> None:
        if stream.status is not None:  # trailers
            stream.resp_trailers = self._known(decoded, stream, "response trailers", cut, over)
            if not stream.grpc and any(name[:5] == "grpc-" for name, _ in stream.resp_trailers):
                self._grpc_late(stream)
        else:
            status = None
            headers = []
            for name, value in decoded.fields:
                if name is None or value is None:
                    continue
                if name[:1] == ":":
                    if name == ":status":
                        status = value
                else:
                    headers.append((name, value))
            if status is not None and len(status) == 3 and status.isdigit():
                code = int(status)
                if code < 200 and not flags & _END_STREAM:
                    return  # interim (1xx): skipped
            else:
                code = 0
                if decoded.unknown and status is None:
                    stream.warn("hpack: unknown :status")
                    if decoded.unknown > 1:
                        stream.warn(_unknown_warning(decoded.unknown - 1, "response header"))
                elif status is not None or not (cut or over):
                    self._stats.parse_errors += 1
                    stream.warn("response without a valid :status")
            if code and decoded.unknown:
                stream.warn(_unknown_warning(decoded.unknown, "response header"))
            if over:
                stream.warn(f"response headers larger than {self._max_list} bytes")
            elif cut:
                stream.warn("response headers truncated")
            elif decoded.error is not None:
                stream.warn("response headers: " + decoded.error)
            elif decoded.oversized:
                stream.warn(f"response headers larger than {self._max_list} bytes")
            trailers: tuple = ()
            if flags & _END_STREAM and any(name == "grpc-status" for name, _ in headers):  # gRPC Trailers-Only
                trailers = tuple(field for field in headers if field[0] in _GRPC_TRAILER_NAMES)
                headers = [field for field in headers if field[0] not in _GRPC_TRAILER_NAMES]
                stream.grpc = True
            elif not stream.grpc:
                for name, value in headers:
                    if name == "content-type" and value.startswith("application/grpc") or name[:5] == "grpc-":
                        self._grpc_late(stream)
                        break
            stream.status = code
            stream.resp_headers = tuple(headers)
            stream.resp_trailers = trailers
        if flags & _END_STREAM:
            self._streams.pop(stream.sid, None)
            self._report(stream, ts, None, out)

    @staticmethod
    def _grpc_late(stream: _Stream) -> None:
        """The response shows a gRPC stream whose request did not (its content-type was unknown)."""
        stream.grpc = True
        if stream.resp_msgs is None:
            stream.resp_msgs = _GrpcCounter()

    # -- stream endings --------------------------------------------------------------------------

    def _on_reset(self, sid: int, payload: bytes, ts: int, out: list[Exchange]) -> None:
        self._stats.resets += 1
        stream = self._streams.pop(sid, None)
        if stream is not None:
            code = int.from_bytes(payload[:4]) if len(payload) >= 4 else -1
            self._report(stream, ts, "stream reset: " + (_error_name(code) if code >= 0 else "unknown code"), out)

    def _on_goaway(self, direction: int, payload: bytes, ts: int, out: list[Exchange]) -> None:
        """Streams the receiver of the GOAWAY opened above its last-stream-id were not processed."""
        self._stats.goaways += 1
        if len(payload) < 8 or self._req_dir is None:
            return
        last = int.from_bytes(payload[:4]) & 0x7FFFFFFF
        warning = "stream refused: GOAWAY " + _error_name(int.from_bytes(payload[4:8]))
        from_server = direction != self._req_dir
        for stream in list(self._streams.values()):
            if stream.sid > last and (stream.pushed != from_server):
                del self._streams[stream.sid]
                self._report(stream, ts, warning, out)

    def _report(self, stream: _Stream, end_ts: int, warning: str | None, out: list[Exchange]) -> None:
        """Reports ``stream``'s exchange (already removed from the table), with ``warning`` if any."""
        head = stream.head
        if stream.req_body or stream.req_trailers:
            request = HttpRequest(head.method, head.target, head.version, head.headers, stream.req_body,
                                  stream.req_trailers)
        else:
            request = head
        if stream.status is not None:
            response = HttpResponse(stream.status, "", "2", stream.resp_headers, stream.resp_body,
                                    stream.resp_trailers)
        else:
            response = None
        if warning is not None:
            stream.warn(warning)
        warnings = tuple(stream.warnings) if stream.warnings else ()
        if stream.grpc:
            req_msgs = stream.req_msgs.count if stream.req_msgs is not None else 0
            resp_msgs = stream.resp_msgs.count if stream.resp_msgs is not None else 0
            self._stats.exchanges += 1
            out.append(Exchange("grpc", self._conn, request, response, stream.ts, end_ts, stream.tid, warnings,
                                exchange_id=stream.eid, rpc_messages=(req_msgs, resp_msgs)))
        else:
            self._stats.exchanges += 1
            out.append(Exchange("http2", self._conn, request, response, stream.ts, end_ts, stream.tid, warnings,
                                exchange_id=stream.eid))


def _unknown_warning(count: int, what: str) -> str:
    return f"hpack: {count} unknown {what} field{'s' if count != 1 else ''}"
