"""Names of the agent's threads as the kernel shows them (``top -H``, ``ps -L``, /proc/PID/task/TID/comm).

Usage::

    def _run(self) -> None:
        name_os_thread()        # first thing on the new thread: its Python name, shortened
        ...

Python names its threads only for itself; the kernel calls every one of them after the
executable ("python3"), so per-thread CPU could not be told apart. Names are limited to 15 bytes:
``otel-ebpf-`` becomes ``oebpf-`` and a trailing ``-receiver`` is dropped
("otel-ebpf-http-receiver" → "oebpf-http").
"""

from __future__ import annotations

import ctypes
import threading

__all__ = ["name_os_thread", "os_thread_name"]

_PR_SET_NAME = 15
_libc = None


def os_thread_name(name: str) -> str:
    """The kernel name for a thread called ``name`` in Python."""
    if name.startswith("otel-ebpf-"):
        name = "oebpf-" + name[len("otel-ebpf-"):]
    name = name.removesuffix("-receiver")
    return name.encode("utf-8")[:15].decode("utf-8", "ignore")


def name_os_thread(name: str | None = None) -> None:
    """Give the calling thread its kernel name (default: from its Python name). Best effort."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        text = os_thread_name(name if name is not None else threading.current_thread().name)
        _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(text.encode("utf-8")), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux, or no prctl: names are cosmetic
        pass
