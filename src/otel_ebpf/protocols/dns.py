"""DNS: a sans-I/O message parser, a TCP framer, and a tracker that pairs queries with responses.

Usage::

    from otel_ebpf.protocols.dns import DnsTracker, TcpDnsFramer

    tracker = DnsTracker()                        # one per receiver; max_pending, timeout_ns
    # UDP: one datagram is one message.
    lookup = tracker.feed((pid, sock_id), datagram, ts_ns, context=connection)
    # TCP: messages carry a 2-byte length prefix; one framer per connection and direction.
    for message in framer.receive_data(data):
        lookup = tracker.feed((pid, sock_id), message, ts_ns, context=connection, transport="tcp")
    if lookup is not None:                        # a query was answered
        consume(lookup)                           # lookup.name, lookup.type_name, lookup.rcode_name,
                                                  # lookup.answers, lookup.end_ns - lookup.start_ns
    for lookup in tracker.expire(now_ns):         # queries never answered: timed_out=True, rcode=None
        consume(lookup)
    tracker.malformed, tracker.unmatched_responses, tracker.evicted, tracker.timed_out

One level down, :func:`parse_message` turns the bytes of one message into a
:class:`DnsMessage` or raises :class:`DnsError`; no clocks, no sockets, and
timestamps come in as arguments.

Design
------
* **What is read.** The header, every question (only the first is reported:
  ``qname``/``qtype``/``qclass``; ``question_count`` says how many there were) and
  every answer record. A, AAAA, CNAME, PTR and NS answers are reported with their
  data as text; other types are checked for framing, counted in ``answer_count``
  and not reported. The authority and additional sections are not read, so a
  message cut inside them (by the capture limit, say) still parses.
* **Names** are lowercase (ASCII only, as DNS compares them), without the trailing
  dot, ``""`` for the root. Bytes that are not printable ASCII, and ``.``/``\\``
  inside a label, are escaped as in master files (``\\DDD``, ``\\.``).
* **Strict where it frames.** Anything that breaks framing raises
  :class:`DnsError` (a :class:`ValueError`) saying what and where: a short header,
  a section cut by the end of the message, a label longer than 63 bytes or of an
  extended type, a name longer than 255 bytes, a compression pointer that does not
  point strictly backwards (which rules out loops and forward references), record
  counts that cannot fit in the bytes present, A/AAAA data of the wrong size, a
  CNAME/PTR/NS name that does not fill its data. No other exception escapes, and
  every loop is bounded by the message size.
* **Pairing.** :class:`DnsTracker` matches a response to the query with the same
  ``(key, id, qname, qtype)``; ``key`` is whatever hashable identifies the flow
  (``(pid, sock_id)`` for a client socket, a 5-tuple for a server's unconnected
  socket). A response with no query waiting is counted in ``unmatched_responses``
  and dropped. A retransmitted query (same key, id, name and type) keeps the first
  query's timestamp and context. At most ``max_pending`` queries wait: one more
  evicts the oldest, counted in ``evicted``. :meth:`DnsTracker.expire` reports
  queries older than ``timeout_ns`` as lookups with ``timed_out=True``.
* **Header rcode only.** ``rcode`` is the 4-bit header RCODE; the EDNS extended
  RCODE bits in the OPT record (additional section) are not read.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "HEADER_SIZE",
    "MAX_COMPRESSION_JUMPS",
    "MAX_LABEL_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_REPORTED_ANSWERS",
    "MIN_QUESTION_SIZE",
    "MIN_RECORD_SIZE",
    "RCODE_NAMES",
    "TYPE_NAMES",
    "DnsAnswer",
    "DnsError",
    "DnsLookup",
    "DnsMessage",
    "DnsTracker",
    "TcpDnsFramer",
    "parse_message",
    "rcode_name",
    "type_name",
]

# ---------------------------------------------------------------------------------------------
# Limits (RFC 1035 unless said otherwise)
# ---------------------------------------------------------------------------------------------

HEADER_SIZE = 12
"""Fixed header: id, flags, and the four section counts, 16 bits each."""

MAX_LABEL_LENGTH = 63
"""Longest label (RFC 1035 2.3.4): the length byte keeps its top two bits for the label type,
``00`` = ordinary label, ``11`` = compression pointer; ``01``/``10`` (extended labels, RFC 6891
retired the only one defined) are refused."""

MAX_NAME_LENGTH = 255
"""Longest name on the wire, length bytes and the root's zero byte included (RFC 1035 2.3.4)."""

