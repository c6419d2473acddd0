"""HTTP/2 parser, passive HPACK and stream assembler, driven by captured traffic (tests/fixtures/http2)."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from pathlib import Path

import pytest
from hpack import Decoder, Encoder

from otel_ebpf.protocols.hpack_passive import PassiveHpackDecoder
from otel_ebpf.protocols.http1 import Http1Session, Http1Stats
from otel_ebpf.protocols.http2 import (
    DEFAULT_MAX_FRAME_SIZE,
    PREFACE,
    Http2Session,
    Http2Stats,
    _FrameReader,
    looks_like_http2,
)
from otel_ebpf.records import Direction, HttpRequest, Role

from . import feeding
from .feeding import (
    CLOSE_TS,
    CONN,
    FIXTURES_ROOT,
    Piece,
    bytewise,
    direction,
    pieces,
    random_splits,
    run_session,
)

FIXTURES = FIXTURES_ROOT / "http2"
HTTP1_FIXTURES = FIXTURES_ROOT / "http1"

# Fixtures that are HTTP/2 from the first byte, with the exchanges each gives.
H2_FIXTURES = {
    "grpc_unary": 10,
    "grpc_server_streaming": 2,
    "grpc_client_streaming": 2,
    "grpc_bidi": 1,
    "grpc_errors": 5,
    "grpc_deadline": 3,
    "grpc_many": 120,
    "grpc_large": 4,
    "h2load_100": 100,
    "curl_prior_knowledge": 1,
    "nghttp_assets": 4,
    "nghttp_continuation": 2,
    "h2_goaway": 6,
    "h2_churn": 150,
}
BIG_FIXTURES = {"grpc_large", "nghttp_continuation"}  # byte-at-a-time only on a prefix (time)


# ---------------------------------------------------------------------------------------------
# Feeding helpers (shared with test_http1: feeding.py)
# ---------------------------------------------------------------------------------------------


def load(name: str, directory: Path = FIXTURES) -> list[tuple[str, bytes]]:
    return feeding.load(name, directory)


def run(feed, *, view="server", role=None, stats=None, close=True, **options):
    """Feeds ``feed`` to a fresh session; returns (exchanges before close, exchanges at close, session, stats)."""
    stats = stats if stats is not None else Http2Stats()
    result = run_session(Http2Session, stats, feed, view=view, role=role, close=close, **options)
    assert stats.internal_errors == 0
    return result


def exchanges_of(name, **kwargs):
    out, at_close, _, _ = run(pieces(load(name)), **kwargs)
    return out + at_close


def frame_boundaries(data: bytes) -> list[int]:
    """Offsets where frames start in one direction's bytes (after the client magic)."""
    pos = len(PREFACE) if data.startswith(PREFACE) else 0
    out = []
    while pos + 9 <= len(data):
        out.append(pos)
        pos += 9 + int.from_bytes(data[pos:pos + 3])
    return out


def header_blocks(data: bytes):
    """(stream, header block) of every HEADERS/PUSH_PROMISE (+CONTINUATION) in one direction's bytes."""
    block = None
    for pos in frame_boundaries(data):
        length = int.from_bytes(data[pos:pos + 3])
        ftype, flags, sid = data[pos + 3], data[pos + 4], int.from_bytes(data[pos + 5:pos + 9]) & 0x7FFFFFFF
        payload = data[pos + 9:pos + 9 + length]
        if ftype not in (1, 5, 9):
            continue
        start, pad = 0, 0
        if ftype != 9 and flags & 0x8:
            pad, start = payload[0], 1
        if ftype == 1 and flags & 0x20:
            start += 5
        if ftype == 5:
            start += 4
        fragment = payload[start:len(payload) - pad]
        block = fragment if ftype != 9 else block + fragment
        if flags & 0x4:
            yield sid, block


def as_fields(decoded):
    return [(name, value) for name, value in decoded]


# ---------------------------------------------------------------------------------------------
# The key test: segmentation must not change the result
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(H2_FIXTURES))
def test_every_fixture_gives_the_same_exchanges_whole_byte_by_byte_in_random_splits_and_with_trailing_bytes(name):
    chunks = load(name)
    reference, ref_close, _, ref_stats = run(pieces(chunks))
    assert len(reference) + len(ref_close) == H2_FIXTURES[name]
    assert ref_stats.parse_errors == 0 and ref_stats.non_http2_connections == 0
    assert ref_stats.hpack_unknown_refs == 0 and ref_stats.skipped_bytes == 0
    variants = {
        # a frame header and half of a HEADERS payload, never completed
        "trailing bytes": pieces(chunks, trailing=bytes.fromhex("00001001050000ffff") + b"\x82\x86\x84"),
        "recorded recv chunks": pieces(chunks, merge=False),
    }
    if name in BIG_FIXTURES:
        variants["byte at a time, first 40 units"] = pieces(chunks[:40], bytewise)
    else:
        variants["byte at a time"] = pieces(chunks, bytewise)
    for seed in range(4):
        variants[f"random splits {seed}"] = pieces(chunks, random_splits, seed=seed)
    for label, feed in variants.items():
        out, at_close, _, stats = run(feed)
        if label.startswith("byte at a time,"):
            expected, _, _, _ = run(pieces(chunks[:40]), close=False)
            assert out == expected, label
            continue
        if label == "recorded recv chunks":  # other units: other times, the same exchanges otherwise
            assert [replace(ex, start_ns=0, end_ns=0, tid=0) for ex in out + at_close] == \
                [replace(ex, start_ns=0, end_ns=0, tid=0) for ex in reference + ref_close], label
        else:
            assert out == reference, label
            assert at_close == ref_close, label
        assert stats.parse_errors == 0, label


