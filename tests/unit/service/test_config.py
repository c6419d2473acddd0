"""Collector-style YAML configuration: loading, the embedded default, and errors that name their YAML key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from otel_ebpf.processors.redaction import RedactionConfig
from otel_ebpf.processors.routes import RoutesConfig
from otel_ebpf.receivers.http.config import HttpReceiverConfig
from otel_ebpf.receivers.tcpflow.config import TcpFlowReceiverConfig
from otel_ebpf.service.config import (
    DEFAULT_DATA_DIR,
    ConfigError,
    ExporterConfig,
    PipelineConfig,
    ServiceConfig,
    parse_duration,
)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "config.yaml"
RECEIVER_TESTDATA = ROOT / "src" / "otel_ebpf" / "receivers" / "http" / "testdata" / "config.yaml"

# The smallest valid configuration; each error case below changes one thing in it.
MINIMAL = {
    "receivers": {"http": {}},
    "exporters": {"console": {}},
    "service": {"pipelines": {"traces": {"receivers": ["http"], "exporters": ["console"]}}},
}


def minimal(**changes) -> dict:
    """MINIMAL with ``changes`` applied: keys are dotted paths, a value of ... deletes the key."""
    data = copy.deepcopy(MINIMAL)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if value is ...:
            del node[last]
        else:
            node[last] = value
    return data


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        ServiceConfig.from_dict(data)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# Loading the shipped files
# ---------------------------------------------------------------------------------------------


def test_the_example_config_loads_with_every_setting_it_spells_out():
    cfg = ServiceConfig.from_yaml_file(EXAMPLE)

    assert cfg.receivers == {"http": HttpReceiverConfig(max_capture_bytes=4096, ports=[], pids=[], idle_timeout=300.0),
                             "tcpflow": TcpFlowReceiverConfig(flow_interval=15.0)}
    assert isinstance(cfg.processors["redaction"], RedactionConfig)
    assert cfg.processors["redaction"].extra_headers == ["x-api-key"]
    assert cfg.processors["routes"] == RoutesConfig(patterns=["/users/{id}", "/api/v1/items/{item_id}/tags"])
    assert {name: e.type for name, e in cfg.exporters.items()} == {
        "otlp": "otlp", "otlphttp": "otlphttp", "file": "file", "console": "console", "summary": "summary",
    }
    assert cfg.exporters["otlp"].endpoint == "http://127.0.0.1:4317"
    assert cfg.exporters["otlphttp"].endpoint == "http://127.0.0.1:4318"
    assert cfg.exporters["file"].directory == "./otel-ebpf-data"
    assert cfg.exporters["summary"].interval == 2.0
    assert cfg.metrics_interval == 10.0
    assert cfg.pipelines == {
        "traces": PipelineConfig(receivers=["http"], processors=["stitching", "redaction", "routes"],
                                 exporters=["otlp", "file", "summary"]),
        "metrics": PipelineConfig(receivers=["http", "tcpflow"], processors=["stitching", "redaction", "routes"],
                                  exporters=["otlp", "file"]),
        "logs": PipelineConfig(receivers=["tcpflow"], processors=[], exporters=["otlp", "file", "summary"]),
    }


def test_the_http_receiver_testdata_loads_inside_a_minimal_service():
    data = yaml.safe_load(RECEIVER_TESTDATA.read_text())
    data.setdefault("exporters", {"console": {}})
    data.setdefault("service", MINIMAL["service"])

    cfg = ServiceConfig.from_dict(data)

    assert cfg.receivers["http"] == HttpReceiverConfig(max_capture_bytes=4096, ports=[8080], idle_timeout=120.0)


def test_from_yaml_and_from_yaml_file_agree(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(EXAMPLE.read_text())

    assert ServiceConfig.from_yaml_file(path) == ServiceConfig.from_yaml(EXAMPLE.read_text())


def test_a_missing_config_file_is_a_config_error_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        ServiceConfig.from_yaml_file(tmp_path / "nope.yaml")


def test_text_that_is_not_yaml_is_a_config_error():
    with pytest.raises(ConfigError, match="not valid YAML"):
        ServiceConfig.from_yaml("receivers: [http\n")


def test_a_top_level_that_is_not_a_mapping_is_a_config_error():
    with pytest.raises(ConfigError, match="^config: the top level must be a mapping"):
        ServiceConfig.from_yaml("- receivers\n- exporters\n")


def test_an_empty_file_asks_for_a_pipeline():
    with pytest.raises(ConfigError, match="^service.pipelines: define at least one pipeline"):
        ServiceConfig.from_yaml("")


# ---------------------------------------------------------------------------------------------
# Component ids: <type> or <type>/<name>
# ---------------------------------------------------------------------------------------------


def test_components_may_carry_a_name_after_their_type():
    cfg = ServiceConfig.from_yaml(
        """
        receivers:
          http/frontend: {ports: [8080]}
          http/backend: {ports: [9090]}
        processors:
          routes/api: {patterns: ["/api/{id}"]}
        exporters:
          otlp: {endpoint: http://collector-a:4317}
          otlp/secondary: {endpoint: http://collector-b:4317, compression: gzip}
        service:
          pipelines:
            traces: {receivers: [http/frontend, http/backend], processors: [routes/api], exporters: [otlp]}
            traces/copy: {receivers: [http/frontend], exporters: [otlp/secondary]}
            metrics/backend: {receivers: [http/backend], exporters: [otlp, otlp/secondary]}
        """
    )

    assert cfg.receivers["http/frontend"].ports == [8080] and cfg.receivers["http/backend"].ports == [9090]
    assert isinstance(cfg.processors["routes/api"], RoutesConfig)
    assert cfg.exporters["otlp/secondary"] == ExporterConfig(type="otlp", endpoint="http://collector-b:4317",
                                                             compression="gzip")
    assert set(cfg.pipelines) == {"traces", "traces/copy", "metrics/backend"}
    assert cfg.pipelines["metrics/backend"].exporters == ["otlp", "otlp/secondary"]


@pytest.mark.parametrize(
    ("section", "name", "key"),
    [
        ("receivers", "tcp", "receivers.tcp"),
        ("receivers", "HTTP", "receivers.HTTP"),
        ("processors", "batch", "processors.batch"),
        ("exporters", "kafka/eu", "exporters.kafka/eu"),
        ("exporters", "secondary/otlp", "exporters.secondary/otlp"),
    ],
)
def test_an_unknown_component_type_names_its_key(section, name, key):
    data = minimal(**{f"{section}.{name}": {}})

    message = error_of(data)

    assert message.startswith(f"{key}: unknown component type")


def test_a_component_id_with_an_empty_name_after_the_slash_names_its_key():
    data = minimal(**{"exporters.otlp/": {}, "service.pipelines.traces.exporters": ["otlp/"]})

    assert error_of(data).startswith("exporters.otlp/:")


# ---------------------------------------------------------------------------------------------
# Every error names its YAML key
# ---------------------------------------------------------------------------------------------

ERRORS = {
    # top level and service section
    "unknown-top-level-section": ({"extensions": {}}, "extensions"),
    "section-not-a-mapping": ({"receivers": ["http"]}, "receivers"),
    "unknown-service-setting": ({"service.telemetry": {}}, "service.telemetry"),
    "bad-metrics-interval": ({"service.metrics_interval": "often"}, "service.metrics_interval"),
    "zero-metrics-interval": ({"service.metrics_interval": 0}, "service.metrics_interval"),
    # receivers.http
    "unknown-receiver-setting": ({"receivers.http.max_capture": 10}, "receivers.http.max_capture"),
    "receiver-not-a-mapping": ({"receivers.http": [8080]}, "receivers.http"),
    "zero-max-capture-bytes": ({"receivers.http.max_capture_bytes": 0}, "receivers.http.max_capture_bytes"),
    "huge-max-capture-bytes": ({"receivers.http.max_capture_bytes": 16385}, "receivers.http.max_capture_bytes"),
    "text-max-capture-bytes": ({"receivers.http.max_capture_bytes": "4k"}, "receivers.http.max_capture_bytes"),
    "ring-not-power-of-two": ({"receivers.http.ring_buffer_bytes": 5000}, "receivers.http.ring_buffer_bytes"),
    "ring-too-small": ({"receivers.http.ring_buffer_bytes": 2048}, "receivers.http.ring_buffer_bytes"),
    "port-zero": ({"receivers.http.ports": [0]}, "receivers.http.ports"),
    "port-too-big": ({"receivers.http.ports": [65536]}, "receivers.http.ports"),
    "port-as-text": ({"receivers.http.ports": ["8080"]}, "receivers.http.ports"),
    "pid-zero": ({"receivers.http.pids": [0]}, "receivers.http.pids"),
    "max-connections-zero": ({"receivers.http.max_connections": 0}, "receivers.http.max_connections"),
    "poll-interval-zero": ({"receivers.http.poll_interval_ms": 0}, "receivers.http.poll_interval_ms"),
    "idle-timeout-words": ({"receivers.http.idle_timeout": "5 minutes"}, "receivers.http.idle_timeout"),
    "idle-timeout-zero": ({"receivers.http.idle_timeout": "0s"}, "receivers.http.idle_timeout"),
    "named-receiver-setting": ({"receivers.http/b": {"ports": [-1]},
                                "service.pipelines.traces.receivers": ["http/b"]}, "receivers.http/b.ports"),
    # processors
    "unknown-processor-setting": ({"processors.redaction": {"headers": ["x"]}}, "processors.redaction.headers"),
    # exporters
    "unknown-exporter-setting": ({"exporters.console.endpoint_url": "x"}, "exporters.console.endpoint_url"),
    "endpoint-without-scheme": ({"exporters.otlp": {"endpoint": "localhost:4317"},
                                 "service.pipelines.traces.exporters": ["otlp"]}, "exporters.otlp.endpoint"),
    "endpoint-other-scheme": ({"exporters.otlphttp": {"endpoint": "grpc://collector:4317"}},
                              "exporters.otlphttp.endpoint"),
    "compression-zstd": ({"exporters.otlp": {"compression": "zstd"}}, "exporters.otlp.compression"),
    "headers-not-strings": ({"exporters.otlp": {"headers": {"x-team": 7}}}, "exporters.otlp.headers"),
    "timeout-words": ({"exporters.otlp": {"timeout": "soon"}}, "exporters.otlp.timeout"),
    "timeout-negative": ({"exporters.otlp": {"timeout": "-1s"}}, "exporters.otlp.timeout"),
    "interval-unitless-text": ({"exporters.summary": {"interval": "2"}}, "exporters.summary.interval"),
    "interval-zero": ({"exporters.summary": {"interval": 0}}, "exporters.summary.interval"),
    "max-bytes-tiny": ({"exporters.file": {"max_bytes": 100}}, "exporters.file.max_bytes"),
    "backups-negative": ({"exporters.file": {"backups": -1}}, "exporters.file.backups"),
    "named-exporter-setting": ({"exporters.otlp/secondary": {"compression": "br"}},
                               "exporters.otlp/secondary.compression"),
    # pipelines
    "pipeline-type": ({"service.pipelines.profiles": {"receivers": ["http"], "exporters": ["console"]}},
                      "service.pipelines.profiles"),
    "logs-from-http": ({"service.pipelines.logs": {"receivers": ["http"], "exporters": ["console"]}},
                       "service.pipelines.logs.receivers"),
    "pipeline-type-with-name": ({"service.pipelines.profiles/x": {"receivers": ["http"], "exporters": ["console"]}},
                                "service.pipelines.profiles/x"),
    "undefined-exporter": ({"service.pipelines.traces.exporters": ["console", "jaeger"]},
                           "service.pipelines.traces.exporters"),
    "undefined-receiver": ({"service.pipelines.traces.receivers": ["http/other"]},
                           "service.pipelines.traces.receivers"),
    "undefined-processor": ({"service.pipelines.traces.processors": ["batch"]},
                            "service.pipelines.traces.processors"),
    "no-exporters": ({"service.pipelines.traces.exporters": []}, "service.pipelines.traces.exporters"),
    "no-receivers": ({"service.pipelines.traces.receivers": ...}, "service.pipelines.traces.receivers"),
    "names-not-a-list": ({"service.pipelines.traces.exporters": "console"}, "service.pipelines.traces.exporters"),
    "unknown-pipeline-setting": ({"service.pipelines.traces.connectors": []}, "service.pipelines.traces.connectors"),
    "no-pipelines": ({"service.pipelines": {}}, "service.pipelines"),
}


@pytest.mark.parametrize(("changes", "key"), ERRORS.values(), ids=ERRORS.keys())
def test_each_validation_error_starts_with_its_yaml_key(changes, key):
    message = error_of(minimal(**changes))

    assert message.startswith(f"{key}:"), message


def test_an_undefined_exporter_error_names_the_missing_component():
    message = error_of(minimal(**{"service.pipelines.traces.exporters": ["console", "jaeger"]}))

    assert "'jaeger'" in message and "exporters section" in message


def test_a_processor_error_names_the_processor_and_its_setting():
    message = error_of(minimal(**{"processors.routes": {"patterns": ["users/{id}"]}}))

    assert message.startswith("processors.routes")
    assert "patterns" in message


def test_a_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


WRONG_TYPES = {  # each once slipped through with a message that did not name the key
    "ports-scalar": ({"receivers.http.ports": 8080}, "receivers.http.ports",
                     "receivers/http/config.py validate() iterates self.ports (line 33) without checking it is a "
                     "list: TypeError becomes 'receivers.http: 'int' object is not iterable'"),
    "pids-scalar": ({"receivers.http.pids": 42}, "receivers.http.pids",
                    "receivers/http/config.py validate() iterates self.pids (line 30) without checking it is a list"),
    "max-capture-bytes-bool": ({"receivers.http.max_capture_bytes": True}, "receivers.http.max_capture_bytes",
                               "receivers/http/config.py line 25: isinstance(True, int) holds, so `true` is "
                               "accepted as 1 byte"),
    "max-bytes-text": ({"exporters.file": {"max_bytes": "64MiB"}}, "exporters.file.max_bytes",
                       "service/config.py ExporterConfig.validate compares max_bytes < 4096 without a type check: "
                       "the TypeError is reported as 'exporters.file: '<' not supported ...'"),
    "backups-text": ({"exporters.file": {"backups": "three"}}, "exporters.file.backups",
                     "service/config.py ExporterConfig.validate: no type check of backups"),
    "endpoint-number": ({"exporters.otlp": {"endpoint": 4317}}, "exporters.otlp.endpoint",
                        "service/config.py ExporterConfig.validate: re.match on a non-string endpoint raises "
                        "TypeError, reported as 'exporters.otlp: expected string ...'"),
    "insecure-text": ({"exporters.otlp": {"insecure": "false"}}, "exporters.otlp.insecure",
                      "service/config.py ExporterConfig.validate never checks insecure: the string 'false' is "
                      "accepted and is truthy"),
    "type-override": ({"exporters.otlp": {"type": "file"}}, "exporters.otlp.type",
                      "service/config.py line 143 builds {'type': etype, **body}: a YAML `type:` key is accepted "
                      "and overrides the type the component id names"),
}


@pytest.mark.parametrize(
    ("changes", "key"),
    [pytest.param(changes, key, id=name) for name, (changes, key, _why) in WRONG_TYPES.items()],
)
def test_a_value_of_the_wrong_type_is_an_error_naming_its_yaml_key(changes, key):
    message = error_of(minimal(**changes))

    assert message.startswith(f"{key}:"), message


# ---------------------------------------------------------------------------------------------
# The embedded default (`otel-ebpf run` without --config)
# ---------------------------------------------------------------------------------------------


def test_the_embedded_default_without_an_otlp_endpoint_writes_files_and_the_summary():
    cfg = ServiceConfig.embedded_default(environ={})

    assert cfg.receivers == {"http": HttpReceiverConfig(), "tcpflow": TcpFlowReceiverConfig()}
    assert set(cfg.processors) == {"stitching", "redaction", "routes"}
    assert {name: e.type for name, e in cfg.exporters.items()} == {"file": "file", "summary": "summary"}
    assert cfg.exporters["file"].directory == DEFAULT_DATA_DIR
    assert cfg.pipelines["traces"].exporters == ["file", "summary"]
    assert cfg.pipelines["metrics"].exporters == ["file"]
    assert cfg.pipelines["logs"].exporters == ["file", "summary"]  # flow logs; the summary's NETWORK table
    assert cfg.pipelines["metrics"].receivers == ["http", "tcpflow"] and cfg.pipelines["logs"].receivers == ["tcpflow"]
    assert cfg.pipelines["traces"].processors == cfg.pipelines["metrics"].processors == ["stitching", "redaction", "routes"]


def test_an_empty_otlp_endpoint_variable_counts_as_unset():
    cfg = ServiceConfig.embedded_default(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": ""})

    assert set(cfg.exporters) == {"file", "summary"}


@pytest.mark.parametrize(
    ("environ", "exporter"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlphttp"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
         "otlphttp"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": " GRPC "}, "otlp"),
    ],
    ids=["default-protocol", "http-protobuf", "grpc", "grpc-spaced-upper-case"],
)
def test_an_otlp_endpoint_in_the_environment_adds_the_exporter_of_its_protocol(environ, exporter):
    cfg = ServiceConfig.embedded_default(environ=environ)

    assert set(cfg.exporters) == {"file", "summary", exporter}
    assert cfg.exporters[exporter].type == exporter
    assert cfg.exporters[exporter].endpoint is None  # the SDK exporter reads the OTEL_* variables itself
    assert cfg.pipelines["traces"].exporters == ["file", "summary", exporter]
    assert cfg.pipelines["metrics"].exporters == ["file", exporter]
    assert cfg.pipelines["logs"].exporters == ["file", "summary", exporter]


def test_a_per_signal_endpoint_adds_the_exporter_to_that_signal_only():
    cfg = ServiceConfig.embedded_default(environ={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert cfg.pipelines["traces"].exporters == ["file", "summary", "otlphttp"]
    assert cfg.pipelines["metrics"].exporters == ["file"]

    cfg = ServiceConfig.embedded_default(environ={"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4317",
                                                  "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"})
    assert cfg.pipelines["traces"].exporters == ["file", "summary"]
    assert cfg.pipelines["metrics"].exporters == ["file", "otlp"]


def test_go_style_durations_and_non_finite_numbers():
    assert parse_duration("1m30s", "k") == 90.0
    assert parse_duration("100us", "k") == pytest.approx(0.0001)
    for bad in (float("inf"), float("nan"), "1x", "s", "-1s"):
        with pytest.raises(ConfigError, match="^k:"):
            parse_duration(bad, "k")


@pytest.mark.parametrize("protocol", ["http/json", "grpc-web", "kafka"])
def test_an_unsupported_otlp_protocol_is_a_config_error_naming_the_variable(protocol):
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}

    with pytest.raises(ConfigError, match="^OTEL_EXPORTER_OTLP_PROTOCOL:") as info:
        ServiceConfig.embedded_default(environ=environ)
    assert protocol in str(info.value)


def test_the_otlp_protocol_is_ignored_without_an_endpoint():
    cfg = ServiceConfig.embedded_default(environ={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})

    assert set(cfg.exporters) == {"file", "summary"}


# ---------------------------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0), (3, 3.0), (2.5, 2.5), ("500ms", 0.5), ("10s", 10.0), ("1.5s", 1.5), ("2m", 120.0), ("1h", 3600.0),
        (" 10s ", 10.0), ("10 s", 10.0), ("0ms", 0.0),
    ],
)
def test_parse_duration_reads_numbers_as_seconds_and_strings_with_a_unit(value, seconds):
    assert parse_duration(value, "k") == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [True, False, -1, -0.5, "10", "", "-1s", "1d", "10S", "ten seconds", "1e3s", "s", None, [10]],
    ids=repr,
)
def test_parse_duration_refuses_anything_else_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"^exporters\.summary\.interval: "):
        parse_duration(value, "exporters.summary.interval")
