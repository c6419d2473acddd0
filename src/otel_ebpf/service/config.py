"""Collector-style YAML configuration: receivers / processors / exporters / service.pipelines.

Usage::

    cfg = ServiceConfig.from_yaml_file("examples/config.yaml")    # raises ConfigError naming the YAML key
    cfg = ServiceConfig.embedded_default(environ=os.environ)      # what `otel-ebpf run` uses with no --config

Each component is ``<type>`` or ``<type>/<name>`` (as in the OpenTelemetry
Collector); its settings go to that type's config class, whose ``validate()``
reports errors by YAML key. Pipelines are ``traces`` and ``metrics`` (names may
carry ``/suffix``); every component they name must be defined above.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..processors.redaction import RedactionConfig
from ..processors.routes import RoutesConfig
from ..processors.stitching import StitchingConfig
from ..receivers.http.config import HttpReceiverConfig
from ..kube.metadata import KubeConfig
from ..receivers.tcpflow.config import TcpFlowReceiverConfig
from ..telemetry.servicegraph import ServiceGraphConfig

__all__ = ["ConfigError", "ServiceConfig", "ExporterConfig", "PipelineConfig", "parse_duration"]

DEFAULT_DATA_DIR = "./otel-ebpf-data"


class ConfigError(ValueError):
    """Invalid configuration; the message starts with the YAML key at fault."""


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: Any, key: str) -> float:
    """Seconds from a number of seconds or a Go-style duration: "500ms", "10s", "2m", "1h", "1m30s"."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration like 10s, got {value!r}")
    if isinstance(value, (int, float)):
        if not 0 <= value < 10**9:  # also refuses inf and nan
            raise ConfigError(f"{key}: must be a finite, non-negative number of seconds")
        return float(value)
    text = str(value).replace(" ", "")  # "10 s" reads as "10s"
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"{key}: expected a duration like 500ms, 10s, 2m or 1m30s, got {value!r}")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


EXPORTER_TYPES = ("otlp", "otlphttp", "console", "file", "summary")
RECEIVER_TYPES = ("http", "tcpflow")
PROCESSOR_TYPES = ("redaction", "routes", "stitching", "kubernetes", "servicegraph")


