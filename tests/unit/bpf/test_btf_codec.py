"""BTF reader and sockdata codec, checked against the compiled object (src/otel_ebpf/bpf/objects/sockdata.bpf.o).

Records are packed with the offsets of ``Btf.struct_layout`` (tests/unit/stream/events_factory.py),
so these tests say "the decoder reads what the C struct holds", whatever the layout is.
"""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path

import pytest

from otel_ebpf.bpf import events
from otel_ebpf.bpf.btf import BpfObjectInfo, BtfError
from otel_ebpf.bpf.events import ConnEvent, EventType, SockDataCodec, SockDataEvent, Stat, Syscall, check_enums
from otel_ebpf.bpf.sockdata import object_path
from otel_ebpf.records import Direction, Role

from ..stream.events_factory import conn_record, fixture_chunks, raw_address, sock_data_record

OBJECT = object_path()
REQUEST = fixture_chunks("curl")[0][1]  # GET /items/1, as curl wrote it


@pytest.fixture(scope="module")
def info() -> BpfObjectInfo:
    if not OBJECT.exists():
        pytest.fail(f"{OBJECT} is missing: run `make bpf`")
    return BpfObjectInfo.from_file(OBJECT)


@pytest.fixture
def codec(info) -> SockDataCodec:
    return SockDataCodec(info)


# ---------------------------------------------------------------------------------------------
# Python enums = C enums
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("c_enum", "prefix", "py_enum"),
    [("event_type", "EVENT_", EventType), ("syscall_id", "SYS_", Syscall), ("stat_index", "STAT_", Stat)],
)
def test_each_python_enum_has_the_names_and_numbers_of_its_c_enum(info, c_enum, prefix, py_enum):
    c_values = {name.removeprefix(prefix): value for name, value in info.btf.enum(c_enum).items()}
    c_values.pop("MAX", None)

    assert c_values == {member.name: member.value for member in py_enum}


def test_the_stat_enum_covers_every_per_cpu_counter(info):
    assert info.btf.enum("stat_index")["STAT_MAX"] == len(Stat)


def test_check_enums_accepts_the_compiled_object(info):
    check_enums(info)  # raises on a mismatch
    assert SockDataCodec(info).decode_errors == 0


def test_check_enums_refuses_an_object_whose_c_enum_was_renumbered(info, monkeypatch):
    real_enum = info.btf.enum

    def renumbered(name):
        values = real_enum(name)
        if name == "syscall_id":
            values = {**values, "SYS_SENDFILE": 12}
        return values

    monkeypatch.setattr(info.btf, "enum", renumbered)

    with pytest.raises(BtfError, match="syscall_id"):
        check_enums(info)
    with pytest.raises(BtfError):
        SockDataCodec(info)


def test_check_enums_refuses_a_python_enum_missing_a_c_value(info, monkeypatch):
    import enum

    class Shorter(enum.IntEnum):
        SOCK_DATA = 1
        CONN_OPEN = 2

    monkeypatch.setitem(events._ENUMS, "event_type", (Shorter, "EVENT_"))

    with pytest.raises(BtfError, match="event_type"):
        check_enums(info)


def test_a_missing_enum_or_struct_is_a_btf_error(info):
    with pytest.raises(BtfError, match="no_such_enum"):
        info.btf.enum("no_such_enum")
    with pytest.raises(BtfError, match="no_such_struct"):
        info.btf.struct_layout("no_such_struct")
    with pytest.raises(BtfError, match="no_such_member"):
        info.btf.decoder("conn_event", ["type", "no_such_member"])


# ---------------------------------------------------------------------------------------------
# Decoders follow the BTF layout
# ---------------------------------------------------------------------------------------------


