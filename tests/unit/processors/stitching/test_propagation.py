from __future__ import annotations

import base64

import pytest

from otel_ebpf.processors.stitching import extract
from otel_ebpf.records import ParentSource

TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN = 0x00F067AA0BA902B7
# One distinct trace per format, to tell in the precedence tests which one won.
TRACE_TP, SPAN_TP = 0x11111111111111111111111111111111, 0x1111111111111111
TRACE_B3, SPAN_B3 = 0x22222222222222222222222222222222, 0x2222222222222222
TRACE_XB3, SPAN_XB3 = 0x33333333333333333333333333333333, 0x3333333333333333
TRACE_UBER, SPAN_UBER = 0x44444444444444444444444444444444, 0x4444444444444444
TRACE_BIN, SPAN_BIN = 0x55555555555555555555555555555555, 0x5555555555555555


def traceparent(trace_id: int = TRACE, span_id: int = SPAN, flags: str = "01", version: str = "00") -> str:
    return f"{version}-{trace_id:032x}-{span_id:016x}-{flags}"


def grpc_trace_bin(trace_id: int = TRACE, span_id: int = SPAN, options: int | None = 1, *, version: int = 0,
                   pad: bool = True) -> str:
    """OpenCensus binary context: version, then field 0 (trace id), 1 (span id), 2 (options), base64."""
    raw = bytes([version]) + b"\x00" + trace_id.to_bytes(16, "big") + b"\x01" + span_id.to_bytes(8, "big")
    if options is not None:
        raw += b"\x02" + bytes([options])
    text = base64.b64encode(raw).decode()
    return text if pad else text.rstrip("=")


def header_set(*names: str) -> tuple[tuple[str, str], ...]:
    """Headers of the named formats, each naming its own trace (see the TRACE_* constants)."""
    by_name = {
        "traceparent": (("traceparent", traceparent(TRACE_TP, SPAN_TP)),),
        "b3": (("b3", f"{TRACE_B3:032x}-{SPAN_B3:016x}-1"),),
        "x-b3": (("x-b3-traceid", f"{TRACE_XB3:032x}"), ("x-b3-spanid", f"{SPAN_XB3:016x}")),
        "uber-trace-id": (("uber-trace-id", f"{TRACE_UBER:032x}:{SPAN_UBER:016x}:0:1"),),
        "grpc-trace-bin": (("grpc-trace-bin", grpc_trace_bin(TRACE_BIN, SPAN_BIN)),),
    }
    return tuple(h for name in names for h in by_name[name])


ALL_FORMATS = ("traceparent", "b3", "x-b3", "uber-trace-id", "grpc-trace-bin")
WINNER = {
    "traceparent": (TRACE_TP, SPAN_TP, ParentSource.TRACEPARENT),
    "b3": (TRACE_B3, SPAN_B3, ParentSource.B3),
    "x-b3": (TRACE_XB3, SPAN_XB3, ParentSource.B3_MULTI),
    "uber-trace-id": (TRACE_UBER, SPAN_UBER, ParentSource.JAEGER),
    "grpc-trace-bin": (TRACE_BIN, SPAN_BIN, ParentSource.GRPC_TRACE_BIN),
}


# ---- no context ----


def test_a_request_without_context_headers_carries_no_context():
    assert extract((("host", "a"), ("user-agent", "curl/8.0"))) is None
    assert extract(()) is None


def test_an_x_request_id_alone_is_not_a_trace_context():
    assert extract((("x-request-id", "abc-123"),)) is None


# ---- W3C traceparent ----


def test_a_valid_traceparent_gives_its_trace_id_span_id_and_source():
    ctx = extract((("traceparent", traceparent()),))
    assert (ctx.trace_id, ctx.span_id, ctx.sampled, ctx.source) == (TRACE, SPAN, True, ParentSource.TRACEPARENT)
    assert ctx.alternates == ()


@pytest.mark.parametrize(("flags", "sampled"), [("00", False), ("01", True), ("02", False), ("03", True),
                                                ("ff", True)])
def test_the_sampled_flag_of_a_traceparent_is_bit_zero_of_its_flags(flags, sampled):
    assert extract((("traceparent", traceparent(flags=flags)),)).sampled is sampled


def test_whitespace_around_a_traceparent_value_is_ignored():
    assert extract((("traceparent", f"  {traceparent()} "),)).trace_id == TRACE


def test_a_traceparent_of_a_future_version_may_carry_more_fields():
    ctx = extract((("traceparent", traceparent(version="01") + "-what-comes-next"),))
    assert (ctx.trace_id, ctx.span_id) == (TRACE, SPAN)


