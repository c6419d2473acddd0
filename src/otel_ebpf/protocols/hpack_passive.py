"""HPACK (RFC 7541) for an observer: decodes header blocks without ever giving a wrong value.

Usage::

    from otel_ebpf.protocols.hpack_passive import PassiveHpackDecoder

    decoder = PassiveHpackDecoder(midstream=True)      # one per direction of a connection
    block = decoder.decode(header_block)               # a whole HEADERS(+CONTINUATION) block
    block.fields      # [(name, value), ...]; None where a dynamic-table reference is unknown
    block.unknown     # how many fields had an unknown name or value
    decoder.lose()    # a header block went by unseen (capture gap, lost framing)

The ``hpack`` library supplies the primitives (Huffman decoding, the static table); the
dynamic table is our own, because an observer must cope with something an endpoint never
meets: not having seen every header block of the connection.

The dynamic table of a passive decoder
--------------------------------------
The table is a list of *known* entries, newest first, each exactly the entry the encoder
inserted at that position. Invariant: **the known entries are a prefix (newest first) of
the encoder's real table**, possibly followed by entries the encoder has already evicted.
It holds as long as every insertion since the list was started was seen, and this is all
that resolving an index needs:

* index ``62 + d`` with ``d`` < number of known entries resolves to exactly the entry the
  encoder meant (the encoder only references entries it still holds, and its newest ``d+1``
  entries are ours);
* a larger index is *unknown*: an entry inserted before we started watching (midstream
  attach) or before a gap. Its field is reported as ``(None, None)`` and counted; the caller
  marks the exchange. A wrong value is never produced.

Entries an encoder evicted but we still hold are harmless (never referenced), and entries
we evict too early only turn later references into unknowns. So the capacity we evict by
need not be exact; it is the encoder's signalled size when known, else an upper bound.

When insertions may have gone unseen -- a header block cut by the capture limit, a block
larger than the buffering limit, lost frame sync, a malformed block -- the known list can no
longer be trusted as a prefix (an unknown number of entries was pushed in front) and is
cleared: :meth:`PassiveHpackDecoder.lose`. Entries inserted from then on are known again.

Completeness and recovery
-------------------------
``complete`` says whether the table is believed to hold nothing but known entries (then an
out-of-range index is a protocol error, not an unknown). It starts True on a connection
seen from its preface, False after a midstream attach or a loss. It becomes True again
(*recovery*) once eviction must have pushed every unknown entry out: the table evicts
oldest first, so when the bytes inserted since the gap exceed ``capacity - 32`` (32 being
the smallest possible entry) no older entry can remain; a dynamic table size update below
32 empties the table at once. The capacity used is the encoder's signalled size if one was
seen since the gap, else the protocol limit (SETTINGS_HEADER_TABLE_SIZE of the decoding
side) if one was seen, else the protocol default 4096 -- an assumption: a larger table would
keep unknown entries longer, and references to them would then be counted as errors
instead of unknowns; they still resolve to unknown, never to a wrong value.

Entries inserted with an unknown name (a literal whose name indexes an unknown entry) are
kept as placeholders with a lower-bound size: positions stay exact, sizes only under-count,
which keeps eviction conservative (we hold more) and recovery conservative (later). Such a name
can stay unknown for good: an encoder that sends each new ``x-request-id`` value as a literal
naming the previous ``x-request-id`` entry never spells the name out again, so a chain that
began before the attach never breaks (the values are known; the fields are reported unknown).
"""

from __future__ import annotations

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

__all__ = [
    "DEFAULT_TABLE_SIZE",
    "ENTRY_OVERHEAD",
    "MAX_TABLE_SIZE",
    "DecodedBlock",
    "PassiveHpackDecoder",
]

DEFAULT_TABLE_SIZE = 4096
"""SETTINGS_HEADER_TABLE_SIZE's initial value (RFC 9113 6.5.2); the capacity assumed after a
midstream attach until SETTINGS or a table size update says otherwise."""

ENTRY_OVERHEAD = 32
"""Per-entry overhead in the table size accounting (RFC 7541 4.1); the smallest entry size."""

MAX_TABLE_SIZE = 65536
"""Largest dynamic table mirrored, per direction. Common stacks use 4096 (nghttp2, grpc,
Go, Netty); a peer allowing more gets its oldest entries evicted early here, which only
turns references to them into unknowns, while memory per connection stays bounded."""

_MAX_VARINT_BYTES = 5
"""Continuation bytes of an HPACK integer accepted: 2**35 is far past any size or index."""

_HUFFMAN_CACHE_MAX = 2048
"""Decoded Huffman strings remembered (process-wide). Literals that are not indexed (paths,
timestamps, ids) often repeat; the pure-Python Huffman decoder costs ~0.2 us per byte."""

_STATIC = tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in HeaderTable.STATIC_TABLE)
_STATIC_LEN = len(_STATIC)  # 61
_huffman_cache: dict[bytes, str] = {}


class _Truncated(Exception):
    """The block ended inside a representation."""


