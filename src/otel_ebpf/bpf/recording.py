"""Record raw ring-buffer records to a file and replay them later, without a kernel.

Usage::

    with RecordingWriter("capture.oebr", clock_offset_ns=clock.offset_ns, object_path=path) as w:
        for rec in tracer.poll_raw():
            w.write(rec)

    rec = Recording.open("capture.oebr")
    codec = SockDataCodec(BpfObjectInfo.from_file(rec.object_path or object_path()))
    for raw in rec.records(): ...

Format: the magic ``OTEBPFR1``, a u32 length and a JSON header (clock offset,
the BTF layout of the records, creation time), then for each record a u32
length and the record's bytes exactly as the kernel wrote them. Replaying with
an object whose layout differs from the recorded one is refused.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .btf import BpfObjectInfo

__all__ = ["RecordingWriter", "Recording", "layout_signature"]

_MAGIC = b"OTEBPFR1"
_u32 = struct.Struct("<I")


def layout_signature(info: BpfObjectInfo) -> list:
    return [[m.name, m.offset, m.size] for s in ("sock_data_event", "conn_event") for m in info.btf.struct_layout(s)]


class RecordingWriter:
    def __init__(self, path: str | Path, *, clock_offset_ns: int, info: BpfObjectInfo):
        self._f = open(path, "wb")
        header = json.dumps(
            {"clock_offset_ns": clock_offset_ns, "layout": layout_signature(info), "created_ns": time.time_ns()}
        ).encode()
        self._f.write(_MAGIC + _u32.pack(len(header)) + header)
        self.count = 0

    def write(self, record: bytes) -> None:
        self._f.write(_u32.pack(len(record)))
        self._f.write(record)
        self.count += 1

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Recording:
    path: Path
    clock_offset_ns: int
    layout: list
    _data_start: int

    @classmethod
    def open(cls, path: str | Path) -> Recording:
        path = Path(path)
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:8] != _MAGIC:
                raise ValueError(f"{path}: not an otel-ebpf recording")
            (n,) = _u32.unpack(head[8:])
            header = json.loads(f.read(n))
        return cls(path, header["clock_offset_ns"], header["layout"], 12 + n)

    def check_layout(self, info: BpfObjectInfo) -> None:
        if layout_signature(info) != self.layout:
            raise ValueError(f"{self.path}: recorded with a different event layout than this BPF object")

    def records(self) -> Iterator[bytes]:
        with open(self.path, "rb") as f:
            f.seek(self._data_start)
            while True:
                head = f.read(4)
                if len(head) < 4:
                    return
                (n,) = _u32.unpack(head)
                body = f.read(n)
                if len(body) < n:
                    return  # truncated tail: the recorder was killed mid-write
                yield body