@pytest.mark.parametrize("value", [
    pytest.param(traceparent(version="ff"), id="version ff"),
    pytest.param(traceparent(trace_id=0), id="all-zero trace id"),
    pytest.param(traceparent(span_id=0), id="all-zero span id"),
    pytest.param(f"00-{TRACE:032x}"[:-1] + f"-{SPAN:016x}-01", id="trace id of 31 digits"),
    pytest.param(f"00-{TRACE:032x}0-{SPAN:016x}-01", id="trace id of 33 digits"),
    pytest.param(f"00-{TRACE:032x}-{SPAN:016x}"[:-1] + "-01", id="span id of 15 digits"),
    pytest.param(f"00-{TRACE:032x}-{SPAN:016x}0-01", id="span id of 17 digits"),
    pytest.param(f"00-{TRACE:032x}-{SPAN:016x}-1", id="flags of 1 digit"),
    pytest.param(f"0-{TRACE:032x}-{SPAN:016x}-01", id="version of 1 digit"),
    pytest.param(f"00-{TRACE:032x}-{SPAN:016x}-01-extra", id="version 00 with trailing data"),
    pytest.param(f"00-{'g' * 32}-{SPAN:016x}-01", id="not hex"),
    pytest.param(f"00_{TRACE:032x}_{SPAN:016x}_01", id="wrong delimiter"),
    pytest.param(f"00-{TRACE:032x}-{SPAN:016x}", id="no flags"),
    pytest.param("", id="empty"),
])
def test_an_invalid_traceparent_is_ignored(value):
    assert extract((("traceparent", value),)) is None


def test_an_uppercase_traceparent_is_ignored():
    assert extract((("traceparent", traceparent().upper()),)) is None


def test_an_invalid_traceparent_leaves_the_next_format_as_the_parent():
    headers = (("traceparent", traceparent(trace_id=0)),) + header_set("b3")
    ctx = extract(headers)
    assert (ctx.trace_id, ctx.source) == (TRACE_B3, ParentSource.B3)


def test_tracestate_is_kept_with_a_traceparent_parent_and_several_lines_are_joined():
    headers = (("traceparent", traceparent()), ("tracestate", "rojo=00f067aa0ba902b7"), ("tracestate", " congo=t61rcWkgMzE "))
    assert extract(headers).trace_state == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


def test_tracestate_is_dropped_when_the_parent_comes_from_another_format():
    headers = header_set("b3") + (("tracestate", "rojo=00f067aa0ba902b7"),)
    assert extract(headers).trace_state == ""


# ---- B3 single header ----


def test_a_b3_header_with_a_128_bit_trace_id_gives_its_ids():
    ctx = extract((("b3", f"{TRACE:032x}-{SPAN:016x}-1"),))
    assert (ctx.trace_id, ctx.span_id, ctx.sampled, ctx.source) == (TRACE, SPAN, True, ParentSource.B3)


def test_a_b3_header_with_a_64_bit_trace_id_keeps_it_as_the_64_bit_number():
    ctx = extract((("b3", f"a3ce929d0e0e4736-{SPAN:016x}-1"),))
    assert ctx.trace_id == 0xA3CE929D0E0E4736
    assert f"{ctx.trace_id:032x}" == "0000000000000000a3ce929d0e0e4736"


@pytest.mark.parametrize(("sampling", "sampled"), [("-0", False), ("-1", True), ("-d", True), ("", True)])
def test_the_b3_sampling_state_decides_sampled_and_its_absence_defers_to_sampled(sampling, sampled):
    assert extract((("b3", f"{TRACE:032x}-{SPAN:016x}{sampling}"),)).sampled is sampled


def test_a_b3_header_with_a_parent_span_id_gives_the_span_id_as_the_parent():
    ctx = extract((("b3", f"{TRACE:032x}-{SPAN:016x}-1-05e3ac9a4f6e3b90"),))
    assert (ctx.trace_id, ctx.span_id) == (TRACE, SPAN)


@pytest.mark.parametrize("decision", ["0", "1", "d"])
def test_a_b3_header_with_only_a_sampling_decision_carries_no_context(decision):
    assert extract((("b3", decision),)) is None