MAX_COMPRESSION_JUMPS = 127
"""Compression pointers followed while reading one name. A name of 255 bytes has at most 127
labels, so an encoder never needs more jumps; pointers must also point strictly backwards, which
alone rules out loops; this bound caps the work of a chain of pointers to pointers."""

MIN_QUESTION_SIZE = 5
"""Smallest question: the root name (1 byte), type and class. Counts claiming more questions than
the bytes present could hold are refused before any loop runs."""

MIN_RECORD_SIZE = 11
"""Smallest resource record: the root name (1 byte), type, class, TTL and RDLENGTH (10 bytes)."""

MAX_REPORTED_ANSWERS = 64
"""Answers kept in :attr:`DnsMessage.answers`. Every answer is still checked and counted in
``answer_count``; a lookup with more addresses than this (a 64 KiB TCP response can hold
thousands) would only bloat span attributes."""

# ---------------------------------------------------------------------------------------------
# Names of types and response codes
# ---------------------------------------------------------------------------------------------

_A = 1
_NS = 2
_CNAME = 5
_PTR = 12
_AAAA = 28

TYPE_NAMES: dict[int, str] = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    64: "SVCB",
    65: "HTTPS",
    255: "ANY",
}

RCODE_NAMES: dict[int, str] = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
}


def type_name(rtype: int) -> str:
    """``"AAAA"`` for 28; ``"TYPE{n}"`` (the RFC 3597 spelling) for types not in :data:`TYPE_NAMES`."""
    name = TYPE_NAMES.get(rtype)
    return name if name is not None else f"TYPE{rtype}"


def rcode_name(rcode: int) -> str:
    """``"NXDOMAIN"`` for 3; ``"RCODE{n}"`` for codes not in :data:`RCODE_NAMES`."""
    name = RCODE_NAMES.get(rcode)
    return name if name is not None else f"RCODE{rcode}"


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------


class DnsError(ValueError):
    """The bytes are not a well-formed DNS message; the text says what is wrong and where."""


class DnsAnswer(NamedTuple):
    """One reported answer record: owner name, type, TTL (seconds) and data as text (a dotted quad
    for A, compressed IPv6 text for AAAA, a name for CNAME/PTR/NS)."""

    name: str
    type: int
    ttl: int
    data: str


@dataclass(frozen=True, slots=True)
class DnsMessage:
    """One parsed message. Without a question (``question_count == 0``), ``qname`` is ``""`` and
    ``qtype``/``qclass`` are 0 (a reserved value no question carries)."""

    id: int
    is_response: bool  # QR bit
    opcode: int
    rcode: int  # 4-bit header RCODE
    truncated: bool  # TC bit: the answer did not fit (UDP); the client retries over TCP
    qname: str
    qtype: int
    qclass: int
    question_count: int  # QDCOUNT
    answer_count: int  # ANCOUNT: every answer record, reported or not
    answers: tuple[DnsAnswer, ...]


_HEADER = struct.Struct("!6H")
_QUESTION_TAIL = struct.Struct("!HH")  # type, class
_RECORD_TAIL = struct.Struct("!HHIH")  # type, class, TTL, RDLENGTH
_RECORD_TAIL_SIZE = _RECORD_TAIL.size

# Label bytes printed as they are: printable ASCII except the two that master-file syntax escapes.
_PLAIN_LABEL_BYTES = bytes(b for b in range(0x21, 0x7F) if b not in b".\\")