@pytest.mark.parametrize("name", sorted(H2_FIXTURES))
@pytest.mark.parametrize("view", ["server", "client"])
def test_an_unknown_role_is_inferred_from_who_sends_the_preface(name, view):
    known = exchanges_of(name, view=view)
    out, at_close, session, _ = run(pieces(load(name), random_splits, seed=3), view=view, role=Role.UNKNOWN)
    expected_role = Role.SERVER if view == "server" else Role.CLIENT
    assert session.connection.role == expected_role
    assert out + at_close == known
    assert all(ex.connection.role == expected_role for ex in known)


@pytest.mark.parametrize("name", sorted(H2_FIXTURES))
def test_the_passive_decoder_agrees_with_the_hpack_library_on_every_header_block(name):
    streams = {side: b"".join(data for s, data in load(name) if s == side) for side in "cs"}
    for data in streams.values():
        reference, passive = Decoder(), PassiveHpackDecoder()
        reference.max_allowed_table_size = 1 << 16
        for _, block in header_blocks(data):
            expected = as_fields(reference.decode(block))
            decoded = passive.decode(block)
            assert (decoded.unknown, decoded.error) == (0, None)
            assert decoded.fields == [(n.lower(), v) for n, v in expected]
        assert passive.complete


# ---------------------------------------------------------------------------------------------
# gRPC
# ---------------------------------------------------------------------------------------------


def test_grpc_unary_calls_become_grpc_exchanges_with_path_metadata_trailers_and_message_counts():
    exchanges = exchanges_of("grpc_unary")
    assert [ex.request.header("x-request-id") for ex in exchanges] == ["req-%04d" % i for i in range(10)]
    for i, ex in enumerate(exchanges):
        assert ex.protocol == "grpc"
        assert (ex.request.method, ex.request.target, ex.request.version) == ("POST", "/fixture.Items/Echo", "2")
        assert ex.request.headers[0][0] == "host" and ex.request.headers[1] == (":scheme", "http")
        assert ex.request.header("content-type") == "application/grpc"
        assert ex.request.body_size == 5 + len(b"hello %d" % i) + i * 30  # one length-prefixed message
        assert (ex.response.status, ex.response.reason, ex.response.version) == (200, "", "2")
        assert ex.response.body_size == ex.request.body_size + len(b"echo:")
        assert ex.response.trailers == (("grpc-status", "0"), ("grpc-message", ""), ("x-served-by", "fixture"))
        assert ex.rpc_messages == (1, 1) and ex.warnings == ()
    feed = pieces(load("grpc_unary"))
    by_ts = {p.ts_first: p for p in feed}
    for ex in exchanges:  # starts with its request write, ends with the response's last write
        assert by_ts[ex.start_ns].side == "c" and ex.tid == by_ts[ex.start_ns].tid
        assert by_ts[ex.end_ns - 10].side == "s"


def test_streaming_calls_count_their_messages_in_each_direction():
    server_streaming = exchanges_of("grpc_server_streaming")
    assert [ex.rpc_messages for ex in server_streaming] == [(1, 5), (1, 2)]
    assert server_streaming[0].response.body_size == sum(5 + len(b"item-%d-" % i) + i * 100 for i in range(5))
    client_streaming = exchanges_of("grpc_client_streaming")
    assert [ex.rpc_messages for ex in client_streaming] == [(6, 1), (2, 1)]
    assert client_streaming[1].request.body_size == 5 + 3000 + 5 + 5000
    (bidi,) = exchanges_of("grpc_bidi")
    assert bidi.rpc_messages == (4, 4) and bidi.request.target == "/fixture.Items/Chat"


