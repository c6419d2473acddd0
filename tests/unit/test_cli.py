"""The command line: usage errors, config errors, and `replay` of a recording (no kernel involved)."""

from __future__ import annotations

import json

import pytest

from otel_ebpf.bpf.btf import BpfObjectInfo
from otel_ebpf.bpf.events import EventType
from otel_ebpf.bpf.recording import RecordingWriter
from otel_ebpf.bpf.sockdata import object_path
from otel_ebpf.cli import main
from otel_ebpf.records import Direction, Role
from otel_ebpf.service.runtime import MallocTuning

from .stream.events_factory import conn_record, fixture_chunks, sock_data_record

OTEL_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                  "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_RESOURCE_ATTRIBUTES",
                  "OTEL_SERVICE_NAME")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------------------------
# Usage errors: argparse exits 2
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--port", "0"],
        ["run", "--port", "65536"],
        ["run", "--port", "http"],
        ["run", "--pid", "0"],
        ["run", "--pid", "-7"],
        ["run", "--pid", "init"],
        ["run", "--duration", "soon"],
        ["replay"],
        ["frobnicate"],
        [],
    ],
    ids=lambda argv: " ".join(argv) or "no-command",
)
def test_bad_arguments_exit_2_with_a_usage_message(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)

    assert exit_info.value.code == 2
    assert "usage: otel-ebpf" in capsys.readouterr().err


def test_a_bad_port_is_named_in_the_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--port", "70000"])

    assert "--port" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Config errors: exit code 2, one line naming the key
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "replay"])
def test_a_config_error_returns_2_with_one_line_naming_the_key(tmp_path, capsys, command):
    config = tmp_path / "config.yaml"
    config.write_text("receivers:\n  http:\n    ring_buffer_bytes: 5000\n")
    argv = ["run", "--config", str(config)] if command == "run" else ["replay", "unused.oebr", "--config",
                                                                       str(config)]

    assert main(argv) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n")
    assert "receivers.http.ring_buffer_bytes" in err
    assert err.startswith("otel-ebpf: config error: receivers.http.ring_buffer_bytes:")


def test_a_missing_config_file_returns_2_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"

    assert main(["run", "--config", str(missing)]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err


def test_an_unsupported_otlp_protocol_in_the_environment_returns_2_naming_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")

    assert main(["run"]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "OTEL_EXPORTER_OTLP_PROTOCOL" in err


# ---------------------------------------------------------------------------------------------
# replay
# ---------------------------------------------------------------------------------------------

PID = 4_000_000  # above the default pid_max: no /proc entry to read


def record_one_exchange(path, info: BpfObjectInfo, request: bytes, response: bytes) -> None:
    """A server connection on 8080 that reads ``request`` and writes ``response``, then closes."""
    common = dict(tgid=PID, fd=9, sock_id=0xFFFF_8880_0000_2000, role=Role.SERVER,
                  local=("127.0.0.1", 8080), remote=("127.0.0.1", 50500))
    with RecordingWriter(path, clock_offset_ns=1_700_000_000_000_000_000, info=info) as writer:
        writer.write(conn_record(info, kind=EventType.CONN_OPEN, ts=1_000_000, comm=b"fixture-server", **common))
        writer.write(sock_data_record(info, direction=Direction.INGRESS, ts_enter=2_000_000, ts_exit=2_100_000,
                                      payload=request, **common))
        writer.write(sock_data_record(info, direction=Direction.EGRESS, ts_enter=3_000_000, ts_exit=3_500_000,
                                      payload=response, **common))
        writer.write(conn_record(info, kind=EventType.CONN_CLOSE, ts=4_000_000, **common))


def spans_in(path) -> list[dict]:
    spans = []
    for line in path.read_text().splitlines():
        for resource_spans in json.loads(line)["resourceSpans"]:
            for scope_spans in resource_spans["scopeSpans"]:
                spans.extend(scope_spans["spans"])
    return spans


def attributes(span: dict) -> dict:
    return {a["key"]: next(iter(a["value"].values())) for a in span.get("attributes", [])}


def test_replay_of_a_recording_writes_its_spans_to_the_default_data_directory(tmp_path, monkeypatch, capsys):
    (_, request), (_, response) = fixture_chunks("curl")[:2]  # GET /items/1 and its 200
    recording = tmp_path / "capture.oebr"
    record_one_exchange(recording, BpfObjectInfo.from_file(object_path()), request, response)
    monkeypatch.chdir(tmp_path)

    assert main(["replay", str(recording)]) == 0

    traces = tmp_path / "otel-ebpf-data" / "traces.jsonl"
    [span] = spans_in(traces)
    attrs = attributes(span)
    assert attrs["url.path"] == "/items/1"
    assert attrs["http.request.method"] == "GET"
    assert str(attrs["http.response.status_code"]) == "200"
    assert int(span["startTimeUnixNano"]) == 1_700_000_000_000_000_000 + 2_100_000
    assert int(span["endTimeUnixNano"]) == 1_700_000_000_000_000_000 + 3_500_000
    assert "1 exchanges" in capsys.readouterr().err


def test_replay_of_a_file_that_is_not_a_recording_returns_1_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bogus = tmp_path / "bogus.oebr"
    bogus.write_text("not a recording\n")

    assert main(["replay", str(bogus)]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an otel-ebpf recording" in err


# ---------------------------------------------------------------------------------------------
# Process memory: malloc arenas capped, free heap given back periodically
# ---------------------------------------------------------------------------------------------


def test_malloc_tuning_caps_arenas_unless_the_environment_already_does():
    tuning = MallocTuning(environ={})
    assert tuning.applied == {"MALLOC_ARENA_MAX": 2, "MALLOC_MMAP_THRESHOLD_": 256 * 1024}
    tuning.trim()
    assert MallocTuning(environ={"MALLOC_ARENA_MAX": "8"}).applied == {"MALLOC_MMAP_THRESHOLD_": 256 * 1024}


def test_malloc_trim_runs_at_most_once_per_interval(monkeypatch):
    tuning = MallocTuning(environ={}, trim_interval_s=5.0)
    calls = []
    monkeypatch.setattr(tuning, "trim", lambda: calls.append(1))
    for now in (100.0, 101.0, 104.9, 105.0, 106.0, 110.5):
        tuning.maybe_trim(now)
    assert len(calls) == 3  # at 100, 105 and 110.5
