"""RingBufReader over a memfd laid out as the kernel lays out a BPF ring: a record still being
written holds the reader back, and the reader counts and times such stalls."""

from __future__ import annotations

import mmap
import os
import struct
import time

import pytest

from otel_ebpf.bpf import ringbuf
from otel_ebpf.bpf.ringbuf import RingBufReader

SIZE = 4096
PAGE = mmap.PAGESIZE


class _NoEpoll:
    def register(self, fd, events):
        pass

    def poll(self, timeout):
        return []


@pytest.fixture
def ring(monkeypatch):
    monkeypatch.setattr(ringbuf.select, "epoll", _NoEpoll)  # a memfd cannot be polled
    fd = os.memfd_create("ring")
    os.ftruncate(fd, 2 * PAGE + SIZE)
    mem = mmap.mmap(fd, 2 * PAGE + SIZE)
    reader = RingBufReader(fd, SIZE)
    yield mem, reader
    mem.close()
    os.close(fd)


def _write(mem, pos: int, payload: bytes, *, busy: bool) -> int:
    """A record at ``pos``; returns the producer position after it."""
    header = len(payload) | (1 << 31 if busy else 0)
    struct.pack_into("<II", mem, 2 * PAGE + pos, header, 0)
    mem[2 * PAGE + pos + 8: 2 * PAGE + pos + 8 + len(payload)] = payload
    end = pos + ((8 + len(payload) + 7) & ~7)
    struct.pack_into("<Q", mem, PAGE, end)  # producer position
    return end


def test_a_busy_record_stops_the_drain_and_is_timed_until_committed(ring):
    mem, reader = ring
    _write(mem, 0, b"first", busy=True)
    assert reader.drain() == [] and reader.busy_stalls == 1
    time.sleep(0.02)
    assert reader.drain() == [] and reader.busy_stalls == 1  # the same record: one stall
    assert reader.busy_max_s >= 0.02
    struct.pack_into("<I", mem, 2 * PAGE, 5)  # committed
    assert reader.drain() == [b"first"]
    end = _write(mem, 16, b"second", busy=False)
    assert reader.drain() == [b"second"] and reader.busy_stalls == 1
    assert struct.unpack_from("<Q", mem, 0)[0] == end  # the consumer position went past both
