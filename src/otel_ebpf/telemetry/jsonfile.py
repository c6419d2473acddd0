"""SDK exporters that write OTLP/JSON lines, as the Collector's ``file`` exporter does.

Usage::

    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from otel_ebpf.telemetry.jsonfile import OtlpJsonFileSpanExporter, OtlpJsonFileMetricExporter

    spans = OtlpJsonFileSpanExporter("/var/log/otel-ebpf/traces.jsonl", max_bytes=16 << 20, backups=2)
    tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    reader = PeriodicExportingMetricReader(OtlpJsonFileMetricExporter("/var/log/otel-ebpf/metrics.jsonl"))

Each ``export()`` call writes one line holding one OTLP export request
(``{"resourceSpans": [...]}``, ``{"resourceMetrics": [...]}`` or
``{"resourceLogs": [...]}``) in the OTLP/JSON encoding: lowerCamelCase field
names, trace and span ids as hex strings, enums as integers, 64-bit integers
as decimal strings (the protobuf JSON mapping), fields holding their default
value left out. Any OTLP/JSON reader (the Collector's ``otlpjsonfile``
receiver, :func:`decode_otlp_json`) reads the lines back.

Files are size-bounded: a line that would take the file past ``max_bytes`` goes
to a fresh file after the current one is renamed ``<path>.1`` (``.1`` becoming
``.2`` and so on; only ``backups`` old files are kept). A line is never split
across files, so a single request larger than ``max_bytes`` makes a file of its
own. Lines are flushed as written.

Exporters never raise from ``export()``: an encode or write error returns
FAILURE, is counted in ``failed_exports`` and kept in ``last_error``.
``shutdown()`` is safe to call twice; exports after it return FAILURE.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.metrics.view import Aggregation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_ebpf.telemetry.otlp_fast import trace_request_json_text

__all__ = [
    "DEFAULT_BACKUPS",
    "DEFAULT_MAX_BYTES",
    "OtlpJsonFileLogExporter",
    "OtlpJsonFileMetricExporter",
    "OtlpJsonFileSpanExporter",
    "decode_otlp_json",
    "encode_otlp_json",
]

_logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Rotate at 64 MiB: large enough for hours of a busy host, small enough to open in an editor."""

DEFAULT_BACKUPS = 3
"""Old files kept after rotation (``<path>.1`` .. ``<path>.3``)."""

_LOG_EVERY_N_FAILURES = 100
"""A full disk fails every export; log the first failure and then one in this many."""

# OTLP/JSON differs from the plain protobuf JSON mapping in one way: these bytes
# fields are hex, not base64. They are the only ones named so, at any depth
# (Span, Span.Link, Exemplar, LogRecord); AnyValue.bytesValue stays base64.
_HEX_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
# Subtrees that can hold no id field: skipped to save a walk over every attribute.
_NO_ID_KEYS = frozenset({"attributes", "filteredAttributes", "resource", "scope", "body"})

_MessageT = TypeVar("_MessageT", bound=Message)


def encode_otlp_json(message: Message) -> str:
    """One OTLP/JSON document (no newline) for an OTLP protobuf ``message``."""
    document = json_format.MessageToDict(message, use_integers_for_enums=True)
    _convert_ids(document, _base64_to_hex)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def decode_otlp_json(data: str | bytes | dict[str, Any], message: _MessageT) -> _MessageT:
    """Parse one OTLP/JSON document into ``message`` (cleared first) and return it.

    Accepts lowerCamelCase or snake_case field names and enums as integers or
    names; unknown fields are ignored, as the OTLP spec asks of receivers. Ids
    must be hex: a base64 id raises ``ValueError``.
    """
    document = json.loads(data) if isinstance(data, (str, bytes, bytearray)) else data
    if not isinstance(document, dict):
        raise ValueError("OTLP/JSON document must be a JSON object")
    _convert_ids(document, _hex_to_base64)
    message.Clear()
    json_format.ParseDict(document, message, ignore_unknown_fields=True)
    return message


def _base64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def _hex_to_base64(value: str) -> str:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"OTLP/JSON ids must be hex strings, got {value!r}") from None
    return base64.b64encode(raw).decode("ascii")