def test_grpc_errors_keep_their_status_in_trailers_including_trailers_only_responses():
    ok, not_found, exhausted, unimplemented, after = exchanges_of("grpc_errors")
    assert ok.response.trailers[0] == ("grpc-status", "0")
    # Trailers-Only: one HEADERS frame with END_STREAM carrying :status and grpc-status
    assert not_found.response.trailers == (("grpc-status", "5"), ("grpc-message", "no such item: 42"))
    assert not_found.response.header("grpc-status") is None
    assert not_found.response.header("content-type") == "application/grpc"
    assert not_found.response.body_size == 0 and not_found.rpc_messages == (1, 0)
    assert exhausted.response.trailers == (("grpc-status", "8"), ("grpc-message", "quota"))
    assert exhausted.rpc_messages == (1, 4)
    assert unimplemented.request.target == "/fixture.Items/Nope"
    assert unimplemented.response.trailers[0] == ("grpc-status", "12")
    assert after.warnings == () and all(ex.protocol == "grpc" for ex in (ok, not_found, exhausted, after))


def test_a_deadline_exceeded_call_is_reset_by_the_client_and_reported_at_the_reset():
    stats = Http2Stats()
    warm_up, slow, after = exchanges_of("grpc_deadline", stats=stats)
    assert slow.request.target == "/fixture.Items/Slow"
    assert slow.request.header("grpc-timeout") is not None
    assert slow.response is None and slow.warnings == ("stream reset: CANCEL",)
    reset_unit = [p for p in pieces(load("grpc_deadline")) if p.ts_last == slow.end_ns]
    assert reset_unit and reset_unit[0].side == "c"  # the client's RST_STREAM ended it
    assert stats.resets >= 1 and after.response.status == 200 and warm_up.warnings == ()


def test_large_messages_span_many_frames_and_chunks():
    big, upload, small, medium = exchanges_of("grpc_large")
    assert big.response.body_size == 5 + 199936 and big.rpc_messages == (1, 1)
    assert upload.request.body_size == 5 + 150000 and upload.response.body_size == 5 + 150005
    assert medium.response.body_size == 5 + 69888 and small.warnings == ()


# ---------------------------------------------------------------------------------------------
# HTTP/2 features
# ---------------------------------------------------------------------------------------------


def test_one_hundred_concurrent_streams_on_one_connection_are_each_paired():
    out, at_close, _, stats = run(pieces(load("h2load_100")))
    assert len(out) == 100 and at_close == []
    assert {ex.request.target for ex in out} == {"/small.txt"}
    assert all(ex.response.status == 200 and ex.response.body_size == 3 for ex in out)
    assert len({ex.exchange_id for ex in out}) == 100
    assert stats.streams == 100 and stats.exchanges == 100 and stats.goaways == 1


def test_a_curl_post_with_prior_knowledge_is_echoed():
    (ex,) = exchanges_of("curl_prior_knowledge")
    body = b'{"name": "value", "items": [1, 2, 3]}'
    assert (ex.request.method, ex.request.target, ex.request.body_size) == ("POST", "/submit", len(body))
    assert ex.request.header("x-request-id") == "curl-1" and ex.request.header("user-agent").startswith("curl/")
    assert ex.request.header("host").startswith("127.0.0.1:")
    assert ex.response.body_size == len(body) and ex.protocol == "http2"


def test_padding_priority_frames_idle_streams_pushes_and_table_size_changes_are_handled():
    out, at_close, session, stats = run(pieces(load("nghttp_assets")))
    exchanges = out + at_close
    # nghttp announced SETTINGS_HEADER_TABLE_SIZE 1024: nghttpd's first block updates its table to 0, then 1024
    assert session._decoders[Direction.EGRESS]._capacity == 1024
    by_target = {ex.request.target: ex for ex in exchanges}
    assert set(by_target) == {"/index.html", "/style.css", "/app.js", "/logo.png"}
    # padded DATA frames: body sizes are the files' sizes, padding not counted
    assert by_target["/style.css"].response.body_size == len("body { color: #333; }\n") * 40
    assert by_target["/logo.png"].response.body_size == 256 * 20
    assert by_target["/app.js"].response.body_size == len("console.log('fixture');\n") * 30
    # /style.css was pushed: its request is the PUSH_PROMISE, which came with the /index.html response
    pushed = by_target["/style.css"]
    assert pushed.start_ns > by_target["/index.html"].start_ns
    assert stats.streams == 4 and stats.parse_errors == 0  # PRIORITY frames on idle streams open nothing


def test_continuation_frames_request_bodies_and_request_trailers():
    first, second = exchanges_of("nghttp_continuation")
    for ex in (first, second):
        assert ex.request.method == "POST" and ex.request.body_size == 21000
        assert ex.request.header("continuation-test-6").startswith("-----")
        assert ex.request.trailers == (("x-checksum", "21000"),)
        assert ex.response.body_size == 21000  # --echo-upload


