"""The sockdata tracer: TCP payloads of every process, from syscall tracepoints.

Usage::

    tracer = SockDataTracer(max_capture_bytes=4096, ports=[8080])
    tracer.start()                       # preflight, load, attach
    for event in tracer.poll(timeout_ms=100):
        ...                              # SockDataEvent | ConnEvent
    tracer.close()                       # detach everything

The agent's own process is never traced (``targ_self_tgid``), nor the far end
of its own sockets. Pid and port filters live in maps and can change while
running (:meth:`set_pids`, :meth:`set_ports`).
"""

from __future__ import annotations

import os
import struct
import threading
from importlib import resources
from pathlib import Path

from .btf import BpfObjectInfo
from .events import ConnEvent, SockDataCodec, SockDataEvent, Stat
from .libbpf import BpfObject, num_possible_cpus
from .preflight import preflight
from .ringbuf import RingBufReader

__all__ = ["SockDataTracer", "object_path", "MAX_CAPTURE_BYTES"]

MAX_CAPTURE_BYTES = 16384  # mirrors bpf/include/sizing.h; the knob may only lower it
DEFAULT_RING_BYTES = 16 * 1024 * 1024


def object_path(name: str = "sockdata") -> Path:
    return Path(str(resources.files("otel_ebpf.bpf") / "objects" / f"{name}.bpf.o"))


class SockDataTracer:
    def __init__(
        self,
        *,
        max_capture_bytes: int = 4096,
        ring_bytes: int = DEFAULT_RING_BYTES,
        pids: list[int] | tuple[int, ...] = (),
        ports: list[int] | tuple[int, ...] = (),
        self_tgid: int | None = None,
        path: Path | None = None,
    ):
        if not 0 < max_capture_bytes <= MAX_CAPTURE_BYTES:
            raise ValueError(f"max_capture_bytes must be in 1..{MAX_CAPTURE_BYTES}")
        if ring_bytes & (ring_bytes - 1) or ring_bytes < 4096:
            raise ValueError("ring_bytes must be a power of two >= 4096")
        self.max_capture_bytes = max_capture_bytes
        self.ring_bytes = ring_bytes
        self._pids = list(pids)
        self._ports = list(ports)
        self._self_tgid = os.getpid() if self_tgid is None else self_tgid
        self._path = path or object_path()
        self._obj: BpfObject | None = None
        self._reader: RingBufReader | None = None
        self._codec: SockDataCodec | None = None
        self._lock = threading.Lock()
        self.attached: list[str] = []

    def start(self) -> None:
        preflight()
        info = BpfObjectInfo.from_file(self._path)
        self._codec = SockDataCodec(info)
        obj = BpfObject.open(
            self._path,
            rodata={
                "targ_self_tgid": self._self_tgid,
                "max_capture_bytes": self.max_capture_bytes,
                "wakeup_bytes": max(4096, self.ring_bytes // 16),
            },
            max_entries={"events": self.ring_bytes, "scratch": num_possible_cpus()},
        )
        try:
            obj.load()
            self._obj = obj
            self.set_pids(self._pids)
            self.set_ports(self._ports)
            self.attached = obj.attach_all()
            self._reader = RingBufReader(obj.map_fd("events"), self.ring_bytes)
        except BaseException:
            obj.close()
            self._obj = None
            raise

    def set_pids(self, pids) -> None:
        self._set_filter("filter_pids", [struct.pack("<I", p) for p in pids], slot=0)

    def set_ports(self, ports) -> None:
        self._set_filter("filter_ports", [struct.pack("<H", p) for p in ports], slot=1)

    def _set_filter(self, map_name: str, keys: list[bytes], *, slot: int) -> None:
        obj = self._obj
        if obj is None:
            return
        with self._lock:
            raw = obj.map_lookup("filter_cfg", struct.pack("<I", 0), 8) or bytes(8)
            cfg = list(struct.unpack("<II", raw))
            cfg[slot] = 0  # open the gate while the set changes, then close it on the new set
            obj.map_update("filter_cfg", struct.pack("<I", 0), struct.pack("<II", *cfg))
            # remove every old key by trying the ones we know about
            for key in getattr(self, f"_{map_name}_keys", []):
                obj.map_delete(map_name, key)
            for key in keys:
                obj.map_update(map_name, key, b"\x01")
            setattr(self, f"_{map_name}_keys", keys)
            cfg[slot] = 1 if keys else 0
            obj.map_update("filter_cfg", struct.pack("<I", 0), struct.pack("<II", *cfg))

    def poll(self, timeout_ms: int = 100) -> list[SockDataEvent | ConnEvent]:
        reader, codec = self._reader, self._codec
        if reader is None or codec is None:
            return []
        decode = codec.decode
        out = []
        for rec in reader.poll(timeout_ms):
            ev = decode(rec)
            if ev is not None:
                out.append(ev)
        return out

    def poll_raw(self, timeout_ms: int = 100) -> list[bytes]:
        """Undecoded records (for recording a replayable event stream)."""
        return self._reader.poll(timeout_ms) if self._reader else []

    def stats(self) -> dict[str, int]:
        """Kernel-side counters summed over CPUs, plus user-space decode errors."""
        out: dict[str, int] = {}
        if self._obj is not None:
            values = self._obj.percpu_u64_sums("stats", len(Stat))
            out = {s.name.lower(): values[s.value] for s in Stat}
        if self._codec is not None:
            out["decode_errors"] = self._codec.decode_errors
            out["bad_segments"] = self._codec.bad_segments
        if self._reader is not None:
            out["ring_records"] = self._reader.records
        return out

    @property
    def codec(self) -> SockDataCodec | None:
        return self._codec

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._obj is not None:
            self._obj.close()
            self._obj = None