def struct_offsets(fmt: str) -> list[int]:
    """Offsets of the non-padding items of a little-endian, unaligned ``struct`` format."""
    sizes = {"b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "q": 8, "Q": 8}
    assert fmt.startswith("<")
    pos, out = 0, []
    for count, code in re.findall(r"(\d*)([xbBhHiIqQs])", fmt[1:]):
        n = int(count or 1)
        if code == "x":
            pos += n
        elif code == "s":
            out.append(pos)
            pos += n
        else:
            for _ in range(n):
                out.append(pos)
                pos += sizes[code]
    return out


@pytest.mark.parametrize(
    ("struct_name", "fields", "attribute"),
    [("sock_data_event", events._DATA_FIELDS, "_data"), ("conn_event", events._CONN_FIELDS, "_conn")],
)
def test_the_codec_reads_each_field_at_its_btf_offset_and_size(info, codec, struct_name, fields, attribute):
    layout = {m.name: m for m in info.btf.struct_layout(struct_name)}
    decoder = getattr(codec, attribute)

    assert struct_offsets(decoder.format) == [layout[f].offset for f in fields]
    assert decoder.size == max(layout[f].offset + layout[f].size for f in fields)
    assert decoder.size <= info.btf.struct_size(struct_name)


def test_the_layout_has_the_members_of_the_shared_header(info):
    data = [m.name for m in info.btf.struct_layout("sock_data_event")]
    conn = [m.name for m in info.btf.struct_layout("conn_event")]

    assert set(events._DATA_FIELDS) <= set(data)
    assert set(events._CONN_FIELDS) <= set(conn)
    assert "data" not in data  # the flexible array has no bytes in the header


def test_members_do_not_overlap_and_fit_in_the_struct(info):
    for name in ("sock_data_event", "conn_event"):
        layout = sorted(info.btf.struct_layout(name), key=lambda m: m.offset)
        for a, b in zip(layout, layout[1:]):
            assert a.offset + a.size <= b.offset, (name, a, b)
        assert layout[-1].offset + layout[-1].size <= info.btf.struct_size(name)


def test_the_rodata_knobs_are_found_with_their_sizes(info):
    symbols = info.rodata_symbols

    assert {name: symbols[name][1] for name in ("targ_self_tgid", "max_capture_bytes", "wakeup_bytes")} == {
        "targ_self_tgid": 4, "max_capture_bytes": 4, "wakeup_bytes": 8,
    }
    spans = sorted(symbols.values())
    for (off_a, size_a), (off_b, _) in zip(spans, spans[1:]):
        assert off_a + size_a <= off_b


# ---------------------------------------------------------------------------------------------
# Round trip: record packed by the BTF layout -> codec -> event
# ---------------------------------------------------------------------------------------------


def test_a_data_record_decodes_to_every_field_and_its_payload(info, codec):
    rec = sock_data_record(
        info, tgid=4242, tid=4243, fd=12, ts_enter=123_456_789_012, ts_exit=123_456_799_999,
        sock_id=0xFFFF_8880_1234_5678, direction=Direction.EGRESS, role=Role.CLIENT, syscall=Syscall.SENDMSG,
        family=socket.AF_INET, local=("192.168.1.20", 51234), remote=("10.1.2.3", 8080),
        payload=REQUEST, length=len(REQUEST) + 100, total_retrans=3, srtt_us=1234,
    )

    event = codec.decode(rec)

    assert event == SockDataEvent(
        tgid=4242, tid=4243, fd=12, ts_enter=123_456_789_012, ts_exit=123_456_799_999,
        sock_id=0xFFFF_8880_1234_5678, length=len(REQUEST) + 100, direction=Direction.EGRESS, role=Role.CLIENT,
        syscall=Syscall.SENDMSG, family=4, local_address="192.168.1.20", local_port=51234,
        remote_address="10.1.2.3", remote_port=8080, data=REQUEST, transport=6, total_retrans=3, srtt_us=1234,
    )
    assert event.missing == 100
    assert codec.decode_errors == 0


def test_a_negative_fd_is_decoded_as_signed(info, codec):
    assert codec.decode(sock_data_record(info, fd=-9)).fd == -9  # fd is __s32 in the header


def test_bytes_after_the_captured_payload_are_not_part_of_it(info, codec):
    rec = sock_data_record(info, payload=REQUEST[:16], trailing=b"\x00\xff" * 8)

    event = codec.decode(rec)

    assert event.data == REQUEST[:16]
    assert event.missing == 0


def test_an_empty_payload_decodes_to_empty_bytes(info, codec):
    event = codec.decode(sock_data_record(info, payload=b"", length=4096))
    assert event.data == b"" and event.missing == 4096


@pytest.mark.parametrize(
    ("family", "local", "remote", "expected_family", "expected_local", "expected_remote"),
    [
        (socket.AF_INET, "127.0.0.1", "10.255.0.9", 4, "127.0.0.1", "10.255.0.9"),
        (socket.AF_INET6, "2001:db8::1", "fe80::abcd:1", 6, "2001:db8::1", "fe80::abcd:1"),
        (socket.AF_INET6, "::1", "::1", 6, "::1", "::1"),
        (socket.AF_INET6, "::ffff:10.0.0.1", "::ffff:192.0.2.7", 6, "10.0.0.1", "192.0.2.7"),
    ],
    ids=["ipv4", "ipv6", "ipv6-loopback", "ipv4-mapped-ipv6"],
)
def test_addresses_of_each_family_decode_to_their_text_form(
    info, codec, family, local, remote, expected_family, expected_local, expected_remote
):
    data = codec.decode(sock_data_record(info, family=family, local=(local, 1), remote=(remote, 65535)))
    conn = codec.decode(conn_record(info, family=family, local=(local, 1), remote=(remote, 65535)))

    for event in (data, conn):
        assert event.family == expected_family
        assert (event.local_address, event.local_port) == (expected_local, 1)
        assert (event.remote_address, event.remote_port) == (expected_remote, 65535)


def test_an_ipv4_address_uses_only_the_first_four_bytes_of_the_field(info, codec):
    rec = bytearray(sock_data_record(info, family=socket.AF_INET, local=("10.0.0.1", 80)))
    saddr = next(m for m in info.btf.struct_layout("sock_data_event") if m.name == "tuple.saddr")
    rec[saddr.offset + 4 : saddr.offset + 16] = b"\xee" * 12  # stale bytes behind an IPv4 address

    assert codec.decode(bytes(rec)).local_address == "10.0.0.1"
    assert raw_address(socket.AF_INET, "10.0.0.1") == b"\x0a\x00\x00\x01" + bytes(12)


@pytest.mark.parametrize("kind", [EventType.CONN_OPEN, EventType.CONN_CLOSE])
def test_a_conn_record_decodes_to_every_field(info, codec, kind):
    rec = conn_record(
        info, kind=kind, tgid=77, tid=78, fd=12, ts=987_654_321, sock_id=0xFFFF_9999_0000_0001, role=Role.SERVER,
        family=socket.AF_INET6, local=("2001:db8::10", 443), remote=("2001:db8::20", 60000), comm=b"nginx",
    )

    assert codec.decode(rec) == ConnEvent(
        type=kind, tgid=77, tid=78, fd=12, ts=987_654_321, sock_id=0xFFFF_9999_0000_0001, role=Role.SERVER,
        family=6, local_address="2001:db8::10", local_port=443, remote_address="2001:db8::20", remote_port=60000,
        comm="nginx",
    )


def test_comm_ends_at_its_first_nul_and_bad_utf8_is_replaced(info, codec):
    assert codec.decode(conn_record(info, comm=b"curl\0stale-bytes")).comm == "curl"
    assert codec.decode(conn_record(info, comm=b"caf\xe9")).comm == "caf\ufffd"
    assert codec.decode(conn_record(info, comm=b"x" * 16)).comm == "x" * 16


# ---------------------------------------------------------------------------------------------
# Garbage in
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda info: b"", id="empty"),
        pytest.param(lambda info: bytes(info.btf.struct_size("conn_event")), id="type-zero"),
        pytest.param(lambda info: b"\x7f" + bytes(200), id="unknown-type"),
        pytest.param(lambda info: sock_data_record(info, direction=7), id="bad-direction"),
        pytest.param(lambda info: sock_data_record(info, role=9), id="bad-role"),
        pytest.param(lambda info: sock_data_record(info, syscall=200), id="bad-syscall"),
        pytest.param(lambda info: conn_record(info, role=3), id="conn-bad-role"),
    ],
)
def test_a_garbage_record_is_counted_and_decodes_to_none(info, codec, make):
    assert codec.decode(make(info)) is None
    assert codec.decode_errors == 1


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda info: sock_data_record(info, payload=REQUEST)[:40], id="data-cut-in-header"),
        pytest.param(lambda info: b"\x01", id="data-type-only"),
        pytest.param(lambda info: conn_record(info)[:60], id="conn-cut-in-header"),
    ],
)
def test_a_truncated_record_is_counted_and_decodes_to_none(info, codec, make):
    assert codec.decode(make(info)) is None
    assert codec.decode_errors == 1


