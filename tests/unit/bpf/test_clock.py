"""CLOCK_MONOTONIC -> wall clock conversion."""

from __future__ import annotations

import time

from otel_ebpf.bpf.clock import MonotonicClock

# Generous: this checks that the offset is the right quantity, not how tight the bracketing is.
TOLERANCE_NS = 50_000_000


def measured_offset() -> int:
    mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    wall = time.time_ns()
    return wall - mono


def test_the_offset_is_wall_clock_minus_clock_monotonic():
    clock = MonotonicClock()

    assert abs(clock.offset_ns - measured_offset()) < TOLERANCE_NS


def test_to_wall_adds_the_offset():
    clock = MonotonicClock()
    clock.offset_ns = 1_000

    assert clock.to_wall(0) == 1_000
    assert clock.to_wall(123_456_789) == 123_457_789


def test_a_monotonic_timestamp_taken_now_converts_to_now():
    clock = MonotonicClock()

    converted = clock.to_wall(time.clock_gettime_ns(time.CLOCK_MONOTONIC))

    assert abs(converted - time.time_ns()) < TOLERANCE_NS


def test_refresh_remeasures_the_offset():
    clock = MonotonicClock()
    clock.offset_ns = 12345

    clock.refresh()

    assert abs(clock.offset_ns - measured_offset()) < TOLERANCE_NS


def test_maybe_refresh_remeasures_once_the_refresh_period_has_passed():
    clock = MonotonicClock(refresh_s=0.0)
    clock.offset_ns = 12345
    time.sleep(0.001)

    clock.maybe_refresh()

    assert abs(clock.offset_ns - measured_offset()) < TOLERANCE_NS


def test_maybe_refresh_keeps_the_offset_within_the_refresh_period():
    clock = MonotonicClock(refresh_s=3600.0)
    clock.offset_ns = 12345

    clock.maybe_refresh()

    assert clock.offset_ns == 12345