def parse_message(data: bytes) -> DnsMessage:
    """Parses one DNS message (without the TCP length prefix). Raises :class:`DnsError`."""
    if not isinstance(data, bytes):
        data = bytes(data)
    size = len(data)
    if size < HEADER_SIZE:
        raise DnsError(f"message of {size} bytes is shorter than the {HEADER_SIZE}-byte header")
    ident, flags, qdcount, ancount, _nscount, _arcount = _HEADER.unpack_from(data)
    room = size - HEADER_SIZE
    if qdcount * MIN_QUESTION_SIZE + ancount * MIN_RECORD_SIZE > room:
        raise DnsError(
            f"header claims {qdcount} questions and {ancount} answers, more than the "
            f"{room} bytes after the header can hold"
        )

    pos = HEADER_SIZE
    qname, qtype, qclass = "", 0, 0
    for index in range(qdcount):
        name, pos = _read_name(data, pos)
        if pos + _QUESTION_TAIL.size > size:
            raise DnsError(f"question {index} cut by the end of the message at offset {size}")
        if index == 0:
            qname = name
            qtype, qclass = _QUESTION_TAIL.unpack_from(data, pos)
        pos += _QUESTION_TAIL.size

    answers: list[DnsAnswer] = []
    for index in range(ancount):
        name, pos = _read_name(data, pos)
        if pos + _RECORD_TAIL_SIZE > size:
            raise DnsError(f"answer {index} cut by the end of the message at offset {size}")
        rtype, _rclass, ttl, rdlength = _RECORD_TAIL.unpack_from(data, pos)
        pos += _RECORD_TAIL_SIZE
        end = pos + rdlength
        if end > size:
            raise DnsError(
                f"answer {index} ({type_name(rtype)}) claims {rdlength} bytes of data at offset {pos}, "
                f"past the end of the message at {size}"
            )
        text = _rdata_text(data, rtype, pos, end)
        if text is not None and len(answers) < MAX_REPORTED_ANSWERS:
            answers.append(DnsAnswer(name, rtype, ttl, text))
        pos = end

    return DnsMessage(
        id=ident,
        is_response=bool(flags & 0x8000),
        opcode=(flags >> 11) & 0xF,
        rcode=flags & 0xF,
        truncated=bool(flags & 0x0200),
        qname=qname,
        qtype=qtype,
        qclass=qclass,
        question_count=qdcount,
        answer_count=ancount,
        answers=tuple(answers),
    )


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name starting at ``offset`` and the offset just after it in the record (after its first
    compression pointer, if it has one)."""
    size = len(data)
    labels: list[str] = []
    wire_length = 1  # the root's zero byte
    pos = offset
    resume = -1  # where the record continues: set at the first pointer
    floor = offset  # a pointer must point strictly below this, the start of the current run of labels
    jumps = 0
    while True:
        if pos >= size:
            raise DnsError(f"name at offset {offset} runs past the end of the message at {size}")
        length = data[pos]
        if length == 0:
            return ".".join(labels), (pos + 1 if resume < 0 else resume)
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 1 >= size:
                raise DnsError(f"compression pointer at offset {pos} cut by the end of the message")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= floor:
                raise DnsError(
                    f"compression pointer at offset {pos} points to {target}, not before {floor} "
                    f"(a loop or a forward reference)"
                )
            jumps += 1
            if jumps > MAX_COMPRESSION_JUMPS:
                raise DnsError(f"name at offset {offset} follows more than {MAX_COMPRESSION_JUMPS} pointers")
            if resume < 0:
                resume = pos + 2
            pos = floor = target
            continue
        if kind:
            raise DnsError(
                f"label length byte 0x{length:02x} at offset {pos}: longer than {MAX_LABEL_LENGTH} "
                f"(extended label types are not supported)"
            )
        wire_length += 1 + length
        if wire_length > MAX_NAME_LENGTH:
            raise DnsError(f"name at offset {offset} is longer than {MAX_NAME_LENGTH} bytes")
        start = pos + 1
        pos = start + length
        if pos > size:
            raise DnsError(f"label at offset {start - 1} cut by the end of the message")
        labels.append(_label_text(data[start:pos]))


def _label_text(raw: bytes) -> str:
    raw = raw.lower()  # ASCII letters only, as DNS compares names
    if not raw.translate(None, _PLAIN_LABEL_BYTES):
        return raw.decode("ascii")
    out = []
    for byte in raw:
        if byte in b".\\":
            out.append("\\" + chr(byte))
        elif 0x21 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return "".join(out)


def _rdata_text(data: bytes, rtype: int, start: int, end: int) -> str | None:
    """The record data as text for the reported types, None for the others."""
    if rtype == _A:
        if end - start != 4:
            raise DnsError(f"A record data at offset {start} is {end - start} bytes, not 4")
        a, b, c, d = data[start:end]
        return f"{a}.{b}.{c}.{d}"
    if rtype == _AAAA:
        if end - start != 16:
            raise DnsError(f"AAAA record data at offset {start} is {end - start} bytes, not 16")
        return ipaddress.IPv6Address(data[start:end]).compressed
    if rtype == _CNAME or rtype == _PTR or rtype == _NS:
        name, after = _read_name(data, start)
        if after != end:
            raise DnsError(
                f"{type_name(rtype)} record data at offset {start}: its name takes {after - start} "
                f"of {end - start} bytes"
            )
        return name
    return None


# ---------------------------------------------------------------------------------------------
# DNS over TCP
# ---------------------------------------------------------------------------------------------


class TcpDnsFramer:
    """Reassembles DNS messages from one direction of a TCP stream, where each message is preceded
    by its length as 2 bytes, big-endian (RFC 1035 4.2.2). Memory is bounded by the prefix: at most
    one incomplete message (< 64 KiB + 2) is buffered. A zero-length message comes out as ``b""``,
    for the parser to refuse."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held of a message not yet complete (its length prefix included)."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> list[bytes]:
        """The messages completed by ``data``, in order; ``[]`` when more data is needed."""
        buffer = self._buffer
        buffer += data
        messages = []
        pos = 0
        available = len(buffer)
        while available - pos >= 2:
            end = pos + 2 + ((buffer[pos] << 8) | buffer[pos + 1])
            if end > available:
                break
            messages.append(bytes(buffer[pos + 2:end]))
            pos = end
        if pos:
            del buffer[:pos]
        return messages

    def reset(self) -> None:
        """Drops a partial message, e.g. after bytes of the stream were lost (the next byte must
        start a length prefix)."""
        self._buffer.clear()


