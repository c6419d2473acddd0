"""Recordings of raw ring-buffer records: written, read back, refused when they do not fit."""

from __future__ import annotations

import dataclasses
import json

import pytest

from otel_ebpf.bpf.btf import BpfObjectInfo
from otel_ebpf.bpf.events import EventType, SockDataCodec
from otel_ebpf.bpf.recording import Recording, RecordingWriter, layout_signature
from otel_ebpf.bpf.sockdata import object_path
from otel_ebpf.records import Direction

from ..stream.events_factory import conn_record, fixture_chunks, sock_data_record

CURL = fixture_chunks("curl")
OFFSET = 1_700_000_000_123_456_789


@pytest.fixture(scope="module")
def info() -> BpfObjectInfo:
    return BpfObjectInfo.from_file(object_path())


@pytest.fixture
def records(info) -> list[bytes]:
    return [
        conn_record(info, kind=EventType.CONN_OPEN, ts=1_000),
        sock_data_record(info, direction=Direction.INGRESS, payload=CURL[0][1], ts_enter=2_000, ts_exit=2_100),
        sock_data_record(info, direction=Direction.EGRESS, payload=CURL[1][1], ts_enter=3_000, ts_exit=3_100),
        conn_record(info, kind=EventType.CONN_CLOSE, ts=4_000),
    ]


def write(path, info, records) -> int:
    with RecordingWriter(path, clock_offset_ns=OFFSET, info=info) as writer:
        for rec in records:
            writer.write(rec)
    return writer.count


def test_records_written_are_read_back_byte_for_byte_with_the_clock_offset(tmp_path, info, records):
    path = tmp_path / "capture.oebr"
    assert write(path, info, records) == 4

    recording = Recording.open(path)

    assert recording.clock_offset_ns == OFFSET
    assert list(recording.records()) == records
    recording.check_layout(info)  # same object: accepted


def test_records_read_back_decode_to_the_events_written(tmp_path, info, records):
    path = tmp_path / "capture.oebr"
    write(path, info, records)
    codec = SockDataCodec(info)

    events = [codec.decode(raw) for raw in Recording.open(path).records()]

    assert [type(e).__name__ for e in events] == ["ConnEvent", "SockDataEvent", "SockDataEvent", "ConnEvent"]
    assert events[1].data == CURL[0][1] and events[2].data == CURL[1][1]


def test_a_recording_without_records_reads_as_empty(tmp_path, info):
    path = tmp_path / "empty.oebr"
    write(path, info, [])

    assert list(Recording.open(path).records()) == []


def test_records_can_be_read_more_than_once(tmp_path, info, records):
    path = tmp_path / "capture.oebr"
    write(path, info, records)
    recording = Recording.open(path)

    assert list(recording.records()) == list(recording.records()) == records


def test_close_is_safe_twice(tmp_path, info):
    writer = RecordingWriter(tmp_path / "capture.oebr", clock_offset_ns=0, info=info)
    writer.close()
    writer.close()
    assert Recording.open(tmp_path / "capture.oebr").clock_offset_ns == 0


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 50], ids=lambda n: f"last-{n}-bytes-lost")
def test_a_record_cut_short_at_the_end_is_dropped_and_the_ones_before_kept(tmp_path, info, records, cut):
    path = tmp_path / "killed.oebr"
    write(path, info, records)
    path.write_bytes(path.read_bytes()[:-cut])

    assert list(Recording.open(path).records()) == records[:-1]


def test_a_length_prefix_cut_short_ends_the_records(tmp_path, info, records):
    path = tmp_path / "killed.oebr"
    write(path, info, records)
    path.write_bytes(path.read_bytes() + b"\x10\x00")  # the recorder died inside the next length prefix

    assert list(Recording.open(path).records()) == records


def test_a_recording_made_with_another_event_layout_is_refused(tmp_path, info, records):
    path = tmp_path / "old.oebr"
    write(path, info, records)
    data = path.read_bytes()
    header_len = int.from_bytes(data[8:12], "little")
    header = json.loads(data[12 : 12 + header_len])
    header["layout"][0][1] += 4  # the first member moved
    new_header = json.dumps(header).encode()
    path.write_bytes(data[:8] + len(new_header).to_bytes(4, "little") + new_header + data[12 + header_len :])

    recording = Recording.open(path)

    with pytest.raises(ValueError, match="different event layout"):
        recording.check_layout(info)
    assert list(recording.records()) == records  # the records themselves are intact


def test_an_object_with_another_layout_refuses_a_recording(tmp_path, info, records, monkeypatch):
    path = tmp_path / "capture.oebr"
    write(path, info, records)
    real_layout = info.btf.struct_layout

    def grown(name):
        layout = real_layout(name)
        if name == "conn_event":
            layout = [dataclasses.replace(m, size=m.size * 2) if m.name == "comm" else m for m in layout]
        return layout

    monkeypatch.setattr(info.btf, "struct_layout", grown)
    assert layout_signature(info) != Recording.open(path).layout

    with pytest.raises(ValueError, match="different event layout"):
        Recording.open(path).check_layout(info)


@pytest.mark.parametrize(
    "content",
    [b"", b"OTEBPF", b"GET / HTTP/1.1\r\n\r\n", b"\x7fELF\x02\x01\x01\x00" + bytes(64), b"OTEBPFR2\x02\x00\x00\x00{}"],
    ids=["empty", "short-magic", "text", "elf", "other-version"],
)
def test_a_file_that_is_not_a_recording_is_refused(tmp_path, content):
    path = tmp_path / "not-a-recording"
    path.write_bytes(content)

    with pytest.raises(ValueError, match="not an otel-ebpf recording"):
        Recording.open(path)


def test_a_recording_whose_header_is_cut_short_is_refused(tmp_path, info):
    path = tmp_path / "cut.oebr"
    write(path, info, [])
    path.write_bytes(path.read_bytes()[:30])

    with pytest.raises(ValueError):
        Recording.open(path)
