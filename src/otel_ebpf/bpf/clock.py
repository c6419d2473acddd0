"""Kernel timestamps to wall clock: the one place where that conversion is made.

Usage::

    clock = MonotonicClock()
    wall_ns = clock.to_wall(event_ts_ns)

BPF programs stamp events with ``bpf_ktime_get_ns()``, which is CLOCK_MONOTONIC.
OpenTelemetry wants nanoseconds since the Unix epoch. The offset between the
two is measured at start (the tightest of several bracketed readings) and
refreshed every ``refresh_s`` seconds so that NTP slewing of the wall clock is
followed; a refresh changes the offset only between batches, never inside one
exchange's conversion.
"""

from __future__ import annotations

import time

__all__ = ["MonotonicClock"]


class MonotonicClock:
    def __init__(self, *, refresh_s: float = 10.0):
        self._refresh_ns = int(refresh_s * 1e9)
        self.offset_ns = 0
        self._measured_at = 0
        self.refresh()

    def refresh(self) -> None:
        best = None
        for _ in range(5):
            m0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            wall = time.time_ns()
            m1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            width = m1 - m0
            if best is None or width < best[0]:
                best = (width, wall - (m0 + width // 2))
        self.offset_ns = best[1]
        self._measured_at = time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    def maybe_refresh(self) -> None:
        if time.clock_gettime_ns(time.CLOCK_MONOTONIC) - self._measured_at > self._refresh_ns:
            self.refresh()

    def to_wall(self, mono_ns: int) -> int:
        return mono_ns + self.offset_ns
