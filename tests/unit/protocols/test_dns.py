"""DNS parser, TCP framer and lookup tracker. Well-formed messages are built with dnspython (an
independent implementation, which compresses names by default); malformed ones by hand."""

from __future__ import annotations

import random
import struct

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from otel_ebpf.protocols.dns import (
    MAX_REPORTED_ANSWERS,
    DnsAnswer,
    DnsError,
    DnsLookup,
    DnsTracker,
    TcpDnsFramer,
    parse_message,
    rcode_name,
    type_name,
)

KEY = (4242, 0xFFFF0001)  # (pid, sock_id)


def query(name: str, rdtype: str = "A", *, qid: int = 0x1234) -> dns.message.QueryMessage:
    message = dns.message.make_query(name, rdtype)
    message.id = qid
    return message


def response(q: dns.message.Message, *answers: dns.rrset.RRset, rcode: int = dns.rcode.NOERROR,
             tc: bool = False) -> dns.message.Message:
    message = dns.message.make_response(q)
    message.set_rcode(rcode)
    if tc:
        message.flags |= dns.flags.TC
    for rrset in answers:
        message.answer.append(rrset)
    return message


def rrset(name: str, rdtype: str, *values: str, ttl: int = 300) -> dns.rrset.RRset:
    return dns.rrset.from_text(name, ttl, "IN", rdtype, *values)


def cname_chain_response(qid: int = 0x1234) -> bytes:
    q = query("www.example.com", qid=qid)
    return response(
        q,
        rrset("www.example.com.", "CNAME", "web.example.net.", ttl=300),
        rrset("web.example.net.", "A", "192.0.2.1", "192.0.2.2", ttl=60),
    ).to_wire()


def header(*, qid=1, flags=0, qd=1, an=0, ns=0, ar=0) -> bytes:
    return struct.pack("!6H", qid, flags, qd, an, ns, ar)


def tcp(wire: bytes) -> bytes:
    return len(wire).to_bytes(2, "big") + wire


# Well-formed messages of several shapes (compressed names, several answers, no answer, root).
VALID = [
    query("www.example.com").to_wire(),
    cname_chain_response(),
    response(query("v6.example.org", "AAAA"), rrset("v6.example.org.", "AAAA", "2001:db8::1")).to_wire(),
    response(query("nope.example.com"), rcode=dns.rcode.NXDOMAIN).to_wire(),
    response(query("1.2.0.192.in-addr.arpa", "PTR"),
             rrset("1.2.0.192.in-addr.arpa.", "PTR", "host.example.com.")).to_wire(),
    response(query("example.com", "MX"), rrset("example.com.", "MX", "10 mx1.example.com.")).to_wire(),
    response(query(".", "NS"), rrset(".", "NS", "a.root-servers.net.", "b.root-servers.net.")).to_wire(),
]

