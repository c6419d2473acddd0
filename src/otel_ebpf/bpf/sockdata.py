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

import ctypes
import os
import struct
import threading
from importlib import resources
from pathlib import Path

from .btf import BpfObjectInfo
from .events import ConnEvent, SockDataCodec, SockDataEvent, Stat
from .libbpf import BpfObject, _load_lib, num_possible_cpus
from .preflight import preflight
from .ringbuf import RingBufReader

__all__ = ["SockDataTracer", "object_path", "MAX_CAPTURE_BYTES"]

MAX_CAPTURE_BYTES = 16384  # mirrors bpf/include/sizing.h; the knob may only lower it
DEFAULT_RING_BYTES = 16 * 1024 * 1024

# Entry programs of the read-family syscalls. Unless entry times of reads are asked for, they are
# not loaded: the exit programs rebuild the call from the saved user registers instead (one program
# run less per read of every process; see `ingress_enter` in sockdata.bpf.c).
INGRESS_ENTER_PROGRAMS = ("sys_enter_read", "sys_enter_recvfrom", "sys_enter_readv", "sys_enter_recvmsg",
                          "sys_enter_recvmmsg")
_BPF_PROG_TYPE_TRACEPOINT = 5
_BPF_FUNC_TASK_PT_REGS = 175  # UAPI enum bpf_func_id (Linux 5.15)


def kernel_has_task_pt_regs() -> bool:
    """Whether tracepoint programs may call bpf_task_pt_regs() here (Linux >= 5.15)."""
    fn = _load_lib().libbpf_probe_bpf_helper
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    return fn(_BPF_PROG_TYPE_TRACEPOINT, _BPF_FUNC_TASK_PT_REGS, None) == 1


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
        read_entry_times: bool = False,
        max_batch: int = 4096,
    ):
        """``read_entry_times``: ingress records carry the read's entry time in ``ts_enter``
        (otherwise ``ts_enter == ts_exit`` for them; nothing in the agent uses it). Costs one
        more BPF program run per read of every process. Forced on kernels before 5.15.
        ``max_batch``: records returned by one poll at most (a full 16 MiB ring is ~60k records:
        drained at once they would be ~50 MiB of Python objects)."""
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
        self.read_entry_times = read_entry_times
        if max_batch < 1:
            raise ValueError("max_batch must be positive")
        self.max_batch = max_batch
        self._obj: BpfObject | None = None
        self._reader: RingBufReader | None = None
        self._codec: SockDataCodec | None = None
        self._lock = threading.Lock()
        self.attached: list[str] = []

    def start(self) -> None:
        preflight()
        info = BpfObjectInfo.from_file(self._path)
        self._codec = SockDataCodec(info)
        ingress_enter = self.read_entry_times or not kernel_has_task_pt_regs()
        obj = BpfObject.open(
            self._path,
            rodata={
                "targ_self_tgid": self._self_tgid,
                "max_capture_bytes": self.max_capture_bytes,
                "wakeup_bytes": max(4096, self.ring_bytes // 16),
                "ingress_enter": int(ingress_enter),
            },
            max_entries={"events": self.ring_bytes, "scratch": num_possible_cpus()},
            disabled_programs=() if ingress_enter else INGRESS_ENTER_PROGRAMS,
        )
        try:
            obj.load()
            self._obj = obj
            self.set_pids(self._pids)
            self.set_ports(self._ports)
            self.attached = obj.attach_all()
            self._reader = RingBufReader(obj.map_fd("events"), self.ring_bytes, max_batch=self.max_batch)
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
            # struct filter_config: pid_filter, port_filter, generation. Every write bumps the
            # generation, which makes the kernel redo the port verdicts it caches per socket.
            raw = obj.map_lookup("filter_cfg", struct.pack("<I", 0), 12) or bytes(12)
            cfg = list(struct.unpack("<III", raw))
            cfg[slot] = 0  # open the gate while the set changes, then close it on the new set
            cfg[2] = (cfg[2] + 1) & 0xFFFFFFFF
            obj.map_update("filter_cfg", struct.pack("<I", 0), struct.pack("<III", *cfg))
            # remove every old key by trying the ones we know about
            for key in getattr(self, f"_{map_name}_keys", []):
                obj.map_delete(map_name, key)
            for key in keys:
                obj.map_update(map_name, key, b"\x01")
            setattr(self, f"_{map_name}_keys", keys)
            cfg[slot] = 1 if keys else 0
            cfg[2] = (cfg[2] + 1) & 0xFFFFFFFF
            obj.map_update("filter_cfg", struct.pack("<I", 0), struct.pack("<III", *cfg))

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
            out["busy_stalls"] = self._reader.busy_stalls
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
