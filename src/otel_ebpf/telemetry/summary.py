"""The live per-service RED table (rate, errors, duration) that ``otel-ebpf run`` prints.

Usage::

    import sys
    from otel_ebpf.telemetry.summary import RedSummary, SummaryPrinter

    summary = RedSummary(window_s=60.0)
    printer = SummaryPrinter(summary, sys.stderr, interval_s=2.0, counters_fn=lambda: {"exchanges": 12})
    printer.start()
    summary.record("checkout", "server", duration_s=0.012, error=False, ts_s=exchange.end_ns / 1e9)
    ...
    printer.stop()  # prints the final table

:class:`RedSummary` keeps, per (service, kind), a total count and a sliding
window of :data:`WINDOW_SLOTS` time slots (``window_s / WINDOW_SLOTS`` seconds
each). ``REQ/S`` and ``ERR%`` cover the slots inside the window, so the window
actually covered is between ``window_s`` minus one slot and ``window_s``; a
series younger than the window is divided by its age instead (at least one second).

Latency percentiles are approximate. Durations are counted in log-scale
buckets, :data:`BUCKETS_PER_OCTAVE` per doubling (each about 9 % wide); a
percentile is reported as the geometric middle of its bucket, clamped to the
window's smallest and largest durations, so it is within about 5 % of the
exact value. Memory is bounded: at most ``max_services`` services (more are
folded into one ``(other)`` row and counted in ``folded_records``), two kinds
each, :data:`WINDOW_SLOTS` slots per series, and only the buckets actually hit.

:class:`SummaryPrinter` redraws the table every ``interval_s`` from a daemon
thread: on a terminal it clears the screen first (``ESC[H ESC[2J``) and cuts
the table to the terminal's height; otherwise it appends one plain-text block
per interval. A closed or broken stream silently ends the printing.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import IO, Any
from ..threads import name_os_thread

__all__ = [
    "BUCKETS_PER_OCTAVE",
    "OTHER_SERVICE",
    "WINDOW_SLOTS",
    "RedSummary",
    "SummaryPrinter",
]

_logger = logging.getLogger(__name__)

WINDOW_SLOTS = 60
"""Time slots in the sliding window, whatever its length: memory per series does not grow with ``window_s``."""

BUCKETS_PER_OCTAVE = 8
"""Latency buckets per doubling: 2**(1/8) ≈ 1.09, so a reported percentile is within ~5 % of the truth."""

_MAX_BUCKET = 40 * BUCKETS_PER_OCTAVE
"""Durations are bucketed in microseconds; 2**40 µs is about 12.7 days, beyond any real exchange."""

OTHER_SERVICE = "(other)"
"""The row that services beyond ``max_services`` are folded into; parenthesised so no real name clashes."""

CLEAR_SCREEN = "\x1b[H\x1b[2J"

_SERVICE_COLUMN_MAX = 40


def _bucket(duration_s: float) -> int:
    micros = duration_s * 1e6
    if not micros >= 1.0:  # also catches NaN and negatives
        return 0
    return min(int(math.log2(micros) * BUCKETS_PER_OCTAVE), _MAX_BUCKET)


def _bucket_middle_s(index: int) -> float:
    return 2.0 ** ((index + 0.5) / BUCKETS_PER_OCTAVE) / 1e6


class _Slot:
    __slots__ = ("number", "count", "errors", "buckets", "min_s", "max_s")

    def __init__(self, number: int) -> None:
        self.number = number
        self.count = 0
        self.errors = 0
        self.buckets: dict[int, int] = {}
        self.min_s = math.inf
        self.max_s = -math.inf


class _Series:
    __slots__ = ("service", "kind", "first_s", "total", "total_errors", "slots")

    def __init__(self, service: str, kind: str, first_s: float) -> None:
        self.service = service
        self.kind = kind
        self.first_s = first_s
        self.total = 0
        self.total_errors = 0
        self.slots: list[_Slot | None] = [None] * WINDOW_SLOTS


class _Row:
    __slots__ = ("service", "kind", "rate", "error_pct", "percentiles", "window_count", "window_errors", "total")

    def __init__(self, series: _Series, now_s: float, window_s: float, oldest_slot: int) -> None:
        self.service = series.service
        self.kind = series.kind
        self.total = series.total
        count = errors = 0
        buckets: dict[int, int] = {}
        low, high = math.inf, -math.inf
        for slot in series.slots:
            if slot is None or slot.number < oldest_slot:
                continue
            count += slot.count
            errors += slot.errors
            low, high = min(low, slot.min_s), max(high, slot.max_s)
            for index, hits in slot.buckets.items():
                buckets[index] = buckets.get(index, 0) + hits
        age_s = max(min(window_s, now_s - series.first_s), min(1.0, window_s))
        self.window_count = count
        self.window_errors = errors
        self.rate = count / age_s
        self.error_pct = 100.0 * errors / count if count else 0.0
        self.percentiles = _percentiles(buckets, count, low, high, (0.50, 0.90, 0.99))


def _percentiles(
    buckets: dict[int, int], count: int, low: float, high: float, quantiles: tuple[float, ...]
) -> tuple[float | None, ...]:
    if count == 0:
        return tuple(None for _ in quantiles)
    ordered = sorted(buckets.items())
    out = []
    for quantile in quantiles:
        rank = max(1, math.ceil(quantile * count))
        seen = 0
        for index, hits in ordered:
            seen += hits
            if seen >= rank:
                out.append(min(max(_bucket_middle_s(index), low), high))
                break
    return tuple(out)


class RedSummary:
    """Per-service request rate, error ratio and latency percentiles over a sliding window. Thread-safe."""

    def __init__(self, *, window_s: float = 60.0, max_services: int = 200) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        if max_services < 1:
            raise ValueError(f"max_services must be at least 1, got {max_services}")
        self.window_s = float(window_s)
        self.max_services = max_services
        self._slot_s = self.window_s / WINDOW_SLOTS
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], _Series] = {}
        self._services: set[str] = set()
        self._network: dict[tuple[str, str], list] = {}  # (service, peer) -> totals, see record_flow
        self.folded_records = 0
        """Records counted under ``(other)`` because ``max_services`` distinct services were already seen."""

    def record(self, service: str, kind: str, duration_s: float, error: bool, ts_s: float) -> None:
        """Count one exchange that ended at ``ts_s`` (wall-clock seconds) after ``duration_s``.

        ``kind`` is ``"server"`` or ``"client"``. Records older than the window
        still count in the total. Never blocks for long: one lock, O(1) work.
        """
        number = math.floor(ts_s / self._slot_s)
        with self._lock:
            if service not in self._services:
                if len(self._services) >= self.max_services:
                    self.folded_records += 1
                    service = OTHER_SERVICE
                else:
                    self._services.add(service)
            key = (service, kind)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(service, kind, ts_s)
            elif ts_s < series.first_s:
                series.first_s = ts_s
            series.total += 1
            if error:
                series.total_errors += 1
            position = number % WINDOW_SLOTS
            slot = series.slots[position]
            if slot is None or slot.number < number:
                slot = series.slots[position] = _Slot(number)
            elif slot.number > number:
                return  # older than the window this slot now holds: total only
            slot.count += 1
            if error:
                slot.errors += 1
            index = _bucket(duration_s)
            slot.buckets[index] = slot.buckets.get(index, 0) + 1
            if duration_s < slot.min_s:
                slot.min_s = duration_s
            if duration_s > slot.max_s:
                slot.max_s = duration_s

    def render(
        self,
        now_s: float,
        *,
        counters: Mapping[str, Any] | None = None,
        max_rows: int | None = None,
    ) -> str:
        """The table as text (no trailing newline): a header, the agent ``counters``, one row per series.

        Rows are sorted busiest first; with ``max_rows`` the rest are summarised in one line.
        """
        oldest_slot = math.floor(now_s / self._slot_s) - WINDOW_SLOTS + 1
        with self._lock:
            rows = [_Row(series, now_s, self.window_s, oldest_slot) for series in self._series.values()]
            services = len(self._services) + (1 if self.folded_records else 0)
            folded = self.folded_records
        rows.sort(key=lambda row: (-row.window_count, -row.total, row.service, row.kind))

        window_count = sum(row.window_count for row in rows)
        window_errors = sum(row.window_errors for row in rows)
        header = (
            f"otel-ebpf  {time.strftime('%H:%M:%S', time.localtime(now_s))}"
            f"  window {self.window_s:g}s  services {services}"
            f"  req/s {sum(row.rate for row in rows):.1f}"
            f"  errors {100.0 * window_errors / window_count if window_count else 0.0:.1f}%"
            f"  total {sum(row.total for row in rows)}"
        )
        if folded:
            header += f"  folded {folded} (over {self.max_services} services)"
        lines = [header]
        if counters:
            lines.append("  ".join(f"{key}={_counter(value)}" for key, value in counters.items()))

        width = min(max([len("SERVICE"), *(len(row.service) for row in rows)]), _SERVICE_COLUMN_MAX)
        lines.append(
            f"{'SERVICE':<{width}}  {'KIND':<6}  {'REQ/S':>8}  {'ERR%':>6}"
            f"  {'P50ms':>8}  {'P90ms':>8}  {'P99ms':>8}  {'TOTAL':>9}"
        )
        shown = rows if max_rows is None or len(rows) <= max_rows else rows[: max(max_rows - 1, 0)]
        for row in shown:
            p50, p90, p99 = (_ms(value) for value in row.percentiles)
            error_pct = f"{row.error_pct:.1f}%" if row.window_count else "-"
            lines.append(
                f"{_fit(row.service, width):<{width}}  {row.kind:<6}  {row.rate:>8.1f}  {error_pct:>6}"
                f"  {p50:>8}  {p90:>8}  {p99:>8}  {row.total:>9}"
            )
        if len(shown) < len(rows):
            lines.append(f"... {len(rows) - len(shown)} more rows")
        if not rows:
            lines.append("(no HTTP exchanges seen yet)")
        lines.extend(self._render_network(max_rows))
        return "\n".join(lines)

    def record_flow(self, service: str, peer: str, *, bytes_moved: int, retransmits: int, srtt_s: float,
                    failed: bool, closed: bool) -> None:
        """Add one TCP flow record to the NETWORK table (totals per service and peer since start)."""
        key = (service, peer)
        with self._lock:
            row = self._network.get(key)
            if row is None:
                if len(self._network) >= self.max_services:
                    key = (OTHER_SERVICE, "")
                    row = self._network.get(key)
                if row is None:
                    row = self._network[key] = [0, 0, 0, 0, 0.0, 0]  # conns, failed, retrans, bytes, rtt sum, n
            row[0] += 1 if closed else 0
            row[1] += 1 if failed else 0
            row[2] += retransmits
            row[3] += bytes_moved
            if srtt_s > 0:
                row[4] += srtt_s
                row[5] += 1

    def _render_network(self, max_rows: int | None) -> list[str]:
        with self._lock:
            rows = sorted(((k, list(v)) for k, v in self._network.items()), key=lambda kv: (-kv[1][2], -kv[1][3]))
        if not rows:
            return []
        width = min(max([len("SERVICE"), *(len(k[0]) for k, _ in rows)]), _SERVICE_COLUMN_MAX)
        lines = ["", f"{'SERVICE':<{width}}  {'PEER (server side)':<22}  {'CONNS':>7}  {'FAILED':>6}"
                     f"  {'RETRANS':>8}  {'RTTms':>8}  {'BYTES':>10}"]
        limit = len(rows) if max_rows is None else max(1, max_rows // 3)
        for (service, peer), (conns, failed, retrans, moved, rtt_sum, n) in rows[:limit]:
            rtt = _ms(rtt_sum / n) if n else "-"
            lines.append(f"{_fit(service, width):<{width}}  {_fit(peer, 22):<22}  {conns:>7}  {failed:>6}"
                         f"  {retrans:>8}  {rtt:>8}  {moved:>10}")
        if limit < len(rows):
            lines.append(f"... {len(rows) - limit} more peers")
        return lines


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    if ms < 10:
        return f"{ms:.2f}"
    if ms < 100:
        return f"{ms:.1f}"
    return f"{ms:.0f}"


def _counter(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _is_tty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class SummaryPrinter:
    """Prints a :class:`RedSummary` every ``interval_s`` from a daemon thread.

    ``start()`` returns at once. ``stop()`` ends the thread and, if the printer
    was started, prints the final table in full; it is safe twice and before
    ``start()``. ``counters_fn`` is called once per frame for the header's
    agent counters (an exception there only drops the counters line).
    ``refresh()`` draws one frame now.
    """

    def __init__(
        self,
        summary: RedSummary,
        stream: IO[str],
        *,
        interval_s: float = 2.0,
        counters_fn: Callable[[], Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self._summary = summary
        self._stream = stream
        self._interval_s = interval_s
        self._counters_fn = counters_fn
        self._clock = clock
        self._tty = _is_tty(stream)
        self._write_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._dead = False  # the stream failed: write nothing more
        self._warned = False

    def start(self) -> None:
        if self._thread is not None or self._stopped:
            return
        self._thread = threading.Thread(target=self._run, name="otel-ebpf-summary", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        thread = self._thread
        if thread is None:
            return
        if thread is not threading.current_thread():
            thread.join()
        self._draw(final=True)

    def refresh(self) -> None:
        self._draw(final=False)

    def _run(self) -> None:
        name_os_thread()
        while not self._stopping.wait(self._interval_s) and not self._dead:
            self._draw(final=False)

    def _draw(self, *, final: bool) -> None:
        if self._dead:
            return
        try:
            max_rows = None if final or not self._tty else self._terminal_rows()
            text = self._summary.render(self._clock(), counters=self._counters(), max_rows=max_rows)
        except Exception:  # noqa: BLE001 - the printer must never take the agent down
            self._warn_once("rendering the summary failed")
            return
        frame = (CLEAR_SCREEN + text + "\n") if self._tty else (text + "\n\n")
        with self._write_lock:
            try:
                self._stream.write(frame)
                self._stream.flush()
            except (ValueError, OSError):  # closed stream, broken pipe
                self._dead = True

    def _counters(self) -> Mapping[str, Any] | None:
        if self._counters_fn is None:
            return None
        try:
            return self._counters_fn()
        except Exception:  # noqa: BLE001
            self._warn_once("counters_fn failed")
            return None

    def _terminal_rows(self) -> int | None:
        try:
            lines = os.get_terminal_size(self._stream.fileno()).lines
        except (AttributeError, ValueError, OSError):
            return None
        return max(lines - 5, 1)  # header, counters, column titles, cursor line, one spare

    def _warn_once(self, what: str) -> None:
        if not self._warned:
            self._warned = True
            _logger.warning("%s; the summary table may be incomplete", what, exc_info=True)