def test_a_record_cut_inside_its_payload_keeps_the_bytes_that_are_there(info, codec):
    rec = sock_data_record(info, payload=REQUEST)

    event = codec.decode(rec[:-10])

    assert event.data == REQUEST[:-10]
    assert event.missing == 10


def test_decoding_goes_on_after_a_garbage_record(info, codec):
    assert codec.decode(b"\x7f" + bytes(200)) is None
    assert codec.decode(sock_data_record(info, payload=REQUEST)).data == REQUEST
    assert codec.decode_errors == 1


# ---------------------------------------------------------------------------------------------
# Not an object with BTF
# ---------------------------------------------------------------------------------------------


def test_a_file_that_is_not_elf_is_a_btf_error(tmp_path):
    path = tmp_path / "not-an-object.o"
    path.write_text("just text, not an ELF object\n")

    with pytest.raises(BtfError, match="ELF64"):
        BpfObjectInfo.from_file(path)


def test_an_empty_file_is_a_btf_error(tmp_path):
    path = tmp_path / "empty.o"
    path.write_bytes(b"")

    with pytest.raises(BtfError):
        BpfObjectInfo.from_file(path)


@pytest.mark.parametrize("keep", [4, 20, 100], ids=["magic-only", "cut-in-header", "cut-before-sections"])
def test_a_truncated_elf_file_is_a_btf_error(tmp_path, keep):
    path = tmp_path / "cut.o"
    path.write_bytes(OBJECT.read_bytes()[:keep])

    with pytest.raises(BtfError):
        BpfObjectInfo.from_file(path)