def test_a_server_reset_and_a_goaway_end_streams_with_warnings():
    out, at_close, session, stats = run(pieces(load("h2_goaway")))
    ok, reset, served, *refused = out + at_close
    # the server's SETTINGS_HEADER_TABLE_SIZE 256: the client's encoder signals it in its next block
    assert session._decoders[Direction.INGRESS]._capacity == 256
    assert ok.response.status == 200 and ok.response.body_size == len(b"ok /ok")  # padded DATA
    assert reset.request.target == "/reset" and reset.response is None
    assert reset.warnings == ("stream reset: REFUSED_STREAM",)
    assert served.request.target == "/ok/5" and served.response.status == 200
    assert [ex.request.target for ex in refused] == ["/ok/7", "/ok/9", "/ok/11"]
    assert all(ex.response is None and ex.warnings == ("stream refused: GOAWAY NO_ERROR",) for ex in refused)
    assert stats.resets == 1 and stats.goaways == 1


def test_request_starts_are_announced_before_their_exchanges_with_the_same_ids():
    starts = []
    session = Http2Session(replace(CONN, role=Role.SERVER), stats=Http2Stats())
    session.on_request = starts.append
    out = []
    for p in pieces(load("grpc_unary")):
        before = len(starts)
        exchanges = session.on_data(direction(p.side, "server"), p.data, p.ts_first, p.ts_last, tid=p.tid)
        for ex in exchanges:
            assert ex.exchange_id in [s.exchange_id for s in starts[:before + 1]]
        out += exchanges
    assert [s.exchange_id for s in starts] == [ex.exchange_id for ex in out]
    assert [s.request.target for s in starts] == [ex.request.target for ex in out]
    assert all(s.request.body_size == 0 and s.start_ns == ex.start_ns for s, ex in zip(starts, out, strict=True))


def test_an_h2c_upgrade_continues_the_http1_request_on_stream_1():
    chunks = load("curl_upgrade")
    http1 = Http1Session(replace(CONN, role=Role.SERVER), stats=Http1Stats())
    starts = []
    http1.on_request = starts.append
    assert http1.on_data(Direction.INGRESS, chunks[0][1], 1000, 1010, tid=1) == []
    response = chunks[1][1]
    head_end = response.index(b"\r\n\r\n") + 4  # the connection table hands over what follows the 101
    (upgrade,) = http1.on_data(Direction.EGRESS, response[:head_end], 2000, 2010)
    assert upgrade.response.status == 101 and http1.dead
    stats = Http2Stats()
    session = Http2Session(replace(CONN, role=Role.SERVER), stats=stats, upgraded=True)
    session.adopt_upgrade_request(starts[0].request, starts[0].start_ns, starts[0].tid, starts[0].exchange_id)
    out = session.on_data(Direction.EGRESS, response[head_end:], 2000, 2010, tid=2)
    for i, (side, data) in enumerate(chunks[2:], start=3):
        out += session.on_data(direction(side, "server"), data, 1000 * i, 1000 * i + 10, tid=i)
    out += session.on_close(CLOSE_TS)
    (ex,) = out
    assert ex.exchange_id == starts[0].exchange_id and ex.request.target == "/upgraded"
    assert ex.request.version == "1.1" and ex.request.header("upgrade") == "h2c"
    assert (ex.response.status, ex.response.version, ex.response.body_size) == (200, "2", len(b"ok /upgraded"))
    assert ex.start_ns == 1000 and ex.end_ns == 2010 and ex.protocol == "http2"
    assert stats.parse_errors == 0 and not session.dead


def test_sessions_share_one_stats_object():
    stats = Http2Stats()
    for _ in range(3):
        run(pieces(load("grpc_bidi")), stats=stats)
    assert stats.exchanges == 3 and stats.as_dict()["streams"] == 3


# ---------------------------------------------------------------------------------------------
# Capture truncation and lost framing
# ---------------------------------------------------------------------------------------------


def frame_units(chunks) -> list[tuple[str, bytes]]:
    """Each recorded chunk cut at the frame boundaries inside it: every unit then lies within one
    frame (as when a sender writes frame by frame), so uncaptured bytes never cross a frame's end."""
    streams = {side: b"".join(data for s, data in chunks if s == side) for side in "cs"}
    bounds = {side: set(frame_boundaries(data)) | {len(PREFACE)} for side, data in streams.items()}
    offsets = {"c": 0, "s": 0}
    out = []
    for side, data in chunks:
        start = offsets[side]
        cuts = sorted(b - start for b in bounds[side] if start < b < start + len(data))
        out += [(side, data[a:b]) for a, b in itertools.pairwise([0, *cuts, len(data)])]
        offsets[side] += len(data)
    return out


@pytest.mark.parametrize("name", ["grpc_large", "nghttp_assets", "grpc_client_streaming"])
def test_uncaptured_bytes_inside_data_frames_are_skipped_by_length_keeping_frame_sync(name):
    chunks = frame_units(load(name))
    reference, ref_close, _, _ = run(pieces(chunks, merge=False))
    out, at_close, _, stats = run(pieces(chunks, merge=False, max_capture=1000))
    assert stats.resyncs == 0 and stats.skipped_bytes == 0 and stats.parse_errors == 0
    assert stats.truncated_frames > 0 and stats.hpack_gaps == 0
    assert out + at_close == reference + ref_close


