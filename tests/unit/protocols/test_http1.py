"""HTTP/1 parser and exchange assembler, driven by captured traffic (tests/fixtures/http1)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from otel_ebpf.protocols import http1
from otel_ebpf.protocols.http1 import (
    Http1Parser,
    Http1Session,
    Http1Stats,
    MessageEnd,
    MessageKind,
    ParseError,
    RequestHead,
    ResponseHead,
    Resync,
    Skipped,
)
from otel_ebpf.records import Direction, Role

from . import feeding
from .feeding import (
    CONN,
    FIXTURES_ROOT,
    Piece,
    bytewise,
    pieces,
    random_splits,
    run_session,
    whole,
)

FIXTURES = FIXTURES_ROOT / "http1"

# Fixtures that are HTTP/1 from the first byte, with the exchanges each must give (before close, after close).
HTTP_FIXTURES = {
    "keepalive_100": 100,
    "methods": 6,
    "big_bodies": 5,
    "chunked": 5,
    "expect_100": 2,
    "pipelined": 7,
    "http10_close": 1,
    "large_head": 3,
    "curl": 4,
    "aiohttp_stream": 2,
    "websocket": 1,
    "lenient_syntax": 3,
    "connect_tunnel": 1,
    "interim_responses": 2,
}
NOT_HTTP_FIXTURES = ["tls_client_hello", "h2_prior_knowledge", "binary_garbage"]
# Fixtures served by the recorder's http.server handler, which echoes the request target in X-Path.
ECHOING_FIXTURES = ["keepalive_100", "methods", "big_bodies", "chunked", "expect_100", "pipelined", "large_head",
                    "curl"]


# ---------------------------------------------------------------------------------------------
# Feeding helpers
# ---------------------------------------------------------------------------------------------


def load(name: str) -> list[tuple[str, bytes]]:
    return feeding.load(name, FIXTURES)


def run(feed, *, view="server", role=None, stats=None, close=True, **options):
    """Feeds ``feed`` to a fresh session; returns (exchanges before close, exchanges at close, session, stats)."""
    stats = stats if stats is not None else Http1Stats()
    return run_session(Http1Session, stats, feed, view=view, role=role, close=close, **options)


def exchanges_of(name, **kwargs):
    out, at_close, _, _ = run(pieces(load(name)), **kwargs)
    return out + at_close


def essence(exchanges):
    """Exchanges without their times and tids (which depend on how a feed was cut into units)."""
    return [(ex.connection, ex.request, ex.response, ex.warnings) for ex in exchanges]


def assert_paired_by_echo(exchanges):
    for ex in exchanges:
        assert ex.response is not None
        assert ex.response.header("x-path") == ex.request.target, ex


# ---------------------------------------------------------------------------------------------
# The key test: segmentation must not change the result
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HTTP_FIXTURES))
def test_every_fixture_gives_the_same_exchanges_whole_byte_by_byte_in_random_splits_and_with_trailing_bytes(name):
    chunks = load(name)
    reference, ref_close, _, ref_stats = run(pieces(chunks))
    assert len(reference) + len(ref_close) == HTTP_FIXTURES[name]
    assert ref_stats.parse_errors == 0 and ref_stats.non_http_connections == 0
    variants = {
        "byte at a time": pieces(chunks, bytewise),
        "trailing bytes": pieces(chunks, trailing=b"GET /next HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */"),
    }
    for seed in range(5):
        variants[f"random splits {seed}"] = pieces(chunks, random_splits, seed=seed)
    for label, feed in variants.items():
        out, at_close, _, stats = run(feed)
        assert out == reference, label
        assert at_close == ref_close, label
        assert stats.parse_errors == 0, label


@pytest.mark.parametrize("name", sorted(HTTP_FIXTURES))
@pytest.mark.parametrize("view", ["server", "client"])
def test_an_unknown_role_is_inferred_from_the_direction_of_the_first_request(name, view):
    known = exchanges_of(name, view=view)
    out, at_close, session, _ = run(pieces(load(name), random_splits, seed=7), view=view, role=Role.UNKNOWN)
    expected_role = Role.SERVER if view == "server" else Role.CLIENT
    assert session.connection.role == expected_role
    assert out + at_close == known
    assert all(ex.connection.role == expected_role for ex in known)


@pytest.mark.parametrize("name", ECHOING_FIXTURES)
def test_each_response_is_paired_with_its_own_request(name):
    assert_paired_by_echo(exchanges_of(name))


# ---------------------------------------------------------------------------------------------
# Protocol features
# ---------------------------------------------------------------------------------------------


def test_one_hundred_keep_alive_requests_give_one_hundred_exchanges_in_order_with_their_times():
    feed = pieces(load("keepalive_100"))
    out, at_close, _, stats = run(feed)
    assert len(out) == 100 and at_close == []
    assert [ex.response.status for ex in out[:4]] == [200, 200, 404, 200]
    assert out[3].request.target == "/"
    request_units = [p for p in feed if p.side == "c"]
    for ex, unit in zip(out, request_units, strict=True):
        assert ex.start_ns == unit.ts_first and ex.tid == unit.tid
    # each response ends in the unit right after its request
    assert all(ex.end_ns == ex.start_ns + 1000 + 10 for ex in out)
    assert out[0].request.header("x-request-id") == "req-0000"
    assert stats.exchanges == 100 and stats.messages == 200 and stats.orphan_responses == 0


def test_pipelined_requests_in_one_write_are_paired_in_order():
    out, at_close, _, _ = run(pieces(load("pipelined")))
    exchanges = out + at_close
    assert [ex.request.method for ex in exchanges] == ["GET", "GET", "HEAD", "GET", "GET", "POST", "GET"]
    assert_paired_by_echo(exchanges)
    head = exchanges[2]
    assert int(head.response.header("content-length")) > 0 and head.response.body_size == 0
    assert exchanges[5].request.body_size == 5
    # the first client unit held all seven requests
    assert {ex.start_ns for ex in exchanges} == {1000}


def test_chunked_bodies_are_measured_de_chunked_and_their_trailers_kept():
    exchanges = exchanges_of("chunked")
    first = exchanges[0]
    assert first.response.header("transfer-encoding") == "chunked"
    assert first.response.body_size == 5 + 3000 + 1
    assert first.response.trailers == (("x-checksum", "3006"),)
    assert exchanges[2].response.body_size == 2000 + 2500 + 700
    upload = exchanges[3]
    assert upload.request.header("transfer-encoding") == "chunked"
    assert upload.request.body_size == len(b"part one,") + len(b"part two,") * 50 + len(b"end")
    assert upload.response.status == 201


def test_chunk_extensions_folded_headers_bare_lf_and_empty_reasons_are_tolerated():
    first, second, third = exchanges_of("lenient_syntax")
    assert first.request.header("x-folded") == "one two"
    assert (first.response.status, first.response.reason, first.response.body_size) == (200, "", 2)
    assert second.request.target == "/crlf-before" and second.request.body_size == 3
    assert third.response.body_size == 10 + 31 and not third.warnings


def test_an_expect_100_continue_interim_response_is_skipped():
    stats = Http1Stats()
    post, get = exchanges_of("expect_100", stats=stats)
    assert post.request.header("expect") == "100-continue"
    assert (post.response.status, post.request.body_size) == (201, 1000)
    assert get.request.target == "/items/3" and get.response.status == 200
    assert stats.messages == 5 and stats.orphan_responses == 0


def test_interim_1xx_responses_before_a_final_one_are_never_paired():
    first, second = exchanges_of("interim_responses")
    assert (first.response.status, first.response.body_size) == (200, 4)
    assert second.request.target == "/next"


def test_head_204_and_304_responses_have_no_body_whatever_their_headers_say():
    post, head, no_content, not_modified, put, delete = exchanges_of("methods")
    assert post.request.body_size == len(b'{"name": "value"}')
    assert head.request.method == "HEAD" and head.response.body_size == 0
    assert head.response.header("content-length") != "0"
    assert no_content.response.status == 204 and no_content.response.body_size == 0
    assert not_modified.response.status == 304 and not_modified.response.header("content-length") == "1234"
    assert not_modified.response.body_size == 0
    assert put.request.body_size == 300 and delete.response.status == 200


def test_curl_head_request_and_form_post_are_parsed():
    exchanges = exchanges_of("curl")
    assert [ex.request.method for ex in exchanges] == ["GET", "GET", "POST", "HEAD"]
    assert exchanges[2].request.body_size == len("name=value&other=1")
    assert exchanges[0].request.header("user-agent").startswith("curl/")


def test_an_http10_response_without_length_ends_at_close_at_its_last_chunk():
    out, at_close, _, _ = run(pieces(load("http10_close")))
    assert out == []
    (ex,) = at_close
    assert ex.request.version == "1.0" and ex.response.version == "1.0"
    assert ex.response.body_size == len(b"legacy body, delimited by the connection close\n") * 20
    last_response_unit = [p for p in pieces(load("http10_close")) if p.side == "s"][-1]
    assert ex.end_ns == last_response_unit.ts_last


def test_a_head_larger_than_one_chunk_is_parsed_whole():
    cookie_request = exchanges_of("large_head")[0]
    assert len(cookie_request.request.header("cookie")) > 8000
    feed = pieces(load("large_head"), lambda data, rng: [data[i:i + 1000] for i in range(0, len(data), 1000)])
    out, _, _, _ = run(feed)
    assert out == exchanges_of("large_head")


def test_a_websocket_upgrade_is_paired_and_then_the_session_stops_without_counting_non_http():
    out, _, session, stats = run(pieces(load("websocket")), close=False)
    (ex,) = out
    assert ex.response.status == 101 and ex.request.header("upgrade") == "websocket"
    assert session.dead and stats.non_http_connections == 0 and stats.parse_errors == 0
    assert session.on_data(Direction.INGRESS, b"GET / HTTP/1.1\r\n\r\n", 1, 1) == []


def test_a_connect_tunnel_is_paired_and_its_tls_bytes_are_not_parsed():
    out, at_close, session, stats = run(pieces(load("connect_tunnel")))
    assert [ex.response.status for ex in out] == [200] and at_close == []
    assert session.dead and stats.parse_errors == 0 and stats.non_http_connections == 0


def test_chunked_event_streams_from_aiohttp_are_parsed():
    first, second = exchanges_of("aiohttp_stream")
    assert first.response.header("transfer-encoding") == "chunked"
    assert first.response.body_size == sum(len(b"data: event %d %s\n\n" % (i, b"e" * (i * 700))) for i in range(4))
    assert second.request.target == "/events?n=1"


def _exchange(request: bytes, response: bytes, *, close=False):
    """One request and its response through a server-side session: (exchanges, stats)."""
    stats = Http1Stats()
    session = Http1Session(replace(CONN, role=Role.SERVER), stats=stats)
    out = session.on_data(Direction.INGRESS, request, 1, 2)
    out += session.on_data(Direction.EGRESS, response, 3, 4)
    if close:
        out += session.on_close(5)
    return out, stats


def test_a_response_with_a_transfer_coding_other_than_chunked_ends_at_close():
    out, _ = _exchange(b"GET /gz HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzzz")
    assert out == []
    (ex,), _ = _exchange(b"GET /gz HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzzz",
                         close=True)
    assert ex.response.body_size == 4 and not ex.warnings


def test_transfer_encoding_wins_over_content_length():
    (ex,), _ = _exchange(b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert ex.response.body_size == 3


def test_an_invalid_content_length_ends_the_message_truncated_and_resyncs():
    (ex,), stats = _exchange(b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nabc")
    assert ex.warnings == ("response framing error: invalid content-length",)
    assert stats.parse_errors == 1 and stats.resyncs == 1 and stats.non_http_connections == 0


def test_a_refused_connect_is_an_ordinary_exchange():
    stats = Http1Stats()
    session = Http1Session(replace(CONN, role=Role.CLIENT), stats=stats)
    session.on_data(Direction.EGRESS, b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 1, 1)
    (ex,) = session.on_data(Direction.INGRESS, b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 2\r\n\r\nno", 2, 2)
    assert ex.response.body_size == 2 and not session.dead
    session.on_data(Direction.EGRESS, b"GET /after HTTP/1.1\r\n\r\n", 3, 3)
    (ex,) = session.on_data(Direction.INGRESS, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 4, 4)
    assert ex.request.target == "/after"


def test_sessions_share_one_stats_object():
    stats = Http1Stats()
    for _ in range(3):
        run(pieces(load("curl")), stats=stats)
    assert stats.exchanges == 12 and stats.as_dict()["messages"] == 24


# ---------------------------------------------------------------------------------------------
# Capture truncation
# ---------------------------------------------------------------------------------------------


def test_uncaptured_bytes_inside_content_length_bodies_are_skipped_by_length_without_resync():
    chunks = load("big_bodies")
    for merge in (True, False):  # one unit per read/write, or per recorded recv
        reference, ref_close, _, _ = run(pieces(chunks, merge=merge))
        out, at_close, _, stats = run(pieces(chunks, merge=merge, max_capture=1024))
        assert stats.skipped_bytes == 0 and stats.resyncs == 0 and stats.truncated_messages == 0
        assert out + at_close == reference + ref_close
    assert reference[0].response.body_size == 50000 and reference[1].request.body_size == 20000


def test_uncaptured_bytes_inside_a_chunked_body_resync_on_the_next_head_without_mispairing():
    out, at_close, _, stats = run(pieces(load("chunked"), max_capture=512))
    exchanges = out + at_close
    assert len(exchanges) == 5
    assert_paired_by_echo(exchanges)
    truncated = {ex.request.target: ex.warnings for ex in exchanges if ex.warnings}
    assert truncated == {
        "/stream?sizes=5,3000,1": ("response body truncated",),
        "/stream?sizes=2000,2500,700": ("response body truncated",),
        "/upload": ("request body truncated",),  # its chunked request body was cut too
    }
    assert exchanges[0].response.trailers == () and exchanges[0].response.body_size < 3006
    assert exchanges[3].response.status == 201 and exchanges[3].response.body_size > 0
    assert stats.resyncs == 3 and stats.truncated_messages == 3 and stats.parse_errors == 0
    # the exchange that lost its framing ends at the last chunk seen
    assert exchanges[0].end_ns == exchanges[0].start_ns + 1000 + 10


def test_heads_cut_by_capture_are_reported_from_their_start_line_and_keep_the_pairing():
    out, at_close, _, stats = run(pieces(load("large_head"), max_capture=4096))
    cookie, long_target, small = out + at_close
    assert cookie.warnings == ("request head truncated",) and cookie.response.status == 200
    assert cookie.request.target == "/items/1" and cookie.response.header("x-path") == "/items/1"
    assert long_target.warnings == ("request head truncated", "response head truncated")  # X-Path echoes it
    assert long_target.request.target.startswith("/items/2?q=aaa") and long_target.response.status == 200
    assert len(long_target.request.target) < 4096
    assert small.request.target == "/items/3" and small.response.header("x-path") == "/items/3" and not small.warnings
    assert stats.resyncs == 3 and stats.truncated_messages == 3


def test_resync_discards_chunks_until_one_begins_with_a_head():
    p = Http1Parser(MessageKind.RESPONSE)
    events = p.receive_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc", 1, 2, missing=500)
    assert [type(e) for e in events] == [ResponseHead, MessageEnd, Resync, Skipped]
    assert events[1].truncated and events[1].body_size == 16
    assert events[3].nbytes == 500 - 13
    assert p.receive_data(b"more body HTTP/1.1 200 OK\r\n", 3, 4) != []  # skipped, reported
    assert p.state_name == "hunt"
    events = p.receive_data(b"HTTP/1.1 204 No Content\r\n\r\n", 5, 6)
    assert [type(e) for e in events] == [ResponseHead, MessageEnd] and events[0].status == 204
    assert not events[1].truncated


def test_uncaptured_bytes_past_the_end_of_a_message_resync_the_next_one():
    stats = Http1Stats()
    session = Http1Session(replace(CONN, role=Role.SERVER), stats=stats)
    session.on_data(Direction.INGRESS, b"GET /a HTTP/1.1\r\n\r\n", 1, 1, missing=30)  # 30 unseen bytes: a request?
    out = session.on_data(Direction.EGRESS, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2, 3)
    assert [ex.request.target for ex in out] == ["/a"]
    assert stats.resyncs == 1
    session.on_data(Direction.INGRESS, b"GET /b HTTP/1.1\r\n\r\n", 4, 4)
    out = session.on_data(Direction.EGRESS, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 5, 6)
    assert [ex.request.target for ex in out] == ["/b"]


# ---------------------------------------------------------------------------------------------
# Not HTTP/1, midstream, errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NOT_HTTP_FIXTURES)
@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT, Role.UNKNOWN])
def test_bytes_that_are_not_http1_make_the_session_dead_and_are_counted_once(name, role):
    view = "client" if role == Role.CLIENT else "server"
    for split in (whole, bytewise):
        out, at_close, session, stats = run(pieces(load(name), split), view=view, role=role)
        assert out == [] and at_close == []
        assert session.dead
        assert stats.non_http_connections == 1 and stats.parse_errors == 1 and stats.messages == 0


def test_a_dead_session_ignores_further_data():
    stats = Http1Stats()
    session = Http1Session(CONN, stats=stats)
    session.on_data(Direction.INGRESS, b"\x16\x03\x01\x00\xa5\x01\x00", 1, 1)
    assert session.dead
    assert session.on_data(Direction.INGRESS, b"GET / HTTP/1.1\r\n\r\n", 2, 2) == []
    assert session.on_data(Direction.EGRESS, b"HTTP/1.1 200 OK\r\n\r\n", 3, 3) == []
    assert session.on_close(4) == []
    assert stats.non_http_connections == 1 and stats.parse_errors == 1 and stats.messages == 0


def test_a_framing_error_after_valid_messages_resyncs_instead_of_killing_the_session():
    stats = Http1Stats()
    session = Http1Session(replace(CONN, role=Role.CLIENT), stats=stats)
    session.on_data(Direction.EGRESS, b"GET /a HTTP/1.1\r\n\r\n", 1, 1)
    out = session.on_data(Direction.INGRESS, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n", 2, 3)
    (ex,) = out
    assert ex.response.status == 200 and ex.warnings == ("response framing error: bad chunk-size line",)
    assert not session.dead and stats.parse_errors == 1 and stats.resyncs == 1
    session.on_data(Direction.EGRESS, b"GET /b HTTP/1.1\r\n\r\n", 4, 4)
    (ex,) = session.on_data(Direction.INGRESS, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 5, 6)
    assert (ex.request.target, ex.response.status) == ("/b", 404)


def test_midstream_attach_skips_to_the_first_request_head_and_drops_earlier_responses():
    chunks = load("keepalive_100")
    # attach in the middle of request 10: its tail, then its response, then the rest
    i = [index for index, (side, _) in enumerate(chunks) if side == "c"][10]
    tail = [("c", chunks[i][1][7:])] + chunks[i + 1:]
    out, at_close, session, stats = run(pieces(tail), midstream=True)
    assert len(out) == 89 and at_close == []
    assert stats.skipped_bytes == len(chunks[i][1]) - 7
    assert stats.orphan_responses == 1
    assert essence(out) == essence(exchanges_of("keepalive_100")[11:])
    # without midstream, the same bytes are garbage
    out, _, session, stats = run(pieces(tail))
    assert out == [] and session.dead and stats.non_http_connections == 1


def test_midstream_with_an_unknown_role_locks_on_the_first_head_of_either_direction():
    chunks = load("keepalive_100")
    assert chunks[1][0] == "s"
    tail = [("s", chunks[1][1][20:])] + chunks[2:]  # attached in the middle of response 0
    out, _, session, _ = run(pieces(tail), role=Role.UNKNOWN, midstream=True)
    assert session.connection.role == Role.SERVER
    assert essence(out) == essence(exchanges_of("keepalive_100")[1:])


def test_while_hunting_a_chunk_must_begin_with_a_whole_start_line_unless_the_capture_cut_it():
    parser = Http1Parser(MessageKind.REQUEST, midstream=True)
    assert parser.receive_data(b"GET /a HT", 1, 1) == [Skipped(9, 1)]  # could be body bytes
    assert parser.receive_data(b"TP/1.1\r\n\r\n", 2, 2) == [Skipped(10, 2)]
    head, end, resync, skipped = parser.receive_data(b"GET /b HT", 3, 3, missing=100)  # all captured fits
    assert (head.target, head.truncated, end.warning) == ("/b", True, "request head truncated")
    assert isinstance(resync, Resync) and skipped == Skipped(100, 3)
    (head, end) = parser.receive_data(b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n", 4, 4)
    assert head.target == "/c" and not head.truncated


def test_garbage_after_valid_messages_is_never_reported_as_a_request():
    stats = Http1Stats()
    session = Http1Session(replace(CONN, role=Role.SERVER), stats=stats)
    session.on_data(Direction.INGRESS, b"GET /a HTTP/1.1\r\n\r\n", 1, 1)
    session.on_data(Direction.EGRESS, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2, 2)
    for junk in (b"foo bar baz", b"x" * 100, b"foo bar baz\r\nqux\r\n\r\n"):
        session.on_data(Direction.INGRESS, junk, 3, 3, missing=5)
        session.on_data(Direction.INGRESS, junk, 3, 3)
    session.on_data(Direction.INGRESS, b"GET /b HTTP/1.1\r\n\r\n", 4, 4)
    (ex,) = session.on_data(Direction.EGRESS, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 5, 5)
    assert ex.request.target == "/b" and not ex.warnings
    assert stats.orphan_responses == 0 and not session.dead


def test_a_bare_lf_head_ends_at_its_empty_line_even_if_the_body_holds_crlfcrlf():
    session = Http1Session(replace(CONN, role=Role.SERVER), stats=Http1Stats())
    session.on_data(Direction.INGRESS, b"POST /x HTTP/1.1\nContent-Length: 8\n\nab\r\n\r\ncd", 1, 1)
    (ex,) = session.on_data(Direction.EGRESS, b"HTTP/1.1 204 No Content\r\n\r\n", 2, 2)
    assert ex.request.headers == (("content-length", "8"),) and ex.request.body_size == 8


@pytest.mark.parametrize("name", ECHOING_FIXTURES)
def test_random_capture_limits_never_pair_a_response_with_another_request(name):
    chunks = load(name)
    rng = random.Random(name)
    for _ in range(25):
        limit = rng.choice([1, 8, 20, 64, 100, 300, 1000, 4096])
        for merge in (True, False):
            out, at_close, _, _ = run(pieces(chunks, merge=merge, max_capture=limit))
            exchanges = out + at_close
            # (pipelined requests past the first in a cut write are unseen: their answers are orphans)
            for ex in exchanges:
                echoed = ex.response.header("x-path") if ex.response else None
                if echoed is not None:
                    assert echoed.startswith(ex.request.target) or ex.request.target.startswith(echoed), limit


def test_midstream_gives_up_on_a_stream_without_any_request_head():
    rng = random.Random(5)
    feed = [Piece("c", rng.randbytes(1000), i, i, 1) for i in range(http1.MIDSTREAM_MAX_SKIP_CHUNKS + 1)]
    _, _, session, stats = run(feed, midstream=True)
    assert session.dead and stats.non_http_connections == 1 and stats.parse_errors == 0
    assert stats.skipped_bytes == 1000 * (http1.MIDSTREAM_MAX_SKIP_CHUNKS + 1)


def test_a_head_longer_than_the_limit_without_a_line_end_is_not_http():
    stats = Http1Stats()
    session = Http1Session(replace(CONN, role=Role.SERVER), stats=stats, max_head_bytes=1024)
    session.on_data(Direction.INGRESS, b"GET /" + b"a" * 2000, 1, 1)
    assert session.dead and stats.non_http_connections == 1


def test_an_oversized_head_with_a_valid_start_line_is_reported_truncated_and_keeps_the_pairing():
    stats = Http1Stats()
    session = Http1Session(replace(CONN, role=Role.SERVER), stats=stats, max_head_bytes=1024)
    session.on_data(Direction.INGRESS, b"GET /big HTTP/1.1\r\nCookie: " + b"c" * 2000 + b"\r\n\r\n", 1, 1)
    (ex,) = session.on_data(Direction.EGRESS, b"HTTP/1.1 431 Too Large\r\nContent-Length: 0\r\n\r\n", 2, 2)
    assert (ex.request.target, ex.response.status) == ("/big", 431)
    assert ex.warnings == ("request framing error: head larger than 1024 bytes",)
    assert not session.dead and stats.parse_errors == 1


# ---------------------------------------------------------------------------------------------
# Pending queue, close, timing
# ---------------------------------------------------------------------------------------------


def _requests(n, prefix="/r"):
    return b"".join(b"GET %s%d HTTP/1.1\r\nHost: a\r\n\r\n" % (prefix.encode(), i) for i in range(n))


def _responses(n, prefix="/r"):
    return b"".join(b"HTTP/1.1 200 OK\r\nX-Path: %s%d\r\nContent-Length: 0\r\n\r\n" % (prefix.encode(), i)
                    for i in range(n))


def test_pending_overflow_reports_the_oldest_unanswered_and_discards_its_late_response():
    stats = Http1Stats()
    session = Http1Session(replace(CONN, role=Role.SERVER), stats=stats, max_pending=64)
    evicted = session.on_data(Direction.INGRESS, _requests(70), 1, 2)
    assert [ex.request.target for ex in evicted] == ["/r%d" % i for i in range(6)]
    assert all(ex.response is None and ex.warnings == ("response not seen: too many requests pending",)
               and ex.end_ns == 1 for ex in evicted)
    answered = session.on_data(Direction.EGRESS, _responses(70), 3, 4)
    assert len(answered) == 64
    assert_paired_by_echo(answered)
    assert stats.dropped_pending == 6 and stats.orphan_responses == 6 and stats.exchanges == 70


def test_when_responses_are_never_seen_the_session_stops_pairing_and_reports_requests_as_they_end(monkeypatch):
    monkeypatch.setattr(http1, "MAX_UNANSWERED", 3)
    stats = Http1Stats()
    session = Http1Session(replace(CONN, role=Role.SERVER), stats=stats, max_pending=2)
    out = []
    for i in range(10):
        out += session.on_data(Direction.INGRESS, _requests(1, "/q%d-" % i), i, i)
    assert [ex.request.target for ex in out] == ["/q%d-0" % i for i in range(10)]
    assert all(ex.response is None for ex in out)
    assert out[-1].warnings == ("response not seen: responses on this connection are not visible",)
    assert session.on_data(Direction.EGRESS, _responses(3), 20, 20) == []
    assert session.on_close(30) == [] and stats.exchanges == 10


def test_close_reports_requests_without_response_and_cuts_short_a_response_in_progress():
    stats = Http1Stats()
    session = Http1Session(replace(CONN, role=Role.CLIENT), stats=stats)
    session.on_data(Direction.EGRESS, _requests(3), 1, 2, tid=9)
    out = session.on_data(Direction.INGRESS, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345", 3, 4)
    assert out == []
    first, second, third = session.on_close(50)
    assert first.response.body_size == 5 and first.warnings == ("response incomplete at close",)
    assert first.end_ns == 4 and first.tid == 9
    assert second.response is None and third.response is None and second.end_ns == 50
    assert stats.truncated_messages == 1
    assert session.on_close(60) == [] and session.on_data(Direction.INGRESS, b"x", 70, 70) == []


def test_a_response_that_ends_before_its_request_is_reported_with_the_request_so_far():
    session = Http1Session(replace(CONN, role=Role.SERVER), stats=Http1Stats())
    session.on_data(Direction.INGRESS, b"POST /up HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100, 1, 1)
    (ex,) = session.on_data(Direction.EGRESS, b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n", 2, 3)
    assert ex.request.body_size == 100 and ex.warnings == ("response ended before the request",)
    assert session.on_data(Direction.INGRESS, b"y" * 99900, 4, 4) == []
    assert session.on_close(5) == []


def test_the_exchange_starts_at_the_first_request_byte_and_takes_the_tid_of_that_chunk():
    session = Http1Session(replace(CONN, role=Role.SERVER), stats=Http1Stats())
    session.on_data(Direction.INGRESS, b"GET /sp", 100, 101, tid=1)
    session.on_data(Direction.INGRESS, b"lit HTTP/1.1\r\n\r\n", 200, 201, tid=2)
    session.on_data(Direction.EGRESS, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab", 300, 301, tid=3)
    (ex,) = session.on_data(Direction.EGRESS, b"cd", 400, 401, tid=3)
    assert (ex.start_ns, ex.end_ns, ex.tid, ex.request.target) == (100, 401, 1, "/split")


# ---------------------------------------------------------------------------------------------
# Parser level
# ---------------------------------------------------------------------------------------------


def test_the_parser_gives_the_same_events_fed_whole_or_byte_by_byte():
    data = b"".join(d for side, d in load("chunked") if side == "s")
    whole_events = Http1Parser(MessageKind.RESPONSE).receive_data(data, 1, 1)
    parser = Http1Parser(MessageKind.RESPONSE)
    byte_events = []
    for i in range(len(data)):
        byte_events += parser.receive_data(data[i:i + 1], 1, 1)
    assert byte_events == whole_events
    assert [type(e) for e in whole_events].count(ResponseHead) == 5


def test_a_parser_of_unknown_kind_takes_the_kind_of_its_first_head():
    parser = Http1Parser(None)
    (head, end) = parser.receive_data(b"DELETE /x HTTP/1.0\r\n\r\n", 1, 1)
    assert isinstance(head, RequestHead) and head.version == "1.0" and end.body_size == 0
    assert parser.kind is MessageKind.REQUEST
    (error, resync, skipped) = parser.receive_data(b"HTTP/1.1 200 OK\r\n\r\n", 2, 2)
    assert isinstance(error, ParseError) and not error.fatal and isinstance(resync, Resync)
    assert skipped == Skipped(19, 2)


# ---------------------------------------------------------------------------------------------
# Fuzz: nothing escapes, nothing internal breaks
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def handle_errors(monkeypatch):
    """Records exceptions inside the session's event handling (which the session would contain)."""
    errors = []
    original = Http1Session._handle

    def handle(self, *args):
        try:
            return original(self, *args)
        except Exception as exc:
            errors.append(exc)
            raise

    monkeypatch.setattr(Http1Session, "_handle", handle)
    return errors


