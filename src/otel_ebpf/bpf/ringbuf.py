"""Read a BPF ring buffer in batches by mmap-ing it, with no ctypes call per record.

Usage::

    reader = RingBufReader(map_fd, size)
    while running:
        records = reader.poll(timeout_ms=100)     # list[bytes], each one record
        for rec in records: ...
    reader.close()

libbpf 1.1 (Debian bookworm) has no ``ring_buffer__consume_n`` and its
``ring_buffer__poll`` calls back once per record, which costs microseconds per
record through ctypes. The ring's memory layout is kernel ABI
(``kernel/bpf/ringbuf.c``): page 0 holds the consumer position (writable by
user space), page 1 the producer position, then the data area, which the kernel
offers mapped twice in a row so that a record wrapping the end reads
contiguously. We map it once (its pages are all resident from mmap on, so the
second copy would add the ring's size again to the agent's RSS) and join the
two parts of a wrapping record. Each record starts with an 8-byte header:
``u32 len`` whose bit 31 is BUSY (still being written) and bit 30 DISCARD, and a
``u32`` page offset; records are 8-byte aligned, so a header never wraps.

On x86-64 plain loads from the mapping are ordered enough for this protocol (the
kernel publishes with smp_store_release; loads are not reordered with older
loads under TSO). Other architectures would need an acquire barrier.
"""

from __future__ import annotations

import mmap
import select
import struct
import time

__all__ = ["RingBufReader"]

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HDR = 8
_u32 = struct.Struct("<I")


class RingBufReader:
    """Consumer side of one ``BPF_MAP_TYPE_RINGBUF`` map."""

    def __init__(self, map_fd: int, size: int, *, max_batch: int = 65536):
        if size <= 0 or size & (size - 1):
            raise ValueError("ring buffer size must be a power of two")
        self._page = mmap.PAGESIZE
        self._size = size
        self._mask = size - 1
        self._max_batch = max_batch
        self._cons = mmap.mmap(map_fd, self._page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(map_fd, self._page + size, mmap.MAP_SHARED, mmap.PROT_READ, offset=self._page)
        # The positions are read and written as whole native u64s (one load, one store), never with
        # struct: struct.pack_into zeroes its target before writing it byte by byte, and a producer
        # reading consumer_pos == 0 meanwhile sees the ring as full and drops its record (that
        # was the "lost with the reader caught up" of earlier versions); unpack_from reads byte by
        # byte and could see a torn producer position.
        self._cons_pos = memoryview(self._cons).cast("Q")
        self._prod_pos = memoryview(self._prod)[: self._page].cast("Q")
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)
        self.records = 0
        self.bytes = 0
        self.discarded = 0
        # A record still being written (BUSY) holds the reader back: how long the longest one did,
        # as seen between drains (a producer stuck between reserve and commit makes the ring look
        # full to the others while the reader is caught up).
        self.busy_max_s = 0.0
        self.busy_stalls = 0  # drains that stopped at a BUSY record
        self._busy_pos = -1
        self._busy_since = 0.0

    def pending_bytes(self) -> int:
        return self._prod_pos[0] - self._cons_pos[0]

    def drain(self) -> list[bytes]:
        """Every committed record now in the ring (up to max_batch), oldest first."""
        cons = self._cons_pos[0]
        prod = self._prod_pos[0]
        data = self._prod
        base = self._page
        mask = self._mask
        size = self._size
        out: list[bytes] = []
        append = out.append
        unpack_len = _u32.unpack_from
        limit = self._max_batch
        start = cons
        while cons < prod and len(out) < limit:
            pos = cons & mask
            off = base + pos
            hdr = unpack_len(data, off)[0]
            if hdr & _BUSY:
                self._busy_at(cons)
                break
            length = hdr & ~(_BUSY | _DISCARD)
            if hdr & _DISCARD:
                self.discarded += 1
            elif pos + _HDR + length <= size:
                append(data[off + _HDR : off + _HDR + length])
            else:  # wraps the end of the data area
                tail = pos + _HDR + length - size
                append(data[off + _HDR : base + size] + data[base : base + tail])
            cons += (length + _HDR + 7) & ~7
        if cons != start:
            self._cons_pos[0] = cons  # one 8-byte store (see __init__)
            self.bytes += cons - start
        self.records += len(out)
        return out

    def _busy_at(self, pos: int) -> None:
        now = time.monotonic()
        if pos != self._busy_pos:
            self._busy_pos = pos
            self._busy_since = now
            self.busy_stalls += 1
        elif now - self._busy_since > self.busy_max_s:
            self.busy_max_s = now - self._busy_since

    def poll(self, timeout_ms: int = 100) -> list[bytes]:
        """Records available now, else wait up to ``timeout_ms`` for a wakeup and drain."""
        out = self.drain()
        if out:
            return out
        self._epoll.poll(timeout_ms / 1000.0)
        return self.drain()

    def close(self) -> None:
        self._cons_pos.release()  # exported pointers keep an mmap from closing
        self._prod_pos.release()
        for res in (self._epoll, self._cons, self._prod):
            try:
                res.close()
            except (OSError, ValueError):
                pass