def test_a_write_of_many_frames_cut_by_the_capture_loses_framing_until_the_next_write():
    chunks = load("grpc_large")  # 16 KB DATA frames, many per recv
    reference = exchanges_of("grpc_large")
    out, at_close, session, stats = run(pieces(chunks, max_capture=4096))
    exchanges = out + at_close
    assert stats.resyncs > 0 and stats.hpack_gaps > 0 and not session.dead
    assert sorted(ex.start_ns for ex in exchanges) == [ex.start_ns for ex in reference]
    assert_no_wrong_values(exchanges, reference, exact_sizes=False)
    assert any("response frames lost" in ex.warnings for ex in exchanges)
    # streams whose END_STREAM was in the lost bytes end at close, flagged
    assert all("response incomplete at close" in ex.warnings for ex in at_close)


def test_uncaptured_bytes_across_frame_boundaries_lose_framing_then_frames_are_found_again():
    chunks = load("h2load_100")  # a few large writes, each holding dozens of frames
    reference = {ex.exchange_id: ex for ex in exchanges_of("h2load_100")}
    out, at_close, session, stats = run(pieces(chunks, merge=False, max_capture=600))
    exchanges = out + at_close
    assert stats.resyncs > 0 and stats.skipped_bytes > 0 and not session.dead
    for ex in exchanges:  # whatever is reported is right: never a wrong path, status or size
        assert ex.request.target in ("/small.txt", "")
        if ex.response is not None:
            assert ex.response.status in (200, 0)
    assert len(exchanges) <= len(reference)


def test_a_header_block_cut_by_the_capture_limit_gives_its_captured_fields_and_marks_the_table():
    # HEADERS of 16 KB + CONTINUATION of 2 KB, each frame its own write: the HEADERS is cut at 4 KB,
    # the CONTINUATION captured whole (it must not be glued to the cut fragment).
    chunks = frame_units(load("nghttp_continuation"))
    reference = exchanges_of("nghttp_continuation")
    out, at_close, _, stats = run(pieces(chunks, merge=False, max_capture=4096))
    exchanges = out + at_close
    assert stats.hpack_gaps > 0 and stats.parse_errors == 0 and stats.resyncs == 0
    assert len(exchanges) == 2 and all("request headers truncated" in ex.warnings for ex in exchanges)
    for ex, ref in zip(exchanges, reference, strict=True):
        assert (ex.request.method, ex.request.target) == ("POST", "/echo")  # at the block's start
        assert all(field in ref.request.headers for field in ex.request.headers)
        assert ex.request.header("continuation-test-1") is not None  # the captured part is decoded
        assert ex.request.header("trailer") is None  # the last field, after the cut
        assert ex.request.body_size == 21000 and ex.response.body_size == 21000


def test_a_write_of_several_frames_cut_inside_a_header_block_reports_no_wrong_value():
    reference = exchanges_of("nghttp_continuation")
    out, at_close, _, stats = run(pieces(load("nghttp_continuation"), merge=False, max_capture=4096))
    assert stats.hpack_gaps > 0 and stats.resyncs > 0 and out + at_close
    assert_no_wrong_values(out + at_close, reference, exact_sizes=False)


# ---------------------------------------------------------------------------------------------
# Midstream attach
# ---------------------------------------------------------------------------------------------


def midstream_feed(name: str, first_chunk: int) -> tuple[list[Piece], list[Piece]]:
    """(the whole feed, the feed from the first frame boundary of each direction at or after chunk
    ``first_chunk``, with the same unit timestamps)."""
    chunks = load(name)
    feed = pieces(chunks, merge=False)
    streams = {side: b"".join(data for s, data in chunks if s == side) for side in "cs"}
    bounds = {side: frame_boundaries(data) for side, data in streams.items()}
    offsets = {"c": 0, "s": 0}
    start: dict[str, int] = {}
    late = []
    for index, p in enumerate(feed):
        at = offsets[p.side]
        offsets[p.side] += len(p.data)
        if index >= first_chunk and p.side not in start:
            start[p.side] = min(b for b in bounds[p.side] if b >= at)
        if p.side in start and offsets[p.side] > start[p.side]:
            skip = max(0, start[p.side] - at)
            late.append(replace(p, data=p.data[skip:]))
    return feed, late