def _fuzz_feed(rng: random.Random, material: list[tuple[str, bytes]]) -> list[Piece]:
    feed = []
    for side, data in material:
        if rng.random() < 0.3:  # mutate
            data = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data)
        for part in random_splits(data, rng):
            missing = rng.choice([0, 0, 0, 0, 1, 7, 100, 5000])
            feed.append(Piece(side, part, 1, 2, 3, missing))
    return feed


def test_random_bytes_random_splits_and_random_truncation_never_raise(handle_errors):
    rng = random.Random(20240601)
    every_fixture = [load(name) for name in [*HTTP_FIXTURES, *NOT_HTTP_FIXTURES]]
    tokens = [b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"Content-Length: 5\r\n", b"\r\n", b"\n",
              b"Transfer-Encoding: chunked\r\n", b"0\r\n", b"5\r\nhello\r\n", b"HTTP/1.1 101 S\r\n\r\n", b" ", b":"]
    for round_ in range(400):
        kind = round_ % 3
        if kind == 0:
            material = [(rng.choice("cs"), rng.randbytes(rng.randint(0, 300))) for _ in range(rng.randint(1, 8))]
        elif kind == 1:
            material = [(rng.choice("cs"), b"".join(rng.choice(tokens) for _ in range(rng.randint(1, 20))))
                        for _ in range(rng.randint(1, 10))]
        else:
            material = rng.choice(every_fixture)
        feed = _fuzz_feed(rng, material)
        role = rng.choice([Role.SERVER, Role.CLIENT, Role.UNKNOWN])
        run(feed, view=rng.choice(["server", "client"]), role=role, midstream=rng.random() < 0.3,
            max_pending=rng.choice([1, 4, 64]), max_head_bytes=rng.choice([64, 16384]))
        # and the bare parser
        parser = Http1Parser(rng.choice([None, MessageKind.REQUEST, MessageKind.RESPONSE]),
                             midstream=rng.random() < 0.3, max_head_bytes=rng.choice([64, 16384]))
        events = []
        for p in feed:
            events += parser.receive_data(p.data, 1, 2, p.missing)
        events += parser.close(3)
        assert not [e for e in events if isinstance(e, ParseError) and e.reason.startswith("internal error")]
    assert handle_errors == []