def _convert_ids(node: Any, convert: Any) -> None:
    """Rewrite, in place, every id field in a decoded OTLP/JSON tree with ``convert``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _HEX_ID_KEYS and isinstance(value, str):
                node[key] = convert(value)
            elif key not in _NO_ID_KEYS and isinstance(value, (dict, list)):
                _convert_ids(value, convert)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                _convert_ids(item, convert)


class _RotatingFile:
    """An append-only line file that rotates by size. Thread-safe; opens lazily."""

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int, backups: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if backups < 0:
            raise ValueError(f"backups must be >= 0, got {backups}")
        self.path = Path(path)
        self._max_bytes = max_bytes
        self._backups = backups
        self._lock = threading.Lock()
        self._file: Any = None
        self._size = 0
        self._closed = False

    def write_line(self, line: bytes, *, flush: bool = True) -> None:
        with self._lock:
            if self._closed:
                raise ValueError(f"{self.path} is closed")
            if self._file is None:
                self._open()
            if self._size > 0 and self._size + len(line) > self._max_bytes:
                self._rotate()
            self._file.write(line)
            if flush:
                self._file.flush()
            self._size += len(line)

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            file, self._file = self._file, None
            if file is not None:
                file.close()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open across calls
        self._size = os.fstat(self._file.fileno()).st_size

    def _rotate(self) -> None:
        self._file.close()
        self._file = None
        if self._backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for index in range(self._backups - 1, 0, -1):
                older = self._backup_path(index)
                if older.exists():
                    older.replace(self._backup_path(index + 1))
            self.path.replace(self._backup_path(1))
        self._open()

    def _backup_path(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")


class _JsonLineWriter:
    """What the three exporters share: encode, write, count failures."""

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int, backups: int, signal: str) -> None:
        self._file = _RotatingFile(path, max_bytes=max_bytes, backups=backups)
        self._signal = signal
        self._count_lock = threading.Lock()
        self._shutdown = False
        self.failed_exports = 0
        self.last_error: BaseException | None = None

    @property
    def path(self) -> Path:
        return self._file.path

    def write(self, encode: Any) -> bool:
        """Write the request ``encode()`` returns as one line; False (counted) on any error."""
        if self._shutdown:
            self._fail(RuntimeError("exporter is shut down"))
            return False
        try:
            message = encode()
            if message is None:  # nothing to write
                return True
            if isinstance(message, str):  # already OTLP/JSON text (spans: otlp_fast)
                text = message
            elif isinstance(message, dict):  # an OTLP/JSON document
                text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
            else:
                text = encode_otlp_json(message)
            line = (text + "\n").encode("utf-8", "replace")
            self._file.write_line(line)
        except Exception as error:  # noqa: BLE001 - exporters must not raise
            self._fail(error)
            return False
        return True

    def flush(self) -> bool:
        try:
            self._file.flush()
        except Exception as error:  # noqa: BLE001
            self._fail(error)
            return False
        return True

    def shutdown(self) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        try:
            self._file.close()
        except Exception as error:  # noqa: BLE001
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        with self._count_lock:
            self.failed_exports += 1
            self.last_error = error
            count = self.failed_exports
        if count == 1 or count % _LOG_EVERY_N_FAILURES == 0:
            _logger.warning(
                "writing %s to %s failed (%d failures so far): %s", self._signal, self.path, count, error
            )


class OtlpJsonFileSpanExporter(SpanExporter):
    """Writes each batch of spans as one OTLP/JSON ``ExportTraceServiceRequest`` line.

    Spans may carry different Resources: the encoder groups them into one
    ``resourceSpans`` entry per distinct Resource (compared by value) and,
    inside it, one ``scopeSpans`` entry per instrumentation scope.
    ``export()`` blocks for one file write; it is safe to call from several threads.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
    ) -> None:
        self._writer = _JsonLineWriter(path, max_bytes=max_bytes, backups=backups, signal="spans")

    @property
    def path(self) -> Path:
        return self._writer.path

    @property
    def failed_exports(self) -> int:
        """How many ``export()`` calls returned FAILURE."""
        return self._writer.failed_exports

    @property
    def last_error(self) -> BaseException | None:
        return self._writer.last_error

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        # The document's text straight from the spans (otlp_fast), equal to the protobuf route's, ~15x faster.
        ok = self._writer.write(lambda: trace_request_json_text(spans) if spans else None)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._writer.flush()

    def shutdown(self) -> None:
        self._writer.shutdown()


def _cumulative_everywhere() -> dict[type, AggregationTemporality]:
    return {
        instrument: AggregationTemporality.CUMULATIVE
        for instrument in (
            Counter,
            UpDownCounter,
            Histogram,
            ObservableCounter,
            ObservableUpDownCounter,
            ObservableGauge,
        )
    }