def test_an_elf_file_without_btf_is_a_btf_error():
    exe = Path(sys.executable).resolve()
    head = exe.read_bytes()[:6]
    if head[:4] != b"\x7fELF" or head[4:6] != b"\x02\x01":
        pytest.skip("the interpreter is not a little-endian ELF64 executable")

    with pytest.raises(BtfError, match="no .BTF section"):
        BpfObjectInfo.from_file(exe)


def test_a_record_with_forwarded_segments_decodes_head_and_segments_apart(info, codec):
    rec = sock_data_record(info, payload=b"\x00\x40\x00\x00\x00", length=70_000,
                           segments=[(16393, b"\x00\x00\x04\x01\x05\x00\x00\x00\x01"), (16402, b"abcd")])
    event = codec.decode(rec)
    assert event.data == b"\x00\x40\x00\x00\x00"
    assert event.segments == ((16393, b"\x00\x00\x04\x01\x05\x00\x00\x00\x01"), (16402, b"abcd"))
    assert event.missing == 16393 - 5
    assert codec.bad_segments == 0


def test_segments_out_of_order_or_past_the_payload_are_dropped_and_counted(info, codec):
    backwards = sock_data_record(info, payload=b"x" * 10, length=100, segments=[(50, b"ab"), (20, b"cd")])
    assert codec.decode(backwards).segments == ((50, b"ab"),)
    beyond = sock_data_record(info, payload=b"x" * 10, length=100, segments=[(99, b"abc")])
    assert codec.decode(beyond).segments == ()
    assert codec.bad_segments == 2


@pytest.mark.parametrize("field", ["direction", "role", "syscall"])
def test_an_enum_value_the_object_does_not_define_is_a_counted_decode_error(info, codec, field):
    values = {"direction": Direction.INGRESS, "role": Role.SERVER, "syscall": Syscall.READ}
    values[field] = 200
    rec = sock_data_record(info, payload=b"x", **values)
    assert codec.decode(rec) is None and codec.decode_errors == 1