def assert_no_wrong_values(midstream, reference, *, exact_sizes=True):
    """Every value reported is the true one (or marked unknown); ``exact_sizes``: body sizes too
    (else they may fall short, when frames were lost)."""
    by_start = {ex.start_ns: ex for ex in reference}
    for ex in midstream:
        ref = by_start[ex.start_ns]
        assert ex.request.method in (ref.request.method, "")
        assert ex.request.target in (ref.request.target, "")
        assert all(field in ref.request.headers for field in ex.request.headers), (ex, ref)
        if ex.response is not None:
            assert ex.response.status in (ref.response.status, 0)
            assert all(field in ref.response.headers for field in ex.response.headers)
            assert all(field in ref.response.trailers for field in ex.response.trailers)
            assert ex.response.body_size == ref.response.body_size or not exact_sizes
            assert ex.response.body_size <= ref.response.body_size
        assert ex.request.body_size == ref.request.body_size or not exact_sizes
        assert ex.request.body_size <= ref.request.body_size
        if ex.request.target == "" and ref.request.target:
            assert "hpack: unknown :path" in ex.warnings


@pytest.mark.parametrize("first_chunk", [7, 40, 150])
def test_a_midstream_attach_to_a_grpc_channel_never_reports_a_wrong_value_and_marks_the_unknowns(first_chunk):
    feed, late = midstream_feed("grpc_many", first_chunk)
    reference, _, _, _ = run(feed)
    out, at_close, session, stats = run(late, midstream=True, role=Role.UNKNOWN)
    exchanges = out + at_close
    assert session.connection.role == Role.SERVER
    assert len(exchanges) >= len([ex for ex in reference if ex.start_ns >= late[0].ts_first]) - 1
    assert_no_wrong_values(exchanges, reference)
    # grpc-c indexes :path, :authority, content-type... on first use and never again: they stay unknown
    assert stats.hpack_unknown_refs > 0 and stats.non_http2_connections == 0
    assert sum("hpack: unknown :path" in ex.warnings for ex in exchanges) > len(exchanges) * 0.8
    # literal fields are known: the per-call x-request-id
    assert all(ex.request.header("x-request-id") == by.request.header("x-request-id")
               for ex, by in zip(exchanges, [next(r for r in reference if r.start_ns == e.start_ns)
                                             for e in exchanges], strict=True))
    # still recognised as gRPC (grpc-message in the trailers), with the messages counted
    assert all(ex.protocol == "grpc" and ex.rpc_messages[1] >= 1 for ex in exchanges if ex.response is not None)


@pytest.mark.parametrize("first_chunk", [20, 61])
def test_a_midstream_attach_recovers_once_the_dynamic_table_has_been_refilled(first_chunk):
    feed, late = midstream_feed("h2_churn", first_chunk)
    reference, _, _, _ = run(feed)
    out, at_close, session, stats = run(late, midstream=True, role=Role.UNKNOWN)
    exchanges = out + at_close
    assert_no_wrong_values(exchanges, reference)
    assert stats.hpack_recoveries == 2 and all(decoder.complete for decoder in session._decoders)
    assert all(ex.warnings for ex in exchanges[:5]) and stats.hpack_unknown_refs > 0
    # After recovery every field is known but x-request-id, whose name the encoder keeps taking from
    # the previous x-request-id entry -- a chain that started before the attach (its value is known).
    by_start = {ex.start_ns: ex for ex in reference}
    for ex in exchanges[-40:]:
        ref = by_start[ex.start_ns]
        assert (ex.request.method, ex.request.target, ex.response.status) == \
            (ref.request.method, ref.request.target, ref.response.status)
        assert ex.request.header("host") == "127.0.0.1"
        assert [f for f in ref.request.headers if f not in ex.request.headers] == \
            [("x-request-id", ref.request.header("x-request-id"))]
        assert ex.warnings == ("hpack: 1 unknown request header field", "hpack: 1 unknown response header field")


@pytest.mark.parametrize(("name", "first_chunks"), [("h2_churn", (2, 100)), ("grpc_many", (3, 90)),
                                                    ("h2load_100", (1,))])  # 1: inside the write of 100 HEADERS
def test_a_midstream_attach_inside_a_frame_hunts_for_the_next_frames(name, first_chunks):
    chunks = load(name)
    feed = pieces(chunks, merge=False)
    reference, _, _, _ = run(feed)
    for first_chunk in first_chunks:
        _, late = midstream_feed(name, first_chunk)
        late = [replace(late[0], data=late[0].data[5:])] + late[1:]  # 5 bytes into a frame
        out, at_close, session, stats = run(late, midstream=True, role=Role.UNKNOWN)
        assert stats.skipped_bytes > 0 and stats.non_http2_connections == 0 and not session.dead
        assert_no_wrong_values(out + at_close, reference)
        assert out


def test_a_midstream_attach_at_the_preface_is_a_normal_start():
    out, at_close, session, stats = run(pieces(load("grpc_unary")), midstream=True, role=Role.UNKNOWN)
    assert out + at_close == exchanges_of("grpc_unary")
    assert stats.hpack_unknown_refs == 0 and session.connection.role == Role.SERVER