@pytest.mark.parametrize("value", [
    pytest.param(f"{TRACE:032x}"[:20] + f"-{SPAN:016x}-1", id="trace id of 20 digits"),
    pytest.param(f"{TRACE:032x}-{SPAN:016x}"[:-1] + "-1", id="span id of 15 digits"),
    pytest.param(f"{0:032x}-{SPAN:016x}-1", id="all-zero trace id"),
    pytest.param(f"{TRACE:032x}-{0:016x}-1", id="all-zero span id"),
    pytest.param(f"{'z' * 32}-{SPAN:016x}-1", id="not hex"),
])
def test_an_invalid_b3_header_is_ignored(value):
    assert extract((("b3", value),)) is None


# ---- B3 multiple headers ----


@pytest.mark.parametrize(("trace_hex", "trace_id"), [(f"{TRACE:032x}", TRACE),
                                                    ("a3ce929d0e0e4736", 0xA3CE929D0E0E4736)])
def test_x_b3_headers_give_a_128_or_64_bit_trace_id_and_the_span_id(trace_hex, trace_id):
    ctx = extract((("x-b3-traceid", trace_hex), ("x-b3-spanid", f"{SPAN:016x}")))
    assert (ctx.trace_id, ctx.span_id, ctx.source) == (trace_id, SPAN, ParentSource.B3_MULTI)


@pytest.mark.parametrize(("value", "sampled"), [("1", True), ("true", True), ("0", False), ("false", False)])
def test_x_b3_sampled_decides_sampled(value, sampled):
    headers = (("x-b3-traceid", f"{TRACE:032x}"), ("x-b3-spanid", f"{SPAN:016x}"), ("x-b3-sampled", value))
    assert extract(headers).sampled is sampled


def test_x_b3_flags_1_means_debug_and_so_sampled_whatever_x_b3_sampled_says():
    headers = (("x-b3-traceid", f"{TRACE:032x}"), ("x-b3-spanid", f"{SPAN:016x}"), ("x-b3-sampled", "0"),
               ("x-b3-flags", "1"))
    assert extract(headers).sampled is True


def test_x_b3_headers_without_a_sampling_decision_are_sampled():
    assert extract((("x-b3-traceid", f"{TRACE:032x}"), ("x-b3-spanid", f"{SPAN:016x}"))).sampled is True


@pytest.mark.parametrize("headers", [
    pytest.param((("x-b3-traceid", f"{TRACE:032x}"),), id="no span id"),
    pytest.param((("x-b3-spanid", f"{SPAN:016x}"),), id="no trace id"),
    pytest.param((("x-b3-traceid", f"{TRACE:032x}"[:24]), ("x-b3-spanid", f"{SPAN:016x}")), id="trace id of 24"),
    pytest.param((("x-b3-traceid", f"{TRACE:032x}"), ("x-b3-spanid", f"{0:016x}")), id="all-zero span id"),
])
def test_incomplete_or_invalid_x_b3_headers_are_ignored(headers):
    assert extract(headers) is None


# ---- Jaeger uber-trace-id ----


@pytest.mark.parametrize(("flags", "sampled"), [("1", True), ("0", False), ("3", True), ("2", False)])
def test_uber_trace_id_gives_its_ids_and_bit_zero_of_its_flags_is_sampled(flags, sampled):
    ctx = extract((("uber-trace-id", f"{TRACE:032x}:{SPAN:016x}:0:{flags}"),))
    assert (ctx.trace_id, ctx.span_id, ctx.sampled, ctx.source) == (TRACE, SPAN, sampled, ParentSource.JAEGER)


def test_uber_trace_id_with_url_encoded_colons_is_decoded():
    ctx = extract((("uber-trace-id", f"{TRACE:032x}%3A{SPAN:016x}%3A0%3A1"),))
    assert (ctx.trace_id, ctx.span_id, ctx.sampled) == (TRACE, SPAN, True)


def test_uber_trace_id_with_a_short_trace_id_keeps_it_as_the_number_it_is():
    ctx = extract((("uber-trace-id", "5f4b3c2a1:8a3c2b1:0:1"),))
    assert (ctx.trace_id, ctx.span_id) == (0x5F4B3C2A1, 0x8A3C2B1)


@pytest.mark.parametrize("value", [
    pytest.param(f"{TRACE:032x}:{SPAN:016x}:0", id="three fields"),
    pytest.param(f"0:{SPAN:016x}:0:1", id="zero trace id"),
    pytest.param(f"{TRACE:032x}:0:0:1", id="zero span id"),
    pytest.param(f"{TRACE:032x}:{SPAN:016x}:0:x", id="flags not hex"),
    pytest.param(f"{TRACE:032x}0:{SPAN:016x}:0:1", id="trace id of 33 digits"),
])
def test_an_invalid_uber_trace_id_is_ignored(value):
    assert extract((("uber-trace-id", value),)) is None


