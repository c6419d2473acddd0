"""Interpreter and allocator settings for a long-running agent process.

Usage::

    from otel_ebpf.service.runtime import MallocTuning, tune_gc
    malloc = MallocTuning()             # before the agent's threads exist
    agent.start()
    tune_gc()                           # once, after start-up has built its long-lived objects
    while running:
        malloc.maybe_trim(time.monotonic())

**Why.** Almost every object the agent makes per request (events, parsed heads, exchanges, spans,
encoded bytes) is freed by reference counting within microseconds. CPython's cyclic collector
still runs a young-generation pass every 700 net allocations and, every 100 such passes, walks
every tracked object, including the tens of thousands that start-up created (imported modules,
caches, SDK objects) and that will live as long as the process. In the pipeline replay that was
about a tenth of the agent's CPU per request (``benchmarks/bench_pipeline.py``).

:func:`tune_gc` moves the objects alive after start-up to the permanent generation
(``gc.freeze``), so full passes no longer walk them, and raises the young-generation threshold,
so passes run about a hundredth as often. Cyclic garbage is still collected (later); memory made
of cycles stays bounded by the threshold: at most about ``young`` container objects between
passes.
"""

from __future__ import annotations

import ctypes
import gc
import os

__all__ = ["GC_THRESHOLDS", "MallocTuning", "tune_gc"]

# (young, middle, old): a young pass every 50,000 net container allocations; the older
# generations as CPython's defaults scale them.
GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Freeze what start-up allocated and space out collections (see the module docstring)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)


class MallocTuning:
    """glibc malloc settings for the agent process, and giving memory back after bursts.

    glibc gives each thread that meets contention its own arena (up to 8 per core) and keeps what is
    freed in it; the agent's threads (receivers, pipeline, export, summary) would each keep the peak
    of their own bursts. Two arenas are enough for one Python process (the GIL serialises most
    allocations). A fixed mmap threshold keeps large buffers (export requests, JSON lines) out of
    the heap: glibc otherwise raises it after the first such free, and they fragment the heap.
    ``trim()`` (``malloc_trim``) returns free heap pages; the run loop calls it every few seconds.
    Settings the user made through ``MALLOC_*`` environment variables are left alone. Without glibc
    (musl) nothing happens.
    """

    M_MMAP_THRESHOLD = -3
    M_ARENA_MAX = -8

    def __init__(self, *, arenas: int = 2, mmap_threshold: int = 256 * 1024, trim_interval_s: float = 5.0,
                 environ: dict[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.trim_interval_s = trim_interval_s
        self._next_trim = 0.0
        self.applied: dict[str, int] = {}
        try:
            libc = ctypes.CDLL(None)
            self._mallopt = libc.mallopt
            self._malloc_trim = libc.malloc_trim
        except (OSError, AttributeError):  # not glibc
            self._mallopt = self._malloc_trim = None
            return
        self._mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        self._malloc_trim.argtypes = [ctypes.c_size_t]
        for name, param, value in (("MALLOC_ARENA_MAX", self.M_ARENA_MAX, arenas),
                                   ("MALLOC_MMAP_THRESHOLD_", self.M_MMAP_THRESHOLD, mmap_threshold)):
            if name not in environ and self._mallopt(param, value) == 1:
                self.applied[name] = value

    def trim(self) -> None:
        """``malloc_trim(0)``: free heap pages go back to the system."""
        if self._malloc_trim is not None:
            self._malloc_trim(0)

    def maybe_trim(self, now: float) -> None:
        if now >= self._next_trim:
            self._next_trim = now + self.trim_interval_s
            self.trim()