def test_an_unknown_path_gives_an_empty_target_and_a_warning():
    encoder = Encoder()
    request = [(":method", "GET"), (":scheme", "https"), (":path", "/secret/42"), (":authority", "api")]
    encoder.encode(request)  # inserted into the dynamic table before we attach
    block = encoder.encode(request)  # now all four come from the table (:method, :scheme static)
    session = Http2Session(replace(CONN, role=Role.SERVER), stats=Http2Stats(), midstream=True)
    headers = frame(1, 0x5, 3, block)
    assert session.on_data(Direction.INGRESS, headers, 10, 20, tid=1) == []
    response = frame(1, 0x5, 3, Encoder().encode([(":status", "204")]))
    (ex,) = session.on_data(Direction.EGRESS, response, 30, 40)
    assert (ex.request.method, ex.request.target, ex.response.status) == ("GET", "", 204)
    assert ex.request.headers == ((":scheme", "https"),)
    assert ex.warnings == ("hpack: unknown :path", "hpack: unknown :authority")


def frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3) + bytes([ftype, flags]) + stream.to_bytes(4) + payload


# ---------------------------------------------------------------------------------------------
# The passive HPACK table
# ---------------------------------------------------------------------------------------------


def test_the_passive_table_never_gives_a_wrong_field_across_random_gaps_and_size_changes():
    rng = random.Random(7)
    names = ["x-id", "x-user", "cookie", ":path", "accept", "x-long"]
    for trial in range(40):
        encoder, truth = Encoder(), Decoder()
        truth.max_allowed_table_size = 1 << 16
        passive = PassiveHpackDecoder(midstream=trial % 2 == 0)
        decoded_fields = unknowns = 0
        for step in range(200):
            if rng.random() < 0.05:
                encoder.header_table_size = rng.choice([0, 64, 256, 1024, 4096])
            fields = [(rng.choice(names), "v%d" % rng.randrange(60) * rng.choice([1, 1, 5, 30]))
                      for _ in range(rng.randint(1, 6))]
            block = encoder.encode(fields)
            expected = as_fields(truth.decode(block))
            if rng.random() < 0.03:  # this block is not seen
                passive.lose()
                continue
            decoded = passive.decode(block)
            assert decoded.error is None and len(decoded.fields) == len(expected)
            for (name, value), (tname, tvalue) in zip(decoded.fields, expected, strict=True):
                assert name in (None, tname) and value in (None, tvalue)
                decoded_fields += 1
            unknowns += decoded.unknown
        assert decoded_fields > unknowns


def test_the_passive_table_recovers_when_evictions_push_the_unknown_entries_out():
    encoder = Encoder()
    for i in range(20):
        encoder.encode([("x-old", "%04d" % i + "o" * 100)])
    passive = PassiveHpackDecoder(midstream=True)
    assert not passive.complete
    inserted = 0
    while not passive.complete:
        block = encoder.encode([("x-new-%d" % inserted, "n" * 60)])
        assert passive.decode(block).unknown == 0
        inserted += 1
    entry = len("x-new-10") + 60 + 32
    assert (inserted - 1) * entry <= 4096 - 32 < inserted * entry  # as soon as the table must have been refilled
    assert passive.recoveries == 1


def test_a_table_size_update_to_zero_makes_the_table_fully_known_at_once():
    encoder = Encoder()
    encoder.encode([("x-old", "value")])
    passive = PassiveHpackDecoder(midstream=True)
    encoder.header_table_size = 0
    encoder.header_table_size = 4096
    passive.decode(encoder.encode([("x-a", "1")]))
    assert passive.complete


def test_an_oversized_header_list_is_cut_but_the_table_stays_in_step():
    encoder, passive = Encoder(), PassiveHpackDecoder()
    big = [("x-%d" % i, "v" * 100) for i in range(20)]
    decoded = passive.decode(encoder.encode(big), max_list=1000)
    assert decoded.oversized and len(decoded.fields) < 20
    again = passive.decode(encoder.encode(big[:3]))  # all three from the table
    assert again.fields == big[:3] and again.unknown == 0


# ---------------------------------------------------------------------------------------------
# Not HTTP/2, detection, limits, fuzz
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["keepalive_100", "tls_client_hello", "binary_garbage", "websocket"])
def test_a_connection_that_is_not_http2_is_dropped_and_counted_once(name):
    stats = Http2Stats()
    out, at_close, session, _ = run(pieces(load(name, HTTP1_FIXTURES)), stats=stats)
    assert out == at_close == [] and session.dead
    assert stats.non_http2_connections == 1


def test_a_midstream_session_on_a_non_http2_connection_gives_up_and_is_counted():
    stats = Http2Stats()
    feed = pieces(load("keepalive_100", HTTP1_FIXTURES), merge=False)
    out, at_close, session, _ = run(feed, stats=stats, midstream=True)
    assert out == at_close == [] and session.dead and stats.non_http2_connections == 1