# ---- grpc-trace-bin ----


@pytest.mark.parametrize(("options", "sampled"), [(1, True), (0, False), (None, False)])
def test_grpc_trace_bin_gives_its_ids_and_the_sampled_option(options, sampled):
    ctx = extract((("grpc-trace-bin", grpc_trace_bin(options=options)),))
    assert (ctx.trace_id, ctx.span_id, ctx.sampled, ctx.source) == (TRACE, SPAN, sampled,
                                                                     ParentSource.GRPC_TRACE_BIN)


def test_grpc_trace_bin_without_base64_padding_is_accepted():
    value = grpc_trace_bin(pad=False)
    assert not value.endswith("=")
    assert extract((("grpc-trace-bin", value),)).trace_id == TRACE


@pytest.mark.parametrize("value", [
    pytest.param(grpc_trace_bin(version=1), id="version 1"),
    pytest.param(grpc_trace_bin(trace_id=0), id="all-zero trace id"),
    pytest.param(base64.b64encode(b"\x00\x00" + TRACE.to_bytes(16, "big")).decode(), id="no span id"),
    pytest.param(base64.b64encode(b"\x00\x00" + TRACE.to_bytes(16, "big") + b"\x01\x00\x01").decode(),
                 id="truncated span id"),
    pytest.param("not base64!", id="not base64"),
    pytest.param("", id="empty"),
])
def test_an_invalid_grpc_trace_bin_is_ignored(value):
    assert extract((("grpc-trace-bin", value),)) is None


# ---- which header wins ----


@pytest.mark.parametrize("first", range(len(ALL_FORMATS)), ids=ALL_FORMATS)
def test_formats_are_tried_in_the_documented_order_and_the_first_present_is_the_parent(first):
    present = ALL_FORMATS[first:]
    ctx = extract(header_set(*present))
    assert (ctx.trace_id, ctx.span_id, ctx.source) == WINNER[present[0]]


def test_the_precedence_does_not_depend_on_the_order_of_the_headers_on_the_wire():
    ctx = extract(header_set(*reversed(ALL_FORMATS)))
    assert ctx.source == ParentSource.TRACEPARENT


def test_formats_naming_other_traces_become_alternates_in_precedence_order():
    ctx = extract(header_set(*ALL_FORMATS))
    assert ctx.alternates == tuple(WINNER[name] for name in ALL_FORMATS[1:])


def test_formats_naming_the_same_trace_are_no_alternates():
    headers = (("traceparent", traceparent(TRACE, SPAN)), ("b3", f"{TRACE:032x}-{SPAN_B3:016x}-1"),
               ("uber-trace-id", f"{TRACE_UBER:032x}:{SPAN_UBER:016x}:0:1"))
    assert extract(headers).alternates == ((TRACE_UBER, SPAN_UBER, ParentSource.JAEGER),)


def test_of_two_traceparent_headers_the_last_valid_wins_and_the_other_is_an_alternate():
    headers = (("traceparent", traceparent(TRACE_TP, SPAN_TP)), ("traceparent", traceparent(TRACE, SPAN)))
    ctx = extract(headers)
    assert (ctx.trace_id, ctx.span_id) == (TRACE, SPAN)
    assert ctx.alternates == ((TRACE_TP, SPAN_TP, ParentSource.TRACEPARENT),)


def test_of_two_traceparent_headers_an_invalid_last_one_is_skipped_without_alternates():
    headers = (("traceparent", traceparent(TRACE, SPAN)), ("traceparent", traceparent(version="ff")))
    ctx = extract(headers)
    assert (ctx.trace_id, ctx.span_id, ctx.alternates) == (TRACE, SPAN, ())


def test_two_traceparent_headers_of_one_trace_make_no_alternate():
    headers = (("traceparent", traceparent(TRACE, SPAN_TP)), ("traceparent", traceparent(TRACE, SPAN)))
    ctx = extract(headers)
    assert (ctx.span_id, ctx.alternates) == (SPAN, ())


# ---- x-request-id ----


def test_the_first_x_request_id_is_captured_with_the_context():
    headers = (("traceparent", traceparent()), ("x-request-id", " 9f1c-42 "), ("x-request-id", "other"))
    assert extract(headers).request_id == "9f1c-42"


def test_without_x_request_id_the_request_id_is_none():
    assert extract((("traceparent", traceparent()),)).request_id is None