class DecodedBlock:
    """One decoded header block.

    ``fields``: (name, value) in order; name and/or value None where unknown (a reference to a
    dynamic-table entry inserted before we started watching or during a gap). ``unknown``: how
    many fields have a None. ``error``: why decoding stopped early (malformed block), or None.
    ``oversized``: the header list exceeded the size limit; fields past it were dropped (the
    table was still updated). ``cut``: the block's end was not captured; fields are those of the
    captured part.
    """

    __slots__ = ("fields", "unknown", "error", "oversized", "cut")

    def __init__(self, fields: list[tuple[str | None, str | None]], unknown: int, error: str | None,
                 oversized: bool, cut: bool) -> None:
        self.fields = fields
        self.unknown = unknown
        self.error = error
        self.oversized = oversized
        self.cut = cut

    def __repr__(self) -> str:
        return (f"DecodedBlock(fields={self.fields!r}, unknown={self.unknown}, error={self.error!r}, "
                f"oversized={self.oversized}, cut={self.cut})")


class PassiveHpackDecoder:
    """The HPACK decoding context of one direction of one connection, for an observer.

    ``midstream``: the table's earlier content is unknown. Never raises.
    """

    __slots__ = ("_entries", "_size", "_capacity", "_cap_exact", "_limit", "_limit_seen", "complete",
                 "_since_gap", "unknown_refs", "recoveries", "losses")

    def __init__(self, *, midstream: bool = False) -> None:
        self._entries: list[tuple[str | None, str | None, int]] = []  # newest LAST: index 62 is [-1]
        self._size = 0  # sum of the (lower-bound) sizes of _entries
        self._capacity = DEFAULT_TABLE_SIZE  # the encoder's table size: exact if _cap_exact, else an upper bound
        self._cap_exact = not midstream
        self._limit = DEFAULT_TABLE_SIZE  # SETTINGS_HEADER_TABLE_SIZE of the decoding peer (largest seen)
        self._limit_seen = False
        self.complete = not midstream  # the table is believed to hold known entries only
        self._since_gap = 0  # bytes inserted since the table became partly unknown
        self.unknown_refs = 0  # references that could not be resolved (lifetime count)
        self.recoveries = 0  # times the table became fully known again
        self.losses = 0  # times insertions went unseen

    # -- table state -----------------------------------------------------------------------------

    def reset(self) -> None:
        """The connection (re)starts here (preface seen): the table is empty and fully known."""
        self._entries.clear()
        self._size = 0
        self._capacity = DEFAULT_TABLE_SIZE
        self._cap_exact = True
        self.complete = True
        self._since_gap = 0

    def lose(self) -> None:
        """Header block content went by unseen: it may have inserted entries. The known entries
        no longer have known indices; they are dropped and the table is partly unknown."""
        self.losses += 1
        self._entries.clear()
        self._size = 0
        self.complete = False
        self._since_gap = 0

    def set_limit(self, size: int) -> None:
        """The decoding peer sent SETTINGS_HEADER_TABLE_SIZE ``size``: the encoder's table can be at
        most that large (it signals the size it picks with a table size update)."""
        size = min(size, MAX_TABLE_SIZE)
        if not self._limit_seen or size > self._limit:
            # Until the change is acknowledged either value may be in force: keep the larger bound.
            self._limit = size
        self._limit_seen = True
        if not self._cap_exact:
            self._capacity = self._limit
            self._evict()

    @property
    def table_size(self) -> int:
        """Bytes of known entries held (sizes of placeholders are lower bounds)."""
        return self._size

    @property
    def known_entries(self) -> int:
        return len(self._entries)

    def _evict(self) -> None:
        entries = self._entries
        while self._size > self._capacity and entries:
            self._size -= entries.pop(0)[2]

    def _insert(self, name: str | None, value: str | None, size: int) -> None:
        if size > self._capacity:  # RFC 7541 4.4: an entry larger than the table empties it
            self._entries.clear()
            self._size = 0
            if not self.complete:
                self._recover()  # the table is empty: nothing unknown is left
            return
        self._entries.append((name, value, size))
        self._size += size
        if self._size > self._capacity:
            self._evict()
        if not self.complete:
            self._since_gap += size
            self._check_recovery()

    def _size_update(self, size: int) -> None:
        self._capacity = min(size, MAX_TABLE_SIZE)
        self._cap_exact = True
        self._evict()
        if not self.complete:
            if size < ENTRY_OVERHEAD:
                self._recover()
            else:
                self._check_recovery()

    def _check_recovery(self) -> None:
        # Everything inserted since the gap is newer than every unknown entry; once it fills the
        # table past (capacity - smallest entry), FIFO eviction has removed all unknown entries.
        if self._since_gap > self._capacity - ENTRY_OVERHEAD:
            self._recover()

    def _recover(self) -> None:
        self.complete = True
        self._since_gap = 0
        self.recoveries += 1

    # -- decoding --------------------------------------------------------------------------------

    def decode(self, block: bytes, *, max_list: int = 65536, cut: bool = False) -> DecodedBlock:
        """Decodes one complete header block (HEADERS/PUSH_PROMISE fragment + CONTINUATIONs).

        ``cut``: only a prefix of the block was captured; the fields wholly inside it are decoded
        (their table insertions are exact), then the table is marked partly unknown. ``max_list``:
        fields past this header list size (RFC 9113 6.5.2 accounting) are dropped.
        """
        fields: list[tuple[str | None, str | None]] = []
        unknown = 0
        error = None
        oversized = False
        list_size = 0
        entries = self._entries
        n = len(block)
        i = 0
        try:
            while i < n:
                b = block[i]
                i += 1
                if b & 0x80:  # indexed field (6.1)
                    index = b & 0x7F
                    if index == 0x7F:
                        index, i = _varint(block, i, index)
                    if index == 0:
                        raise HPACKDecodingError("index 0")
                    if index <= _STATIC_LEN:
                        name, value = _STATIC[index - 1]
                    else:
                        d = index - _STATIC_LEN - 1
                        if d < len(entries):
                            name, value, _ = entries[-1 - d]
                        else:
                            name = value = None
                            self._out_of_range()
                    if name is None or value is None:
                        unknown += 1
                    elif not oversized:
                        list_size += len(name) + len(value) + ENTRY_OVERHEAD
                        if list_size > max_list:
                            oversized = True
                            continue
                    if not oversized:
                        fields.append((name, value))
                    continue
                if b & 0x40:  # literal with incremental indexing (6.2.1)
                    index = b & 0x3F
                    if index == 0x3F:
                        index, i = _varint(block, i, index)
                    indexing = True
                elif b & 0x20:  # dynamic table size update (6.3)
                    size = b & 0x1F
                    if size == 0x1F:
                        size, i = _varint(block, i, size)
                    self._size_update(size)
                    continue
                else:  # literal without indexing / never indexed (6.2.2, 6.2.3)
                    index = b & 0x0F
                    if index == 0x0F:
                        index, i = _varint(block, i, index)
                    indexing = False
                if index == 0:
                    name, i = _string(block, i)
                    if not name.islower():
                        name = name.lower()  # HTTP/2 field names are lower case; be lenient
                    name_len = len(name)
                elif index <= _STATIC_LEN:
                    name = _STATIC[index - 1][0]
                    name_len = len(name)
                else:
                    d = index - _STATIC_LEN - 1
                    if d < len(entries):
                        entry = entries[-1 - d]
                        name = entry[0]
                        name_len = len(name) if name is not None else 0
                    else:
                        name = None
                        name_len = 0  # unknown: sizes below are lower bounds
                        self._out_of_range()
                value, i = _string(block, i)
                if indexing:
                    self._insert(name, value, name_len + len(value) + ENTRY_OVERHEAD)
                if name is None:
                    unknown += 1
                elif not oversized:
                    list_size += name_len + len(value) + ENTRY_OVERHEAD
                    if list_size > max_list:
                        oversized = True
                        continue
                if not oversized:
                    fields.append((name, value))
        except _Truncated:
            if not cut:
                error = "header block ends inside a field"
        except HPACKDecodingError as exc:
            error = str(exc) or "malformed header block"
        except Exception as exc:  # noqa: BLE001 -- never raise on traffic
            error = f"malformed header block: {exc!r}"
        if cut or error is not None:
            self.lose()
        self.unknown_refs += unknown
        return DecodedBlock(fields, unknown, error, oversized, cut)

    def _out_of_range(self) -> None:
        """A reference past the known entries: unknown. If the table was believed complete, it was
        not (or the peer is broken): it is partly unknown from now on. Known entries stay valid."""
        if self.complete:
            self.complete = False
            self._since_gap = 0
            self.losses += 1


def _varint(data: bytes, i: int, value: int) -> tuple[int, int]:
    """The continuation bytes of an HPACK integer (5.1) starting at ``i``; ``value``: the full prefix."""
    shift = 0
    n = len(data)
    stop = i + _MAX_VARINT_BYTES
    while True:
        if i >= n:
            raise _Truncated
        if i >= stop:
            raise HPACKDecodingError("integer too long")
        b = data[i]
        i += 1
        value += (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _string(data: bytes, i: int) -> tuple[str, int]:
    """A string literal (5.2) starting at ``i``: (text as latin-1, index after it)."""
    if i >= len(data):
        raise _Truncated
    b = data[i]
    i += 1
    length = b & 0x7F
    if length == 0x7F:
        length, i = _varint(data, i, length)
    end = i + length
    if end > len(data):
        raise _Truncated
    raw = data[i:end]
    if not b & 0x80:
        return raw.decode("latin-1"), end
    text = _huffman_cache.get(raw)
    if text is None:
        text = decode_huffman(raw).decode("latin-1")
        if len(_huffman_cache) >= _HUFFMAN_CACHE_MAX:
            _huffman_cache.clear()
        _huffman_cache[raw] = text
    return text, end