# Malformed messages: what they break, and the bytes.
_LOOP_QUESTION = header() + b"\xc0\x0c" + b"\x00\x01\x00\x01"  # the name is a pointer to itself
_TWO_POINTER_LOOP = header() + b"\x01a\xc0\x0e" + b"\x00\x01\x00\x01"  # label, then pointer to that pointer
_FORWARD_POINTER = header() + b"\xc0\xff" + b"\x00\x01\x00\x01"  # points past the end
_LONG_LABEL = header() + b"\x40" + b"a" * 64 + b"\x00" + b"\x00\x01\x00\x01"  # 64-byte label
_EXTENDED_LABEL = header() + b"\x80abc\x00" + b"\x00\x01\x00\x01"  # label type 10
_LONG_NAME = header() + (b"\x3f" + b"a" * 63) * 4 + b"\x00" + b"\x00\x01\x00\x01"  # 257 bytes on the wire
_ABSURD_ANCOUNT = cname_chain_response()[:6] + b"\xff\xff" + cname_chain_response()[8:]
_ABSURD_QDCOUNT = header(qd=0xFFFF) + b"\x00\x00\x01\x00\x01"
_BAD_A_LENGTH = (header(flags=0x8000, an=1) + b"\x01a\x00\x00\x01\x00\x01"
                 + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x05" + b"\xc0\x00\x02\x01\x09")
_CNAME_SHORT_OF_RDATA = (header(flags=0x8000, an=1) + b"\x01a\x00\x00\x05\x00\x01"
                         + b"\xc0\x0c\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x04" + b"\xc0\x0c\x00\x00")
_RDLENGTH_PAST_END = (header(flags=0x8000, an=1) + b"\x01a\x00\x00\x01\x00\x01"
                      + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x01\x00" + b"\xc0\x00\x02\x01")

MALFORMED = {
    "empty": (b"", "shorter than the 12-byte header"),
    "truncated header": (VALID[0][:11], "shorter than the 12-byte header"),
    "truncated question type": (VALID[0][:-2], "question 0 cut"),
    "truncated question name": (VALID[0][:16], "1 questions and 0 answers, more than the 4 bytes"),
    "label cut by the end": (header() + b"\x07exam", "label at offset 12 cut by the end"),
    "name without its root byte": (header() + b"\x03www\x07example", "runs past the end of the message at 24"),
    "pointer cut by the end": (header() + b"\x01a\x01b\xc0", "compression pointer at offset 16 cut"),
    "compression loop": (_LOOP_QUESTION, "points to 12, not before 12"),
    "two-pointer loop": (_TWO_POINTER_LOOP, "points to 14, not before 12"),
    "pointer beyond the end": (_FORWARD_POINTER, "points to 255"),
    "label longer than 63": (_LONG_LABEL, "longer than 63"),
    "extended label type": (_EXTENDED_LABEL, "extended label types"),
    "name longer than 255": (_LONG_NAME, "longer than 255 bytes"),
    "absurd ancount": (_ABSURD_ANCOUNT, "65535 answers, more than"),
    "absurd qdcount": (_ABSURD_QDCOUNT, "65535 questions"),
    "A data not 4 bytes": (_BAD_A_LENGTH, "A record data at offset 31 is 5 bytes, not 4"),
    "CNAME name short of its data": (_CNAME_SHORT_OF_RDATA, "its name takes 2 of 4 bytes"),
    "rdlength past the end": (_RDLENGTH_PAST_END, "past the end of the message"),
}


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------


def test_a_query_reports_its_header_and_lowercased_question():
    message = parse_message(query("WWW.Example.COM", "AAAA", qid=0xBEEF).to_wire())
    assert message.id == 0xBEEF
    assert not message.is_response
    assert message.opcode == 0
    assert message.rcode == 0
    assert not message.truncated
    assert (message.qname, message.qtype, message.qclass) == ("www.example.com", 28, 1)
    assert message.question_count == 1
    assert message.answer_count == 0
    assert message.answers == ()


def test_a_cname_chain_response_reports_every_answer_through_compressed_names():
    wire = cname_chain_response()
    assert b"\xc0" in wire[12:]  # dnspython did compress
    message = parse_message(wire)
    assert message.is_response
    assert message.qname == "www.example.com"
    assert message.answer_count == 3
    assert message.answers[0] == DnsAnswer("www.example.com", 5, 300, "web.example.net")
    assert sorted(message.answers[1:]) == [  # dnspython writes an rrset's records in no fixed order
        DnsAnswer("web.example.net", 1, 60, "192.0.2.1"),
        DnsAnswer("web.example.net", 1, 60, "192.0.2.2"),
    ]


def test_aaaa_data_is_compressed_ipv6_text():
    wire = response(query("v6.example.org", "AAAA"),
                    rrset("v6.example.org.", "AAAA", "2001:0db8:0000:0000:0000:0000:0000:0001", "::ffff:192.0.2.1")).to_wire()
    assert sorted(a.data for a in parse_message(wire).answers) == ["2001:db8::1", "::ffff:c000:201"]


def test_nxdomain_rcode_and_tc_flag_are_read_from_the_header():
    message = parse_message(response(query("nope.example.com"), rcode=dns.rcode.NXDOMAIN, tc=True).to_wire())
    assert message.rcode == 3
    assert message.truncated
    assert message.answer_count == 0


def test_ptr_and_ns_data_are_names_and_other_types_are_counted_not_reported():
    wire = response(
        query("example.com", "ANY"),
        rrset("example.com.", "NS", "ns1.example.com."),
        rrset("example.com.", "MX", "10 mx1.example.com."),
        rrset("example.com.", "TXT", '"v=spf1 -all"'),
        rrset("1.2.0.192.in-addr.arpa.", "PTR", "Host.Example.com."),
    ).to_wire()
    message = parse_message(wire)
    assert message.qtype == 255
    assert message.answer_count == 4
    assert message.answers == (
        DnsAnswer("example.com", 2, 300, "ns1.example.com"),
        DnsAnswer("1.2.0.192.in-addr.arpa", 12, 300, "host.example.com"),
    )


def text(name: dns.name.Name) -> str:
    """dnspython's text of a name in this parser's spelling: lowercase, no final dot, root = ""."""
    return "" if name == dns.name.root else name.to_text(omit_final_dot=True).lower()


def test_answers_agree_with_dnspython_on_every_valid_message():
    reported = {dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME, dns.rdatatype.PTR, dns.rdatatype.NS}
    for wire in VALID:
        theirs = dns.message.from_wire(wire)
        ours = parse_message(wire)
        assert ours.id == theirs.id
        assert ours.rcode == theirs.rcode()
        assert ours.qname == text(theirs.question[0].name)
        assert ours.answer_count == sum(len(r) for r in theirs.answer)
        expected = [
            (text(rr.name), rr.rdtype, rr.ttl, rdata.to_text().lower().rstrip("."))
            for rr in theirs.answer if rr.rdtype in reported for rdata in rr
        ]
        assert [tuple(a) for a in ours.answers] == expected


def test_the_root_name_is_the_empty_string():
    message = parse_message(VALID[6])
    assert message.qname == ""
    assert sorted(message.answers) == [DnsAnswer("", 2, 300, "a.root-servers.net"),
                                       DnsAnswer("", 2, 300, "b.root-servers.net")]


def test_only_the_first_question_is_reported_but_all_are_counted():
    wire = header(qd=2) + b"\x01a\x00\x00\x01\x00\x01" + b"\x01b\xc0\x0c\x00\x1c\x00\x01"
    message = parse_message(wire)
    assert (message.question_count, message.qname, message.qtype) == (2, "a", 1)


def test_a_message_without_question_has_an_empty_name_and_type_zero():
    message = parse_message(header(flags=0x8001, qd=0))
    assert (message.question_count, message.qname, message.qtype, message.qclass, message.rcode) == (0, "", 0, 0, 1)


def test_label_bytes_outside_printable_ascii_and_dots_are_escaped():
    name = dns.name.Name([b"a.b", b"C\\d", b"\x00\xff", b"example", b""])
    wire = dns.message.make_query(name, "A").to_wire()
    assert parse_message(wire).qname == "a\\.b.c\\\\d.\\000\\255.example"


def test_a_name_of_exactly_255_wire_bytes_parses():
    labels = [b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 61]  # 3*64 + 62 + 1 = 255
    wire = header() + b"".join(bytes([len(x)]) + x for x in labels) + b"\x00" + b"\x00\x01\x00\x01"
    assert parse_message(wire).qname == ".".join(x.decode() for x in labels)


def test_authority_and_additional_sections_are_not_read():
    wire = response(query("nope.example.com"), rcode=dns.rcode.NXDOMAIN)
    wire.authority.append(rrset("example.com.", "SOA", "ns1.example.com. admin.example.com. 1 2 3 4 5"))
    data = wire.to_wire()
    assert parse_message(data[:-5]).rcode == 3  # cut inside the SOA record: the lookup is still readable


def test_answers_beyond_the_reported_limit_are_counted_only():
    addresses = [f"10.0.{i // 256}.{i % 256}" for i in range(MAX_REPORTED_ANSWERS + 10)]
    wire = response(query("many.example.com"), rrset("many.example.com.", "A", *addresses)).to_wire()
    message = parse_message(wire)
    assert message.answer_count == MAX_REPORTED_ANSWERS + 10
    assert len(message.answers) == MAX_REPORTED_ANSWERS
    assert {a.data for a in message.answers} <= set(addresses)


def test_bytearray_and_memoryview_are_accepted():
    assert parse_message(bytearray(VALID[1])) == parse_message(memoryview(VALID[1])) == parse_message(VALID[1])


@pytest.mark.parametrize("data, match", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_messages_raise_dns_error_saying_why(data, match):
    with pytest.raises(DnsError, match=match):
        parse_message(data)


def test_dns_error_is_a_value_error():
    assert issubclass(DnsError, ValueError)


@pytest.mark.parametrize("index", range(len(VALID)))
def test_every_prefix_of_a_valid_message_parses_or_raises_dns_error(index):
    wire = VALID[index]
    parsed = 0
    for end in range(len(wire) + 1):
        try:
            parse_message(wire[:end])
            parsed += 1
        except DnsError:
            pass
    assert parsed >= 1  # at least the whole message


def test_randomly_corrupted_messages_parse_or_raise_dns_error():
    rng = random.Random(1035)
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(3000):
        data = bytearray(rng.choice(VALID))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.choice((0x00, 0x3F, 0x40, 0xC0, 0xFF, rng.randrange(256)))
        try:
            parse_message(bytes(data))
            outcomes["parsed"] += 1
        except DnsError:
            outcomes["refused"] += 1
    assert outcomes["parsed"] > 0 and outcomes["refused"] > 0  # both paths were exercised


def test_random_bytes_parse_or_raise_dns_error():
    rng = random.Random(7)
    for _ in range(2000):
        data = rng.randbytes(rng.randint(0, 80))
        try:
            parse_message(data)
        except DnsError:
            pass


def test_type_and_rcode_names_fall_back_to_their_number():
    assert (type_name(1), type_name(28), type_name(65), type_name(99)) == ("A", "AAAA", "HTTPS", "TYPE99")
    assert (rcode_name(0), rcode_name(3), rcode_name(5), rcode_name(9)) == ("NOERROR", "NXDOMAIN", "REFUSED", "RCODE9")


# ---------------------------------------------------------------------------------------------
# TCP framer
# ---------------------------------------------------------------------------------------------

STREAM = [VALID[0], VALID[1], VALID[3]]


def test_framer_fed_whole_returns_every_message():
    framer = TcpDnsFramer()
    assert framer.receive_data(b"".join(tcp(m) for m in STREAM)) == STREAM
    assert framer.buffered == 0


def test_framer_fed_one_byte_at_a_time_returns_each_message_when_its_last_byte_arrives():
    framer = TcpDnsFramer()
    data = b"".join(tcp(m) for m in STREAM)
    out = []
    for i in range(len(data)):
        got = framer.receive_data(data[i:i + 1])
        assert len(got) <= 1
        if got:
            out += got
            assert i + 1 == sum(len(tcp(m)) for m in out)  # exactly at the message's end
    assert out == STREAM
    assert framer.buffered == 0


def test_framer_with_two_messages_and_trailing_bytes_in_one_chunk_keeps_the_rest():
    framer = TcpDnsFramer()
    third = tcp(STREAM[2])
    assert framer.receive_data(tcp(STREAM[0]) + tcp(STREAM[1]) + third[:5]) == STREAM[:2]
    assert framer.buffered == 5
    assert framer.receive_data(third[5:]) == [STREAM[2]]


def test_framer_splits_inside_the_length_prefix():
    framer = TcpDnsFramer()
    data = tcp(STREAM[1])
    assert framer.receive_data(data[:1]) == []
    assert framer.receive_data(data[1:2]) == []
    assert framer.receive_data(data[2:]) == [STREAM[1]]


def test_framer_reset_drops_the_partial_message():
    framer = TcpDnsFramer()
    assert framer.receive_data(tcp(STREAM[0])[:7]) == []
    framer.reset()
    assert framer.buffered == 0
    assert framer.receive_data(tcp(STREAM[1])) == [STREAM[1]]


def test_framer_passes_an_empty_message_on_for_the_parser_to_refuse():
    assert TcpDnsFramer().receive_data(b"\x00\x00" + tcp(STREAM[0])) == [b"", STREAM[0]]


# ---------------------------------------------------------------------------------------------
# Tracker
# ---------------------------------------------------------------------------------------------


def test_a_query_and_its_response_make_a_lookup_with_latency_and_context():
    tracker = DnsTracker()
    assert tracker.feed(KEY, query("www.example.com").to_wire(), 1_000, context={"pid": 4242}) is None
    assert tracker.pending == 1
    answer = cname_chain_response()
    lookup = tracker.feed(KEY, answer, 1_750)
    assert lookup == DnsLookup(
        name="www.example.com", type=1, type_name="A", rcode=0, rcode_name="NOERROR", answer_count=3,
        answers=parse_message(answer).answers, start_ns=1_000, end_ns=1_750, timed_out=False,
        truncated=False, context={"pid": 4242}, transport="udp",
    )
    assert lookup.duration_ns == 750
    assert tracker.pending == 0
    assert (tracker.malformed, tracker.unmatched_responses, tracker.evicted, tracker.timed_out) == (0, 0, 0, 0)


def test_nxdomain_is_reported_by_name():
    tracker = DnsTracker()
    q = query("nope.example.com", "AAAA", qid=7)
    tracker.feed(KEY, q.to_wire(), 10)
    lookup = tracker.feed(KEY, response(q, rcode=dns.rcode.NXDOMAIN).to_wire(), 25)
    assert (lookup.rcode, lookup.rcode_name, lookup.type_name, lookup.answers) == (3, "NXDOMAIN", "AAAA", ())


def test_a_truncated_response_is_flagged():
    tracker = DnsTracker()
    q = query("big.example.com", "TXT")
    tracker.feed(KEY, q.to_wire(), 0)
    assert tracker.feed(KEY, response(q, tc=True).to_wire(), 5).truncated


def test_a_response_with_no_query_is_counted_unmatched():
    tracker = DnsTracker()
    assert tracker.feed(KEY, cname_chain_response(), 100) is None
    assert tracker.unmatched_responses == 1


def test_a_response_pairs_only_with_the_same_key_id_name_and_type():
    tracker = DnsTracker()
    tracker.feed(KEY, query("www.example.com", qid=1).to_wire(), 0)
    assert tracker.feed((1, 2), cname_chain_response(qid=1), 5) is None  # other flow
    assert tracker.feed(KEY, cname_chain_response(qid=2), 5) is None  # other id
    assert tracker.feed(KEY, response(query("www.example.com", "AAAA", qid=1)).to_wire(), 5) is None  # other type
    assert tracker.feed(KEY, response(query("other.example.com", qid=1)).to_wire(), 5) is None  # other name
    assert tracker.unmatched_responses == 4
    assert tracker.feed(KEY, cname_chain_response(qid=1), 9).start_ns == 0


def test_parallel_a_and_aaaa_queries_on_one_socket_pair_with_their_own_responses():
    tracker = DnsTracker()
    qa, qaaaa = query("host.example.com", "A", qid=11), query("host.example.com", "AAAA", qid=12)
    tracker.feed(KEY, qa.to_wire(), 100)
    tracker.feed(KEY, qaaaa.to_wire(), 101)
    v6 = tracker.feed(KEY, response(qaaaa, rrset("host.example.com.", "AAAA", "2001:db8::5")).to_wire(), 130)
    v4 = tracker.feed(KEY, response(qa, rrset("host.example.com.", "A", "192.0.2.5")).to_wire(), 150)
    assert (v6.type_name, v6.answers[0].data, v6.duration_ns) == ("AAAA", "2001:db8::5", 29)
    assert (v4.type_name, v4.answers[0].data, v4.duration_ns) == ("A", "192.0.2.5", 50)


def test_a_retransmitted_query_keeps_the_first_timestamp_and_context():
    tracker = DnsTracker()
    wire = query("www.example.com").to_wire()
    tracker.feed(KEY, wire, 1_000, context="first")
    tracker.feed(KEY, wire, 6_000, context="second")
    assert tracker.pending == 1
    assert tracker.retransmissions == 1
    lookup = tracker.feed(KEY, cname_chain_response(), 6_100)
    assert (lookup.start_ns, lookup.end_ns, lookup.context) == (1_000, 6_100, "first")


def test_the_oldest_query_is_evicted_when_max_pending_are_waiting():
    tracker = DnsTracker(max_pending=2)
    queries = [query(f"h{i}.example.com", qid=i) for i in range(3)]
    for i, q in enumerate(queries):
        tracker.feed(KEY, q.to_wire(), i)
    assert tracker.evicted == 1
    assert tracker.pending == 2
    assert tracker.feed(KEY, response(queries[0]).to_wire(), 10) is None
    assert tracker.unmatched_responses == 1
    assert [tracker.feed(KEY, response(q).to_wire(), 10).name for q in queries[1:]] == ["h1.example.com", "h2.example.com"]


def test_expire_reports_unanswered_queries_as_timed_out_lookups():
    tracker = DnsTracker(timeout_ns=100)
    tracker.feed(KEY, query("slow.example.com", qid=1).to_wire(), 0, context="ctx", transport="tcp")
    tracker.feed(KEY, query("later.example.com", qid=2).to_wire(), 60)
    assert tracker.expire(99) == []
    expired = tracker.expire(100)
    assert expired == [DnsLookup(
        name="slow.example.com", type=1, type_name="A", rcode=None, rcode_name=None, answer_count=0, answers=(),
        start_ns=0, end_ns=100, timed_out=True, truncated=False, context="ctx", transport="tcp",
    )]
    assert tracker.timed_out == 1
    assert tracker.pending == 1
    assert tracker.feed(KEY, response(query("slow.example.com", qid=1)).to_wire(), 120) is None  # too late
    assert tracker.unmatched_responses == 1
    assert [lookup.name for lookup in tracker.expire(10_000)] == ["later.example.com"]
    assert tracker.timed_out == 2


def test_expire_finds_a_query_fed_out_of_timestamp_order():
    tracker = DnsTracker(timeout_ns=100)
    tracker.feed(KEY, query("new.example.com", qid=1).to_wire(), 500)
    tracker.feed(KEY, query("old.example.com", qid=2).to_wire(), 10)
    assert [lookup.name for lookup in tracker.expire(200)] == ["old.example.com"]


@pytest.mark.parametrize("data", [d for d, _ in MALFORMED.values()], ids=MALFORMED.keys())
def test_feeding_malformed_bytes_is_counted_never_raised(data):
    tracker = DnsTracker()
    assert tracker.feed(KEY, data, 0) is None
    assert tracker.malformed == 1
    assert tracker.pending == 0


def test_feeding_random_garbage_never_raises():
    tracker = DnsTracker()
    rng = random.Random(3)
    for i in range(1000):
        tracker.feed(KEY, rng.randbytes(rng.randint(0, 40)), i)
    assert tracker.malformed > 900


def test_tcp_messages_through_the_framer_make_a_tcp_lookup():
    tracker = DnsTracker()
    client, server = TcpDnsFramer(), TcpDnsFramer()
    request = tcp(query("www.example.com").to_wire())
    lookups = []
    for i in range(len(request)):
        for message in client.receive_data(request[i:i + 1]):
            lookups.append(tracker.feed(KEY, message, 100, transport="tcp"))
    for message in server.receive_data(tcp(cname_chain_response())):
        lookups.append(tracker.feed(KEY, message, 300))
    assert lookups[0] is None
    assert (lookups[1].transport, lookups[1].duration_ns, lookups[1].answer_count) == ("tcp", 200, 3)


def test_on_query_and_on_response_take_parsed_messages():
    tracker = DnsTracker()
    tracker.on_query(KEY, parse_message(query("www.example.com").to_wire()), 5, "ctx")
    lookup = tracker.on_response(KEY, parse_message(cname_chain_response()), 8)
    assert (lookup.name, lookup.context, lookup.duration_ns) == ("www.example.com", "ctx", 3)


def test_tracker_options_are_checked():
    with pytest.raises(ValueError, match="max_pending"):
        DnsTracker(max_pending=0)
    with pytest.raises(ValueError, match="timeout_ns"):
        DnsTracker(timeout_ns=0)
    with pytest.raises(ValueError, match="transport"):
        DnsTracker().feed(KEY, VALID[0], 0, transport="quic")