class OtlpJsonFileMetricExporter(MetricExporter):
    """Writes each collection as one OTLP/JSON ``ExportMetricsServiceRequest`` line.

    Temporality is cumulative for every instrument unless ``preferred_temporality``
    overrides it per instrument class (e.g. ``{Counter: AggregationTemporality.DELTA}``).
    Unlike the OTLP exporters this one does not read
    ``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
        preferred_temporality: dict[type, AggregationTemporality] | None = None,
        preferred_aggregation: dict[type, Aggregation] | None = None,
    ) -> None:
        temporality = _cumulative_everywhere()
        temporality.update(preferred_temporality or {})
        super().__init__(preferred_temporality=temporality, preferred_aggregation=preferred_aggregation)
        self._writer = _JsonLineWriter(path, max_bytes=max_bytes, backups=backups, signal="metrics")

    @property
    def path(self) -> Path:
        return self._writer.path

    @property
    def failed_exports(self) -> int:
        """How many ``export()`` calls returned FAILURE."""
        return self._writer.failed_exports

    @property
    def last_error(self) -> BaseException | None:
        return self._writer.last_error

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        ok = self._writer.write(lambda: _encode_metrics_keeping_duplicates(metrics_data))
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._writer.flush()

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._writer.shutdown()


def _encode_metrics_keeping_duplicates(metrics_data: MetricsData) -> Message | None:
    """``encode_metrics``, one ResourceMetrics at a time.

    ``encode_metrics`` keys its output by Resource, so a second ResourceMetrics
    whose Resource equals an earlier one's silently replaces it. The SDK's
    MeterProvider never produces that, but hand-built MetricsData can.
    """
    if metrics_data is None or not metrics_data.resource_metrics:
        return None
    request = None
    for resource_metrics in metrics_data.resource_metrics:
        part = encode_metrics(MetricsData(resource_metrics=[resource_metrics]))
        if request is None:
            request = part
        else:
            request.resource_metrics.extend(part.resource_metrics)
    return request


class OtlpJsonFileLogExporter(LogRecordExporter):
    """Writes each batch of log records as one OTLP/JSON ``ExportLogsServiceRequest`` line."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
    ) -> None:
        self._writer = _JsonLineWriter(path, max_bytes=max_bytes, backups=backups, signal="logs")

    @property
    def path(self) -> Path:
        return self._writer.path

    @property
    def failed_exports(self) -> int:
        """How many ``export()`` calls returned FAILURE."""
        return self._writer.failed_exports

    @property
    def last_error(self) -> BaseException | None:
        return self._writer.last_error

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        ok = self._writer.write(lambda: encode_logs(batch) if batch else None)
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._writer.flush()

    def shutdown(self) -> None:
        self._writer.shutdown()


class FlowJsonLinesExporter(LogRecordExporter):
    """Writes each log record as one flat JSON object per line: ``time_unix_nano``, the event
    name, ``service.name`` of its Resource, then its attributes (``jq``-friendly flow logs).
    Never raises: a failed write returns FAILURE and is counted in ``failed_exports``."""

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES,
                 backups: int = DEFAULT_BACKUPS) -> None:
        self._file = _RotatingFile(path, max_bytes=max_bytes, backups=backups)
        self._lock = threading.Lock()
        self._shutdown = False
        self.failed_exports = 0

    @property
    def path(self) -> Path:
        return self._file.path

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        if self._shutdown:
            return LogRecordExportResult.FAILURE
        try:
            # Line by line into the file's buffer, one flush at the end: a burst of closing
            # connections is thousands of records, never held as lines all at once.
            with self._lock:
                for item in batch:
                    record = item.log_record
                    obj: dict[str, Any] = {"time_unix_nano": record.timestamp, "event": record.event_name,
                                           "service.name": item.resource.attributes.get("service.name")}
                    for key, value in (record.attributes or {}).items():
                        obj[key] = list(value) if isinstance(value, tuple) else value
                    line = json.dumps(obj, separators=(",", ":")) + "\n"
                    self._file.write_line(line.encode("utf-8", "replace"), flush=False)
                self._file.flush()
        except Exception:
            self.failed_exports += 1
            _logger.warning("writing flow logs to %s failed", self.path, exc_info=True)
            return LogRecordExportResult.FAILURE
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        if not self._shutdown:
            self._shutdown = True
            with self._lock:
                self._file.close()