def test_looks_like_http2_accepts_prefaces_and_frame_runs_only():
    assert looks_like_http2(PREFACE) and looks_like_http2(PREFACE[:5])
    server_first = load("grpc_unary")[1][1]
    assert looks_like_http2(server_first)  # the server's SETTINGS (+ ACK)
    for name in ("grpc_many", "h2_churn"):
        for side, data in load(name)[10:40]:
            assert looks_like_http2(data), (name, side, data[:20])
    for name in ("keepalive_100", "tls_client_hello", "binary_garbage", "websocket", "chunked"):
        for _, data in load(name, HTTP1_FIXTURES):
            assert not looks_like_http2(data), name
    assert not looks_like_http2(b"") and not looks_like_http2(b"PR")


def test_more_streams_than_the_limit_evict_the_oldest_with_a_warning():
    stats = Http2Stats()
    out, at_close, _, _ = run(pieces(load("h2load_100")), stats=stats, max_streams=10)
    exchanges = out + at_close
    dropped = [ex for ex in exchanges if ex.warnings == ("stream dropped: too many concurrent streams",)]
    assert stats.dropped_streams == len(dropped) == stats.orphan_responses > 0  # their responses come later
    assert len(exchanges) == 100 and all(ex.response is None for ex in dropped)


def test_a_header_block_over_the_limit_is_not_buffered_and_nothing_wrong_follows():
    stats = Http2Stats()
    reference = exchanges_of("nghttp_continuation")
    exchanges = exchanges_of("nghttp_continuation", stats=stats, max_header_list=4096)
    assert stats.oversized_header_blocks == 2 and stats.hpack_gaps >= 1
    assert [ex.warnings[-1] for ex in exchanges] == ["request headers larger than 4096 bytes"] * 2
    assert [ex.response.status for ex in exchanges] == [ref.response.status for ref in reference]


def test_a_partial_frame_buffer_never_exceeds_the_frame_size_limit():
    data = b"".join(d for side, d in load("nghttp_continuation") if side == "c")  # 16 KB HEADERS frames
    for cap in (65536, 4096):
        reader = _FrameReader(midstream=False, cap=cap)
        biggest = 0
        for i in range(0, len(data), 1000):
            reader.feed(data[i:i + 1000], 0, 0, 0)
            biggest = max(biggest, len(reader._buf))
        assert min(cap, DEFAULT_MAX_FRAME_SIZE) - 1000 < biggest <= min(cap, DEFAULT_MAX_FRAME_SIZE) + 9


def test_random_bytes_mutations_and_splits_never_raise():
    rng = random.Random(2024)
    sources = [load(name) for name in ("grpc_errors", "nghttp_assets", "h2_goaway", "h2_churn")]
    for trial in range(150):
        chunks = list(rng.choice(sources))
        if trial % 5 == 0:
            chunks = [(rng.choice("cs"), rng.randbytes(rng.randint(1, 300))) for _ in range(20)]
            if trial % 10 == 0:
                chunks.insert(0, ("c", PREFACE))
        else:
            mutated = []
            for side, data in chunks:
                data = bytearray(data)
                for _ in range(rng.randint(0, 3)):
                    if data:
                        data[rng.randrange(len(data))] = rng.randrange(256)
                mutated.append((side, bytes(data)))
            chunks = mutated
        feed = pieces(chunks, random_splits, seed=trial, merge=trial % 2 == 0)
        if trial % 3 == 0:
            feed = [replace(p, data=p.data[:rng.randint(0, len(p.data))], missing=rng.randint(0, 3000))
                    if rng.random() < 0.2 else p for p in feed]
        for midstream in (False, True):
            stats = Http2Stats()
            run(feed, stats=stats, midstream=midstream, role=rng.choice(list(Role)),
                max_streams=rng.choice([1, 8, 1024]), max_header_list=rng.choice([256, 65536]))
            assert stats.internal_errors == 0


def test_an_upgrade_request_with_garbage_http2_settings_is_counted_not_raised():
    stats = Http2Stats()
    session = Http2Session(replace(CONN, role=Role.SERVER), stats=stats, upgraded=True)
    session.adopt_upgrade_request(HttpRequest("GET", "/", "1.1", (("http2-settings", "!!!*"),)), 1, 1, 77)
    assert stats.parse_errors == 1
    (ex,) = session.on_close(5)
    assert ex.exchange_id == 77 and ex.response is None


def test_an_empty_field_name_is_reported_not_fatal():
    block = Encoder().encode([(":method", "GET"), (":scheme", "http"), (":path", "/e")]) + b"\x00\x00\x01x"
    stats = Http2Stats()
    session = Http2Session(replace(CONN, role=Role.SERVER), stats=stats, midstream=True)
    session.on_data(Direction.INGRESS, frame(1, 0x5, 1, block), 1, 2)
    (ex,) = session.on_data(Direction.EGRESS, frame(1, 0x5, 1, Encoder().encode([(":status", "200")])), 3, 4)
    assert ex.request.target == "/e" and ("", "x") in ex.request.headers
    assert stats.internal_errors == 0 and not session.dead
