"""A thin ctypes binding over the distro's ``libbpf.so.1``: open, set knobs, load, attach, maps.

Usage::

    from otel_ebpf.bpf.libbpf import BpfObject
    with BpfObject.open(path, rodata={"max_capture_bytes": 4096}, max_entries={"events": 1 << 24}) as obj:
        obj.load()
        obj.attach_all()
        fd = obj.map_fd("events")

This is the only ``ctypes.CDLL`` in the project. It binds the libbpf 1.0+ API
(Debian bookworm ships 1.1): programs are attached with ``bpf_program__attach``,
which derives the hook from the ``SEC()`` name (tracepoint, tp_btf, raw_tp,
uprobe). Errors come back as :class:`BpfError` with errno and a hint.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from pathlib import Path

from .btf import BpfObjectInfo

__all__ = ["BpfError", "BpfObject", "libbpf_available", "num_possible_cpus"]

_lib: ctypes.CDLL | None = None


class BpfError(RuntimeError):
    """A libbpf or bpf(2) call failed. ``hint`` says what the user can do."""

    def __init__(self, message: str, *, err: int = 0, hint: str = ""):
        self.errno = err
        self.hint = hint
        text = message
        if err:
            text += f": {os.strerror(err)} (errno {err})"
        if hint:
            text += f" — {hint}"
        super().__init__(text)


def _hint_for(err: int) -> str:
    if err in (errno.EPERM, errno.EACCES):
        return "run as root (or with CAP_BPF + CAP_PERFMON + CAP_SYS_RESOURCE)"
    if err == errno.ENOENT:
        return "the hook does not exist on this kernel; is tracefs mounted at /sys/kernel/tracing?"
    if err == errno.E2BIG:
        return "a map or record is larger than this kernel allows"
    return ""


def _load_lib() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    name = "libbpf.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        found = ctypes.util.find_library("bpf")
        if not found:
            raise BpfError("libbpf.so.1 not found", hint="install it: apt-get install libbpf1 (or run `make setup`)")
        lib = ctypes.CDLL(found, use_errno=True)
    vp, cp, i, u32, u64, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_size_t
    sigs = {
        "bpf_object__open_file": (vp, [cp, vp]),
        "bpf_object__load": (i, [vp]),
        "bpf_object__close": (None, [vp]),
        "bpf_object__next_program": (vp, [vp, vp]),
        "bpf_object__next_map": (vp, [vp, vp]),
        "bpf_object__find_map_by_name": (vp, [vp, cp]),
        "bpf_program__name": (cp, [vp]),
        "bpf_program__section_name": (cp, [vp]),
        "bpf_program__set_autoload": (i, [vp, ctypes.c_bool]),
        "bpf_program__attach": (vp, [vp]),
        "bpf_link__destroy": (i, [vp]),
        "bpf_map__name": (cp, [vp]),
        "bpf_map__fd": (i, [vp]),
        "bpf_map__set_max_entries": (i, [vp, u32]),
        "bpf_map__max_entries": (u32, [vp]),
        "bpf_map__initial_value": (vp, [vp, ctypes.POINTER(sz)]),
        "bpf_map_update_elem": (i, [i, vp, vp, u64]),
        "bpf_map_lookup_elem": (i, [i, vp, vp]),
        "bpf_map_delete_elem": (i, [i, vp]),
        "libbpf_num_possible_cpus": (i, []),
    }
    for fname, (res, args) in sigs.items():
        fn = getattr(lib, fname)
        fn.restype = res
        fn.argtypes = args
    _lib = lib
    return lib


def libbpf_available() -> bool:
    try:
        _load_lib()
        return True
    except BpfError:
        return False


def num_possible_cpus() -> int:
    n = _load_lib().libbpf_num_possible_cpus()
    if n <= 0:
        raise BpfError("cannot count possible CPUs", err=-n)
    return n


def _errno_of(ret: int) -> int:
    return -ret if ret < 0 else ctypes.get_errno() or errno.EINVAL


class BpfObject:
    """One compiled BPF object: its programs, maps and links. Close it to detach everything."""

    def __init__(self, path: Path, handle: int, info: BpfObjectInfo):
        self.path = path
        self.info = info
        self._handle = handle
        self._links: list[int] = []
        self._disabled: set[str] = set()
        self._loaded = False

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        rodata: dict[str, int] | None = None,
        max_entries: dict[str, int] | None = None,
        disabled_programs: tuple[str, ...] = (),
    ) -> BpfObject:
        """Open ``path``, write ``const volatile`` knobs, resize maps. Nothing reaches the kernel yet."""
        path = Path(path)
        if not path.exists():
            raise BpfError(f"BPF object {path} is missing", hint="build it with `make bpf` (or `make setup`)")
        info = BpfObjectInfo.from_file(path)
        lib = _load_lib()
        ctypes.set_errno(0)
        handle = lib.bpf_object__open_file(str(path).encode(), None)
        if not handle:
            err = ctypes.get_errno() or errno.EINVAL
            raise BpfError(f"cannot open BPF object {path}", err=err, hint=_hint_for(err))
        obj = cls(path, handle, info)
        obj._disabled = set(disabled_programs)
        try:
            if rodata:
                obj._write_rodata(rodata)
            for name, n in (max_entries or {}).items():
                ret = lib.bpf_map__set_max_entries(obj._map(name), n)
                if ret:
                    raise BpfError(f"cannot resize map {name}", err=-ret)
            for prog in obj._programs():
                if lib.bpf_program__name(prog).decode() in disabled_programs:
                    lib.bpf_program__set_autoload(prog, False)
        except BaseException:
            obj.close()
            raise
        return obj

    def _programs(self):
        lib = _load_lib()
        prog = lib.bpf_object__next_program(self._handle, None)
        while prog:
            yield prog
            prog = lib.bpf_object__next_program(self._handle, prog)

    def program_names(self) -> list[str]:
        return [_load_lib().bpf_program__name(p).decode() for p in self._programs()]

    def _map(self, name: str) -> int:
        m = _load_lib().bpf_object__find_map_by_name(self._handle, name.encode())
        if not m:
            raise BpfError(f"map {name} not found in {self.path.name}")
        return m

    def _rodata_map(self) -> int:
        lib = _load_lib()
        m = lib.bpf_object__next_map(self._handle, None)
        while m:
            if lib.bpf_map__name(m).decode().endswith(".rodata"):
                return m
            m = lib.bpf_object__next_map(self._handle, m)
        raise BpfError(f"{self.path.name} has no .rodata (no const volatile knobs)")

    def _write_rodata(self, values: dict[str, int]) -> None:
        size = ctypes.c_size_t(0)
        base = _load_lib().bpf_map__initial_value(self._rodata_map(), ctypes.byref(size))
        if not base:
            raise BpfError("cannot access .rodata initial value")
        for name, value in values.items():
            if name not in self.info.rodata_symbols:
                raise BpfError(f"{self.path.name} has no knob {name!r}")
            off, width = self.info.rodata_symbols[name]
            if off + width > size.value:
                raise BpfError(f"knob {name!r} lies outside .rodata")
            raw = value.to_bytes(width, "little", signed=value < 0)
            ctypes.memmove(base + off, raw, width)

    def load(self) -> None:
        """Verify and load every program and create the maps."""
        ret = _load_lib().bpf_object__load(self._handle)
        if ret:
            err = _errno_of(ret)
            raise BpfError(f"cannot load BPF object {self.path.name} (libbpf printed details above)", err=err,
                           hint=_hint_for(err))
        self._loaded = True

    def attach_all(self) -> list[str]:
        """Attach every autoloaded program by its SEC() name; returns their names."""
        lib = _load_lib()
        attached = []
        for prog in self._programs():
            name = lib.bpf_program__name(prog).decode()
            section = lib.bpf_program__section_name(prog).decode()
            if name in self._disabled:
                continue
            ctypes.set_errno(0)
            link = lib.bpf_program__attach(prog)
            if not link:
                err = ctypes.get_errno() or errno.EINVAL
                raise BpfError(f"cannot attach {name} ({section})", err=err, hint=_hint_for(err))
            self._links.append(link)
            attached.append(name)
        return attached

    def map_fd(self, name: str) -> int:
        fd = _load_lib().bpf_map__fd(self._map(name))
        if fd < 0:
            raise BpfError(f"map {name} has no fd (object not loaded?)")
        return fd

    def map_update(self, name: str, key: bytes, value: bytes) -> None:
        ret = _load_lib().bpf_map_update_elem(self.map_fd(name), key, value, 0)
        if ret:
            raise BpfError(f"cannot update map {name}", err=_errno_of(ret))

    def map_delete(self, name: str, key: bytes) -> bool:
        return _load_lib().bpf_map_delete_elem(self.map_fd(name), key) == 0

    def map_lookup(self, name: str, key: bytes, value_size: int) -> bytes | None:
        buf = ctypes.create_string_buffer(value_size)
        if _load_lib().bpf_map_lookup_elem(self.map_fd(name), key, buf):
            return None
        return buf.raw

    def percpu_u64_sums(self, name: str, count: int) -> list[int]:
        """Sum over CPUs of each u64 slot of a per-CPU array map with ``count`` entries."""
        ncpu = num_possible_cpus()
        out = []
        for idx in range(count):
            raw = self.map_lookup(name, struct.pack("<I", idx), 8 * ncpu)
            out.append(sum(struct.unpack(f"<{ncpu}Q", raw)) if raw else 0)
        return out

    def close(self) -> None:
        """Detach every program and free the object. Safe to call twice."""
        lib = _load_lib()
        while self._links:
            lib.bpf_link__destroy(self._links.pop())
        if self._handle:
            lib.bpf_object__close(self._handle)
            self._handle = 0

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
