"""RedSummary arithmetic and rendering; SummaryPrinter frames on terminals, pipes and closed streams."""

from __future__ import annotations

import io
import threading

import pytest

from otel_ebpf.telemetry.summary import CLEAR_SCREEN, OTHER_SERVICE, RedSummary, SummaryPrinter

NOW = 1_700_000_000.0


def _rows(text):
    """Table rows keyed by (service, kind): the columns after them, as strings."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("SERVICE")) + 1
    rows = {}
    for line in lines[start:]:
        if line.startswith(("...", "(no ")):
            continue
        service, kind, rate, err, p50, p90, p99, total = line.rsplit(None, 7)
        rows[(service.strip(), kind)] = {
            "rate": rate,
            "err": err,
            "p50": p50,
            "p90": p90,
            "p99": p99,
            "total": total,
        }
    return rows


def test_the_rate_is_the_count_inside_the_window_divided_by_the_window():
    summary = RedSummary(window_s=60.0)
    summary.record("checkout", "server", 0.01, False, NOW - 300)  # makes the series older than the window
    for i in range(120):
        summary.record("checkout", "server", 0.01, False, NOW - 59 + i * 0.45)

    row = _rows(summary.render(NOW))[("checkout", "server")]

    assert row["rate"] == "2.0"
    assert row["total"] == "121"


def test_a_series_younger_than_the_window_is_divided_by_its_age():
    summary = RedSummary(window_s=60.0)
    for i in range(50):
        summary.record("checkout", "server", 0.01, False, NOW - 10 + i * 0.2)

    assert _rows(summary.render(NOW))[("checkout", "server")]["rate"] == "5.0"


def test_records_older_than_the_window_count_in_the_total_only():
    summary = RedSummary(window_s=60.0)
    summary.record("checkout", "server", 0.01, True, NOW - 61)
    summary.record("checkout", "server", 0.02, False, NOW - 500)  # out of order and very old

    row = _rows(summary.render(NOW))[("checkout", "server")]

    assert (row["rate"], row["err"], row["p50"], row["total"]) == ("0.0", "-", "-", "2")


def test_slots_are_reused_as_the_window_slides():
    summary = RedSummary(window_s=60.0)
    for second in range(0, 600, 2):
        summary.record("checkout", "server", 0.01, second < 540, NOW - 600 + second)

    row = _rows(summary.render(NOW))[("checkout", "server")]

    assert row["rate"] == "0.5"
    assert row["err"] == "0.0%"  # the errors all ended more than a window ago
    assert row["total"] == "300"


def test_the_error_percentage_covers_the_window():
    summary = RedSummary()
    for i in range(40):
        summary.record("api", "client", 0.01, i % 4 == 0, NOW - i)

    assert _rows(summary.render(NOW))[("api", "client")]["err"] == "25.0%"


def test_percentiles_are_within_five_percent_of_the_exact_ones():
    summary = RedSummary()
    durations = [ms / 1000 for ms in range(1, 1001)]  # 1 .. 1000 ms
    for i, duration in enumerate(durations):
        summary.record("api", "server", duration, False, NOW - 50 + i * 0.05)

    row = _rows(summary.render(NOW))[("api", "server")]

    for column, exact_ms in (("p50", 500), ("p90", 900), ("p99", 990)):
        assert float(row[column]) == pytest.approx(exact_ms, rel=0.05), column


def test_a_single_duration_is_reported_exactly():
    summary = RedSummary()
    summary.record("api", "server", 0.0123, False, NOW)

    row = _rows(summary.render(NOW))[("api", "server")]

    assert (row["p50"], row["p90"], row["p99"]) == ("12.3", "12.3", "12.3")


def test_services_beyond_max_services_are_folded_into_other_and_counted():
    summary = RedSummary(max_services=2)
    for service in ("a", "b", "c", "d", "a"):
        summary.record(service, "server", 0.01, False, NOW)
    summary.record("b", "client", 0.01, False, NOW)  # a known service, new kind: not folded

    text = summary.render(NOW)
    rows = _rows(text)

    assert set(rows) == {("a", "server"), ("b", "server"), ("b", "client"), (OTHER_SERVICE, "server")}
    assert rows[("a", "server")]["total"] == "2"
    assert rows[(OTHER_SERVICE, "server")]["total"] == "2"
    assert summary.folded_records == 2
    assert "folded 2" in text.splitlines()[0]


def test_the_header_carries_totals_and_the_agent_counters():
    summary = RedSummary()
    for i in range(10):  # 10 records each over the last 10 s: 1 req/s each
        summary.record("a", "server", 0.01, i == 0, NOW - 1 - i)
        summary.record("b", "client", 0.01, False, NOW - 1 - i)

    header, counters = summary.render(NOW, counters={"exchanges": 20, "ringbuf.dropped": 0}).splitlines()[:2]

    assert "services 2" in header
    assert "req/s 2.0" in header
    assert "errors 5.0%" in header
    assert "total 20" in header
    assert counters == "exchanges=20  ringbuf.dropped=0"


def test_rows_are_sorted_busiest_first_and_cut_at_max_rows():
    summary = RedSummary()
    for rank, service in enumerate(("quiet", "busy", "medium")):
        for i in range((0, 3, 2)[rank] + 1):
            summary.record(service, "server", 0.01, False, NOW - i)

    full = summary.render(NOW)
    cut = summary.render(NOW, max_rows=2)

    assert [key[0] for key in _rows(full)] == ["busy", "medium", "quiet"]
    assert [key[0] for key in _rows(cut)] == ["busy"]
    assert cut.splitlines()[-1] == "... 2 more rows"


def test_long_service_names_are_cut_to_the_column():
    summary = RedSummary()
    summary.record("s" * 100, "server", 0.01, False, NOW)

    (line,) = [line for line in summary.render(NOW).splitlines() if line.startswith("s")]

    assert line.startswith("s" * 39 + "…  server")


def test_an_empty_summary_says_nothing_was_seen():
    assert summary_last_line(RedSummary()) == "(no HTTP exchanges seen yet)"


def summary_last_line(summary):
    return summary.render(NOW).splitlines()[-1]


def test_records_from_many_threads_are_all_counted():
    summary = RedSummary()

    def work():
        for i in range(1000):
            summary.record("api", "server", 0.001 * (i % 7 + 1), i % 10 == 0, NOW - (i % 50))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    row = _rows(summary.render(NOW))[("api", "server")]
    assert row["total"] == "8000"
    assert row["err"] == "10.0%"


class _Tty(io.StringIO):
    def isatty(self):
        return True


class _Frames(io.StringIO):
    """A pipe-like stream that signals every write."""

    def __init__(self):
        super().__init__()
        self.frames = 0
        self.second_frame = threading.Event()

    def write(self, text):
        self.frames += 1
        if self.frames >= 2:
            self.second_frame.set()
        return super().write(text)


def _summary_with_one_service():
    summary = RedSummary()
    summary.record("checkout", "server", 0.01, False, NOW)
    return summary


def test_on_a_pipe_each_refresh_appends_a_plain_block():
    stream = io.StringIO()
    printer = SummaryPrinter(_summary_with_one_service(), stream, clock=lambda: NOW)

    printer.refresh()
    printer.refresh()

    text = stream.getvalue()
    assert "\x1b" not in text
    assert text.count("SERVICE") == 2
    assert text.endswith("\n\n")


def test_on_a_terminal_each_refresh_clears_the_screen_and_redraws():
    stream = _Tty()
    printer = SummaryPrinter(_summary_with_one_service(), stream, clock=lambda: NOW)

    printer.refresh()

    assert stream.getvalue().startswith(CLEAR_SCREEN + "otel-ebpf")
    assert "checkout" in stream.getvalue()


def test_the_thread_keeps_refreshing_until_stop_which_prints_a_final_table():
    stream = _Frames()
    printer = SummaryPrinter(
        _summary_with_one_service(), stream, interval_s=0.01, counters_fn=lambda: {"exchanges": 1}
    )

    printer.start()
    assert stream.second_frame.wait(timeout=30)
    printer.stop()
    frames_after_stop = stream.frames
    printer.stop()

    assert stream.frames == frames_after_stop
    last_block = stream.getvalue().rstrip("\n").split("\n\n")[-1]
    assert "exchanges=1" in last_block
    assert "checkout" in last_block


def test_stop_before_start_prints_nothing():
    stream = io.StringIO()

    SummaryPrinter(_summary_with_one_service(), stream).stop()

    assert stream.getvalue() == ""


def test_a_closed_stream_ends_printing_without_an_error():
    stream = io.StringIO()
    printer = SummaryPrinter(_summary_with_one_service(), stream, interval_s=3600)
    printer.start()
    stream.close()

    printer.refresh()
    printer.stop()


def test_a_failing_counters_fn_only_drops_the_counters_line():
    stream = io.StringIO()

    def broken():
        raise RuntimeError("boom")

    printer = SummaryPrinter(_summary_with_one_service(), stream, counters_fn=broken, clock=lambda: NOW)
    printer.refresh()

    assert "checkout" in stream.getvalue()
    assert "=" not in stream.getvalue()