@dataclass
class ExporterConfig:
    """Settings of one exporter; which keys apply depends on ``type``."""

    type: str
    endpoint: str | None = None  # otlp/otlphttp; None: OTEL_EXPORTER_OTLP_(TRACES_|METRICS_)ENDPOINT or default
    headers: dict[str, str] = field(default_factory=dict)  # otlp/otlphttp (OTEL_EXPORTER_OTLP_HEADERS also works)
    insecure: bool | None = None  # otlp (gRPC): plaintext; default from the endpoint scheme
    compression: str | None = None  # gzip | none
    timeout: float | None = None  # seconds
    directory: str = DEFAULT_DATA_DIR  # file: where traces.jsonl / metrics.jsonl go
    max_bytes: int = 64 * 1024 * 1024  # file: rotate past this size
    backups: int = 3  # file: rotated files kept
    interval: float = 2.0  # summary: refresh period (seconds)

    def validate(self, key: str) -> None:
        for name, kinds in (("endpoint", (str, type(None))), ("insecure", (bool, type(None))),
                            ("compression", (str, type(None))), ("directory", (str,))):
            if not isinstance(getattr(self, name), kinds):
                raise ConfigError(f"{key}.{name}: expected {' or '.join(k.__name__ for k in kinds if k is not type(None))}"
                                  f", got {getattr(self, name)!r}")
        for name in ("max_bytes", "backups"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ConfigError(f"{key}.{name}: expected an integer, got {v!r}")
        if self.type not in EXPORTER_TYPES:
            raise ConfigError(f"{key}: unknown exporter type {self.type!r} (known: {', '.join(EXPORTER_TYPES)})")
        if self.endpoint is not None and not re.match(r"^https?://[^/\s]+", self.endpoint):
            raise ConfigError(f"{key}.endpoint: expected http://host:port or https://host:port, got {self.endpoint!r}")
        if self.compression not in (None, "gzip", "none"):
            raise ConfigError(f"{key}.compression: must be gzip or none")
        if not isinstance(self.headers, dict) or not all(isinstance(v, str) for v in self.headers.values()):
            raise ConfigError(f"{key}.headers: must be a mapping of header name to string value")
        if self.max_bytes < 4096:
            raise ConfigError(f"{key}.max_bytes: must be at least 4096")
        if self.backups < 0:
            raise ConfigError(f"{key}.backups: must not be negative")
        if self.interval <= 0:
            raise ConfigError(f"{key}.interval: must be positive")


@dataclass
class PipelineConfig:
    receivers: list[str]
    processors: list[str]
    exporters: list[str]


@dataclass
class ServiceConfig:
    receivers: dict[str, HttpReceiverConfig | TcpFlowReceiverConfig]
    processors: dict[str, Any]  # name -> RedactionConfig | RoutesConfig | StitchingConfig | KubeConfig | ...
    exporters: dict[str, ExporterConfig]
    pipelines: dict[str, PipelineConfig]
    metrics_interval: float = 10.0  # seconds between metric exports

    # ---- loading ----
    @classmethod
    def from_yaml_file(cls, path: str | Path) -> ServiceConfig:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        return cls.from_yaml(text)

    @classmethod
    def from_yaml(cls, text: str) -> ServiceConfig:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config is not valid YAML: {e}") from None
        return cls.from_dict(data or {})

    @classmethod
    def from_dict(cls, data: dict) -> ServiceConfig:
        if not isinstance(data, dict):
            raise ConfigError("config: the top level must be a mapping")
        unknown = set(data) - {"receivers", "processors", "exporters", "service"}
        if unknown:
            raise ConfigError(f"{sorted(unknown)[0]}: unknown top-level section")
        receivers = {}
        for name, body in _mapping(data.get("receivers"), "receivers").items():
            key = f"receivers.{name}"
            body = dict(_mapping(body, key))
            rtype = _type_of(name, key, RECEIVER_TYPES)
            for dkey in ("idle_timeout", "flow_interval"):
                if dkey in body:
                    body[dkey] = parse_duration(body[dkey], f"{key}.{dkey}")
            klass = HttpReceiverConfig if rtype == "http" else TcpFlowReceiverConfig
            receivers[name] = _component(klass, rtype, body, key)
        processors = {}
        for name, body in _mapping(data.get("processors"), "processors").items():
            ptype = _type_of(name, f"processors.{name}", PROCESSOR_TYPES)
            klass = {"redaction": RedactionConfig, "routes": RoutesConfig, "stitching": StitchingConfig,
                     "kubernetes": KubeConfig, "servicegraph": ServiceGraphConfig}[ptype]
            body = dict(_mapping(body, f"processors.{name}"))
            if ptype == "servicegraph" and "wait" in body:
                body["wait"] = parse_duration(body["wait"], f"processors.{name}.wait")
            processors[name] = _component(klass, ptype, body, f"processors.{name}")
        exporters = {}
        for name, body in _mapping(data.get("exporters"), "exporters").items():
            etype = _type_of(name, f"exporters.{name}", EXPORTER_TYPES)
            body = dict(_mapping(body, f"exporters.{name}"))
            if "type" in body:
                raise ConfigError(f"exporters.{name}.type: unknown setting (the type is the name before '/')")
            for dkey in ("timeout", "interval"):
                if dkey in body:
                    body[dkey] = parse_duration(body[dkey], f"exporters.{name}.{dkey}")
            exporters[name] = _component(ExporterConfig, etype, {"type": etype, **body}, f"exporters.{name}")
        service = _mapping(data.get("service"), "service")
        unknown = set(service) - {"pipelines", "metrics_interval"}
        if unknown:
            raise ConfigError(f"service.{sorted(unknown)[0]}: unknown setting")
        pipelines = {}
        for pname, body in _mapping(service.get("pipelines"), "service.pipelines").items():
            key = f"service.pipelines.{pname}"
            if pname.split("/")[0] not in ("traces", "metrics", "logs"):
                raise ConfigError(f"{key}: pipeline type must be traces, metrics or logs")
            body = _mapping(body, key)
            unknown = set(body) - {"receivers", "processors", "exporters"}
            if unknown:
                raise ConfigError(f"{key}.{sorted(unknown)[0]}: unknown setting")
            pipe = PipelineConfig(
                receivers=_names(body.get("receivers"), f"{key}.receivers", receivers, required=True),
                processors=_names(body.get("processors"), f"{key}.processors", processors),
                exporters=_names(body.get("exporters"), f"{key}.exporters", exporters, required=True),
            )
            signal = pname.split("/")[0]
            kinds = {"http": {"traces", "metrics"}, "tcpflow": {"metrics", "logs"}}
            for r in pipe.receivers:
                rtype = "http" if isinstance(receivers[r], HttpReceiverConfig) else "tcpflow"
                if signal not in kinds[rtype]:
                    raise ConfigError(f"{key}.receivers: {r} ({rtype}) produces no {signal} "
                                      f"(it feeds {' and '.join(sorted(kinds[rtype]))} pipelines)")
            pipelines[pname] = pipe
        if not pipelines:
            raise ConfigError("service.pipelines: define at least one pipeline (traces, metrics or logs)")
        interval = parse_duration(service.get("metrics_interval", 10.0), "service.metrics_interval")
        if interval <= 0:
            raise ConfigError("service.metrics_interval: must be positive")
        return cls(receivers, processors, exporters, pipelines, interval)

    @classmethod
    def embedded_default(cls, *, environ: dict[str, str]) -> ServiceConfig:
        """The configuration of `otel-ebpf run` without --config.

        Whole host, live terminal summary, OTLP/JSON lines under ./otel-ebpf-data/;
        plus OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT (or a per-signal one) is set,
        over OTEL_EXPORTER_OTLP_PROTOCOL (grpc or http/protobuf, the default).
        """
        body: dict[str, Any] = {
            "receivers": {"http": {}, "tcpflow": {}},
            "processors": {"stitching": {}, "redaction": {}, "routes": {}},
            "exporters": {"file": {"directory": DEFAULT_DATA_DIR}, "summary": {}},
        }
        signal_exporters = {"traces": ["file", "summary"], "metrics": ["file"], "logs": ["file", "summary"]}
        for signal, upper in (("traces", "TRACES"), ("metrics", "METRICS"), ("logs", "LOGS")):
            if not (environ.get(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
                continue
            var = f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL"
            if not environ.get(var):
                var = "OTEL_EXPORTER_OTLP_PROTOCOL"
            proto = environ.get(var, "http/protobuf").strip().lower()
            if proto not in ("grpc", "http/protobuf"):
                raise ConfigError(f"{var}: {proto!r} is not supported (grpc or http/protobuf)")
            etype = "otlp" if proto == "grpc" else "otlphttp"
            body["exporters"][etype] = {}
            signal_exporters[signal].append(etype)
        receivers = {"traces": ["http"], "metrics": ["http", "tcpflow"], "logs": ["tcpflow"]}
        body["service"] = {
            "pipelines": {
                signal: {"receivers": receivers[signal], "processors": ["stitching", "redaction", "routes"],
                         "exporters": names}
                for signal, names in signal_exporters.items()
            }
        }
        return cls.from_dict(body)


def _mapping(value: Any, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
    return value


def _type_of(name: str, key: str, known: tuple[str, ...]) -> str:
    ctype, slash, suffix = name.partition("/")
    if slash and not suffix:
        raise ConfigError(f"{key}: a component id is <type> or <type>/<name>, with a non-empty name")
    if ctype not in known:
        raise ConfigError(f"{key}: unknown component type {ctype!r} (known: {', '.join(known)})")
    return ctype


def _component(klass, ctype: str, body: Any, key: str):
    body = _mapping(body, key)
    known = {f.name for f in fields(klass)}
    for k in body:
        if k not in known:
            raise ConfigError(f"{key}.{k}: unknown setting for {ctype} (known: {', '.join(sorted(known))})")
    try:
        cfg = klass(**body)
        if klass in (HttpReceiverConfig, TcpFlowReceiverConfig, ExporterConfig, StitchingConfig, KubeConfig,
                     ServiceGraphConfig):
            cfg.validate(key)
        else:
            cfg.validate()
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(key) else f"{key}: {msg}") from None
    return cfg


def _names(value: Any, key: str, defined: dict, *, required: bool = False) -> list[str]:
    if value is None:
        value = []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}: expected a list of component names")
    if required and not value:
        raise ConfigError(f"{key}: must name at least one component")
    for v in value:
        if v not in defined:
            raise ConfigError(f"{key}: {v!r} is not defined in the {key.rsplit('.', 1)[1]} section")
    return list(value)