# ---------------------------------------------------------------------------------------------
# Lookups
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DnsLookup:
    """A query and its response, or a query that got none (``timed_out``: then ``rcode`` and
    ``rcode_name`` are None, there are no answers, and ``end_ns`` is ``start_ns + timeout_ns``).
    ``context`` and ``transport`` are what was given with the (first) query."""

    name: str
    type: int
    type_name: str
    rcode: int | None
    rcode_name: str | None
    answer_count: int
    answers: tuple[DnsAnswer, ...]
    start_ns: int
    end_ns: int
    timed_out: bool
    truncated: bool  # the response had the TC bit set
    context: Any
    transport: str  # "udp" or "tcp"

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(slots=True)
class _Pending:
    name: str
    type: int
    start_ns: int
    context: Any
    transport: str


_TRANSPORTS = ("udp", "tcp")


class DnsTracker:
    """Pairs queries and responses into :class:`DnsLookup` records. Not thread-safe: one caller
    (the receiver's event loop) feeds it. Counters are plain int attributes, never reset."""

    __slots__ = (
        "_max_pending",
        "_pending",
        "_timeout_ns",
        "evicted",
        "malformed",
        "retransmissions",
        "timed_out",
        "unmatched_responses",
    )

    def __init__(self, *, max_pending: int = 4096, timeout_ns: int = 10_000_000_000) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        if timeout_ns <= 0:
            raise ValueError(f"timeout_ns must be positive, got {timeout_ns}")
        self._max_pending = max_pending
        self._timeout_ns = timeout_ns
        # (key, id, qname, qtype) -> query; dicts keep insertion order, so the first is the oldest.
        self._pending: dict[tuple[Hashable, int, str, int], _Pending] = {}
        self.malformed = 0  # feed(): bytes that did not parse
        self.unmatched_responses = 0  # responses with no query waiting
        self.evicted = 0  # queries dropped unanswered because max_pending were waiting
        self.timed_out = 0  # queries reported by expire()
        self.retransmissions = 0  # queries identical to one already waiting

    @property
    def pending(self) -> int:
        """Queries waiting for a response."""
        return len(self._pending)

    def feed(
        self,
        key: Hashable,
        data: bytes,
        ts_ns: int,
        *,
        context: Any = None,
        transport: str = "udp",
    ) -> DnsLookup | None:
        """Parses one message and hands it to :meth:`on_query` or :meth:`on_response` by its QR bit.
        Returns the completed lookup, if any. Malformed bytes are counted in ``malformed``, never
        raised. ``context`` and ``transport`` are used for queries only."""
        try:
            message = parse_message(data)
        except DnsError:
            self.malformed += 1
            return None
        if message.is_response:
            return self.on_response(key, message, ts_ns)
        self.on_query(key, message, ts_ns, context, transport=transport)
        return None

    def on_query(
        self,
        key: Hashable,
        message: DnsMessage,
        ts_ns: int,
        context: Any = None,
        *,
        transport: str = "udp",
    ) -> None:
        """Records a query sent at ``ts_ns``. A retransmission keeps the first one's timestamp and
        context; a new query when ``max_pending`` are waiting evicts the oldest."""
        if transport not in _TRANSPORTS:
            raise ValueError(f"transport must be 'udp' or 'tcp', got {transport!r}")
        match = (key, message.id, message.qname, message.qtype)
        pending = self._pending
        if match in pending:
            self.retransmissions += 1
            return
        if len(pending) >= self._max_pending:
            del pending[next(iter(pending))]
            self.evicted += 1
        pending[match] = _Pending(message.qname, message.qtype, ts_ns, context, transport)

    def on_response(self, key: Hashable, message: DnsMessage, ts_ns: int) -> DnsLookup | None:
        """The lookup completed by a response received at ``ts_ns``; None (counted in
        ``unmatched_responses``) when no query with its key, id, name and type is waiting."""
        query = self._pending.pop((key, message.id, message.qname, message.qtype), None)
        if query is None:
            self.unmatched_responses += 1
            return None
        return DnsLookup(
            name=query.name,
            type=query.type,
            type_name=type_name(query.type),
            rcode=message.rcode,
            rcode_name=rcode_name(message.rcode),
            answer_count=message.answer_count,
            answers=message.answers,
            start_ns=query.start_ns,
            end_ns=ts_ns,
            timed_out=False,
            truncated=message.truncated,
            context=query.context,
            transport=query.transport,
        )

    def expire(self, now_ns: int) -> list[DnsLookup]:
        """Queries waiting for ``timeout_ns`` or longer at ``now_ns``, removed and returned as
        timed-out lookups (oldest first). Scans every waiting query (at most ``max_pending``), so
        out-of-order timestamps cannot hide one."""
        deadline = now_ns - self._timeout_ns
        expired = [match for match, query in self._pending.items() if query.start_ns <= deadline]
        out = []
        for match in expired:
            query = self._pending.pop(match)
            out.append(
                DnsLookup(
                    name=query.name,
                    type=query.type,
                    type_name=type_name(query.type),
                    rcode=None,
                    rcode_name=None,
                    answer_count=0,
                    answers=(),
                    start_ns=query.start_ns,
                    end_ns=query.start_ns + self._timeout_ns,
                    timed_out=True,
                    truncated=False,
                    context=query.context,
                    transport=query.transport,
                )
            )
        self.timed_out += len(out)
        return out
